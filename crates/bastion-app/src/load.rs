//! Reading and checking an app directory. Every problem becomes a [`Finding`]; loading goes
//! on after a problem where it can, so one run reports as much as possible.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use bastion_types::Slug;
use serde_json::{Map, Value};
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

use crate::limits::{
    ENTITIES_MAX, FIELDS_PER_ENTITY_MAX, FILE_BYTES_MAX, FINDINGS_MAX, POLICY_FILES_MAX, ROLES_MAX,
    TOOLS_MAX,
};
use crate::output::OUTPUT_SYSTEM_FIELDS;
use crate::schema::{DRAFT_2020_12, collect_external_refs, compile_schema};
use crate::spec::{
    APPROVAL_MFA_MAX_AGE_SECS_MAX, APPROVAL_SECS_MIN, APPROVAL_TTL_SECS_MAX, AppSpec, ApprovalSpec,
    EntitySpec, FieldSpec, FieldType, ListScope, PaymentsSpec, PolicyFile, Risk, RoleSpec,
    SET_CALLER, Sensitivity, ToolKind, ToolSpec, VelocityRule, VelocitySubject, pascal_case,
};
use crate::{Finding, line_of};

/// Field names that collide with the record envelope or Cedar attributes.
const RESERVED_FIELDS: [&str; 3] = ["owner", "tenant", "tenant_id"];
/// Entity type names (PascalCase) used by Bastion's own Cedar schema or by Cedar's types.
const RESERVED_TYPES: [&str; 12] = [
    "User",
    "Role",
    "Tenant",
    "Action",
    "String",
    "Long",
    "Bool",
    "Boolean",
    "Set",
    "Record",
    "Entity",
    "Extension",
];
/// Input properties a `record.list` tool may accept (paging).
const LIST_INPUT_PROPERTIES: [&str; 2] = ["limit", "offset"];

pub(crate) fn load(dir: &Path) -> Result<AppSpec, Vec<Finding>> {
    let mut findings = Vec::new();
    let manifest_path = dir.join("app.toml");
    let spec = match read_text(&manifest_path) {
        Err(f) => {
            findings.push(f);
            None
        }
        Ok(text) => load_manifest(dir, &manifest_path, &text, &mut findings),
    };
    let policies = load_policies(dir, &manifest_path, &mut findings);
    match spec {
        Some(mut spec) if findings.is_empty() => {
            spec.policies = policies;
            Ok(spec)
        }
        _ => {
            findings.sort();
            findings.dedup();
            if findings.len() > FINDINGS_MAX {
                let more = findings.len() - FINDINGS_MAX;
                findings.truncate(FINDINGS_MAX);
                findings.push(Finding::new(
                    &manifest_path,
                    1,
                    format!("{more} more findings not shown"),
                ));
            }
            if findings.is_empty() {
                findings.push(Finding::new(
                    &manifest_path,
                    1,
                    "manifest could not be loaded",
                ));
            }
            Err(findings)
        }
    }
}

/// Reads a UTF-8 file of at most [`FILE_BYTES_MAX`] bytes.
fn read_text(path: &Path) -> Result<String, Finding> {
    let file = std::fs::File::open(path).map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::NotFound {
            "file not found"
        } else {
            "file cannot be read"
        };
        Finding::new(path, 1, why)
    })?;
    let mut bytes = Vec::new();
    file.take(FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|_| Finding::new(path, 1, "file cannot be read"))?;
    if bytes.len() as u64 > FILE_BYTES_MAX {
        return Err(Finding::new(path, 1, "file is larger than the 1 MiB limit"));
    }
    String::from_utf8(bytes).map_err(|_| Finding::new(path, 1, "file is not UTF-8"))
}

fn load_policies(dir: &Path, manifest: &Path, findings: &mut Vec<Finding>) -> Vec<PolicyFile> {
    let pdir = dir.join("policies");
    let Ok(entries) = std::fs::read_dir(&pdir) else {
        findings.push(Finding::new(
            manifest,
            1,
            "no `policies/` directory: every tool would be denied",
        ));
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "cedar"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        findings.push(Finding::new(
            manifest,
            1,
            "no `policies/*.cedar` file: every tool would be denied",
        ));
    }
    if paths.len() > POLICY_FILES_MAX {
        findings.push(Finding::new(
            &pdir,
            1,
            format!("more than {POLICY_FILES_MAX} policy files"),
        ));
        paths.truncate(POLICY_FILES_MAX);
    }
    let mut out = Vec::new();
    for path in paths {
        match read_text(&path) {
            Ok(text) => out.push(PolicyFile { path, text }),
            Err(f) => findings.push(f),
        }
    }
    out
}

/// Findings in one TOML file, with spans turned into lines.
struct Cx<'a> {
    file: &'a Path,
    text: &'a str,
    findings: &'a mut Vec<Finding>,
}

impl Cx<'_> {
    fn at(&mut self, span: &Range<usize>, message: impl Into<String>) {
        self.findings.push(Finding::new(
            self.file,
            line_of(self.text, span.start),
            message,
        ));
    }
}

type Key<'i> = Spanned<DeString<'i>>;
type Val<'i> = Spanned<DeValue<'i>>;

fn get<'t, 'i>(t: &'t DeTable<'i>, key: &str) -> Option<&'t Val<'i>> {
    t.iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(_, v)| v)
}

