//! Shared test fixtures: a counting executor and tool definitions.

use std::collections::HashMap;
use std::sync::Mutex;

use bastion_agent::{BoxFuture, ExecError, ToolDef, ToolExecutor};
use bastion_guard::{EntityKind, MaskMode, Masker};
use serde_json::{Value, json};

/// An executor that records every call. `denied` tools answer `Denied`; others answer the
/// canned result for the tool (or `{"ok": true}`).
#[derive(Default)]
pub struct CountingExecutor {
    pub denied: Vec<&'static str>,
    pub results: HashMap<&'static str, Value>,
    /// Every `execute` call, allowed or not.
    pub attempts: Mutex<Vec<(String, Value)>>,
    /// Calls that had an effect.
    pub executed: Mutex<Vec<(String, Value)>>,
    /// `request_approval` calls.
    pub approvals: Mutex<Vec<(String, Value)>>,
}

impl CountingExecutor {
    pub fn executed_names(&self) -> Vec<String> {
        self.executed
            .lock()
            .unwrap()
            .iter()
            .map(|(n, _)| n.clone())
            .collect()
    }
    pub fn attempts_of(&self, tool: &str) -> usize {
        self.attempts
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == tool)
            .count()
    }
    pub fn executed_of(&self, tool: &str) -> usize {
        self.executed
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == tool)
            .count()
    }
}

impl ToolExecutor for CountingExecutor {
    fn execute<'a>(
        &'a self,
        name: &'a str,
        arguments: &'a Value,
    ) -> BoxFuture<'a, Result<Value, ExecError>> {
        self.attempts
            .lock()
            .unwrap()
            .push((name.to_owned(), arguments.clone()));
        let out = if self.denied.contains(&name) {
            Err(ExecError::Denied {
                reason: format!("not allowed to call `{name}`"),
            })
        } else {
            self.executed
                .lock()
                .unwrap()
                .push((name.to_owned(), arguments.clone()));
            Ok(self
                .results
                .get(name)
                .cloned()
                .unwrap_or_else(|| json!({"ok": true})))
        };
        Box::pin(async move { out })
    }

    fn request_approval<'a>(
        &'a self,
        name: &'a str,
        arguments: &'a Value,
        _reason: &'a str,
    ) -> BoxFuture<'a, Result<String, ExecError>> {
        let mut a = self.approvals.lock().unwrap();
        a.push((name.to_owned(), arguments.clone()));
        let id = format!("apr_{}", a.len());
        Box::pin(async move { Ok(id) })
    }
}

pub fn tool(name: &str, high_risk: bool) -> ToolDef {
    ToolDef {
        name: name.to_owned(),
        description: format!("the {name} tool"),
        parameters: json!({"type": "object"}),
        high_risk,
    }
}

pub fn masker() -> Masker {
    Masker::new(MaskMode::Counter).unwrap()
}

/// The restore predicate of a user who may see e-mail addresses only.
pub fn email_only(kind: EntityKind) -> bool {
    kind == EntityKind::Email
}

pub fn nothing(_: EntityKind) -> bool {
    false
}

/// The values of case A3.
pub const CARD: &str = "4111 1111 1111 1111";
pub const CARD_DIGITS: &str = "4111111111111111";
pub const SSN: &str = "123-45-6789";
pub const EMAIL: &str = "jane.doe@example.com";
pub const IBAN: &str = "DE89 3704 0044 0532 0130 00";
pub const IBAN_COMPACT: &str = "DE89370400440532013000";

/// Every raw form of the A3 values (a body holding any of these leaked PII).
pub const RAW_FORMS: &[&str] = &[
    CARD,
    CARD_DIGITS,
    SSN,
    "123456789",
    EMAIL,
    IBAN,
    IBAN_COMPACT,
];

pub fn a3_prompt() -> String {
    format!("Please update my details: card {CARD}, SSN {SSN}, email {EMAIL}, IBAN {IBAN}. Thanks.")
}
