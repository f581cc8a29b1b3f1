//! The hash chain: sealing records and verifying a stored chain.

use aws_lc_rs::digest;

use crate::AuditEvent;

/// Length of a chain hash in bytes (SHA-256).
pub const HASH_LEN: usize = 32;

/// The `prev_hash` of the first record of every chain: 32 zero bytes.
pub const GENESIS_HASH: [u8; HASH_LEN] = [0; HASH_LEN];

/// `SHA-256(prev ‖ seq as 8 bytes big-endian ‖ body)` (FIPS 180-4 SHA-256).
#[must_use]
pub fn chain_hash(prev: &[u8; HASH_LEN], seq: u64, body: &[u8]) -> [u8; HASH_LEN] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(prev);
    ctx.update(&seq.to_be_bytes());
    ctx.update(body);
    let d = ctx.finish();
    let mut out = [0u8; HASH_LEN];
    // SHA-256 digests are always 32 bytes.
    out.copy_from_slice(d.as_ref());
    out
}

/// One record as stored: its position, canonical body and the hashes that link it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAuditRecord {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Canonical JSON of an [`AuditEvent`].
    pub body: String,
    /// The previous record's `hash` ([`GENESIS_HASH`] for `seq` 1).
    pub prev_hash: [u8; HASH_LEN],
    /// [`chain_hash`]`(prev_hash, seq, body)`.
    pub hash: [u8; HASH_LEN],
}

/// Builds the record that follows `head` (`None` for an empty chain) with this `body`.
///
/// `head` is `(seq, hash)` of the current last record. The new `seq` is `head.seq + 1`
/// (saturating: a chain of 2^64 records cannot exist, and a repeated seq is refused by the
/// store's unique key).
#[must_use]
pub fn seal_next(head: Option<(u64, [u8; HASH_LEN])>, body: String) -> StoredAuditRecord {
    let (prev_seq, prev_hash) = head.unwrap_or((0, GENESIS_HASH));
    let seq = prev_seq.saturating_add(1);
    let hash = chain_hash(&prev_hash, seq, body.as_bytes());
    StoredAuditRecord {
        seq,
        body,
        prev_hash,
        hash,
    }
}

/// A chain that verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of records checked.
    pub count: u64,
    /// Hash of the last record ([`GENESIS_HASH`] for an empty chain).
    pub head_hash: [u8; HASH_LEN],
}

/// Why a record failed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyFailure {
    /// The record's `seq` is not its position: a record before it was deleted, or records
    /// were reordered.
    Sequence {
        /// The position the record is at.
        expected: u64,
        /// The `seq` stored in it.
        found: u64,
    },
    /// The record's `prev_hash` is not the previous record's hash.
    Link,
    /// The record's `hash` does not match its `prev_hash`, `seq` and body.
    Hash,
    /// The body is not the canonical encoding of an audit event.
    Body,
    /// The chain head disagrees with the last record: the tail was deleted, or records were
    /// added or replaced after the head was written.
    Head,
}

impl std::fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sequence { expected, found } => {
                write!(
                    f,
                    "expected seq {expected}, found {found} (record deleted or reordered)"
                )
            }
            Self::Link => f.write_str("prev_hash does not match the previous record"),
            Self::Hash => f.write_str("hash does not match the record's content"),
            Self::Body => f.write_str("body is not a canonical audit event"),
            Self::Head => f.write_str("chain head does not match the last record"),
        }
    }
}

/// A chain failed verification at `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at position {position}: {reason}")]
pub struct VerifyError {
    /// The first bad position, counting from 1 (the seq the record there should have). For a
    /// deleted tail this is the position of the first missing record.
    pub position: u64,
    /// What was wrong there.
    pub reason: VerifyFailure,
}

