//! Data-loss prevention on outputs: secret-shaped strings must not leave.

use crate::detect::Detector;
use crate::finding::{EntityKind, Finding};

/// What to do with an output, decided from its secret findings. The caller enforces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DlpVerdict {
    /// No secret-shaped string found.
    Clean,
    /// At least one secret-shaped string found; `kinds` lists their kinds, sorted, each once.
    Block {
        /// The kinds of the secrets found.
        kinds: Vec<EntityKind>,
    },
}

impl DlpVerdict {
    /// `Block` with the secret kinds among `findings`, or `Clean` if there are none.
    #[must_use]
    pub fn from_findings(findings: &[Finding]) -> Self {
        let mut kinds: Vec<EntityKind> = findings
            .iter()
            .map(|f| f.kind)
            .filter(|k| k.is_secret())
            .collect();
        kinds.sort();
        kinds.dedup();
        if kinds.is_empty() {
            DlpVerdict::Clean
        } else {
            DlpVerdict::Block { kinds }
        }
    }

    /// Whether the verdict is `Block`.
    #[must_use]
    pub fn is_block(&self) -> bool {
        matches!(self, DlpVerdict::Block { .. })
    }
}

/// The secret-shaped strings in `text`: PEM private keys, JWTs, vendor API keys and
/// high-entropy tokens ([`EntityKind::is_secret`]), overlaps resolved, sorted by start.
///
/// Fails closed: should the built-in patterns ever fail to compile, the whole text is
/// reported as one [`EntityKind::HighEntropy`] finding, so a verdict on it blocks.
#[must_use]
pub fn dlp_check(text: &str) -> Vec<Finding> {
    match Detector::shared() {
        Ok(d) => d.detect_secrets(text),
        Err(_) if text.is_empty() => Vec::new(),
        Err(_) => vec![Finding {
            kind: EntityKind::HighEntropy,
            start: 0,
            end: text.len(),
            score: 1.0,
        }],
    }
}

/// [`dlp_check`] then [`DlpVerdict::from_findings`].
#[must_use]
pub fn dlp_verdict(text: &str) -> DlpVerdict {
    DlpVerdict::from_findings(&dlp_check(text))
}

/// `text` with each finding replaced by `[REDACTED:<TAG>]` (for callers that redact rather
/// than block). `findings` must be sorted and non-overlapping, as [`dlp_check`] returns
/// them; findings off `text`'s char boundaries are skipped.
#[must_use]
pub fn redact(text: &str, findings: &[Finding]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for f in findings {
        if f.start < at {
            continue;
        }
        let (Some(before), Some(_)) = (text.get(at..f.start), text.get(f.start..f.end)) else {
            continue;
        };
        out.push_str(before);
        out.push_str("[REDACTED:");
        out.push_str(f.kind.tag());
        out.push(']');
        at = f.end;
    }
    out.push_str(text.get(at..).unwrap_or_default());
    out
}
