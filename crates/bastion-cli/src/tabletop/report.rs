//! The tabletop report: one entry per scenario, as JSON for machines and Markdown for people.

use serde::Serialize;

/// How a scenario ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every expected observation held.
    Pass,
    /// At least one did not, or the scenario could not run.
    Fail,
    /// The target does not give what the scenario needs (reason in `observed`).
    Skipped,
}

/// An audit record cited as evidence: the chain (tenant slug, or `system`) and its position.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditRef {
    /// `acme`, `globex`, … or `system`.
    pub chain: String,
    /// Position in the chain (from 1).
    pub seq: u64,
    /// The record's action (e.g. `tool.issue_refund`).
    pub action: String,
    /// Its outcome (`allow`, `deny`, `error`, `ok`).
    pub outcome: String,
}

/// One scenario's entry.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// Stable id (`refund-by-buyer-agent`).
    pub id: &'static str,
    /// The attack tried.
    pub attack: &'static str,
    /// The control expected to stop it.
    pub control: &'static str,
    /// The evidence the scenario requires.
    pub evidence_required: &'static str,
    /// Pass, fail or skipped.
    pub status: Status,
    /// What was observed, one line per check (`ok:` or `FAILED:` first).
    pub observed: Vec<String>,
    /// Audit records proving it.
    pub audit: Vec<AuditRef>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The instance driven.
    pub target: String,
    /// `self-started (sqlite)`, `self-started (postgres)` or `existing instance`.
    pub mode: String,
    /// Counts.
    pub passed: usize,
    /// Counts.
    pub failed: usize,
    /// Counts.
    pub skipped: usize,
    /// Scenarios in the order run.
    pub scenarios: Vec<ScenarioReport>,
}

impl Report {
    /// Builds the report and its counts.
    #[must_use]
    pub fn new(target: String, mode: String, scenarios: Vec<ScenarioReport>) -> Self {
        let count = |s: Status| scenarios.iter().filter(|r| r.status == s).count();
        Self {
            target,
            mode,
            passed: count(Status::Pass),
            failed: count(Status::Fail),
            skipped: count(Status::Skipped),
            scenarios,
        }
    }

    /// The Markdown rendering.
    #[must_use]
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "# Bastion tabletop report\n\nTarget: {} ({})\n\n**{} passed, {} failed, {} skipped.**\n\n| scenario | status | attack | control |\n|---|---|---|---|\n",
            self.target, self.mode, self.passed, self.failed, self.skipped
        );
        for r in &self.scenarios {
            s.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                r.id,
                status_word(r.status),
                r.attack,
                r.control
            ));
        }
        for r in &self.scenarios {
            s.push_str(&format!(
                "\n## `{}` — {}\n\n- Attack: {}\n- Control: {}\n- Evidence required: {}\n\nObserved:\n",
                r.id,
                status_word(r.status),
                r.attack,
                r.control,
                r.evidence_required
            ));
            for o in &r.observed {
                s.push_str(&format!("- {o}\n"));
            }
            if !r.audit.is_empty() {
                s.push_str("\nAudit records:\n");
                for a in &r.audit {
                    s.push_str(&format!(
                        "- `{}#{}` {} ({})\n",
                        a.chain, a.seq, a.action, a.outcome
                    ));
                }
            }
        }
        s
    }
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Pass => "PASS",
        Status::Fail => "FAIL",
        Status::Skipped => "skipped",
    }
}
