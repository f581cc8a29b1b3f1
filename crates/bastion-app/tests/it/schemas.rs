//! Schema references never leave the document; oversize files are refused.

use std::fs;

use bastion_app::{AppSpec, compile_schema};
use serde_json::json;

use crate::crate_dir;

#[test]
fn remote_and_file_refs_are_refused_not_fetched() {
    // 127.0.0.1:9 (discard) would hang or fail if anything tried to fetch it.
    for r in [
        "http://127.0.0.1:9/s.json",
        "https://example.com/s.json",
        "file:///etc/passwd",
        "s.json",
        "//host/x",
    ] {
        let schema = json!({"type": "object", "properties": {"a": {"$ref": r}}});
        let err = compile_schema(&schema).unwrap_err().to_string();
        assert!(err.contains("not local"), "{r}: {err}");
        let nested = json!({"$defs": {"x": {"items": [{"$dynamicRef": r}]}}});
        assert!(compile_schema(&nested).is_err(), "{r}");
    }
}

#[test]
fn files_over_one_mib_are_findings() {
    let dir = tempdir();
    copy_dir(&crate_dir().join("tests/cases/passing/minimal"), &dir);
    let mut big = fs::read_to_string(dir.join("app.toml")).unwrap();
    big.push_str(&format!("# {}\n", "x".repeat(1024 * 1024)));
    fs::write(dir.join("app.toml"), big).unwrap();
    let findings = AppSpec::load(&dir).unwrap_err();
    assert!(
        findings
            .iter()
            .any(|f| f.message.contains("larger than the 1 MiB limit") && f.line == 1),
        "{findings:?}"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn too_many_tools_is_a_finding() {
    let dir = tempdir();
    copy_dir(&crate_dir().join("tests/cases/passing/minimal"), &dir);
    let mut text = fs::read_to_string(dir.join("app.toml")).unwrap();
    for i in 0..=bastion_app::limits::TOOLS_MAX {
        text.push_str(&format!(
            "\n[tools.t{i}]\nkind = \"record.list\"\nentity = \"quote\"\nrisk = \"low\"\ndescription = \"d\"\ninput_schema = \"schemas/list.json\"\noutput_schema = \"schemas/list_out.json\"\nscope = {{ buyer = \"owner\" }}\n"
        ));
    }
    fs::write(dir.join("app.toml"), text).unwrap();
    let findings = AppSpec::load(&dir).unwrap_err();
    assert!(
        findings
            .iter()
            .any(|f| f.message.contains("more than 128 tools")),
        "{findings:?}"
    );
    fs::remove_dir_all(&dir).unwrap();
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("bastion-app-it-{}", uuid_like()));
    fs::create_dir_all(&d).unwrap();
    d
}

fn uuid_like() -> String {
    bastion_types::RecordId::new_random().to_string()
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            fs::create_dir_all(&dest).unwrap();
            copy_dir(&e.path(), &dest);
        } else {
            fs::copy(e.path(), dest).unwrap();
        }
    }
}
