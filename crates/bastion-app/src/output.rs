//! The output shape of a record, shared by every record tool.

use bastion_types::Record;
use serde_json::{Map, Value};

/// Keys the pipeline adds to every record it returns; no entity field may use them (nor
/// `owner` and `tenant`, which are Cedar attributes, nor `tenant_id`).
pub const OUTPUT_SYSTEM_FIELDS: [&str; 5] =
    ["id", "version", "owner_id", "created_at", "updated_at"];

/// A record as tools return it:
///
/// ```json
/// { "id": "<record uuid>", "version": 1, "owner_id": "<user uuid>",
///   "created_at": 1764400000, "updated_at": 1764400000,
///   "<field>": <value>, ... }
/// ```
///
/// `id`/`owner_id` are hyphenated UUID strings, `version` starts at 1, times are Unix
/// seconds; then every field present in `record.data` (system keys always win). A
/// `record.list` tool returns `{ "items": [<record>...], "total": <integer> }`. Fields of
/// any sensitivity are included: this is what an authorized caller may see; masking for
/// models and logs happens later in the pipeline.
#[must_use]
pub fn record_output(record: &Record) -> Value {
    let mut out = Map::new();
    if let Value::Object(data) = &record.data {
        for (k, v) in data {
            out.insert(k.clone(), v.clone());
        }
    }
    out.insert("id".into(), Value::String(record.id.to_string()));
    out.insert("version".into(), Value::from(record.version));
    out.insert(
        "owner_id".into(),
        Value::String(record.owner_id.to_string()),
    );
    out.insert("created_at".into(), Value::from(record.created_at));
    out.insert("updated_at".into(), Value::from(record.updated_at));
    Value::Object(out)
}
