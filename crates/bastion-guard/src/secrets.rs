//! Credential shapes: PEM private-key blocks and vendors' published API-key formats.

use std::collections::HashMap;

use regex::Regex;

use crate::detect::{PEM_LEN_MAX, found, prev_is_b64url};
use crate::error::GuardError;
use crate::finding::{EntityKind, Finding};

/// One vendor key shape: a stable rule id and its pattern.
#[derive(Clone, Copy, Debug)]
pub struct ApiKeyRule {
    /// Stable id, e.g. `stripe-secret-key`.
    pub id: &'static str,
    /// The pattern (Rust `regex` syntax) of the whole key.
    pub pattern: &'static str,
}

/// The API-key shapes detected as [`EntityKind::ApiKey`], from the vendors' documentation of
/// their key prefixes. Publishable keys (`pk_live_…`) are deliberately absent: they are meant
/// to be public.
pub const API_KEY_RULES: &[ApiKeyRule] = &[
    ApiKeyRule {
        id: "stripe-secret-key",
        pattern: r"(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{10,247}",
    },
    ApiKeyRule {
        id: "stripe-webhook-secret",
        pattern: r"whsec_[0-9A-Za-z+/=]{20,}",
    },
    ApiKeyRule {
        id: "github-token",
        pattern: r"gh[pousr]_[0-9A-Za-z]{36,251}",
    },
    ApiKeyRule {
        id: "github-fine-grained-pat",
        pattern: r"github_pat_[0-9A-Za-z_]{22,244}",
    },
    ApiKeyRule {
        id: "aws-access-key-id",
        pattern: r"(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}(?-u:\b)",
    },
    ApiKeyRule {
        id: "slack-token",
        pattern: r"xox[abposr]-[0-9A-Za-z-]{10,250}",
    },
    ApiKeyRule {
        id: "slack-webhook-url",
        pattern: r"https://hooks\.slack\.com/services/T[0-9A-Za-z_]+/B[0-9A-Za-z_]+/[0-9A-Za-z]+",
    },
    ApiKeyRule {
        id: "google-api-key",
        pattern: r"AIza[0-9A-Za-z_-]{35}",
    },
    ApiKeyRule {
        id: "openai-anthropic-key",
        pattern: r"sk-(?:proj-|svcacct-|admin-|ant-(?:api|admin)[0-9]{2}-)?[0-9A-Za-z_-]{20,}",
    },
    ApiKeyRule {
        id: "gitlab-token",
        pattern: r"glpat-[0-9A-Za-z_-]{20,}",
    },
    ApiKeyRule {
        id: "npm-token",
        pattern: r"npm_[0-9A-Za-z]{36}",
    },
    ApiKeyRule {
        id: "sendgrid-key",
        pattern: r"SG\.[0-9A-Za-z_-]{22}\.[0-9A-Za-z_-]{43}",
    },
    ApiKeyRule {
        id: "huggingface-token",
        pattern: r"hf_[0-9A-Za-z]{34,}",
    },
    ApiKeyRule {
        id: "twilio-api-key",
        pattern: r"SK[0-9a-f]{32}(?-u:\b)",
    },
];

const PEM_BEGIN_RE: &str = r"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)-----";

#[derive(Debug)]
pub(crate) struct SecretPatterns {
    pem_begin: Regex,
    /// All API-key rules as one alternation: one pass with a literal prefilter.
    api_keys: Regex,
}

impl SecretPatterns {
    pub(crate) fn new() -> Result<Self, GuardError> {
        let alternation = API_KEY_RULES
            .iter()
            .map(|r| format!("(?:{})", r.pattern))
            .collect::<Vec<_>>()
            .join("|");
        Ok(SecretPatterns {
            pem_begin: Regex::new(PEM_BEGIN_RE).map_err(|e| GuardError::Pattern(e.to_string()))?,
            api_keys: Regex::new(&alternation).map_err(|e| GuardError::Pattern(e.to_string()))?,
        })
    }

    /// PEM private-key blocks (RFC 7468): from the `BEGIN` line to the matching `END` line, or,
    /// when there is none (a truncated key), to the end of the base64 body.
    pub(crate) fn private_keys(&self, text: &str, out: &mut Vec<Finding>) {
        if !text.contains("-----BEGIN ") {
            return;
        }
        let mut from = 0;
        // Next END line per label, from the last search: keeps the scan linear when a text
        // holds many BEGIN lines and few or no END lines.
        let mut next_end: HashMap<String, Option<usize>> = HashMap::new();
        while let Some(caps) = text.get(from..).and_then(|t| self.pem_begin.captures(t)) {
            let (Some(whole), Some(label)) = (caps.get(0), caps.get(1)) else {
                break;
            };
            let start = from + whole.start();
            let body_start = from + whole.end();
            let window_end = floor_char_boundary(text, body_start.saturating_add(PEM_LEN_MAX));
            let window = text.get(body_start..window_end).unwrap_or_default();
            let end_marker = format!("-----END {}-----", label.as_str());
            let cached = next_end.get(label.as_str()).copied();
            let end_at = match cached {
                Some(Some(p)) if p >= body_start => Some(p),
                Some(None) => None,
                _ => {
                    let found = text
                        .get(body_start..)
                        .and_then(|t| t.find(&end_marker))
                        .map(|i| body_start + i);
                    next_end.insert(label.as_str().to_owned(), found);
                    found
                }
            };
            let end = match end_at.filter(|p| *p + end_marker.len() <= window_end) {
                Some(p) => p + end_marker.len(),
                None => {
                    let body_len = window
                        .bytes()
                        .take_while(|b| {
                            b.is_ascii_alphanumeric()
                                || matches!(b, b'+' | b'/' | b'=' | b'\r' | b'\n' | b' ' | b'\t')
                                || matches!(b, b':' | b',' | b'-')
                        })
                        .count();
                    body_start + body_len
                }
            };
            out.push(found(EntityKind::PrivateKey, start, end, 1.0));
            from = end.max(start + 1);
        }
    }

    pub(crate) fn api_keys(&self, text: &str, out: &mut Vec<Finding>) {
        for m in self.api_keys.find_iter(text) {
            if prev_is_b64url(text, m.start()) {
                continue;
            }
            out.push(found(EntityKind::ApiKey, m.start(), m.end(), 1.0));
        }
    }
}

/// The largest char boundary of `text` at or below `i`.
pub(crate) fn floor_char_boundary(text: &str, i: usize) -> usize {
    let mut i = i.min(text.len());
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}
