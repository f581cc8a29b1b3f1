//! Cross-tenant and role matrix generated from the manifest: every tool × every role (and a
//! principal without roles), against records created through the API in both tenants.

use std::collections::{BTreeMap, BTreeSet};

use bastion_app::{AppSpec, FieldType, ListScope, ToolKind, ToolSpec};
use bastion_types::RecordId;
use http::StatusCode;
use serde_json::{Map, Value, json};

use crate::harness::{TestApp, spawn_app};

/// What `GET /v1/tools` must advertise per role in vendor-quote. The loop below is generic;
/// only this table names tools, and it must cover every tool of the manifest.
const VENDOR_QUOTE_ADVERTISED: &[(&str, &[&str])] = &[
    (
        "buyer",
        &[
            "accept_proposal",
            "create_quote",
            "get_quote",
            "list_quotes",
        ],
    ),
    (
        "seller",
        &[
            "draft_proposal",
            "get_quote",
            "list_quotes",
            "submit_proposal",
        ],
    ),
    (
        "finance",
        &["charge_deposit", "get_quote", "issue_refund", "list_quotes"],
    ),
    ("nobody", &[]),
];

/// One principal of one tenant: the seeded user named after a role, or `nobody`.
struct Caller {
    name: String,
    token: String,
    advertised: Vec<String>,
}

/// Records of a tenant by entity, in creation order.
type Made = BTreeMap<String, Vec<RecordId>>;

struct Ctx<'a> {
    app: &'a TestApp,
    tenant: &'a str,
    caller: &'a str,
    made: &'a Made,
}

impl Ctx<'_> {
    fn user_id(&self, name: &str) -> Option<String> {
        self.app
            .users
            .get(&(self.tenant.to_owned(), name.to_owned()))
            .map(|u| u.id.to_string())
    }
    /// The last record of `entity` made (create tools run in name order, so a proposal is
    /// `submit_proposal`'s, not a `draft_proposal` draft that no buyer may accept).
    fn record(&self, entity: &str) -> Option<String> {
        self.made
            .get(entity)
            .and_then(|v| v.last())
            .map(ToString::to_string)
    }
}

/// The record-id input of a tool: `id` for get/update, the `parent` field for a create with
/// a parent. Returns (input field, entity of the record).
fn id_input(spec: &AppSpec, tool: &ToolSpec) -> Option<(String, String)> {
    match tool.kind {
        ToolKind::RecordGet | ToolKind::RecordUpdate => {
            Some(("id".to_owned(), tool.entity.clone()))
        }
        ToolKind::RecordCreate => tool.parent.as_ref().map(|p| {
            let e = spec.entities[&tool.entity].fields[p]
                .entity
                .clone()
                .unwrap();
            (p.clone(), e)
        }),
        // Money tools need an idempotency key and a PSP: tests/it/payments.rs covers them
        // (cross-tenant quote → 404, buyer → 403).
        ToolKind::RecordList | ToolKind::PaymentCharge | ToolKind::PaymentRefund => None,
    }
}

fn resolve<'a>(root: &'a Value, s: &'a Value) -> &'a Value {
    match s.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').unwrap();
            resolve(root, root.pointer(pointer).unwrap())
        }
        None => s,
    }
}

/// A value valid against `schema` (only what the manifests' schemas use).
fn gen_value(root: &Value, schema: &Value) -> Value {
    let s = resolve(root, schema);
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        return e[0].clone();
    }
    match s.get("type").and_then(Value::as_str).unwrap_or("object") {
        "string" => {
            if s.get("pattern").is_some() {
                json!("EUR")
            } else if s.get("format").and_then(Value::as_str) == Some("uuid") {
                json!(RecordId::new_random().to_string())
            } else if s.get("format").and_then(Value::as_str) == Some("email") {
                json!("someone@example.org")
            } else {
                json!("generated")
            }
        }
        "integer" | "number" => {
            let min = s.get("minimum").and_then(Value::as_i64).unwrap_or(0);
            json!(min.max(1))
        }
        "boolean" => json!(true),
        "array" => {
            let n = s
                .get("minItems")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .max(1);
            let item = s.get("items").cloned().unwrap_or(json!({}));
            Value::Array((0..n).map(|_| gen_value(root, &item)).collect())
        }
        _ => {
            let mut m = Map::new();
            let props = s.get("properties").cloned().unwrap_or(json!({}));
            for r in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let k = r.as_str().unwrap();
                m.insert(k.to_owned(), gen_value(root, &props[k]));
            }
            Value::Object(m)
        }
    }
}

