//! Golden decisions: `tests/cases/{allowed,denied}/<name>/request.json` (+ `readme.md`
//! saying why), all run by [`check`].
//!
//! `request.json`:
//! ```json
//! { "app": "z2", "unvalidated": true,            // optional: tests/apps/<app> policies
//!   "principal": { "tenant": "acme", "username": "bob", "roles": ["buyer"], "mfa_age_secs": 60 },
//!   "action": "get_quote",
//!   "resource": "tenant" | { "entity": "quote", "owner": "bob", "tenant": "globex",
//!                            "name": "q1", "data": { ... }, "parent": { ...same... } },
//!   "expect": { "allowed": false, "policy_ids": ["tenant-guard"], "errors": false } }
//! ```
//! In records, a user is `name` or `tenant/name` (default: the record's tenant); in `data`,
//! `"@name"` / `"@tenant/name"` is that user's id and `"#q1"` the id of the record named
//! `q1`. Ids are derived from these names, so they are stable across runs. With a resource
//! `tenant`, the record is passed as `Resource::RecordIn` (its tenant known), otherwise as
//! `Resource::Record` (read through the caller's tenant transaction).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use bastion_app::AppSpec;
use bastion_authz::{Authorizer, AuthzRequest, Resource};
use bastion_types::{AuthMethod, Principal, Record, RecordId, Slug, TenantId, UserId};
use serde_json::Value;

use crate::{app_with_test_policies, crate_dir, vendor_quote};

const NOW: i64 = 1_764_400_000;

/// A stable UUID from a name (FNV-1a, formatted as a v4-looking UUID).
fn uuid_of(kind: &str, name: &str) -> String {
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in kind.bytes().chain([0]).chain(name.bytes()) {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013B);
    }
    let hex = format!("{h:032x}");
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

fn tenant_id(slug: &str) -> TenantId {
    TenantId::parse(&uuid_of("tenant", slug)).unwrap()
}

/// `bob` (in `default_tenant`) or `acme/bob`.
fn user_id(default_tenant: &str, who: &str) -> UserId {
    let full = if who.contains('/') {
        who.to_owned()
    } else {
        format!("{default_tenant}/{who}")
    };
    UserId::parse(&uuid_of("user", &full)).unwrap()
}

fn record_id(name: &str) -> RecordId {
    RecordId::parse(&uuid_of("record", name)).unwrap()
}

fn resolve(tenant: &str, v: &Value) -> Value {
    match v {
        Value::String(s) if s.starts_with('@') => {
            Value::String(user_id(tenant, &s[1..]).to_string())
        }
        Value::String(s) if s.starts_with('#') => Value::String(record_id(&s[1..]).to_string()),
        Value::Array(a) => Value::Array(a.iter().map(|x| resolve(tenant, x)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), resolve(tenant, x)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn record(tenant: &str, r: &Value, fallback_name: &str) -> Record {
    let name = r["name"].as_str().unwrap_or(fallback_name);
    Record {
        id: record_id(name),
        entity: r["entity"].as_str().unwrap().to_owned(),
        owner_id: user_id(tenant, r["owner"].as_str().unwrap()),
        data: resolve(tenant, &r["data"]),
        version: 1,
        created_at: NOW - 100,
        updated_at: NOW - 100,
    }
}

fn principal(p: &Value) -> Principal {
    let tenant = p["tenant"].as_str().unwrap();
    let username = p["username"].as_str().unwrap();
    Principal {
        tenant_id: tenant_id(tenant),
        tenant: Slug::parse(tenant).unwrap(),
        user_id: user_id(tenant, username),
        username: Slug::parse(username).unwrap(),
        roles: p["roles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| Slug::parse(r.as_str().unwrap()).unwrap())
            .collect(),
        amr: vec![AuthMethod::Pwd, AuthMethod::Otp],
        auth_time: NOW - p["mfa_age_secs"].as_i64().unwrap_or(0),
        token_id: "golden".into(),
    }
}

struct Authorizers(BTreeMap<(String, bool), Authorizer>);

impl Authorizers {
    fn get(&mut self, app: &str, unvalidated: bool) -> &Authorizer {
        self.0
            .entry((app.to_owned(), unvalidated))
            .or_insert_with(|| {
                let spec: AppSpec = if app == "vendor-quote" {
                    vendor_quote()
                } else {
                    app_with_test_policies(app)
                };
                if unvalidated {
                    Authorizer::new_unvalidated_for_tests(&spec).unwrap()
                } else {
                    Authorizer::new(&spec).unwrap()
                }
            })
    }
}

/// Runs one case; `Some(reason)` when it does not hold.
fn check(dir: &Path, authorizers: &mut Authorizers) -> Option<String> {
    let readme = dir.join("readme.md");
    if !readme.is_file() {
        return Some("readme.md missing".into());
    }
    let req: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("request.json")).unwrap()).unwrap();
    let app = req["app"].as_str().unwrap_or("vendor-quote");
    let authz = authorizers.get(app, req["unvalidated"].as_bool().unwrap_or(false));
    let p = principal(&req["principal"]);
    let p_tenant = req["principal"]["tenant"].as_str().unwrap();
    let (rec, parent, tenant);
    let resource = if req["resource"] == "tenant" {
        Resource::Tenant
    } else {
        let r = &req["resource"];
        let t = r["tenant"].as_str().unwrap_or(p_tenant);
        rec = record(t, r, "resource");
        parent = r.get("parent").map(|pr| record(t, pr, "parent"));
        if r.get("tenant").is_some() {
            tenant = tenant_id(t);
            Resource::RecordIn {
                tenant,
                record: &rec,
                parent: parent.as_ref(),
            }
        } else {
            Resource::Record {
                record: &rec,
                parent: parent.as_ref(),
            }
        }
    };
    let d = authz.decide(&AuthzRequest {
        principal: &p,
        action: req["action"].as_str().unwrap(),
        resource,
        now: NOW,
    });
    let expect = &req["expect"];
    let want_ids: Vec<String> = expect["policy_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let want_errors = expect["errors"].as_bool().unwrap();
    // An allow never carries errors.
    let consistent = !d.allowed || d.errors.is_empty();
    let ok = consistent
        && d.allowed == expect["allowed"].as_bool().unwrap()
        && d.policy_ids == want_ids
        && d.errors.is_empty() != want_errors;
    (!ok).then(|| format!("expected {expect}, got {d:?}"))
}

#[test]
fn golden_decisions() {
    let mut authorizers = Authorizers(BTreeMap::new());
    let mut failures = Vec::new();
    let mut count = 0;
    for kind in ["allowed", "denied"] {
        let mut dirs: Vec<_> = fs::read_dir(crate_dir().join("tests/cases").join(kind))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        dirs.sort();
        for dir in dirs {
            count += 1;
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let expect_allowed = kind == "allowed";
            let req: Value =
                serde_json::from_str(&fs::read_to_string(dir.join("request.json")).unwrap())
                    .unwrap();
            if req["expect"]["allowed"].as_bool() != Some(expect_allowed) {
                failures.push(format!(
                    "{kind}/{name}: expect.allowed disagrees with the folder"
                ));
                continue;
            }
            if let Some(why) = check(&dir, &mut authorizers) {
                failures.push(format!("{kind}/{name}: {why}"));
            }
        }
    }
    assert!(count >= 30, "only {count} cases found");
    assert!(
        failures.is_empty(),
        "{} of {count} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