fn check_keys(cx: &mut Cx<'_>, t: &DeTable<'_>, allowed: &[&str], what: &str) {
    for (k, _) in t {
        let name: &str = k.get_ref();
        if !allowed.contains(&name) {
            cx.at(
                &k.span(),
                format!("unknown key `{}` in {what}", short(name)),
            );
        }
    }
}

fn as_table<'t, 'i>(cx: &mut Cx<'_>, v: &'t Val<'i>, what: &str) -> Option<&'t DeTable<'i>> {
    let t = v.get_ref().as_table();
    if t.is_none() {
        cx.at(&v.span(), format!("{what} must be a table"));
    }
    t
}

/// A string value: `Some((value, span))`; a finding when it is missing (and `required`) or
/// not a string.
fn string(
    cx: &mut Cx<'_>,
    t: &DeTable<'_>,
    key: &str,
    at: &Range<usize>,
    what: &str,
    required: bool,
) -> Option<(String, Range<usize>)> {
    match get(t, key) {
        None => {
            if required {
                cx.at(at, format!("{what}: missing `{key}`"));
            }
            None
        }
        Some(v) => match v.get_ref().as_str() {
            Some(s) => Some((s.to_owned(), v.span())),
            None => {
                cx.at(&v.span(), format!("{what}: `{key}` must be a string"));
                None
            }
        },
    }
}

/// Manifest names quoted in messages are cut so a hostile file cannot blow up the output.
fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Entity and field names: `[a-z][a-z0-9_]*`, 1–63 characters (valid Cedar identifiers
/// once PascalCased, and valid JSON keys everywhere).
fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= Slug::LEN_MAX
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.ends_with('_')
        && !s.contains("__")
}

fn load_manifest(
    dir: &Path,
    file: &Path,
    text: &str,
    findings: &mut Vec<Finding>,
) -> Option<AppSpec> {
    let root = match DeTable::parse(text) {
        Ok(t) => t,
        Err(e) => {
            let line = e.span().map_or(1, |s| line_of(text, s.start));
            findings.push(Finding::new(
                file,
                line,
                format!("invalid toml: {}", short_msg(e.message())),
            ));
            return None;
        }
    };
    let before = findings.len();
    let mut cx = Cx {
        file,
        text,
        findings,
    };
    let root_span = root.span();
    let root = root.get_ref();
    check_keys(
        &mut cx,
        root,
        &["app", "roles", "entities", "tools", "payments"],
        "the manifest",
    );

    let (name, region) = load_app(&mut cx, root, &root_span);
    let roles = load_roles(&mut cx, root);
    let entities = load_entities(&mut cx, root, &roles);
    let mut schemas = SchemaCache::default();
    let tools = load_tools(&mut cx, dir, root, &roles, &entities, &mut schemas);
    let payments = load_payments(&mut cx, root);
    for f in schemas.findings {
        cx.findings.push(f);
    }
    if cx.findings.len() > before {
        return None;
    }
    Some(AppSpec {
        name: name?,
        region,
        dir: dir.to_path_buf(),
        roles: roles.into_iter().map(|(k, (v, _))| (k, v)).collect(),
        entities,
        tools,
        policies: Vec::new(),
        payments,
    })
}

const VELOCITY_KEYS: [&str; 4] = ["subject", "window_secs", "max_count", "max_amount_minor"];

/// `[payments]` with `[[payments.velocity]]` rules; every key of a rule is required and
/// unknown keys are findings.
fn load_payments(cx: &mut Cx<'_>, root: &DeTable<'_>) -> PaymentsSpec {
    let mut out = PaymentsSpec::default();
    let Some(p) = get(root, "payments") else {
        return out;
    };
    let Some(p) = as_table(cx, p, "`payments`") else {
        return out;
    };
    check_keys(cx, p, &["velocity"], "`[payments]`");
    let Some(v) = get(p, "velocity") else {
        return out;
    };
    let Some(rules) = v.get_ref().as_array() else {
        cx.at(
            &v.span(),
            "`payments.velocity` must be an array of tables (`[[payments.velocity]]`)",
        );
        return out;
    };
    if rules.len() > crate::limits::VELOCITY_RULES_MAX {
        cx.at(
            &v.span(),
            format!(
                "more than {} velocity rules",
                crate::limits::VELOCITY_RULES_MAX
            ),
        );
        return out;
    }
    for r in rules.iter() {
        let span = r.span();
        let what = "`[[payments.velocity]]`";
        let Some(t) = as_table(cx, r, what) else {
            continue;
        };
        check_keys(cx, t, &VELOCITY_KEYS, what);
        let subject = string(cx, t, "subject", &span, what, true).and_then(|(s, sp)| {
            let k = VelocitySubject::parse(&s);
            if k.is_none() {
                cx.at(
                    &sp,
                    format!(
                        "unknown velocity subject `{}` (customer, card, address)",
                        short(&s)
                    ),
                );
            }
            k
        });
        let mut int =
            |key: &str, max: i64| -> Option<i64> {
                match get(t, key) {
                    None => {
                        cx.at(&span, format!("{what}: missing `{key}`"));
                        None
                    }
                    Some(v) => match v.get_ref().as_integer().and_then(|i| {
                        i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok()
                    }) {
                        Some(i) if (1..=max).contains(&i) => Some(i),
                        _ => {
                            cx.at(
                                &v.span(),
                                format!("{what}: `{key}` must be an integer in 1..={max}"),
                            );
                            None
                        }
                    },
                }
            };
        let window = int("window_secs", crate::limits::VELOCITY_WINDOW_SECS_MAX);
        let count = int("max_count", i64::from(u32::MAX));
        let amount = int("max_amount_minor", 1_000_000_000_000);
        if let (Some(subject), Some(window_secs), Some(max_count), Some(max_amount_minor)) =
            (subject, window, count, amount)
        {
            out.velocity.push(VelocityRule {
                subject,
                window_secs,
                max_count,
                max_amount_minor,
            });
        }
    }
    out
}