/// Valid arguments for `tool` in `ctx`: required inputs only; user fields name the seeded
/// user called like the field (e.g. `seller`), else the caller; ref and id fields name the
/// first record of their entity made in this tenant.
fn gen_args(ctx: &Ctx<'_>, tool: &ToolSpec) -> Option<Value> {
    let spec = &ctx.app.spec;
    let root = &tool.input_schema;
    let Value::Object(mut args) = gen_value(root, root) else {
        panic!("tool {} input is not an object", tool.name)
    };
    let entity = &spec.entities[&tool.entity];
    for (k, v) in &mut args {
        if k == "id" {
            *v = json!(ctx.record(&tool.entity)?);
            continue;
        }
        if let Some(f) = entity.fields.get(k) {
            match f.ty {
                FieldType::User => {
                    *v = json!(ctx.user_id(k).or_else(|| ctx.user_id(ctx.caller)).unwrap());
                }
                FieldType::Ref => *v = json!(ctx.record(f.entity.as_deref().unwrap())?),
                _ => {}
            }
        }
    }
    Some(Value::Object(args))
}

async fn callers(app: &TestApp, tenant: &str) -> Vec<Caller> {
    let mut names: Vec<String> = app.spec.roles.keys().map(ToString::to_string).collect();
    names.push("nobody".to_owned());
    let mut out = Vec::new();
    for name in names {
        let token = app.login(tenant, &name).await;
        let advertised = app.advertised(&token).await;
        out.push(Caller {
            name,
            token,
            advertised,
        });
    }
    out
}

/// Creates at least one record of every entity that has a create tool, through the API, as
/// whichever role the manifest lets create it (parents first).
async fn populate(app: &TestApp, tenant: &str, callers: &[Caller]) -> Made {
    let mut made = Made::new();
    let creates: Vec<&ToolSpec> = app
        .spec
        .tools
        .values()
        .filter(|t| t.kind == ToolKind::RecordCreate)
        .collect();
    let mut done = BTreeSet::new();
    // Two records per create tool, so lists have something to page and filter.
    for _round in 0..creates.len() + 1 {
        for tool in &creates {
            if done.contains(tool.name.as_str()) {
                continue;
            }
            for c in callers
                .iter()
                .filter(|c| c.advertised.iter().any(|a| a == tool.name.as_str()))
            {
                let ctx = Ctx {
                    app,
                    tenant,
                    caller: &c.name,
                    made: &made,
                };
                let Some(args) = gen_args(&ctx, tool) else {
                    continue;
                };
                let mut ids = Vec::new();
                for _ in 0..2 {
                    let (status, body) = app.call(&c.token, tool.name.as_str(), &args).await;
                    if status == StatusCode::OK {
                        ids.push(RecordId::parse(body["result"]["id"].as_str().unwrap()).unwrap());
                    }
                }
                if !ids.is_empty() {
                    made.entry(tool.entity.clone()).or_default().extend(ids);
                    done.insert(tool.name.to_string());
                    break;
                }
            }
        }
    }
    for tool in &creates {
        assert!(
            done.contains(tool.name.as_str()),
            "{tenant}: no role could create through `{}`; extend the argument generator",
            tool.name
        );
    }
    made
}

fn has_tenant_scope(tool: &ToolSpec, role: &str) -> bool {
    tool.scope
        .iter()
        .any(|(r, s)| r.as_str() == role && *s == ListScope::Tenant)
}

#[tokio::test]
async fn advertised_tools_match_the_vendor_quote_table() {
    let app = spawn_app().await;
    let callers = callers(&app, "acme").await;
    let table: BTreeMap<&str, &[&str]> = VENDOR_QUOTE_ADVERTISED.iter().copied().collect();
    let mut covered = BTreeSet::new();
    for c in &callers {
        let want: Vec<String> = table
            .get(c.name.as_str())
            .unwrap_or_else(|| panic!("role `{}` missing from the expectation table", c.name))
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(c.advertised, want, "GET /v1/tools for {}", c.name);
        covered.extend(want);
    }
    let tools: BTreeSet<String> = app.spec.tools.keys().map(ToString::to_string).collect();
    assert_eq!(
        covered, tools,
        "every manifest tool is advertised to some role"
    );
    for c in &callers {
        let r = app.get("/v1/tools", Some(&c.token)).await;
        for t in r.json()["tools"].as_array().unwrap() {
            assert!(t["input_schema"].is_object() && t["output_schema"].is_object());
        }
    }
}

