//! bastion-authz integration tests: golden decisions, Z2, policy findings, tool listing.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns fail loudly"
)]

mod check;
mod golden;
mod z2;

use std::path::PathBuf;

use bastion_app::{AppSpec, PolicyFile};

/// `crates/bastion-authz`.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The vendor-quote example app.
pub fn vendor_quote() -> AppSpec {
    AppSpec::load(&crate_dir().join("../../examples/vendor-quote")).unwrap()
}

/// The vendor-quote manifest with other policy files (name → text).
pub fn with_policies(files: &[(&str, &str)]) -> AppSpec {
    let mut spec = vendor_quote();
    spec.policies = files
        .iter()
        .map(|(name, text)| PolicyFile {
            path: spec.dir.join("policies").join(name),
            text: (*text).to_owned(),
        })
        .collect();
    spec
}

/// The vendor-quote manifest with the policies of `tests/apps/<name>/`.
pub fn app_with_test_policies(name: &str) -> AppSpec {
    let dir = crate_dir().join("tests/apps").join(name);
    let mut spec = vendor_quote();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    spec.policies = files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "cedar"))
        .map(|path| PolicyFile {
            text: std::fs::read_to_string(&path).unwrap(),
            path,
        })
        .collect();
    spec
}
