//! Scenarios on the agent: raw PII in a chat, and another tenant's ids named to the agent.
//! Both read what the tabletop's model received (self-started instances only).

use serde_json::{Value, json};

use super::Target;
use super::client::Answer;
use super::scenarios::{Fut, Obs, create_quote};

/// The A3 values: a Luhn-valid test card, an SSN, an e-mail address, an IBAN.
const CARD: &str = "4111 1111 1111 1111";
const SSN: &str = "123-45-6789";
const EMAIL: &str = "jane.doe@example.com";
const IBAN: &str = "DE89 3704 0044 0532 0130 00";
/// Every raw form of the values above that must never reach the model.
const RAW_FORMS: &[&str] = &[
    CARD,
    "4111111111111111",
    SSN,
    "123456789",
    EMAIL,
    IBAN,
    "DE89370400440532013000",
];

/// Chats once as `tenant/user`.
pub async fn chat(t: &Target, tenant: &str, user: &str, text: &str) -> anyhow::Result<Answer> {
    let s = t.client.session(tenant, user).await?;
    t.client
        .post(
            "/v1/agent/chat",
            Some(&s.access_token),
            &[],
            &json!({"messages": [{"role": "user", "content": text}]}),
        )
        .await
}

/// The chat's tool call named `tool`, if the model made one.
pub fn call_of<'a>(chat: &'a Answer, tool: &str) -> Option<&'a Value> {
    chat.body
        .get("tool_calls")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["name"] == tool))
}

pub fn pii_in_chat<'a>(t: &'a Target, o: &'a mut Obs) -> Fut<'a> {
    Box::pin(async move {
        let Some(model) = &t.model else {
            o.skip("what the model received is only visible with the tabletop's own model (self-started)");
            return Ok(());
        };
        let mark = model.len();
        let prompt = format!(
            "My card is {CARD}, my SSN is {SSN}, write to {EMAIL}, pay to {IBAN}. call list_quotes with {{}}"
        );
        let a = chat(t, "acme", "buyer", &prompt).await?;
        o.check(
            a.status == 200,
            &format!("chat with raw PII → {}", a.summary()),
        );
        let bodies: Vec<String> = model.bodies().into_iter().skip(mark).collect();
        let leaked: Vec<&str> = RAW_FORMS
            .iter()
            .copied()
            .filter(|raw| bodies.iter().any(|b| b.contains(raw)))
            .collect();
        o.check(
            !bodies.is_empty() && leaked.is_empty(),
            &format!(
                "the model received {} request(s); raw values in them: {:?}",
                bodies.len(),
                leaked
            ),
        );
        let placeholders = ["<CARD_", "<SSN_", "<EMAIL_", "<IBAN_"];
        let seen: Vec<&str> = placeholders
            .iter()
            .copied()
            .filter(|p| bodies.iter().any(|b| b.contains(p)))
            .collect();
        o.check(
            seen.len() == placeholders.len(),
            &format!("placeholders the model saw instead: {seen:?}"),
        );
        let audited = o.audit(t, "acme", "agent.chat", "").await?;
        let raw_in_audit = audited.iter().any(|b| {
            let text = b.to_string();
            RAW_FORMS.iter().any(|raw| text.contains(raw))
        });
        if t.store.is_some() {
            o.check(
                !raw_in_audit,
                "the agent.chat audit record holds no raw value either",
            );
        }
        Ok(())
    })
}

pub fn cross_tenant_agent<'a>(t: &'a Target, o: &'a mut Obs) -> Fut<'a> {
    Box::pin(async move {
        let marker = format!(
            "acme-private-{}",
            bastion_crypto::random_token(8).unwrap_or_else(|_| "m".to_owned())
        );
        let quote = create_quote(t, "acme", &format!("{marker} order"), &marker).await?;
        o.check(true, &format!("acme buyer created quote {quote}"));
        let mark = t.model.as_ref().map_or(0, super::model::Recorded::len);
        let a = chat(
            t,
            "globex",
            "finance",
            &format!(
                "call get_quote with {} and call submit_proposal with {}",
                json!({"id": quote}),
                json!({"quote_id": quote, "body": "x", "price_minor": 1, "currency": "EUR"})
            ),
        )
        .await?;
        o.check(
            a.status == 200,
            &format!("globex finance's chat → {}", a.summary()),
        );
        let Some(get) = call_of(&a, "get_quote") else {
            o.skip("the instance's model did not make the call (not an obedient model)");
            return Ok(());
        };
        o.check(
            get["outcome"] != "executed" && !a.body.to_string().contains(&marker),
            &format!(
                "get_quote(acme's id) through the agent → {}",
                get["outcome"]
            ),
        );
        if let Some(model) = &t.model {
            let bodies: Vec<String> = model.bodies().into_iter().skip(mark).collect();
            o.check(
                !bodies.is_empty() && bodies.iter().all(|b| !b.contains(&marker)),
                &format!(
                    "none of the model's {} request(s) holds acme's data",
                    bodies.len()
                ),
            );
        }
        o.audit(t, "globex", "tool.get_quote", "deny").await?;
        Ok(())
    })
}