#[tokio::test]
async fn cross_tenant_ids_are_not_found_and_have_no_effect() {
    let app = spawn_app().await;
    let acme = callers(&app, "acme").await;
    let globex = callers(&app, "globex").await;
    let acme_made = populate(&app, "acme", &acme).await;
    let globex_made = populate(&app, "globex", &globex).await;
    let mut checked = 0;
    for tool in app.spec.tools.values() {
        let Some((field, entity)) = id_input(&app.spec, tool) else {
            continue;
        };
        for c in &acme {
            for foreign in &globex_made[&entity] {
                let ctx = Ctx {
                    app: &app,
                    tenant: "acme",
                    caller: &c.name,
                    made: &acme_made,
                };
                let mut args = gen_args(&ctx, tool).unwrap();
                args[field.as_str()] = json!(foreign.to_string());
                let before_g = app.snapshot("globex").await;
                let before_a = app.snapshot("acme").await;
                let (status, body) = app.call(&c.token, tool.name.as_str(), &args).await;
                let advertised = c.advertised.iter().any(|a| a == tool.name.as_str());
                if advertised {
                    assert_eq!(
                        status,
                        StatusCode::NOT_FOUND,
                        "acme {} {} with globex {entity} {foreign}: {body}",
                        c.name,
                        tool.name
                    );
                } else {
                    assert!(
                        status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
                        "acme {} {} (not advertised): {status} {body}",
                        c.name,
                        tool.name
                    );
                }
                assert!(body.get("result").is_none(), "no result leaks: {body}");
                assert_eq!(
                    app.snapshot("globex").await,
                    before_g,
                    "globex changed by acme {} {}",
                    c.name,
                    tool.name
                );
                assert_eq!(
                    app.snapshot("acme").await,
                    before_a,
                    "acme changed by a cross-tenant {}",
                    tool.name
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "the manifest has tools taking record ids");

    // List tools: acme never sees globex rows, and totals count acme rows only.
    let acme_rows = app.snapshot("acme").await;
    let globex_rows = app.snapshot("globex").await;
    for tool in app
        .spec
        .tools
        .values()
        .filter(|t| t.kind == ToolKind::RecordList)
    {
        let acme_ids: BTreeSet<String> = acme_rows
            .keys()
            .filter(|(e, _)| *e == tool.entity)
            .map(|(_, id)| id.to_string())
            .collect();
        let globex_ids: BTreeSet<String> = globex_rows
            .keys()
            .filter(|(e, _)| *e == tool.entity)
            .map(|(_, id)| id.to_string())
            .collect();
        assert!(!globex_ids.is_empty());
        for c in &acme {
            let (status, body) = app
                .call(&c.token, tool.name.as_str(), &json!({"limit": 100}))
                .await;
            if !c.advertised.iter().any(|a| a == tool.name.as_str()) {
                assert_eq!(status, StatusCode::FORBIDDEN, "{} {}", c.name, tool.name);
                continue;
            }
            assert_eq!(status, StatusCode::OK, "{} {}: {body}", c.name, tool.name);
            let items = body["result"]["items"].as_array().unwrap();
            let total = body["result"]["total"].as_u64().unwrap();
            for it in items {
                let id = it["id"].as_str().unwrap();
                assert!(
                    !globex_ids.contains(id),
                    "acme {} listed globex {id}",
                    c.name
                );
                assert!(acme_ids.contains(id));
            }
            assert!(total as usize <= acme_ids.len(), "{} total {total}", c.name);
            assert_eq!(items.len() as u64, total);
            if has_tenant_scope(tool, &c.name) {
                assert_eq!(
                    total as usize,
                    acme_ids.len(),
                    "{} with tenant scope",
                    c.name
                );
            }
        }
    }
}

#[tokio::test]
async fn every_tool_times_every_role_matches_what_is_advertised() {
    let app = spawn_app().await;
    let acme = callers(&app, "acme").await;
    for tool in app.spec.tools.values().filter(|t| !t.kind.is_payment()) {
        // Fresh records per tool: a tool's effect (accepting a proposal closes its quote)
        // must not decide what the next tool may do.
        let made = populate(&app, "acme", &acme).await;
        for c in &acme {
            let ctx = Ctx {
                app: &app,
                tenant: "acme",
                caller: &c.name,
                made: &made,
            };
            let args = gen_args(&ctx, tool).unwrap();
            let before = app.snapshot("acme").await;
            let (status, body) = app.call(&c.token, tool.name.as_str(), &args).await;
            let after = app.snapshot("acme").await;
            let advertised = c.advertised.iter().any(|a| a == tool.name.as_str());
            if !advertised {
                assert!(
                    status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
                    "{} {} not advertised but answered {status}: {body}",
                    c.name,
                    tool.name
                );
                assert_eq!(
                    after, before,
                    "{} {} not advertised but had an effect",
                    c.name, tool.name
                );
                continue;
            }
            assert_eq!(
                status,
                StatusCode::OK,
                "{} {} advertised: {body}",
                c.name,
                tool.name
            );
            match tool.kind {
                ToolKind::RecordCreate => {
                    assert_eq!(after.len(), before.len() + 1);
                    let id = RecordId::parse(body["result"]["id"].as_str().unwrap()).unwrap();
                    assert!(after.contains_key(&(tool.entity.clone(), id)));
                }
                ToolKind::RecordUpdate => {
                    let id = RecordId::parse(args["id"].as_str().unwrap()).unwrap();
                    let key = (tool.entity.clone(), id);
                    assert_eq!(after[&key].0, before[&key].0 + 1);
                    assert_eq!(after.len(), before.len());
                }
                _ => assert_eq!(after, before, "{} {} is read-only", c.name, tool.name),
            }
        }
    }
}
