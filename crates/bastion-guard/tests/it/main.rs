//! Integration tests for bastion-guard: detectors on published and corrupted values, masking
//! and restore, DLP, output neutralization (case A4), injection signals, spotlighting, and
//! property tests.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns fail loudly"
)]

mod detect;
mod dlp;
mod injection;
mod mask;
mod neutralize;
mod props;
mod spotlight;

use bastion_guard::{Detector, EntityKind, Finding};

/// The (kind, matched text) pairs found in `text`.
pub fn found(text: &str) -> Vec<(EntityKind, String)> {
    let d = Detector::new().unwrap();
    d.detect(text)
        .into_iter()
        .map(|f: Finding| (f.kind, text[f.start..f.end].to_owned()))
        .collect()
}

/// The values of kind `kind` found in `text`.
pub fn found_kind(text: &str, kind: EntityKind) -> Vec<String> {
    found(text)
        .into_iter()
        .filter(|(k, _)| *k == kind)
        .map(|(_, v)| v)
        .collect()
}
