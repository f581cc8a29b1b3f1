//! Audit events and their canonical JSON body.

use bastion_types::{TenantId, UnixTime, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Longest canonical body the store accepts, in bytes (64 KiB). Larger details must be
/// summarised by the caller; an audit record is evidence, not a data dump.
pub const BODY_LEN_MAX: usize = 64 * 1024;

/// The result an audit record reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// An authorization decision allowed the action.
    Allow,
    /// An authorization decision denied the action.
    Deny,
    /// The action failed with an error (including evaluation errors, which also deny).
    Error,
    /// A non-authorization action succeeded (e.g. a login step).
    Ok,
    /// A non-authorization action failed (e.g. a wrong password).
    Fail,
}

impl Outcome {
    /// The wire name: `allow`, `deny`, `error`, `ok` or `fail`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Error => "error",
            Self::Ok => "ok",
            Self::Fail => "fail",
        }
    }
}

/// One audited fact: who did what to which target, when, with which result and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// When it happened, seconds since the Unix epoch (from the caller's `Clock`).
    pub at: UnixTime,
    /// The tenant whose chain holds the record; nil for the system chain.
    pub tenant_id: TenantId,
    /// The acting user, if one is known (absent for failed logins of unknown users).
    pub actor: Option<UserId>,
    /// What was attempted, e.g. `tool.create_quote` or `auth.login`.
    pub action: String,
    /// What it was attempted on, e.g. a record id; never a secret.
    pub target: Option<String>,
    /// The result.
    pub outcome: Outcome,
    /// Ids of the Cedar policies that decided, empty when no policy was involved.
    pub policy_ids: Vec<String>,
    /// Further redacted context (a JSON value). Never secrets, tokens, passwords or raw PII.
    pub detail: Value,
}

impl AuditEvent {
    /// The canonical JSON body of this event (sorted keys, no whitespace, UTF-8).
    ///
    /// The same event always encodes to the same bytes; the chain hashes these bytes.
    #[must_use]
    pub fn canonical_body(&self) -> String {
        let mut m = Map::new();
        m.insert("at".to_owned(), Value::from(self.at));
        m.insert(
            "tenant_id".to_owned(),
            Value::from(self.tenant_id.to_string()),
        );
        m.insert(
            "actor".to_owned(),
            self.actor
                .map_or(Value::Null, |a| Value::from(a.to_string())),
        );
        m.insert("action".to_owned(), Value::from(self.action.as_str()));
        m.insert(
            "target".to_owned(),
            self.target.as_deref().map_or(Value::Null, Value::from),
        );
        m.insert("outcome".to_owned(), Value::from(self.outcome.as_str()));
        m.insert(
            "policy_ids".to_owned(),
            Value::Array(
                self.policy_ids
                    .iter()
                    .map(|p| Value::from(p.as_str()))
                    .collect(),
            ),
        );
        m.insert("detail".to_owned(), self.detail.clone());
        canonical_json(&Value::Object(m))
    }

    /// Decodes a stored body. `None` when `body` is not the canonical encoding of an event
    /// (malformed JSON, unknown or missing fields, or non-canonical spelling).
    #[must_use]
    pub fn from_body(body: &str) -> Option<Self> {
        let event: Self = serde_json::from_str(body).ok()?;
        (event.canonical_body() == body).then_some(event)
    }
}

/// Encodes a JSON value canonically: object keys sorted by their UTF-8 bytes, no whitespace,
/// strings escaped as `serde_json` does, numbers in `serde_json`'s shortest form.
///
/// Independent of whether `serde_json` preserves insertion order (the `preserve_order`
/// feature may be enabled elsewhere in the build).
#[must_use]
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                // Display of a string `Value` is its escaped JSON form, and cannot fail.
                out.push_str(&Value::from(k.as_str()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_and_drops_whitespace() {
        let v = json!({"b": 1, "a": {"z": [1, 2, {"y": null, "x": "é\"\n"}], "c": true}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":true,"z":[1,2,{"x":"é\"\n","y":null}]},"b":1}"#
        );
    }

    #[test]
    fn body_round_trips_and_rejects_non_canonical() {
        let e = AuditEvent {
            at: 1_700_000_000,
            tenant_id: TenantId::new_random(),
            actor: Some(UserId::new_random()),
            action: "tool.create_quote".into(),
            target: None,
            outcome: Outcome::Allow,
            policy_ids: vec!["p1".into()],
            detail: json!({"b": 2, "a": 1}),
        };
        let body = e.canonical_body();
        assert!(body.starts_with(r#"{"action":"tool.create_quote","actor":""#));
        assert_eq!(AuditEvent::from_body(&body), Some(e));
        let spaced = body.replacen(':', ": ", 1);
        assert_eq!(AuditEvent::from_body(&spaced), None);
        assert_eq!(AuditEvent::from_body("{}"), None);
    }
}
