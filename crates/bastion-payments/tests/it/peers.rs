//! Interop with independent implementations, run as real processes:
//! stripe-node 23.1.0 (`webhooks.generateTestHeaderString`, `webhooks.constructEvent`) and
//! the Python `standardwebhooks` 1.1.0 (`Webhook.sign`, `Webhook.verify`), installed by
//! `scripts/install-peers` into `.peers/`. A missing peer fails the test; it never skips.
//!
//! (a) headers the peers produce must verify in Bastion, and tampered, stale (301 s) and
//!     future (301 s) ones must not; (b) headers Bastion produces must verify in the peers.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use bastion_payments::webhook::{
    ProviderKind, StandardSecret, StripeSecret, WebhookError, WebhookVerifier, standard, stripe,
};
use bastion_types::{Clock as _, SystemClock};
use serde_json::{Value, json};

use crate::{clock_at, pairs, repo_root, standard_event, stripe_event};

const STRIPE_SECRET: &str = "whsec_peer_test_0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const STRIPE_SECRET_OLD: &str = "whsec_peer_test_rotated_out_0000000000000000";
const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const T: i64 = 1_700_000_000;

fn stripe_module() -> PathBuf {
    let dir = repo_root().join(".peers/node/node_modules/stripe");
    assert!(
        dir.join("package.json").is_file(),
        "webhook peer stripe-node is missing at {}: run scripts/install-peers from the repository root",
        dir.display()
    );
    dir
}

fn venv_python() -> PathBuf {
    let python = repo_root().join(".peers/webhooks-venv/bin/python");
    assert!(
        python.is_file(),
        "webhook peer venv is missing at {}: run scripts/install-peers from the repository root",
        python.display()
    );
    python
}