fn short_msg(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(160).collect()
}

fn load_app(
    cx: &mut Cx<'_>,
    root: &DeTable<'_>,
    root_span: &Range<usize>,
) -> (Option<String>, String) {
    let Some(app) = get(root, "app") else {
        cx.at(root_span, "missing `[app]` table");
        return (None, String::new());
    };
    let span = app.span();
    let Some(app) = as_table(cx, app, "`app`") else {
        return (None, String::new());
    };
    check_keys(cx, app, &["name", "region"], "`[app]`");
    let name = string(cx, app, "name", &span, "`[app]`", true).and_then(|(n, s)| {
        if Slug::parse(&n).is_err() {
            cx.at(
                &s,
                format!(
                    "app name `{}` is not a valid name (a-z, 0-9, -, _)",
                    short(&n)
                ),
            );
            None
        } else {
            Some(n)
        }
    });
    let region = string(cx, app, "region", &span, "`[app]`", false)
        .map(|(r, _)| r)
        .unwrap_or_default();
    (name, region)
}

fn load_roles(cx: &mut Cx<'_>, root: &DeTable<'_>) -> BTreeMap<Slug, (RoleSpec, usize)> {
    let mut out = BTreeMap::new();
    let Some(roles) = get(root, "roles") else {
        return out;
    };
    let Some(roles) = as_table(cx, roles, "`roles`") else {
        return out;
    };
    if roles.len() > ROLES_MAX {
        if let Some((k, _)) = roles.iter().next() {
            cx.at(&k.span(), format!("more than {ROLES_MAX} roles"));
        }
        return out;
    }
    for (k, v) in roles {
        let what = format!("role `{}`", short(k.get_ref()));
        let Ok(name) = Slug::parse(k.get_ref()) else {
            cx.at(
                &k.span(),
                format!(
                    "role name `{}` is not a valid name (a-z, 0-9, -, _)",
                    short(k.get_ref())
                ),
            );
            continue;
        };
        let Some(t) = as_table(cx, v, &what) else {
            continue;
        };
        check_keys(cx, t, &["description"], &what);
        let description = string(cx, t, "description", &k.span(), &what, false)
            .map(|(d, _)| d)
            .unwrap_or_default();
        let line = line_of(cx.text, k.span().start);
        out.insert(name.clone(), (RoleSpec { name, description }, line));
    }
    out
}

fn load_entities(
    cx: &mut Cx<'_>,
    root: &DeTable<'_>,
    roles: &BTreeMap<Slug, (RoleSpec, usize)>,
) -> BTreeMap<String, EntitySpec> {
    let mut out = BTreeMap::new();
    let Some(ents) = get(root, "entities") else {
        return out;
    };
    let Some(ents) = as_table(cx, ents, "`entities`") else {
        return out;
    };
    if ents.len() > ENTITIES_MAX {
        if let Some((k, _)) = ents.iter().next() {
            cx.at(&k.span(), format!("more than {ENTITIES_MAX} entities"));
        }
        return out;
    }
    let mut pending_refs: Vec<(String, Range<usize>)> = Vec::new();
    for (k, v) in ents {
        let name: &str = k.get_ref();
        let what = format!("entity `{}`", short(name));
        if !is_ident(name) {
            cx.at(&k.span(), format!("entity name `{}` is not valid: use a-z, 0-9 and single _, starting with a letter", short(name)));
            continue;
        }
        if RESERVED_TYPES.contains(&pascal_case(name).as_str()) {
            cx.at(&k.span(), format!("entity name `{name}` is reserved"));
            continue;
        }
        let Some(t) = as_table(cx, v, &what) else {
            continue;
        };
        check_keys(cx, t, &["description", "fields"], &what);
        let description = string(cx, t, "description", &k.span(), &what, false)
            .map(|(d, _)| d)
            .unwrap_or_default();
        let fields = load_fields(cx, t, k, &what, &mut pending_refs, roles);
        out.insert(
            name.to_owned(),
            EntitySpec {
                name: name.to_owned(),
                description,
                fields,
                line: line_of(cx.text, k.span().start),
            },
        );
    }
    for (target, span) in pending_refs {
        if !out.contains_key(&target) {
            cx.at(&span, format!("unknown entity `{}`", short(&target)));
        }
    }
    out
}

