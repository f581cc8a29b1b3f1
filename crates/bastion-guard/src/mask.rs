//! Masking: detected values become placeholders before a model sees them, and come back only
//! for principals allowed to see their kind.

use std::collections::HashMap;
use std::fmt;

use aws_lc_rs::hmac;
use serde_json::Value;

use crate::detect::Detector;
use crate::error::GuardError;
use crate::finding::{EntityKind, Finding};

/// Shortest accepted key for [`MaskMode::KeyedHash`], in bytes (the HMAC-SHA256 output size,
/// RFC 2104 §3's recommended minimum for SHA-256).
pub const HASH_KEY_LEN_MIN: usize = 32;
/// Most distinct values one [`Masker`] (one conversation) holds; more is an error.
pub const MASKED_VALUES_MAX: usize = 10_000;
/// Deepest JSON nesting [`Masker::mask_json`] walks.
pub const JSON_DEPTH_MAX: usize = 64;
/// Hex digits of the HMAC in a keyed-hash placeholder (64 bits); lengthened to 32 or 64 only
/// if two values of one conversation would otherwise collide.
pub const HASH_HEX_LEN: usize = 16;
/// Longest placeholder `restore` recognizes, in bytes (`<PRIVATE_KEY_h:` + 64 hex + `>`).
const PLACEHOLDER_LEN_MAX: usize = 96;

/// A per-tenant secret key for keyed-hash placeholders (HMAC-SHA256, RFC 2104 / FIPS 198-1).
/// `Debug` never shows the key.
pub struct HashKey(Box<hmac::Key>);

impl HashKey {
    /// Wraps `key` (at least [`HASH_KEY_LEN_MIN`] bytes, e.g. derived per tenant with HKDF).
    ///
    /// # Errors
    /// [`GuardError::HashKeyTooShort`] for a shorter key.
    pub fn new(key: &[u8]) -> Result<Self, GuardError> {
        if key.len() < HASH_KEY_LEN_MIN {
            return Err(GuardError::HashKeyTooShort {
                min: HASH_KEY_LEN_MIN,
            });
        }
        Ok(HashKey(Box::new(hmac::Key::new(hmac::HMAC_SHA256, key))))
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey(<redacted>)")
    }
}

/// How placeholders are formed.
#[derive(Debug)]
pub enum MaskMode {
    /// `<CARD_1>`, `<EMAIL_2>`, …: one counter per conversation, in order of first sight.
    Counter,
    /// `<EMAIL_h:0123456789abcdef>`: the first [`HASH_HEX_LEN`] hex digits of
    /// HMAC-SHA256(key, tag ‖ 0x00 ‖ normalized value). The same value gets the same
    /// placeholder in every conversation of the tenant (joinable, not reversible without the
    /// conversation's map).
    KeyedHash(HashKey),
}

/// Masks the values of one conversation with stable placeholders and restores them on output.
///
/// Within one `Masker`, the same value (after normalization: separators dropped from card,
/// IBAN, SSN and phone numbers; e-mail lower-cased) always gets the same placeholder, and one
/// placeholder always stands for one value. Only placeholders this masker issued are ever
/// restored: a placeholder-shaped string typed by a user or a model that the masker did not
/// issue stays as it is.
#[derive(Debug)]
pub struct Masker {
    mode: MaskMode,
    detector: &'static Detector,
    by_value: HashMap<(EntityKind, String), String>,
    by_placeholder: HashMap<String, (EntityKind, String)>,
    next: usize,
}

impl Masker {
    /// A masker for a new conversation.
    ///
    /// # Errors
    /// [`GuardError::Pattern`] if the shared detector cannot be built (a bug).
    pub fn new(mode: MaskMode) -> Result<Self, GuardError> {
        Ok(Masker {
            mode,
            detector: Detector::shared()?,
            by_value: HashMap::new(),
            by_placeholder: HashMap::new(),
            next: 1,
        })
    }

