//! Golden manifests: `tests/cases/passing/<name>/` must load with no finding;
//! `tests/cases/failing/<name>/` must fail with every `expect: <file>:<line>: <substring>`
//! line of its `readme.md` (`*` for any line).

use std::fs;
use std::path::Path;

use bastion_app::{AppSpec, Finding};

use crate::crate_dir;

fn case_dirs(kind: &str) -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> = fs::read_dir(crate_dir().join("tests/cases").join(kind))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no {kind} cases");
    dirs
}

fn render(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs one case directory and returns a description of what went wrong, if anything.
fn check(dir: &Path, must_fail: bool) -> Option<String> {
    let Ok(readme) = fs::read_to_string(dir.join("readme.md")) else {
        return Some("readme.md missing".into());
    };
    let result = AppSpec::load(dir);
    match (must_fail, result) {
        (false, Ok(_)) => None,
        (false, Err(f)) => Some(format!("expected no finding, got:\n{}", render(&f))),
        (true, Ok(_)) => Some("expected findings, the app loaded".into()),
        (true, Err(findings)) => {
            let expects: Vec<&str> = readme
                .lines()
                .filter_map(|l| l.strip_prefix("expect: "))
                .collect();
            if expects.is_empty() {
                return Some("readme.md has no `expect:` line".into());
            }
            let mut missing = Vec::new();
            for e in expects {
                let mut parts = e.splitn(3, ':');
                let (Some(file), Some(line), Some(msg)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Some(format!("malformed expect line `{e}`"));
                };
                let msg = msg.trim();
                let hit = findings.iter().any(|f| {
                    f.file.ends_with(file)
                        && (line == "*" || line.parse::<usize>().ok() == Some(f.line))
                        && f.message.contains(msg)
                });
                if !hit {
                    missing.push(e.to_owned());
                }
            }
            (!missing.is_empty())
                .then(|| format!("missing {missing:?}; findings were:\n{}", render(&findings)))
        }
    }
}

#[test]
fn passing_cases_load_without_findings() {
    let failures: Vec<String> = case_dirs("passing")
        .iter()
        .filter_map(|d| check(d, false).map(|why| format!("{}: {why}", d.display())))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn failing_cases_report_the_expected_finding_with_file_and_line() {
    let dirs = case_dirs("failing");
    let failures: Vec<String> = dirs
        .iter()
        .filter_map(|d| check(d, true).map(|why| format!("{}: {why}", d.display())))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n\n")
    );
}