fn load_fields(
    cx: &mut Cx<'_>,
    entity: &DeTable<'_>,
    key: &Key<'_>,
    what: &str,
    pending_refs: &mut Vec<(String, Range<usize>)>,
    roles: &BTreeMap<Slug, (RoleSpec, usize)>,
) -> BTreeMap<String, FieldSpec> {
    let mut out = BTreeMap::new();
    let Some(fields) = get(entity, "fields") else {
        cx.at(&key.span(), format!("{what}: missing `fields`"));
        return out;
    };
    let Some(fields) = as_table(cx, fields, &format!("{what}: `fields`")) else {
        return out;
    };
    if fields.len() > FIELDS_PER_ENTITY_MAX {
        cx.at(
            &key.span(),
            format!("{what} has more than {FIELDS_PER_ENTITY_MAX} fields"),
        );
        return out;
    }
    for (fk, fv) in fields {
        let fname: &str = fk.get_ref();
        let fwhat = format!("field `{}`", short(fname));
        if !is_ident(fname) {
            cx.at(&fk.span(), format!("field name `{}` is not valid: use a-z, 0-9 and single _, starting with a letter", short(fname)));
            continue;
        }
        if RESERVED_FIELDS.contains(&fname) || OUTPUT_SYSTEM_FIELDS.contains(&fname) {
            cx.at(&fk.span(), format!("field name `{fname}` is reserved"));
            continue;
        }
        let Some(t) = as_table(cx, fv, &fwhat) else {
            continue;
        };
        check_keys(
            cx,
            t,
            &["type", "sensitivity", "entity", "role", "description"],
            &fwhat,
        );
        let ty = string(cx, t, "type", &fk.span(), &fwhat, true).and_then(|(s, sp)| {
            let ty = FieldType::parse(&s);
            if ty.is_none() {
                cx.at(
                    &sp,
                    format!(
                        "unknown field type `{}` (string, integer, boolean, user, ref, json)",
                        short(&s)
                    ),
                );
            }
            ty
        });
        let sensitivity =
            string(cx, t, "sensitivity", &fk.span(), &fwhat, true).and_then(|(s, sp)| {
                let v = Sensitivity::parse(&s);
                if v.is_none() {
                    cx.at(
                        &sp,
                        format!(
                            "unknown sensitivity `{}` (public, internal, pii, pci, secret)",
                            short(&s)
                        ),
                    );
                }
                v
            });
        let target = string(cx, t, "entity", &fk.span(), &fwhat, false);
        let role = string(cx, t, "role", &fk.span(), &fwhat, false);
        let description = string(cx, t, "description", &fk.span(), &fwhat, false)
            .map(|(d, _)| d)
            .unwrap_or_default();
        let (Some(ty), Some(sensitivity)) = (ty, sensitivity) else {
            continue;
        };
        let entity = match (ty, target) {
            (FieldType::Ref, Some((e, sp))) => {
                pending_refs.push((e.clone(), sp));
                Some(e)
            }
            (FieldType::Ref, None) => {
                cx.at(&fk.span(), format!("{fwhat} of type `ref` needs `entity`"));
                continue;
            }
            (_, Some((_, sp))) => {
                cx.at(
                    &sp,
                    format!("{fwhat}: `entity` is only for fields of type `ref`"),
                );
                continue;
            }
            (_, None) => None,
        };
        let role = match (ty, role) {
            (_, None) => None,
            (FieldType::User, Some((r, sp))) => {
                match Slug::parse(&r).ok().filter(|r| roles.contains_key(r)) {
                    Some(r) => Some(r),
                    None => {
                        cx.at(&sp, format!("{fwhat}: unknown role `{}`", short(&r)));
                        continue;
                    }
                }
            }
            (_, Some((_, sp))) => {
                cx.at(
                    &sp,
                    format!("{fwhat}: `role` is only for fields of type `user`"),
                );
                continue;
            }
        };
        if matches!(ty, FieldType::User | FieldType::Ref) && !sensitivity.visible_to_policies() {
            cx.at(&fk.span(), format!("{fwhat}: `user` and `ref` fields are identifiers: use sensitivity public or internal"));
            continue;
        }
        out.insert(
            fname.to_owned(),
            FieldSpec {
                name: fname.to_owned(),
                ty,
                sensitivity,
                entity,
                role,
                description,
            },
        );
    }
    out
}

/// Schema files read so far (several tools often share an output schema), and findings
/// about the files themselves.
#[derive(Default)]
struct SchemaCache {
    files: BTreeMap<PathBuf, Option<(Value, String)>>,
    findings: Vec<Finding>,
}

impl SchemaCache {
    /// The schema at `rel` (relative to `dir`) with its text, checked once: JSON, no
    /// foreign `$schema`/`$id`, only local references, compiles under Draft 2020-12.
    fn get(&mut self, dir: &Path, rel: &str) -> Option<(PathBuf, Value, String)> {
        let path = dir.join(rel);
        if !self.files.contains_key(&path) {
            let loaded = self.check(&path);
            self.files.insert(path.clone(), loaded);
        }
        self.files
            .get(&path)
            .and_then(|o| o.as_ref())
            .map(|(v, t)| (path.clone(), v.clone(), t.clone()))
    }

    fn check(&mut self, path: &Path) -> Option<(Value, String)> {
        let text = match read_text(path) {
            Ok(t) => t,
            Err(f) => {
                self.findings
                    .push(Finding::new(path, 1, format!("json schema: {}", f.message)));
                return None;
            }
        };
        let value: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                self.findings.push(Finding::new(
                    path,
                    e.line(),
                    "json schema file is not valid JSON",
                ));
                return None;
            }
        };
        let before = self.findings.len();
        if let Some(obj) = value.as_object() {
            if let Some(s) = obj.get("$schema")
                && s.as_str() != Some(DRAFT_2020_12)
            {
                self.findings.push(Finding::new(
                    path,
                    line_of_key(&text, "$schema"),
                    format!("`$schema` must be `{DRAFT_2020_12}` or absent"),
                ));
            }
            if obj.contains_key("$id") {
                self.findings.push(Finding::new(
                    path,
                    line_of_key(&text, "$id"),
                    "`$id` is not allowed: schemas are resolved locally",
                ));
            }
        } else {
            self.findings
                .push(Finding::new(path, 1, "json schema must be an object"));
        }
        let mut refs = Vec::new();
        collect_external_refs(&value, &mut refs, 0);
        for r in &refs {
            self.findings.push(Finding::new(
                path,
                line_of_str(&text, r),
                format!("`$ref` to `{}` is not local: only `#...` references are allowed (nothing is fetched)", short(r)),
            ));
        }
        if self.findings.len() > before {
            return None;
        }
        if let Err(e) = compile_schema(&value) {
            self.findings.push(Finding::new(
                path,
                1,
                format!("not a valid json schema (draft 2020-12): {e}"),
            ));
            return None;
        }
        Some((value, text))
    }
}