/// Runs `program args…` with `input` as JSON on stdin and parses its stdout as JSON.
fn run_json(mut cmd: Command, input: &Value) -> Value {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start peer {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "peer failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "peer printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// stripe-node: a list of operations in, a list of results out.
/// `{"op":"sign", payload, secret, timestamp}` → `{"header"}`;
/// `{"op":"verify", payload, header, secret, tolerance, receivedAt (s)}` → `{"ok", "error"?}`.
const STRIPE_JS: &str = r#"
const stripe = require(process.env.STRIPE_MODULE)('sk_test_interop_no_network');
let input = '';
process.stdin.on('data', (d) => { input += d; });
process.stdin.on('end', () => {
  const out = JSON.parse(input).map((op) => {
    if (op.op === 'sign') {
      return { header: stripe.webhooks.generateTestHeaderString({
        payload: op.payload, secret: op.secret, timestamp: op.timestamp }) };
    }
    try {
      const event = stripe.webhooks.constructEvent(
        Buffer.from(op.payload, 'utf8'), op.header, op.secret, op.tolerance, undefined,
        op.receivedAt * 1000);
      return { ok: true, id: event.id };
    } catch (e) {
      return { ok: false, error: String(e.message).split('\n')[0] };
    }
  });
  process.stdout.write(JSON.stringify(out));
});
"#;

/// standardwebhooks (Python): `{"op":"sign", secret, id, timestamp, payload}` →
/// `{"signature"}`; `{"op":"verify", secret, headers, payload}` → `{"ok", "error"?}`
/// (its verifier reads the wall clock).
const STANDARD_PY: &str = r#"
import json, sys
from datetime import datetime, timezone
from standardwebhooks.webhooks import Webhook
out = []
for op in json.load(sys.stdin):
    wh = Webhook(op["secret"])
    if op["op"] == "sign":
        ts = datetime.fromtimestamp(op["timestamp"], tz=timezone.utc)
        out.append({"signature": wh.sign(op["id"], ts, op["payload"])})
    else:
        try:
            wh.verify(op["payload"].encode("utf-8"), op["headers"])
            out.append({"ok": True})
        except Exception as e:
            out.append({"ok": False, "error": type(e).__name__ + ": " + str(e)})
json.dump(out, sys.stdout)
"#;

fn stripe_node(ops: &Value) -> Vec<Value> {
    let mut cmd = Command::new("node");
    cmd.arg("-e")
        .arg(STRIPE_JS)
        .env("STRIPE_MODULE", stripe_module());
    run_json(cmd, ops).as_array().unwrap().clone()
}

fn standard_py(ops: &Value) -> Vec<Value> {
    let mut cmd = Command::new(venv_python());
    cmd.arg("-c").arg(STANDARD_PY);
    run_json(cmd, ops).as_array().unwrap().clone()
}

fn stripe_verifier(now: i64, secrets: &[&str]) -> WebhookVerifier {
    let (_, clock) = clock_at(now);
    WebhookVerifier::new(ProviderKind::Stripe, secrets, 300, clock).unwrap()
}

fn verify_stripe(v: &WebhookVerifier, header: &str, body: &str) -> Result<String, WebhookError> {
    let headers = [("Stripe-Signature", header.to_owned())];
    v.verify(&pairs(&headers), body.as_bytes()).map(|e| e.id)
}

#[test]
fn stripe_node_signed_headers_verify_in_bastion() {
    let compact = stripe_event("evt_node_1", "payment_intent.succeeded", T - 2, "succeeded");
    // P3 with a real sender: pretty-printed, with non-ASCII text.
    let pretty = "{\n  \"id\": \"evt_node_2\",\n  \"object\": \"event\",\n  \"type\": \"customer.updated\",\n  \"created\": 1699999990,\n  \"data\": {\n    \"object\": {\"id\": \"cus_1\", \"name\": \"Zoë Ünal 東京\"}\n  }\n}\n";
    let ops = json!([
        {"op": "sign", "payload": compact, "secret": STRIPE_SECRET, "timestamp": T},
        {"op": "sign", "payload": pretty, "secret": STRIPE_SECRET, "timestamp": T},
        {"op": "sign", "payload": compact, "secret": STRIPE_SECRET, "timestamp": T - 301},
        {"op": "sign", "payload": compact, "secret": STRIPE_SECRET, "timestamp": T + 301},
        {"op": "sign", "payload": compact, "secret": STRIPE_SECRET_OLD, "timestamp": T},
        {"op": "sign", "payload": compact, "secret": STRIPE_SECRET, "timestamp": T - 300},
        {"op": "sign", "payload": compact, "secret": STRIPE_SECRET, "timestamp": T + 300},
    ]);
    let out = stripe_node(&ops);
    let h = |i: usize| out[i]["header"].as_str().unwrap().to_owned();
    let v = stripe_verifier(T, &[STRIPE_SECRET]);

    assert!(h(0).starts_with(&format!("t={T},v1=")), "{}", h(0));
    assert_eq!(
        verify_stripe(&v, &h(0), &compact),
        Ok("evt_node_1".to_owned())
    );
    assert_eq!(
        verify_stripe(&v, &h(1), pretty),
        Ok("evt_node_2".to_owned())
    );
    // Same header as Bastion would produce.
    let ours = stripe::sign(
        &StripeSecret::parse(STRIPE_SECRET).unwrap(),
        T,
        compact.as_bytes(),
    );
    assert_eq!(h(0), ours);
    // Edges of the window: accepted; one second further either way: refused (P2).
    assert!(verify_stripe(&v, &h(5), &compact).is_ok());
    assert!(verify_stripe(&v, &h(6), &compact).is_ok());
    for stale_or_future in [h(2), h(3)] {
        assert!(
            matches!(
                verify_stripe(&v, &stale_or_future, &compact),
                Err(WebhookError::TimestampOutsideTolerance { .. })
            ),
            "{stale_or_future}"
        );
    }
    // Tampered body (the pretty body re-serialized compactly), tampered timestamp, tampered
    // signature, wrong secret: refused.
    let reserialized =
        serde_json::to_string(&serde_json::from_str::<Value>(pretty).unwrap()).unwrap();
    assert_eq!(
        verify_stripe(&v, &h(1), &reserialized),
        Err(WebhookError::NoMatchingSignature)
    );
    let tampered_t = h(0).replacen(&format!("t={T}"), &format!("t={}", T + 1), 1);
    assert_eq!(
        verify_stripe(&v, &tampered_t, &compact),
        Err(WebhookError::NoMatchingSignature)
    );
    let mut sig_bytes = h(0).into_bytes();
    let last = sig_bytes.len() - 1;
    sig_bytes[last] = if sig_bytes[last] == b'0' { b'1' } else { b'0' };
    let tampered_sig = String::from_utf8(sig_bytes).unwrap();
    assert_eq!(
        verify_stripe(&v, &tampered_sig, &compact),
        Err(WebhookError::NoMatchingSignature)
    );
    assert_eq!(
        verify_stripe(&v, &h(4), &compact),
        Err(WebhookError::NoMatchingSignature)
    );
    // Rotation: a verifier holding the old and the new secret accepts both.
    let both = stripe_verifier(T, &[STRIPE_SECRET, STRIPE_SECRET_OLD]);
    assert!(verify_stripe(&both, &h(0), &compact).is_ok());
    assert!(verify_stripe(&both, &h(4), &compact).is_ok());
}

#[test]
fn bastion_signed_stripe_headers_verify_in_stripe_node() {
    let secret = StripeSecret::parse(STRIPE_SECRET).unwrap();
    let old = StripeSecret::parse(STRIPE_SECRET_OLD).unwrap();
    let body = stripe_event("evt_bastion_1", "payment_intent.succeeded", T, "succeeded");
    let pretty = "{\n  \"id\": \"evt_bastion_2\",\n  \"note\": \"naïve café\"\n}\n";
    let header = stripe::sign(&secret, T, body.as_bytes());
    let pretty_header = stripe::sign(&secret, T, pretty.as_bytes());
    // Rotation: two v1 elements, one per secret.
    let rotating = format!(
        "t={T},v1={},v1={}",
        stripe::v1_signature(&old, T, body.as_bytes()),
        stripe::v1_signature(&secret, T, body.as_bytes())
    );
    let stale = stripe::sign(&secret, T - 301, body.as_bytes());
    let ops = json!([
        {"op": "verify", "payload": body, "header": header, "secret": STRIPE_SECRET, "tolerance": 300, "receivedAt": T + 10},
        {"op": "verify", "payload": pretty, "header": pretty_header, "secret": STRIPE_SECRET, "tolerance": 300, "receivedAt": T},
        {"op": "verify", "payload": body, "header": rotating, "secret": STRIPE_SECRET, "tolerance": 300, "receivedAt": T},
        {"op": "verify", "payload": body, "header": rotating, "secret": STRIPE_SECRET_OLD, "tolerance": 300, "receivedAt": T},
        // Controls: the peer really checks.
        {"op": "verify", "payload": format!("{body} "), "header": header, "secret": STRIPE_SECRET, "tolerance": 300, "receivedAt": T},
        {"op": "verify", "payload": body, "header": header, "secret": STRIPE_SECRET_OLD, "tolerance": 300, "receivedAt": T},
        {"op": "verify", "payload": body, "header": stale, "secret": STRIPE_SECRET, "tolerance": 300, "receivedAt": T},
        // The peer's known gap (PEERS.md): it accepts a timestamp 301 s in the future,
        // which Bastion refuses (P2).
        {"op": "verify", "payload": body, "header": header, "secret": STRIPE_SECRET, "tolerance": 300, "receivedAt": T - 301},
    ]);
    let out = stripe_node(&ops);
    let ok: Vec<bool> = out.iter().map(|r| r["ok"].as_bool().unwrap()).collect();
    assert_eq!(
        ok,
        [true, true, true, true, false, false, false, true],
        "{out:?}"
    );
    assert_eq!(out[0]["id"], "evt_bastion_1");
    assert!(
        out[6]["error"]
            .as_str()
            .unwrap()
            .contains("Timestamp outside the tolerance zone")
    );
    let v = stripe_verifier(T - 301, &[STRIPE_SECRET]);
    assert!(matches!(
        verify_stripe(&v, &header, &body),
        Err(WebhookError::TimestampOutsideTolerance { .. })
    ));
}

fn standard_verifier(now: i64) -> WebhookVerifier {
    let (_, clock) = clock_at(now);
    WebhookVerifier::new(
        ProviderKind::StandardWebhooks,
        &[STANDARD_SECRET],
        300,
        clock,
    )
    .unwrap()
}

fn verify_standard(
    v: &WebhookVerifier,
    id: &str,
    ts: i64,
    sig: &str,
    body: &str,
) -> Result<String, WebhookError> {
    let headers = [
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", sig.to_owned()),
    ];
    v.verify(&pairs(&headers), body.as_bytes()).map(|e| e.id)
}

#[test]
fn standardwebhooks_signed_headers_verify_in_bastion() {
    let body = standard_event("invoice.paid", "2023-11-14T22:13:15Z");
    let pretty = "{\n  \"type\": \"invoice.paid\",\n  \"timestamp\": \"2023-11-14T22:13:15Z\",\n  \"data\": {\"note\": \"Zoë\"}\n}";
    let other_secret = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let sign = |secret: &str, id: &str, ts: i64, payload: &str| json!({"op": "sign", "secret": secret, "id": id, "timestamp": ts, "payload": payload});
    let ops = json!([
        sign(STANDARD_SECRET, "msg_py_1", T, &body),
        sign(STANDARD_SECRET, "msg_py_2", T, pretty),
        sign(STANDARD_SECRET, "msg_py_3", T - 301, &body),
        sign(STANDARD_SECRET, "msg_py_4", T + 301, &body),
        sign(other_secret, "msg_py_5", T, &body),
        sign(STANDARD_SECRET, "msg_py_6", T + 300, &body),
    ]);
    let out = standard_py(&ops);
    let s = |i: usize| out[i]["signature"].as_str().unwrap().to_owned();
    let v = standard_verifier(T);

    assert_eq!(
        verify_standard(&v, "msg_py_1", T, &s(0), &body),
        Ok("msg_py_1".to_owned())
    );
    assert_eq!(
        s(0),
        standard::sign(
            &StandardSecret::parse(STANDARD_SECRET).unwrap(),
            "msg_py_1",
            T,
            body.as_bytes()
        )
    );
    assert!(verify_standard(&v, "msg_py_2", T, &s(1), pretty).is_ok());
    assert!(verify_standard(&v, "msg_py_6", T + 300, &s(5), &body).is_ok());
    assert!(matches!(
        verify_standard(&v, "msg_py_3", T - 301, &s(2), &body),
        Err(WebhookError::TimestampOutsideTolerance { .. })
    ));
    assert!(matches!(
        verify_standard(&v, "msg_py_4", T + 301, &s(3), &body),
        Err(WebhookError::TimestampOutsideTolerance { .. })
    ));
    // Tampered id, timestamp, body, signature; a signature under another secret.
    let nope = Err(WebhookError::NoMatchingSignature);
    assert_eq!(verify_standard(&v, "msg_py_X", T, &s(0), &body), nope);
    assert_eq!(verify_standard(&v, "msg_py_1", T + 1, &s(0), &body), nope);
    assert_eq!(verify_standard(&v, "msg_py_2", T, &s(1), &body), nope);
    let sig = s(0);
    let flipped = format!(
        "v1,{}{}",
        if sig.as_bytes()[3] == b'A' { 'B' } else { 'A' },
        &sig[4..]
    );
    assert_eq!(verify_standard(&v, "msg_py_1", T, &flipped, &body), nope);
    assert_eq!(verify_standard(&v, "msg_py_5", T, &s(4), &body), nope);
    // P1 against the same verifier: the peer's own signature, truncated.
    assert!(matches!(
        verify_standard(&v, "msg_py_1", T, &sig[..4], &body),
        Err(WebhookError::Malformed(_))
    ));
    // Rotation.
    let (_, clock) = clock_at(T);
    let both = WebhookVerifier::new(
        ProviderKind::StandardWebhooks,
        &[STANDARD_SECRET, other_secret],
        300,
        clock,
    )
    .unwrap();
    assert!(verify_standard(&both, "msg_py_5", T, &s(4), &body).is_ok());
}

#[test]
fn bastion_signed_standard_headers_verify_in_standardwebhooks() {
    // The peer's verifier reads the wall clock, so these deliveries are signed "now".
    let now = SystemClock.now();
    let secret = StandardSecret::parse(STANDARD_SECRET).unwrap();
    let other = StandardSecret::from_key_bytes(vec![9; 32]).unwrap();
    let body = standard_event("invoice.paid", "2023-11-14T22:13:15Z");
    let pretty = "{\n  \"type\": \"invoice.paid\",\n  \"note\": \"naïve\"\n}\n";
    let headers = |id: &str, ts: i64, sig: String| json!({"webhook-id": id, "webhook-timestamp": ts.to_string(), "webhook-signature": sig});
    let verify = |id: &str, ts: i64, sig: String, payload: &str| json!({"op": "verify", "secret": STANDARD_SECRET, "headers": headers(id, ts, sig), "payload": payload});
    let good = standard::sign(&secret, "msg_b_1", now, body.as_bytes());
    let rotating = format!(
        "{} {}",
        standard::sign(&other, "msg_b_1", now, body.as_bytes()),
        good
    );
    let ops = json!([
        verify("msg_b_1", now, good.clone(), &body),
        verify(
            "msg_b_2",
            now,
            standard::sign(&secret, "msg_b_2", now, pretty.as_bytes()),
            pretty
        ),
        verify("msg_b_1", now, rotating, &body),
        // Controls: the peer really checks body, id, secret and age.
        verify("msg_b_1", now, good.clone(), &format!("{body} ")),
        verify("msg_b_9", now, good, &body),
        verify(
            "msg_b_3",
            now,
            standard::sign(&other, "msg_b_3", now, body.as_bytes()),
            &body
        ),
        verify(
            "msg_b_4",
            now - 600,
            standard::sign(&secret, "msg_b_4", now - 600, body.as_bytes()),
            &body
        ),
    ]);
    let out = standard_py(&ops);
    let ok: Vec<bool> = out.iter().map(|r| r["ok"].as_bool().unwrap()).collect();
    assert_eq!(
        ok,
        [true, true, true, false, false, false, false],
        "{out:?}"
    );
    assert!(
        out[6]["error"].as_str().unwrap().contains("too old"),
        "{out:?}"
    );
}
