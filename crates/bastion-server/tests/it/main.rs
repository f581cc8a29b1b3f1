//! bastion-server integration tests: the real stack in-process (router via `oneshot`) and
//! the real listener (slowloris, TLS 1.3).

mod audit;
mod harness;
mod identity;
mod listener;
mod matrix;
mod platform;
mod records;