/// Line of the first `"key"` in a JSON text (1 if absent).
fn line_of_key(text: &str, key: &str) -> usize {
    line_of_str(text, key)
}

/// Line of `"s"` in a JSON text, preferring its use as a key (`"s":`), else its first
/// occurrence (1 if absent).
fn line_of_str(text: &str, s: &str) -> usize {
    let quoted = format!("\"{s}\"");
    let as_key = text.match_indices(&quoted).find(|(off, _)| {
        text.get(off + quoted.len()..)
            .is_some_and(|rest| rest.trim_start().starts_with(':'))
    });
    as_key
        .map(|(off, _)| off)
        .or_else(|| text.find(&quoted))
        .map_or(1, |off| line_of(text, off))
}

fn load_tools(
    cx: &mut Cx<'_>,
    dir: &Path,
    root: &DeTable<'_>,
    roles: &BTreeMap<Slug, (RoleSpec, usize)>,
    entities: &BTreeMap<String, EntitySpec>,
    schemas: &mut SchemaCache,
) -> BTreeMap<Slug, ToolSpec> {
    let mut out = BTreeMap::new();
    let Some(tools) = get(root, "tools") else {
        return out;
    };
    let Some(tools) = as_table(cx, tools, "`tools`") else {
        return out;
    };
    if tools.len() > TOOLS_MAX {
        if let Some((k, _)) = tools.iter().next() {
            cx.at(&k.span(), format!("more than {TOOLS_MAX} tools"));
        }
        return out;
    }
    for (k, v) in tools {
        if let Some(tool) = load_tool(cx, dir, k, v, roles, entities, schemas) {
            out.insert(tool.name.clone(), tool);
        }
    }
    out
}

const TOOL_KEYS: [&str; 11] = [
    "kind",
    "entity",
    "risk",
    "description",
    "input_schema",
    "output_schema",
    "parent",
    "set",
    "set_parent",
    "scope",
    "approval",
];

fn load_tool(
    cx: &mut Cx<'_>,
    dir: &Path,
    key: &Key<'_>,
    value: &Val<'_>,
    roles: &BTreeMap<Slug, (RoleSpec, usize)>,
    entities: &BTreeMap<String, EntitySpec>,
    schemas: &mut SchemaCache,
) -> Option<ToolSpec> {
    let raw_name: &str = key.get_ref();
    let what = format!("tool `{}`", short(raw_name));
    let hs = key.span();
    let name = Slug::parse(raw_name).map_err(|_| {
        cx.at(
            &hs,
            format!(
                "tool name `{}` is not a valid name (a-z, 0-9, -, _)",
                short(raw_name)
            ),
        );
    });
    let t = as_table(cx, value, &what)?;
    check_keys(cx, t, &TOOL_KEYS, &what);
    let before = cx.findings.len();

    let kind = string(cx, t, "kind", &hs, &what, true).and_then(|(s, sp)| {
        let k = ToolKind::parse(&s);
        if k.is_none() {
            cx.at(&sp, format!("tool kind `{}` is not implemented (record.create, record.get, record.list, record.update, payment.charge, payment.refund)", short(&s)));
        }
        k
    });
    let entity =
        string(cx, t, "entity", &hs, &what, true).and_then(|(s, sp)| match entities.get(&s) {
            Some(e) => Some(e),
            None => {
                cx.at(&sp, format!("{what} names unknown entity `{}`", short(&s)));
                None
            }
        });
    let risk = string(cx, t, "risk", &hs, &what, true).and_then(|(s, sp)| {
        let r = Risk::parse(&s);
        if r.is_none() {
            cx.at(
                &sp,
                format!("unknown risk `{}` (low, medium, high)", short(&s)),
            );
        }
        r
    });
    let description = string(cx, t, "description", &hs, &what, true)
        .map(|(d, _)| d)
        .unwrap_or_default();
    let input = string(cx, t, "input_schema", &hs, &what, true)
        .and_then(|(p, sp)| schema_at(cx, dir, &p, &sp, schemas));
    let output = string(cx, t, "output_schema", &hs, &what, true)
        .and_then(|(p, sp)| schema_at(cx, dir, &p, &sp, schemas));
    let (Ok(name), Some(kind), Some(entity), Some(risk)) = (name, kind, entity, risk) else {
        return None;
    };

    let parent = load_parent(cx, t, kind, entity, &what);
    let set = load_set(cx, t, "set", kind, entity, &what);
    let set_parent = load_set_parent(cx, t, kind, entity, parent.as_deref(), entities, &what);
    let scope = load_scope(cx, t, &hs, kind, entity, roles, &what);
    let approval = load_approval(cx, t, roles, &what);
    let (Some((in_path, in_schema, in_text)), Some((out_path, out_schema, out_text))) =
        (input, output)
    else {
        return None;
    };
    let mut sx = SchemaCx {
        findings: &mut *cx.findings,
        what: &what,
    };
    sx.check_input(
        &in_path,
        &in_schema,
        &in_text,
        kind,
        entity,
        &set,
        parent.as_deref(),
    );
    sx.check_output(&out_path, &out_schema, &out_text, kind, entity);
    if cx.findings.len() > before {
        return None;
    }
    Some(ToolSpec {
        name,
        kind,
        entity: entity.name.clone(),
        risk,
        description,
        input_schema: in_schema,
        output_schema: out_schema,
        input_schema_path: in_path,
        output_schema_path: out_path,
        parent,
        set,
        set_parent,
        scope,
        approval,
    })
}

