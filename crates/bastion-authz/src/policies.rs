//! Parsing policy files with their `@id`s, strict validation against the generated schema,
//! and findings with file and line.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use bastion_app::{AppSpec, Finding, line_of};
use cedar_policy::{PolicyId, PolicySet, Schema, SchemaFragment, ValidationMode, Validator};
use miette::Diagnostic;

use crate::schema::schema_json;

/// The annotation that names a policy; decisions report these names.
pub const ID_ANNOTATION: &str = "id";
/// Longest accepted policy id, in characters.
const POLICY_ID_CHARS_MAX: usize = 100;

/// A checked policy set with its schema.
pub(crate) struct Built {
    pub policies: PolicySet,
    pub schema: Schema,
    pub schema_text: String,
}

/// Where a policy came from: its file (index into `spec.policies`) and start offset.
struct Origin {
    file: usize,
    start: usize,
}

/// Builds the schema and the policy set. With `validate`, strict validation errors and
/// warnings are findings too. Returns the set only when there is no finding.
pub(crate) fn build(spec: &AppSpec, validate: bool) -> (Option<Built>, Vec<Finding>) {
    let mut findings = Vec::new();
    let manifest = spec.manifest_path();
    let json = schema_json(spec);
    let schema = match Schema::from_json_value(json.clone()) {
        Ok(s) => Some(s),
        Err(e) => {
            findings.push(Finding::new(
                &manifest,
                1,
                format!("generated cedar schema is invalid: {e}"),
            ));
            None
        }
    };
    let schema_text = SchemaFragment::from_json_value(json)
        .ok()
        .and_then(|f| f.to_cedarschema().ok())
        .unwrap_or_default();

    let mut merged = PolicySet::new();
    let mut origins: BTreeMap<String, Origin> = BTreeMap::new();
    for (index, file) in spec.policies.iter().enumerate() {
        parse_file(
            index,
            &file.path,
            &file.text,
            &mut merged,
            &mut origins,
            &mut findings,
        );
    }
    if merged.is_empty() && findings.is_empty() {
        findings.push(Finding::new(
            &manifest,
            1,
            "no policy: every request would be denied",
        ));
    }

    if validate && let Some(schema) = &schema {
        let result = Validator::new(schema.clone()).validate(&merged, ValidationMode::Strict);
        let locate = |id: &PolicyId, offset: Option<usize>| -> (PathBuf, usize) {
            match origins
                .get(&id.to_string())
                .and_then(|o| spec.policies.get(o.file).map(|f| (o, f)))
            {
                Some((o, f)) => (f.path.clone(), line_of(&f.text, offset.unwrap_or(o.start))),
                None => (manifest.clone(), 1),
            }
        };
        for e in result.validation_errors() {
            let (file, line) = locate(e.policy_id(), first_offset(e));
            findings.push(Finding::new(
                file,
                line,
                name_policy(e.policy_id(), &e.to_string()),
            ));
        }
        for w in result.validation_warnings() {
            let (file, line) = locate(w.policy_id(), first_offset(w));
            findings.push(Finding::new(
                file,
                line,
                name_policy(w.policy_id(), &w.to_string()),
            ));
        }
    }

    findings.sort();
    findings.dedup();
    match schema {
        Some(schema) if findings.is_empty() => (
            Some(Built {
                policies: merged,
                schema,
                schema_text,
            }),
            findings,
        ),
        _ => (None, findings),
    }
}

fn parse_file(
    index: usize,
    path: &std::path::Path,
    text: &str,
    merged: &mut PolicySet,
    origins: &mut BTreeMap<String, Origin>,
    findings: &mut Vec<Finding>,
) {
    let pset = match PolicySet::from_str(text) {
        Ok(p) => p,
        Err(errs) => {
            for e in errs.iter() {
                let line = first_offset(e).map_or(1, |o| line_of(text, o));
                findings.push(Finding::new(
                    path,
                    line,
                    format!("cedar syntax: {}", one_line(&e.to_string())),
                ));
            }
            return;
        }
    };
    if let Some(t) = pset.templates().next() {
        let line = text.find(&t.to_cedar()).map_or(1, |o| line_of(text, o));
        findings.push(Finding::new(
            path,
            line,
            "policy templates are not supported",
        ));
    }
    // The parser names policies policy0, policy1, ... in source order.
    let mut policies: Vec<_> = pset.policies().collect();
    policies.sort_by_key(|p| {
        p.id()
            .to_string()
            .trim_start_matches("policy")
            .parse::<usize>()
            .unwrap_or(usize::MAX)
    });
    let mut cursor = 0;
    for policy in policies {
        let start = policy
            .to_cedar()
            .and_then(|src| {
                text.get(cursor..)
                    .and_then(|rest| rest.find(&src))
                    .map(|o| (o + cursor, src.len()))
            })
            .map_or(cursor, |(o, len)| {
                cursor = o + len;
                o
            });
        let line = line_of(text, start);
        let Some(id) = policy.annotation(ID_ANNOTATION) else {
            findings.push(Finding::new(
                path,
                line,
                "policy has no `@id(\"...\")` annotation: decisions must name it",
            ));
            continue;
        };
        if !valid_policy_id(id) {
            findings.push(Finding::new(path, line, format!(
                "policy id `{}` is not valid: use 1-{POLICY_ID_CHARS_MAX} of a-z, 0-9, -, _ and .",
                id.chars().take(64).collect::<String>()
            )));
            continue;
        }
        if origins.contains_key(id) {
            findings.push(Finding::new(
                path,
                line,
                format!("duplicate policy id `{id}`"),
            ));
            continue;
        }
        if merged.add(policy.new_id(PolicyId::new(id))).is_err() {
            findings.push(Finding::new(
                path,
                line,
                format!("policy `{id}` cannot be added"),
            ));
            continue;
        }
        origins.insert(id.to_owned(), Origin { file: index, start });
    }
}

fn valid_policy_id(id: &str) -> bool {
    !id.is_empty()
        && id.chars().count() <= POLICY_ID_CHARS_MAX
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// A validator message, on one line, naming the policy (Cedar's usually already does).
fn name_policy(id: &PolicyId, message: &str) -> String {
    let message = one_line(message);
    if message.contains(&format!("`{id}`")) {
        message
    } else {
        format!("policy `{id}`: {message}")
    }
}

/// The byte offset of a diagnostic's first label, if it has one.
fn first_offset(d: &dyn Diagnostic) -> Option<usize> {
    d.labels().and_then(|mut l| l.next()).map(|l| l.offset())
}

/// Messages on one line, cut to a sane length.
pub(crate) fn one_line(s: &str) -> String {
    const CHARS_MAX: usize = 300;
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(CHARS_MAX)
        .collect()
}
