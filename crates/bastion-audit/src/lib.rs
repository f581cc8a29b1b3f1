//! Bastion's tamper-evident audit chain. Pure: no I/O, no clock.
//!
//! Each tenant has one chain (the nil [`TenantId`](bastion_types::TenantId) is the system
//! chain). A record's body is the canonical JSON encoding of an [`AuditEvent`] (object keys
//! sorted by their UTF-8 bytes, no insignificant whitespace), and records are linked by
//!
//! ```text
//! hash(n) = SHA-256( hash(n-1) ‖ seq(n) as 8 bytes big-endian ‖ body(n) )
//! ```
//!
//! with `hash(0)` = 32 zero bytes ([`GENESIS_HASH`]) and `seq` counting from 1. [`verify`]
//! recomputes the chain and names the first bad position: a flipped byte anywhere, a deleted
//! record (the last one too, when the stored chain head is passed in), or two records swapped.
//!
//! The chain proves integrity against anyone who cannot also rewrite every later hash and the
//! head; anchoring heads outside the database (checkpoints) is the next layer.
//!
//! Callers put no secret, token, password or raw PII into [`AuditEvent::detail`]: only
//! redacted values.

mod chain;
mod event;

pub use chain::{
    ChainVerifier, GENESIS_HASH, HASH_LEN, StoredAuditRecord, VerifyError, VerifyFailure,
    VerifyReport, chain_hash, seal_next, verify,
};
pub use event::{AuditEvent, BODY_LEN_MAX, Outcome, canonical_json};