/// `approval = { role = "finance", mfa_max_age_secs = 300, ttl_secs = 3600 }`: all three
/// keys required (limits are explicit), the role must exist, the limits within
/// [`APPROVAL_SECS_MIN`] and their maxima, no other key.
fn load_approval(
    cx: &mut Cx<'_>,
    t: &DeTable<'_>,
    roles: &BTreeMap<Slug, (RoleSpec, usize)>,
    what: &str,
) -> Option<ApprovalSpec> {
    let v = get(t, "approval")?;
    let what = format!("{what}: `approval`");
    let a = as_table(cx, v, &what)?;
    check_keys(cx, a, &["role", "mfa_max_age_secs", "ttl_secs"], &what);
    let at = v.span();
    let role = string(cx, a, "role", &at, &what, true).and_then(|(r, sp)| {
        match roles.keys().find(|k| k.as_str() == r) {
            Some(k) => Some(k.clone()),
            None => {
                cx.at(&sp, format!("{what} names unknown role `{}`", short(&r)));
                None
            }
        }
    });
    let mut secs = |key: &str, max: i64| -> Option<i64> {
        let Some(v) = get(a, key) else {
            cx.at(&at, format!("{what}: missing `{key}`"));
            return None;
        };
        let n = match v.get_ref() {
            DeValue::Integer(i) => {
                i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok()
            }
            _ => None,
        };
        match n {
            Some(n) if (APPROVAL_SECS_MIN..=max).contains(&n) => Some(n),
            _ => {
                cx.at(
                    &v.span(),
                    format!("{what}: `{key}` must be an integer from {APPROVAL_SECS_MIN} to {max} (seconds)"),
                );
                None
            }
        }
    };
    let mfa = secs("mfa_max_age_secs", APPROVAL_MFA_MAX_AGE_SECS_MAX);
    let ttl = secs("ttl_secs", APPROVAL_TTL_SECS_MAX);
    Some(ApprovalSpec {
        role: role?,
        mfa_max_age_secs: mfa?,
        ttl_secs: ttl?,
    })
}

/// `set_parent = { status = "accepted" }`: fixed values written to the parent record (the
/// record of the tool's `parent` field for record.create, of the entity's one `ref` field for
/// record.update) in the same transaction. Literals only: no `$caller`.
fn load_set_parent(
    cx: &mut Cx<'_>,
    t: &DeTable<'_>,
    kind: ToolKind,
    entity: &EntitySpec,
    parent: Option<&str>,
    entities: &BTreeMap<String, EntitySpec>,
    what: &str,
) -> Map<String, Value> {
    let Some(v) = get(t, "set_parent") else {
        return Map::new();
    };
    let refs: Vec<&str> = entity.ref_fields().map(|(_, e)| e).collect();
    let target = match (kind, parent) {
        (ToolKind::RecordCreate, Some(field)) => {
            entity.fields.get(field).and_then(|f| f.entity.clone())
        }
        (ToolKind::RecordUpdate, _) if refs.len() == 1 => refs.first().map(|e| (*e).to_owned()),
        _ => None,
    };
    let Some(parent_entity) = target.and_then(|e| entities.get(&e)) else {
        cx.at(
            &v.span(),
            format!("{what}: `set_parent` needs a record.create with `parent`, or a record.update of an entity with exactly one ref field"),
        );
        return Map::new();
    };
    let out = load_set(cx, t, "set_parent", kind, parent_entity, what);
    for (k, val) in &out {
        if val.as_str() == Some(SET_CALLER) {
            cx.at(
                &v.span(),
                format!("{what}: `set_parent` value for `{k}` must be a literal"),
            );
        }
    }
    out
}

/// Resolves a schema path from the manifest: relative, inside the app directory.
fn schema_at(
    cx: &mut Cx<'_>,
    dir: &Path,
    rel: &str,
    span: &Range<usize>,
    schemas: &mut SchemaCache,
) -> Option<(PathBuf, Value, String)> {
    let p = Path::new(rel);
    let inside = !rel.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    if !inside {
        cx.at(
            span,
            format!(
                "schema path `{}` must be relative and inside the app directory",
                short(rel)
            ),
        );
        return None;
    }
    if p.extension().is_none_or(|e| e != "json") {
        cx.at(
            span,
            format!("schema path `{}` must name a `.json` file", short(rel)),
        );
        return None;
    }
    if let (Ok(base), Ok(full)) = (dir.canonicalize(), dir.join(p).canonicalize())
        && !full.starts_with(&base)
    {
        cx.at(
            span,
            format!("schema path `{}` leaves the app directory", short(rel)),
        );
        return None;
    }
    schemas.get(dir, rel)
}