/// Verifies a chain record by record, so a long chain can be read in pages with bounded
/// memory. [`verify`] is this over one slice.
///
/// ```
/// # use bastion_audit::{ChainVerifier, seal_next};
/// let r1 = seal_next(None, String::from("{}"));
/// let mut v = ChainVerifier::new();
/// // `{}` is not an audit event, so the first record is refused.
/// assert_eq!(v.push(&r1).unwrap_err().position, 1);
/// ```
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    count: u64,
    prev: [u8; HASH_LEN],
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainVerifier {
    /// A verifier expecting record 1.
    #[must_use]
    pub fn new() -> Self {
        Self {
            count: 0,
            prev: GENESIS_HASH,
        }
    }

    /// Checks the next record: seq, link to the previous hash, own hash, canonical body.
    ///
    /// # Errors
    /// [`VerifyError`] naming this record's position. Keep pushing after an error and the
    /// results mean nothing.
    pub fn push(&mut self, record: &StoredAuditRecord) -> Result<(), VerifyError> {
        let position = self.count.saturating_add(1);
        let fail = |reason| Err(VerifyError { position, reason });
        if record.seq != position {
            return fail(VerifyFailure::Sequence {
                expected: position,
                found: record.seq,
            });
        }
        if record.prev_hash != self.prev {
            return fail(VerifyFailure::Link);
        }
        if chain_hash(&record.prev_hash, record.seq, record.body.as_bytes()) != record.hash {
            return fail(VerifyFailure::Hash);
        }
        if AuditEvent::from_body(&record.body).is_none() {
            return fail(VerifyFailure::Body);
        }
        self.prev = record.hash;
        self.count = position;
        Ok(())
    }

    /// Records checked so far.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Ends verification; when given, `head = (seq, hash)` must name the last record pushed.
    ///
    /// # Errors
    /// [`VerifyError`] with [`VerifyFailure::Head`]: at the first missing position when the
    /// head is further than the records, at the last record when it disagrees otherwise.
    pub fn finish(self, head: Option<(u64, [u8; HASH_LEN])>) -> Result<VerifyReport, VerifyError> {
        let Self { count, prev } = self;
        if let Some((head_seq, head_hash)) = head
            && (head_seq != count || head_hash != prev)
        {
            let position = if head_seq == count {
                count
            } else {
                head_seq.min(count).saturating_add(1)
            };
            return Err(VerifyError {
                position: position.max(1),
                reason: VerifyFailure::Head,
            });
        }
        Ok(VerifyReport {
            count,
            head_hash: prev,
        })
    }
}

