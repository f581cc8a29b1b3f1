//! Turning an [`AuthzRequest`] into Cedar entities, request and context, and the response
//! into a [`Decision`].

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use bastion_app::{AppSpec, FieldType};
use bastion_types::{Principal, Record, RecordId, TenantId, UserId};
use cedar_policy::{
    Authorizer as CedarAuthorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId,
    EntityTypeName, EntityUid, Request, RestrictedExpression,
};
use serde_json::Value;

use crate::policies::one_line;
use crate::schema::{ROLE, TENANT, USER, cedar_type};
use crate::{Authorizer, AuthzRequest, DECISION_ERRORS_MAX, Decision, Resource};

pub(crate) fn uid(ty: &str, id: &str) -> Result<EntityUid, String> {
    let t = EntityTypeName::from_str(ty).map_err(|_| format!("invalid entity type `{ty}`"))?;
    Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
}

fn principal_entity(p: &Principal) -> Result<(Entity, Vec<Entity>), String> {
    let mut roles = Vec::new();
    let mut parents = HashSet::new();
    for r in &p.roles {
        let role = uid(ROLE, r.as_str())?;
        parents.insert(role.clone());
        roles.push(Entity::with_uid(role));
    }
    let attrs = HashMap::from([
        (
            "tenant".to_owned(),
            RestrictedExpression::new_string(p.tenant_id.to_string()),
        ),
        (
            "username".to_owned(),
            RestrictedExpression::new_string(p.username.to_string()),
        ),
    ]);
    let user = Entity::new(uid(USER, &p.user_id.to_string())?, attrs, parents)
        .map_err(|e| format!("principal: {}", one_line(&e.to_string())))?;
    Ok((user, roles))
}

fn tenant_entity(tenant: &TenantId) -> Result<Entity, String> {
    let attrs = HashMap::from([(
        "tenant".to_owned(),
        RestrictedExpression::new_string(tenant.to_string()),
    )]);
    Entity::new(uid(TENANT, &tenant.to_string())?, attrs, HashSet::new())
        .map_err(|e| format!("tenant: {}", one_line(&e.to_string())))
}

/// A record as a Cedar entity: `tenant`, `owner` and every field Cedar may see.
pub(crate) fn record_entity(
    spec: &AppSpec,
    record: &Record,
    tenant: &TenantId,
) -> Result<Entity, String> {
    let entity = spec.entity(&record.entity).ok_or_else(|| {
        format!(
            "record of unknown entity `{}`",
            record.entity.chars().take(64).collect::<String>()
        )
    })?;
    let data = record
        .data
        .as_object()
        .ok_or("record data is not an object")?;
    let mut attrs = HashMap::from([
        (
            "tenant".to_owned(),
            RestrictedExpression::new_string(tenant.to_string()),
        ),
        (
            "owner".to_owned(),
            RestrictedExpression::new_entity_uid(uid(USER, &record.owner_id.to_string())?),
        ),
    ]);
    for (name, field) in &entity.fields {
        let Some(value) = data.get(name).filter(|v| !v.is_null()) else {
            continue;
        };
        if cedar_type(spec, field).is_none() {
            continue;
        }
        let wrong = || format!("record field `{name}` is not of type {}", field.ty.as_str());
        let expr = match (field.ty, value) {
            (FieldType::String, Value::String(s)) => RestrictedExpression::new_string(s.clone()),
            (FieldType::Integer, Value::Number(n)) => {
                RestrictedExpression::new_long(n.as_i64().ok_or_else(wrong)?)
            }
            (FieldType::Boolean, Value::Bool(b)) => RestrictedExpression::new_bool(*b),
            (FieldType::User, Value::String(s)) => {
                let id = UserId::parse(s).map_err(|_| wrong())?;
                RestrictedExpression::new_entity_uid(uid(USER, &id.to_string())?)
            }
            (FieldType::Ref, Value::String(s)) => {
                let id = RecordId::parse(s).map_err(|_| wrong())?;
                let target = field
                    .entity
                    .as_deref()
                    .and_then(|e| spec.entity(e))
                    .ok_or_else(wrong)?;
                RestrictedExpression::new_entity_uid(uid(&target.type_name(), &id.to_string())?)
            }
            _ => return Err(wrong()),
        };
        attrs.insert(name.clone(), expr);
    }
    Entity::new(
        uid(&entity.type_name(), &record.id.to_string())?,
        attrs,
        HashSet::new(),
    )
    .map_err(|e| format!("record: {}", one_line(&e.to_string())))
}

