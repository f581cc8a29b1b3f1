//! bastion-server integration tests: the real stack in-process (router via `oneshot`) and
//! the real listener (slowloris, TLS 1.3).
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failure aborts the test"
)]

mod agent;
mod approvals;
mod audit;
mod harness;
mod identity;
mod killswitch;
mod listener;
mod matrix;
mod mcp;
mod payments;
mod platform;
mod records;
mod webhooks;