fn load_parent(
    cx: &mut Cx<'_>,
    t: &DeTable<'_>,
    kind: ToolKind,
    entity: &EntitySpec,
    what: &str,
) -> Option<String> {
    let (p, sp) = string(cx, t, "parent", &(0..0), what, false)?;
    if kind != ToolKind::RecordCreate {
        cx.at(&sp, format!("{what}: `parent` is only for record.create"));
        return None;
    }
    match entity.fields.get(&p) {
        Some(f) if f.ty == FieldType::Ref => Some(p),
        _ => {
            cx.at(
                &sp,
                format!(
                    "`parent` names `{}`, which is not a ref field of entity `{}`",
                    short(&p),
                    entity.name
                ),
            );
            None
        }
    }
}

fn load_set(
    cx: &mut Cx<'_>,
    t: &DeTable<'_>,
    set_key: &str,
    kind: ToolKind,
    entity: &EntitySpec,
    what: &str,
) -> Map<String, Value> {
    let mut out = Map::new();
    let Some(v) = get(t, set_key) else { return out };
    if !matches!(kind, ToolKind::RecordCreate | ToolKind::RecordUpdate) {
        cx.at(
            &v.span(),
            format!("{what}: `{set_key}` is only for record.create and record.update"),
        );
        return out;
    }
    let Some(set) = as_table(cx, v, &format!("{what}: `{set_key}`")) else {
        return out;
    };
    for (k, v) in set {
        let fname: &str = k.get_ref();
        let Some(field) = entity.fields.get(fname) else {
            cx.at(
                &k.span(),
                format!(
                    "`{set_key}` names unknown field `{}` of entity `{}`",
                    short(fname),
                    entity.name
                ),
            );
            continue;
        };
        let value = match (field.ty, v.get_ref()) {
            (FieldType::String, DeValue::String(s)) => Some(Value::String(s.to_string())),
            (FieldType::Boolean, DeValue::Boolean(b)) => Some(Value::Bool(*b)),
            (FieldType::Integer, DeValue::Integer(i)) => {
                i64::from_str_radix(&i.as_str().replace('_', ""), i.radix())
                    .ok()
                    .map(Value::from)
            }
            (FieldType::User, DeValue::String(s)) if s.as_ref() == SET_CALLER => {
                Some(Value::String(SET_CALLER.into()))
            }
            _ => None,
        };
        match value {
            Some(val) => {
                out.insert(fname.to_owned(), val);
            }
            None => {
                let hint = match field.ty {
                    FieldType::User => format!("a user field can only be set to \"{SET_CALLER}\""),
                    FieldType::Ref | FieldType::Json => {
                        "ref and json fields cannot be set".to_owned()
                    }
                    ty => format!("expected a {} value", ty.as_str()),
                };
                cx.at(
                    &v.span(),
                    format!("`{set_key}` value for field `{fname}` is not allowed: {hint}"),
                );
            }
        }
    }
    out
}

fn load_scope(
    cx: &mut Cx<'_>,
    t: &DeTable<'_>,
    header: &Range<usize>,
    kind: ToolKind,
    entity: &EntitySpec,
    roles: &BTreeMap<Slug, (RoleSpec, usize)>,
    what: &str,
) -> BTreeMap<Slug, ListScope> {
    let mut out = BTreeMap::new();
    let Some(v) = get(t, "scope") else {
        if kind == ToolKind::RecordList {
            cx.at(
                header,
                format!("{what}: record.list needs a `scope` table (roles not named see nothing)"),
            );
        }
        return out;
    };
    if kind != ToolKind::RecordList {
        cx.at(
            &v.span(),
            format!("{what}: `scope` is only for record.list"),
        );
        return out;
    }
    let Some(scope) = as_table(cx, v, &format!("{what}: `scope`")) else {
        return out;
    };
    for (k, v) in scope {
        let rname: &str = k.get_ref();
        let role = Slug::parse(rname).ok().filter(|r| roles.contains_key(r));
        let Some(role) = role else {
            cx.at(
                &k.span(),
                format!("scope names unknown role `{}`", short(rname)),
            );
            continue;
        };
        let Some(s) = v.get_ref().as_str() else {
            cx.at(
                &v.span(),
                format!("scope of role `{rname}` must be a string"),
            );
            continue;
        };
        let ls = match s {
            "tenant" => ListScope::Tenant,
            "owner" => ListScope::Owner,
            f => match entity.fields.get(f) {
                Some(field) if field.ty == FieldType::User => ListScope::Field(f.to_owned()),
                _ => {
                    cx.at(&v.span(), format!(
                        "scope of role `{rname}` names `{}`, which is not `tenant`, `owner` or a user field of entity `{}`",
                        short(f), entity.name
                    ));
                    continue;
                }
            },
        };
        out.insert(role, ls);
    }
    out
}

/// Checks of a tool's schemas against its kind and entity.
struct SchemaCx<'a> {
    findings: &'a mut Vec<Finding>,
    what: &'a str,
}

