//! Integration tests for bastion-identity, against a real SQLite store in a tempdir and a
//! `FixedClock`. One binary; modules by theme.

mod common;
mod flow;
mod jwt_attacks;
mod prop_refresh;
mod refresh;
mod throttle;
mod totp_at_rest;
mod totp_vectors;
