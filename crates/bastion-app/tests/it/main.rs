//! bastion-app integration tests: the example app, golden failing manifests, schemas.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns fail loudly"
)]

mod cases;
mod example;
mod schemas;

use std::path::PathBuf;

/// `crates/bastion-app`.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `examples/vendor-quote`.
pub fn example_dir() -> PathBuf {
    crate_dir().join("../../examples/vendor-quote")
}
