//! The Cedar schema generated from the manifest (Cedar schema JSON format).
//!
//! ```text
//! entity Role;
//! entity User in [Role] { tenant: String, username: String };
//! entity Tenant { tenant: String };
//! entity Quote { tenant: String, owner: User, seller?: User, title?: String, ... };
//! action create_quote appliesTo { principal: User, resource: Tenant,
//!                                 context: { mfa_age_secs: Long, now: Long } };
//! ```
//!
//! Record fields are optional attributes (a record may lack a field), so policies must guard
//! them with `has`; strict validation enforces it. `json` fields and fields of sensitivity
//! `pii`, `pci` or `secret` are not exposed.

use bastion_app::{AppSpec, EntitySpec, FieldSpec, FieldType, ToolKind, ToolSpec};
use serde_json::{Map, Value, json};

/// Principal entity type.
pub(crate) const USER: &str = "User";
/// Role entity type (users are `in` their roles).
pub(crate) const ROLE: &str = "Role";
/// Tenant entity type: the resource of collection actions.
pub(crate) const TENANT: &str = "Tenant";

/// Whether a field is given to Cedar, and as what Cedar type.
pub(crate) fn cedar_type(spec: &AppSpec, field: &FieldSpec) -> Option<Value> {
    if !field.sensitivity.visible_to_policies() {
        return None;
    }
    Some(match field.ty {
        FieldType::String => json!({"type": "String"}),
        FieldType::Integer => json!({"type": "Long"}),
        FieldType::Boolean => json!({"type": "Boolean"}),
        FieldType::User => json!({"type": "Entity", "name": USER}),
        FieldType::Ref => {
            let target = spec.entity(field.entity.as_deref()?)?;
            json!({"type": "Entity", "name": target.type_name()})
        }
        FieldType::Json => return None,
    })
}

fn entity_shape(spec: &AppSpec, entity: &EntitySpec) -> Value {
    let mut attrs = Map::new();
    attrs.insert("tenant".into(), json!({"type": "String"}));
    attrs.insert("owner".into(), json!({"type": "Entity", "name": USER}));
    for (name, field) in &entity.fields {
        if let Some(Value::Object(mut ty)) = cedar_type(spec, field) {
            ty.insert("required".into(), Value::Bool(false));
            attrs.insert(name.clone(), Value::Object(ty));
        }
    }
    json!({"shape": {"type": "Record", "attributes": attrs}})
}

/// The Cedar resource type of a tool's action.
pub(crate) fn resource_type(spec: &AppSpec, tool: &ToolSpec) -> Option<String> {
    let entity = spec.entity(&tool.entity)?;
    Some(match tool.kind {
        ToolKind::RecordList => TENANT.to_owned(),
        ToolKind::RecordCreate => match &tool.parent {
            None => TENANT.to_owned(),
            Some(p) => spec
                .entity(entity.fields.get(p)?.entity.as_deref()?)?
                .type_name(),
        },
        ToolKind::RecordGet
        | ToolKind::RecordUpdate
        | ToolKind::PaymentCharge
        | ToolKind::PaymentRefund => entity.type_name(),
    })
}

/// The schema as Cedar schema JSON (empty namespace).
pub(crate) fn schema_json(spec: &AppSpec) -> Value {
    let mut types = Map::new();
    types.insert(ROLE.into(), json!({}));
    types.insert(
        USER.into(),
        json!({"memberOfTypes": [ROLE], "shape": {"type": "Record", "attributes": {
            "tenant": {"type": "String"}, "username": {"type": "String"}}}}),
    );
    types.insert(
        TENANT.into(),
        json!({"shape": {"type": "Record", "attributes": {"tenant": {"type": "String"}}}}),
    );
    for entity in spec.entities.values() {
        types.insert(entity.type_name(), entity_shape(spec, entity));
    }
    let mut actions = Map::new();
    for tool in spec.tools.values() {
        let Some(resource) = resource_type(spec, tool) else {
            continue;
        };
        actions.insert(
            tool.name.to_string(),
            json!({"appliesTo": {
                "principalTypes": [USER],
                "resourceTypes": [resource],
                "context": {"type": "Record", "attributes": {
                    "mfa_age_secs": {"type": "Long"}, "now": {"type": "Long"}}}
            }}),
        );
    }
    json!({"": {"entityTypes": types, "actions": actions}})
}
