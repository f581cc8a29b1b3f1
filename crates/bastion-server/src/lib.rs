//! Bastion's HTTP face, and the only crate that knows HTTP.
//!
//! [`router`] builds the whole axum `Router` from an [`AppState`], so tests drive it with
//! `tower::ServiceExt::oneshot` without binding a port; [`listen::serve`] runs it behind
//! TLS 1.3 with connection limits. Every error is RFC 9457 problem+json ([`problem`]).

pub mod agent;
pub mod config;
mod draft;
pub mod http_layers;
pub mod limits;
pub mod listen;
pub mod mcp;
pub mod problem;
mod routes;
pub mod webhooks;

pub use routes::{AppState, ServerOptions, router};
