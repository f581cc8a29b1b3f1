//! Redaction of sensitive fields before anything reaches an audit record or a log.

use bastion_app::{EntitySpec, Sensitivity};
use serde_json::Value;

/// Replaces the values of fields tagged `pii`, `pci` or `secret` in a JSON object with the
/// marker `"[redacted:<tag>]"`. Unknown fields are redacted too (deny by default).
#[must_use]
pub fn redact_fields(entity: &EntitySpec, data: &Value) -> Value {
    let Some(obj) = data.as_object() else {
        return Value::String("[redacted:non-object]".to_owned());
    };
    let mut out = serde_json::Map::new();
    for (k, v) in obj {
        let shown = match entity.fields.get(k).map(|f| f.sensitivity) {
            Some(Sensitivity::Public | Sensitivity::Internal) => v.clone(),
            Some(Sensitivity::Pii) => Value::String("[redacted:pii]".to_owned()),
            Some(Sensitivity::Pci) => Value::String("[redacted:pci]".to_owned()),
            Some(Sensitivity::Secret) => Value::String("[redacted:secret]".to_owned()),
            None => Value::String("[redacted:unknown-field]".to_owned()),
        };
        out.insert(k.clone(), shown);
    }
    Value::Object(out)
}