pub(crate) fn decide(authz: &Authorizer, req: &AuthzRequest<'_>) -> Result<Decision, String> {
    let spec = &authz.spec;
    if spec.tool(req.action).is_none() {
        return Err(format!(
            "unknown action `{}`",
            req.action.chars().take(64).collect::<String>()
        ));
    }
    let p = req.principal;
    let (user, roles) = principal_entity(p)?;
    let principal_uid = user.uid();
    let mut entities = vec![user];
    entities.extend(roles);

    let resource_uid = match req.resource {
        Resource::Tenant => {
            let t = tenant_entity(&p.tenant_id)?;
            let u = t.uid();
            entities.push(t);
            u
        }
        Resource::Record { record, parent } => {
            push_records(spec, &mut entities, &p.tenant_id, record, parent)?
        }
        Resource::RecordIn {
            tenant,
            record,
            parent,
        } => push_records(spec, &mut entities, &tenant, record, parent)?,
    };

    let mfa_age_secs = req.now.saturating_sub(p.auth_time).max(0);
    let context = Context::from_pairs([
        (
            "mfa_age_secs".to_owned(),
            RestrictedExpression::new_long(mfa_age_secs),
        ),
        ("now".to_owned(), RestrictedExpression::new_long(req.now)),
    ])
    .map_err(|e| format!("context: {}", one_line(&e.to_string())))?;
    let action = uid("Action", req.action)?;
    let request = Request::new(
        principal_uid,
        action,
        resource_uid,
        context,
        Some(&authz.schema),
    )
    .map_err(|e| {
        format!(
            "request does not fit the schema: {}",
            one_line(&e.to_string())
        )
    })?;
    let entities = Entities::from_entities(entities, Some(&authz.schema)).map_err(|e| {
        format!(
            "entities do not fit the schema: {}",
            one_line(&e.to_string())
        )
    })?;

    let response = CedarAuthorizer::new().is_authorized(&request, &authz.policies, &entities);
    let errors: Vec<String> = response
        .diagnostics()
        .errors()
        .take(DECISION_ERRORS_MAX)
        .map(|e| one_line(&e.to_string()))
        .collect();
    let mut policy_ids: Vec<String> = response
        .diagnostics()
        .reason()
        .map(ToString::to_string)
        .collect();
    policy_ids.sort();
    // Z2: Cedar skips erroring policies; an error anywhere means deny.
    let allowed = response.decision() == CedarDecision::Allow && errors.is_empty();
    Ok(Decision {
        allowed,
        policy_ids,
        errors,
    })
}

fn push_records(
    spec: &AppSpec,
    entities: &mut Vec<Entity>,
    tenant: &TenantId,
    record: &Record,
    parent: Option<&Record>,
) -> Result<EntityUid, String> {
    let e = record_entity(spec, record, tenant)?;
    let u = e.uid();
    entities.push(e);
    if let Some(parent) = parent {
        // The parent must be the record the resource references, or a caller could pair a
        // record with someone else's parent to satisfy `resource.<ref>.owner == principal`.
        let parent_id = parent.id.to_string();
        let referenced = spec.entity(&record.entity).is_some_and(|e| {
            e.ref_fields().any(|(field, target)| {
                target == parent.entity
                    && record.data.get(field).and_then(Value::as_str) == Some(parent_id.as_str())
            })
        });
        if !referenced {
            return Err("the parent record is not the one the record references".to_owned());
        }
        entities.push(record_entity(spec, parent, tenant)?);
    }
    Ok(u)
}