impl SchemaCx<'_> {
    fn push(&mut self, path: &Path, text: &str, near: Option<&str>, message: String) {
        let line = near.map_or(1, |n| line_of_str(text, n));
        self.findings.push(Finding::new(path, line, message));
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; the arguments are the tool's parts"
    )]
    fn check_input(
        &mut self,
        path: &Path,
        schema: &Value,
        text: &str,
        kind: ToolKind,
        entity: &EntitySpec,
        set: &Map<String, Value>,
        parent: Option<&str>,
    ) {
        let what = self.what;
        if schema.get("type").and_then(Value::as_str) != Some("object") {
            self.push(
                path,
                text,
                None,
                format!("input schema of {what} must have `\"type\": \"object\"`"),
            );
        }
        if schema.get("additionalProperties") != Some(&Value::Bool(false)) {
            self.push(path, text, Some("additionalProperties"), format!(
                "input schema of {what} must set `\"additionalProperties\": false` (only declared arguments are accepted)"
            ));
        }
        for kw in [
            "patternProperties",
            "unevaluatedProperties",
            "dependentSchemas",
            "allOf",
            "anyOf",
            "oneOf",
            "if",
        ] {
            if schema.get(kw).is_some() {
                self.push(path, text, Some(kw), format!("input schema of {what}: top-level `{kw}` is not supported (declare arguments under `properties`)"));
            }
        }
        let props: Vec<String> = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let required: BTreeSet<String> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if kind.is_payment() {
            self.check_payment_input(path, text, kind, entity, &props, &required);
            return;
        }
        let needs_id = matches!(kind, ToolKind::RecordGet | ToolKind::RecordUpdate);
        if needs_id && !required.contains("id") {
            self.push(
                path,
                text,
                None,
                format!("input schema of {what} must require `id` (the record to act on)"),
            );
        }
        for p in &props {
            let p = p.as_str();
            let problem = match kind {
                ToolKind::RecordList if LIST_INPUT_PROPERTIES.contains(&p) => None,
                ToolKind::RecordList => Some(format!(
                    "allows property `{}`: record.list accepts only `limit` and `offset`",
                    short(p)
                )),
                _ if needs_id && p == "id" => None,
                ToolKind::RecordGet => Some(format!(
                    "allows property `{}`: record.get accepts only `id`",
                    short(p)
                )),
                _ => match entity.fields.get(p) {
                    None => Some(format!(
                        "allows property `{}`, which is not a field of entity `{}`",
                        short(p),
                        entity.name
                    )),
                    Some(_) if set.contains_key(p) => {
                        Some(format!("allows property `{p}`, which is fixed by `set`"))
                    }
                    Some(f) if f.ty == FieldType::Ref && kind == ToolKind::RecordUpdate => {
                        Some(format!(
                            "allows property `{p}`: a ref field cannot be changed by record.update"
                        ))
                    }
                    Some(f) if f.ty == FieldType::Ref && parent != Some(p) => Some(format!(
                        "allows ref property `{p}`: name it as the tool's `parent` so the referenced record is authorized"
                    )),
                    Some(_) => None,
                },
            };
            if let Some(m) = problem {
                self.push(path, text, Some(p), format!("input schema of {what} {m}"));
            }
        }
        if let Some(p) = parent
            && !required.contains(p)
        {
            self.push(
                path,
                text,
                Some(p),
                format!("input schema of {what} must require the parent field `{p}`"),
            );
        }
    }

    /// A payment kind takes exactly its fixed arguments ([`ToolKind::payment_arguments`],
    /// `{entity}` replaced by the tool's entity), the required ones required.
    fn check_payment_input(
        &mut self,
        path: &Path,
        text: &str,
        kind: ToolKind,
        entity: &EntitySpec,
        props: &[String],
        required: &BTreeSet<String>,
    ) {
        let what = self.what;
        let (req, opt) = kind.payment_arguments();
        let name = |a: &str| a.replace("{entity}", &entity.name);
        let req: Vec<String> = req.iter().map(|a| name(a)).collect();
        let opt: Vec<String> = opt.iter().map(|a| name(a)).collect();
        for r in &req {
            if !props.contains(r) || !required.contains(r) {
                self.push(
                    path,
                    text,
                    None,
                    format!(
                        "input schema of {what} must declare and require `{r}` ({} takes {})",
                        kind.as_str(),
                        req.join(", ")
                    ),
                );
            }
        }
        for p in props {
            if !req.contains(p) && !opt.contains(p) {
                self.push(
                    path,
                    text,
                    Some(p),
                    format!(
                        "input schema of {what} allows property `{}`: {} accepts only {} (optional: {})",
                        short(p),
                        kind.as_str(),
                        req.join(", "),
                        opt.join(", ")
                    ),
                );
            }
        }
    }

    fn check_output(
        &mut self,
        path: &Path,
        schema: &Value,
        text: &str,
        kind: ToolKind,
        entity: &EntitySpec,
    ) {
        let what = self.what;
        if schema.get("type").and_then(Value::as_str) != Some("object") {
            self.push(
                path,
                text,
                None,
                format!("output schema of {what} must have `\"type\": \"object\"`"),
            );
            return;
        }
        let props = schema.get("properties").and_then(Value::as_object);
        if kind.is_payment() {
            // A payment result is `{payment_id, psp_payment_id, status, amount_minor,
            // currency, …}`, not a record: the pipeline checks it against the schema.
            return;
        }
        if kind == ToolKind::RecordList {
            if props.is_none_or(|p| !p.contains_key("items")) {
                self.push(path, text, None, format!("output schema of {what} must declare `items` (record.list returns `{{items, total}}`)"));
            }
            return;
        }
        for p in props
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            if !OUTPUT_SYSTEM_FIELDS.contains(&p.as_str()) && !entity.fields.contains_key(&p) {
                self.push(path, text, Some(&p), format!(
                    "output schema of {what} declares `{}`, which is neither a field of entity `{}` nor a record system field",
                    short(&p), entity.name
                ));
            }
        }
    }
}
