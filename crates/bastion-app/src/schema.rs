//! JSON Schema handling: local-only references, Draft 2020-12 compilation with formats on,
//! and short, value-free violation reports.

use serde_json::Value;

use crate::AppError;

/// The only accepted `$schema` value (it may also be absent).
pub(crate) const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// Most violations reported for one instance.
pub const VIOLATIONS_MAX: usize = 10;
/// Longest violation message, in characters.
const MESSAGE_CHARS_MAX: usize = 160;
/// Longest JSON pointer reported, in characters.
const POINTER_CHARS_MAX: usize = 200;

/// Compiles `schema` as Draft 2020-12 with format validation on and every external
/// reference refused (no network, no file system).
///
/// # Errors
/// [`AppError::Schema`] when the schema is not valid or references something outside itself.
pub fn compile_schema(schema: &Value) -> Result<jsonschema::Validator, AppError> {
    if let Some(r) = first_external_ref(schema) {
        return Err(AppError::Schema(format!(
            "reference `{}` is not local",
            cut(&r, 80)
        )));
    }
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .offline()
        .build(schema)
        .map_err(|e| AppError::Schema(cut(&e.masked().to_string(), MESSAGE_CHARS_MAX)))
}

/// One reason an instance failed its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaViolation {
    /// RFC 6901 JSON pointer to the offending value (`""` is the whole document).
    pub pointer: String,
    /// What is wrong, without echoing the value (values are replaced by `value`).
    pub message: String,
}

/// Validates `instance` and returns at most [`VIOLATIONS_MAX`] violations (empty: valid).
///
/// Messages never contain the offending value, so they are safe to return to callers and
/// to audit (an argument can carry PII or a prompt-injection payload).
#[must_use]
pub fn schema_violations(
    validator: &jsonschema::Validator,
    instance: &Value,
) -> Vec<SchemaViolation> {
    validator
        .iter_errors(instance)
        .take(VIOLATIONS_MAX)
        .map(|e| SchemaViolation {
            pointer: cut(e.instance_path().as_str(), POINTER_CHARS_MAX),
            message: cut(&e.masked().to_string(), MESSAGE_CHARS_MAX),
        })
        .collect()
}

/// Cuts `s` to `max` characters, marking the cut.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

/// Keywords whose string value is a reference that could leave the document.
const REF_KEYWORDS: [&str; 3] = ["$ref", "$dynamicRef", "$recursiveRef"];

/// The first reference in `schema` that is not a same-document fragment (`#...`).
pub(crate) fn first_external_ref(schema: &Value) -> Option<String> {
    let mut refs = Vec::new();
    collect_external_refs(schema, &mut refs, 0);
    refs.into_iter().next()
}

/// Every non-local reference (and `$id`/`$schema` that would change resolution) in `schema`.
pub(crate) fn collect_external_refs(value: &Value, out: &mut Vec<String>, depth: usize) {
    // Deeper documents are refused by the compiler anyway; stop walking to bound the work.
    const DEPTH_MAX: usize = 64;
    if depth > DEPTH_MAX {
        return;
    }
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if let Value::String(s) = v
                    && REF_KEYWORDS.contains(&k.as_str())
                    && !s.starts_with('#')
                {
                    out.push(s.clone());
                }
                collect_external_refs(v, out, depth + 1);
            }
        }
        Value::Array(items) => {
            for v in items {
                collect_external_refs(v, out, depth + 1);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn remote_and_file_refs_are_refused_without_fetching() {
        for r in [
            "https://example.com/s.json",
            "http://127.0.0.1:1/x",
            "file:///etc/passwd",
            "other.json#/a",
        ] {
            let s = json!({"type": "object", "properties": {"a": {"$ref": r}}});
            assert!(compile_schema(&s).is_err(), "{r} accepted");
        }
        let local =
            json!({"$defs": {"a": {"type": "string"}}, "properties": {"a": {"$ref": "#/$defs/a"}}});
        assert!(compile_schema(&local).is_ok());
    }

    #[test]
    fn violations_do_not_echo_values() {
        let v = compile_schema(&json!({
            "type": "object",
            "properties": {"email": {"type": "string", "format": "email"}, "n": {"type": "integer"}},
            "additionalProperties": false
        }))
        .unwrap();
        let out = schema_violations(
            &v,
            &json!({"email": "secret-not-an-email", "n": "4111111111111111"}),
        );
        assert_eq!(out.len(), 2, "{out:?}");
        for o in &out {
            assert!(!o.message.contains("secret-not-an-email"), "{o:?}");
            assert!(!o.message.contains("4111"), "{o:?}");
        }
        assert!(out.iter().any(|o| o.pointer == "/email"));
    }
}
