//! What a detector reports: the kind of value and where it is.

use std::collections::BTreeMap;
use std::fmt;

/// The kind of sensitive value a [`Finding`] covers.
///
/// The order of the variants is not meaningful; [`EntityKind::specificity`] decides overlaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EntityKind {
    /// A payment card number (PAN): 13–19 digits, Luhn-valid, a known IIN range and length
    /// (ISO/IEC 7812-1).
    Card,
    /// An International Bank Account Number (ISO 13616-1): country code, check digits
    /// (ISO 7064 mod 97-10 = 1) and the country's BBAN length and format.
    Iban,
    /// A US Social Security Number written `AAA-GG-SSSS` or `AAA GG SSSS` (SSA rules: area not
    /// 000, 666 or 900–999; group not 00; serial not 0000).
    Ssn,
    /// An e-mail address (RFC 5322 `addr-spec`, dot-atom form, ASCII subset).
    Email,
    /// A telephone number (ITU-T E.164 with `+`, or a national format of a default region)
    /// that libphonenumber's metadata calls valid.
    Phone,
    /// An IPv4 address in dotted-decimal (RFC 791 / `std::net::Ipv4Addr` syntax).
    Ipv4,
    /// An IPv6 address (RFC 4291 §2.2 text forms, as `std::net::Ipv6Addr` parses them).
    Ipv6,
    /// A PEM private-key block (RFC 7468 §10–11 labels ending in `PRIVATE KEY`).
    PrivateKey,
    /// A JSON Web Token in compact serialization (RFC 7519 / RFC 7515 §7.1) whose header is a
    /// JSON object with an `alg` member.
    Jwt,
    /// A credential with a vendor's published shape (Stripe, GitHub, AWS, Slack, Google, …).
    ApiKey,
    /// A long base64/base64url or hex run with high Shannon entropy (see
    /// [`crate::ENTROPY_BITS_MIN_BASE64`]): probably a key, token or password.
    HighEntropy,
    /// A string taken from a JSON field the caller tagged sensitive, whatever its shape.
    SensitiveField,
}

impl EntityKind {
    /// Every kind, in a fixed order.
    pub const ALL: [EntityKind; 12] = [
        EntityKind::Card,
        EntityKind::Iban,
        EntityKind::Ssn,
        EntityKind::Email,
        EntityKind::Phone,
        EntityKind::Ipv4,
        EntityKind::Ipv6,
        EntityKind::PrivateKey,
        EntityKind::Jwt,
        EntityKind::ApiKey,
        EntityKind::HighEntropy,
        EntityKind::SensitiveField,
    ];

    /// The upper-case tag used in placeholders (`<CARD_1>`): ASCII letters and `_` only.
    #[must_use]
    pub const fn tag(self) -> &'static str {
        match self {
            EntityKind::Card => "CARD",
            EntityKind::Iban => "IBAN",
            EntityKind::Ssn => "SSN",
            EntityKind::Email => "EMAIL",
            EntityKind::Phone => "PHONE",
            EntityKind::Ipv4 => "IPV4",
            EntityKind::Ipv6 => "IPV6",
            EntityKind::PrivateKey => "PRIVATE_KEY",
            EntityKind::Jwt => "JWT",
            EntityKind::ApiKey => "API_KEY",
            EntityKind::HighEntropy => "SECRET",
            EntityKind::SensitiveField => "FIELD",
        }
    }

    /// The kind whose [`tag`](Self::tag) is `tag`, if any.
    #[must_use]
    pub fn from_tag(tag: &str) -> Option<EntityKind> {
        EntityKind::ALL.into_iter().find(|k| k.tag() == tag)
    }

    /// Whether this kind is a credential (what DLP blocks in outputs): private keys, JWTs,
    /// API keys and high-entropy tokens.
    #[must_use]
    pub const fn is_secret(self) -> bool {
        matches!(
            self,
            EntityKind::PrivateKey | EntityKind::Jwt | EntityKind::ApiKey | EntityKind::HighEntropy
        )
    }

    /// How specific a detection of this kind is (higher wins an overlap): checksummed or
    /// fixed-prefix shapes beat loose ones, and the entropy heuristic loses to everything.
    #[must_use]
    pub const fn specificity(self) -> u8 {
        match self {
            EntityKind::SensitiveField => 100,
            EntityKind::PrivateKey => 90,
            EntityKind::Jwt => 85,
            EntityKind::ApiKey => 80,
            EntityKind::Iban => 70,
            EntityKind::Card => 65,
            EntityKind::Email => 60,
            EntityKind::Ssn => 50,
            EntityKind::Ipv6 => 45,
            EntityKind::Ipv4 => 40,
            EntityKind::Phone => 30,
            EntityKind::HighEntropy => 10,
        }
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tag())
    }
}

/// One detected value: `text[start..end]` is of kind `kind`.
///
/// `start` and `end` are byte offsets into the scanned `&str`, always on `char` boundaries,
/// with `start < end`. `score` is the detector's confidence in `0.0..=1.0` (1.0 for values
/// that passed a checksum or a fixed vendor prefix, lower for heuristics).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Finding {
    /// What the value is.
    pub kind: EntityKind,
    /// Byte offset of the first byte of the value.
    pub start: usize,
    /// Byte offset one past the last byte of the value.
    pub end: usize,
    /// Confidence in `0.0..=1.0`.
    pub score: f32,
}

impl Finding {
    /// Length of the value in bytes.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    /// Whether the span is empty (never true for a detector's findings).
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the two spans share at least one byte.
    #[must_use]
    pub const fn overlaps(&self, other: &Finding) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// Resolves overlapping findings deterministically and returns them sorted by `start`.
///
/// Rule: the more specific kind wins ([`EntityKind::specificity`]); between equally specific
/// kinds the longer span wins; then the earlier start; then the kind order. Each kept finding
/// overlaps no other kept finding. Exact duplicates collapse into one.
#[must_use]
pub fn resolve_overlaps(mut findings: Vec<Finding>) -> Vec<Finding> {
    findings.sort_by(|a, b| {
        b.kind
            .specificity()
            .cmp(&a.kind.specificity())
            .then(b.len().cmp(&a.len()))
            .then(a.start.cmp(&b.start))
            .then(a.kind.cmp(&b.kind))
    });
    // Kept spans are disjoint, so only the kept span starting last before `f.end` can
    // overlap `f`: O(n log n) over all findings.
    let mut kept: BTreeMap<usize, Finding> = BTreeMap::new();
    for f in findings {
        if f.is_empty() {
            continue;
        }
        let clash = kept
            .range(..f.end)
            .next_back()
            .is_some_and(|(_, k)| k.end > f.start);
        if !clash {
            kept.insert(f.start, f);
        }
    }
    kept.into_values().collect()
}