/// Verifies `records` (in stored order, which must be ascending `seq` from 1) and, when
/// given, that `head = (seq, hash)` names the last record.
///
/// Checks per record, in order: seq, link to the previous hash, own hash, canonical body.
///
/// # Errors
/// [`VerifyError`] with the first bad position and the reason.
pub fn verify(
    records: &[StoredAuditRecord],
    head: Option<(u64, [u8; HASH_LEN])>,
) -> Result<VerifyReport, VerifyError> {
    let mut v = ChainVerifier::new();
    for record in records {
        v.push(record)?;
    }
    v.finish(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Outcome;
    use bastion_types::{TenantId, UserId};
    use proptest::prelude::*;
    use serde_json::json;

    fn event(i: u64, detail: serde_json::Value) -> AuditEvent {
        AuditEvent {
            at: 1_700_000_000 + i64::try_from(i).unwrap(),
            tenant_id: TenantId::new_random(),
            actor: i.is_multiple_of(2).then(UserId::new_random),
            action: format!("tool.t{i}"),
            target: i.is_multiple_of(3).then(|| format!("rec-{i}")),
            outcome: if i.is_multiple_of(2) {
                Outcome::Allow
            } else {
                Outcome::Deny
            },
            policy_ids: vec![format!("policy{i}")],
            detail,
        }
    }

    fn build(n: u64) -> Vec<StoredAuditRecord> {
        let mut out: Vec<StoredAuditRecord> = Vec::new();
        for i in 0..n {
            let head = out.last().map(|r| (r.seq, r.hash));
            out.push(seal_next(head, event(i, json!({"i": i})).canonical_body()));
        }
        out
    }

    fn head_of(records: &[StoredAuditRecord]) -> Option<(u64, [u8; 32])> {
        records.last().map(|r| (r.seq, r.hash))
    }

    #[test]
    fn empty_and_intact_chains_verify() {
        assert_eq!(
            verify(&[], None),
            Ok(VerifyReport {
                count: 0,
                head_hash: GENESIS_HASH
            })
        );
        let c = build(5);
        let r = verify(&c, head_of(&c)).unwrap();
        assert_eq!(r.count, 5);
        assert_eq!(r.head_hash, c[4].hash);
    }

    #[test]
    fn genesis_hash_is_sha256_of_known_input() {
        // SHA-256 of 32 zero bytes ‖ 00..01 ‖ "{}" computed independently (python hashlib).
        let h = chain_hash(&GENESIS_HASH, 1, b"{}");
        let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "1bad765d926feacace97a8ddcd329a1f4254c208affc1ba86b3c7d59e8fba83e"
        );
        assert_ne!(h, chain_hash(&[0; 32], 2, b"{}"));
    }

    #[test]
    fn deleted_middle_record_is_named() {
        let mut c = build(5);
        c.remove(2);
        let e = verify(&c, None).unwrap_err();
        assert_eq!(e.position, 3);
        assert_eq!(
            e.reason,
            VerifyFailure::Sequence {
                expected: 3,
                found: 4
            }
        );
    }

    #[test]
    fn deleted_tail_is_caught_by_the_head() {
        let c = build(5);
        let head = head_of(&c);
        let e = verify(&c[..4], head).unwrap_err();
        assert_eq!(
            e,
            VerifyError {
                position: 5,
                reason: VerifyFailure::Head
            }
        );
        // Without the head the shortened chain is indistinguishable: that is why heads exist.
        assert!(verify(&c[..4], None).is_ok());
        let e = verify(&[], head).unwrap_err();
        assert_eq!(e.position, 1);
    }

    #[test]
    fn swapped_records_are_named() {
        let mut c = build(5);
        c.swap(1, 3);
        let e = verify(&c, head_of(&c)).unwrap_err();
        assert_eq!(e.position, 2);
        // Swapping the contents but keeping the seq numbers breaks the hash instead.
        let mut c = build(5);
        let (b1, b3) = (c[1].body.clone(), c[3].body.clone());
        c[1].body = b3;
        c[3].body = b1;
        let e = verify(&c, None).unwrap_err();
        assert_eq!(
            e,
            VerifyError {
                position: 2,
                reason: VerifyFailure::Hash
            }
        );
    }

    #[test]
    fn a_resealed_non_event_body_is_refused() {
        let c = vec![seal_next(None, "{\"x\":1}".to_owned())];
        assert_eq!(verify(&c, None).unwrap_err().reason, VerifyFailure::Body);
    }

    /// Which stored part of a record a mutation touches.
    #[derive(Debug, Clone, Copy)]
    enum Part {
        Seq,
        Body,
        Prev,
        Hash,
    }

    fn flip(r: &mut StoredAuditRecord, part: Part, byte: usize, mask: u8) {
        match part {
            Part::Seq => {
                let mut b = r.seq.to_be_bytes();
                b[byte % 8] ^= mask;
                r.seq = u64::from_be_bytes(b);
            }
            Part::Body => {
                let mut b = r.body.clone().into_bytes();
                let i = byte % b.len();
                b[i] ^= mask;
                r.body = String::from_utf8_lossy(&b).into_owned();
            }
            Part::Prev => r.prev_hash[byte % 32] ^= mask,
            Part::Hash => r.hash[byte % 32] ^= mask,
        }
    }

    proptest! {
        #[test]
        fn chain_verifies_after_any_appends(details in proptest::collection::vec(any::<(i64, String)>(), 0..24)) {
            let mut c: Vec<StoredAuditRecord> = Vec::new();
            for (i, (n, s)) in details.iter().enumerate() {
                let e = event(i as u64, json!({"n": n, "s": s}));
                c.push(seal_next(head_of(&c), e.canonical_body()));
                let r = verify(&c, head_of(&c));
                prop_assert!(r.is_ok(), "{:?}", r);
                prop_assert_eq!(r.unwrap().count, (i + 1) as u64);
            }
        }

        #[test]
        fn any_single_byte_change_is_caught_at_its_position(
            n in 1u64..12,
            pick in any::<usize>(),
            part in prop_oneof![Just(Part::Seq), Just(Part::Body), Just(Part::Prev), Just(Part::Hash)],
            byte in any::<usize>(),
            mask in 1u8..=255,
        ) {
            let mut c = build(n);
            let head = head_of(&c);
            let i = pick % c.len();
            flip(&mut c[i], part, byte, mask);
            let e = verify(&c, head);
            prop_assert!(e.is_err(), "tampering with {:?} of record {} went unnoticed", part, i);
            let e = e.unwrap_err();
            // The last record's own hash is only cross-checked by the head (position n).
            prop_assert_eq!(e.position, i as u64 + 1, "{}", e);
        }
    }
}