    /// Number of distinct values masked so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_placeholder.len()
    }

    /// Whether nothing was masked yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_placeholder.is_empty()
    }

    /// Replaces every detected value in `text` (all [`EntityKind`]s) with its placeholder.
    ///
    /// # Errors
    /// [`GuardError::TooManyValues`] past [`MASKED_VALUES_MAX`] distinct values.
    pub fn mask_text(&mut self, text: &str) -> Result<String, GuardError> {
        let findings = self.detector.detect(text);
        self.mask_findings(text, &findings)
    }

    /// Replaces the given findings (non-overlapping, sorted by start, as
    /// [`Detector::detect`] returns them) in `text`. Findings whose offsets do not fall on
    /// `text`'s char boundaries are skipped.
    ///
    /// # Errors
    /// [`GuardError::TooManyValues`] past [`MASKED_VALUES_MAX`] distinct values.
    pub fn mask_findings(
        &mut self,
        text: &str,
        findings: &[Finding],
    ) -> Result<String, GuardError> {
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for f in findings {
            if f.start < at {
                continue;
            }
            let (Some(before), Some(value)) = (text.get(at..f.start), text.get(f.start..f.end))
            else {
                continue;
            };
            out.push_str(before);
            out.push_str(&self.placeholder(f.kind, value)?);
            at = f.end;
        }
        out.push_str(text.get(at..).unwrap_or_default());
        Ok(out)
    }

    /// The placeholder for `value` of kind `kind`, issuing a new one on first sight.
    ///
    /// # Errors
    /// [`GuardError::TooManyValues`] past [`MASKED_VALUES_MAX`] distinct values.
    pub fn placeholder(&mut self, kind: EntityKind, value: &str) -> Result<String, GuardError> {
        let key = (kind, normalize(kind, value));
        if let Some(p) = self.by_value.get(&key) {
            return Ok(p.clone());
        }
        if self.by_placeholder.len() >= MASKED_VALUES_MAX {
            return Err(GuardError::TooManyValues {
                limit: MASKED_VALUES_MAX,
            });
        }
        let placeholder = match &self.mode {
            MaskMode::Counter => {
                let p = format!("<{}_{}>", kind.tag(), self.next);
                self.next += 1;
                p
            }
            MaskMode::KeyedHash(k) => {
                let mut msg = Vec::with_capacity(kind.tag().len() + 1 + key.1.len());
                msg.extend_from_slice(kind.tag().as_bytes());
                msg.push(0);
                msg.extend_from_slice(key.1.as_bytes());
                let full = hex::encode(hmac::sign(&k.0, &msg).as_ref());
                // Lengthen only on a collision inside this conversation.
                [HASH_HEX_LEN, 32, 64]
                    .into_iter()
                    .map(|n| format!("<{}_h:{}>", kind.tag(), full.get(..n).unwrap_or(&full)))
                    .find(|p| !self.by_placeholder.contains_key(p))
                    .unwrap_or_else(|| format!("<{}_h:{full}>", kind.tag()))
            }
        };
        self.by_placeholder
            .insert(placeholder.clone(), (kind, value.to_owned()));
        self.by_value.insert(key, placeholder.clone());
        Ok(placeholder)
    }

    /// Puts back the values of the placeholders this masker issued whose kind `allowed`
    /// accepts; every other placeholder (not allowed, or not issued here) stays as it is.
    #[must_use]
    pub fn restore(&self, text: &str, allowed: impl Fn(EntityKind) -> bool) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find('<') {
            let (before, from_open) = rest.split_at(open);
            out.push_str(before);
            let restored = from_open
                .bytes()
                .take(PLACEHOLDER_LEN_MAX)
                .position(|b| b == b'>')
                .and_then(|close| {
                    let candidate = from_open.get(..=close)?;
                    let (kind, value) = self.by_placeholder.get(candidate)?;
                    allowed(*kind).then_some((close + 1, value.as_str()))
                });
            match restored {
                Some((len, value)) => {
                    out.push_str(value);
                    rest = from_open.get(len..).unwrap_or_default();
                }
                None => {
                    out.push('<');
                    rest = from_open.get(1..).unwrap_or_default();
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// Masks a JSON document: every string or number under a key named in
    /// `sensitive_fields` (at any depth, including inside arrays and objects below it)
    /// becomes a [`EntityKind::SensitiveField`] placeholder string, whatever it looks like;
    /// every other string is masked as text ([`Masker::mask_text`]). Keys, booleans and
    /// nulls are kept. Key names are compared exactly.
    ///
    /// # Errors
    /// [`GuardError::JsonTooDeep`] past [`JSON_DEPTH_MAX`] levels;
    /// [`GuardError::TooManyValues`] past [`MASKED_VALUES_MAX`] distinct values.
    pub fn mask_json(
        &mut self,
        value: &Value,
        sensitive_fields: &[&str],
    ) -> Result<Value, GuardError> {
        self.mask_value(value, sensitive_fields, false, 0)
    }

    fn mask_value(
        &mut self,
        value: &Value,
        sensitive_fields: &[&str],
        sensitive: bool,
        depth: usize,
    ) -> Result<Value, GuardError> {
        if depth > JSON_DEPTH_MAX {
            return Err(GuardError::JsonTooDeep {
                limit: JSON_DEPTH_MAX,
            });
        }
        Ok(match value {
            Value::String(s) if sensitive => {
                Value::String(self.placeholder(EntityKind::SensitiveField, s)?)
            }
            Value::Number(n) if sensitive => {
                Value::String(self.placeholder(EntityKind::SensitiveField, &n.to_string())?)
            }
            Value::String(s) => Value::String(self.mask_text(s)?),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.mask_value(v, sensitive_fields, sensitive, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => {
                let mut out = serde_json::Map::with_capacity(map.len());
                for (k, v) in map {
                    let below = sensitive || sensitive_fields.contains(&k.as_str());
                    out.insert(
                        k.clone(),
                        self.mask_value(v, sensitive_fields, below, depth + 1)?,
                    );
                }
                Value::Object(out)
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => value.clone(),
        })
    }
}

/// The form under which two spellings of one value are the same value.
fn normalize(kind: EntityKind, value: &str) -> String {
    match kind {
        EntityKind::Card | EntityKind::Ssn | EntityKind::Iban => value
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_uppercase())
            .collect(),
        EntityKind::Phone => value
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == '+')
            .collect(),
        EntityKind::Email => value.to_ascii_lowercase(),
        _ => value.to_owned(),
    }
}
