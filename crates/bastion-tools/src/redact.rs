//! Redaction of sensitive fields before anything reaches an audit record or a log.

use bastion_app::{EntitySpec, Sensitivity, ToolSpec};
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

/// [`redact_fields`] for the arguments of `tool`: a money tool's fixed arguments are not
/// entity fields, so they are named here — the record id, amount, currency, the PSP's
/// payment-method token (never card data), the refund reason and payment id are shown; the
/// billing `address` is personal data and redacted as `pii`. Any other argument follows the
/// entity's field sensitivity (unknown: redacted).
#[must_use]
pub fn redact_args(tool: &ToolSpec, entity: &EntitySpec, args: &Value) -> Value {
    let mut shown = redact_fields(entity, args);
    if !tool.kind.is_payment() {
        return shown;
    }
    let (required, optional) = tool.kind.payment_arguments();
    let id_field = format!("{}_id", entity.name);
    if let (Some(out), Some(orig)) = (shown.as_object_mut(), args.as_object()) {
        for name in required.iter().chain(optional.iter()) {
            let name = if *name == "{entity}_id" {
                id_field.as_str()
            } else {
                name
            };
            let Some(v) = orig.get(name) else { continue };
            let value = if name == "address" {
                Value::String("[redacted:pii]".to_owned())
            } else {
                v.clone()
            };
            out.insert(name.to_owned(), value);
        }
    }
    shown
}
