//! The sandbox's in-memory state and the Stripe-like operations on it. Everything here is
//! synchronous and runs under the state lock, so each request is atomic.
#![expect(
    clippy::result_large_err,
    reason = "errors are rare, local and answered at once; boxing buys nothing here"
)]

use std::collections::{BTreeMap, HashMap};

use bastion_types::UnixTime;
use serde_json::{Value, json};

use crate::webhooks::OutgoingEvent;
use crate::{
    AMOUNT_MINOR_MAX, EVENT_API_VERSION, FeeSchedule, IDEMPOTENCY_KEYS_MAX, LIST_LIMIT_MAX,
    METADATA_KEY_BYTES_MAX, METADATA_KEYS_MAX, METADATA_VALUE_BYTES_MAX, OBJECTS_MAX,
    REPORT_LINES_MAX, format_major, minor_unit_exponent,
};

/// A Stripe-shaped error answer.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: u16,
    pub(crate) error_type: &'static str,
    pub(crate) code: Option<&'static str>,
    pub(crate) decline_code: Option<&'static str>,
    pub(crate) param: Option<String>,
    pub(crate) message: String,
    pub(crate) payment_intent: Option<Value>,
}

impl ApiError {
    pub(crate) fn invalid(
        code: &'static str,
        param: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status: 400,
            error_type: "invalid_request_error",
            code: Some(code),
            decline_code: None,
            param: param.map(str::to_owned),
            message: message.into(),
            payment_intent: None,
        }
    }

    pub(crate) fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub(crate) fn body(&self) -> Value {
        let mut e = json!({"type": self.error_type, "message": self.message});
        if let Some(code) = self.code {
            e["code"] = json!(code);
        }
        if let Some(d) = self.decline_code {
            e["decline_code"] = json!(d);
        }
        if let Some(p) = &self.param {
            e["param"] = json!(p);
        }
        if let Some(pi) = &self.payment_intent {
            e["payment_intent"] = pi.clone();
        }
        json!({ "error": e })
    }
}

fn full() -> ApiError {
    ApiError::invalid(
        "sandbox_full",
        None,
        "the psp sandbox holds too many objects",
    )
    .status(503)
}

/// Form or query parameters, each key at most once.
pub(crate) struct Params(BTreeMap<String, String>);

impl Params {
    pub(crate) fn new(pairs: Vec<(String, String)>) -> Result<Self, ApiError> {
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            if map.insert(k.clone(), v).is_some() {
                return Err(ApiError::invalid(
                    "parameter_duplicate",
                    Some(&k),
                    format!("parameter `{}` appears twice", short(&k)),
                ));
            }
        }
        Ok(Self(map))
    }

    /// The canonical text of the parameters, for idempotency fingerprints.
    pub(crate) fn canonical(&self) -> String {
        serde_urlencoded::to_string(&self.0).unwrap_or_default()
    }

    fn take(&mut self, k: &str) -> Option<String> {
        self.0.remove(k)
    }

    fn take_metadata(&mut self) -> Result<BTreeMap<String, String>, ApiError> {
        let keys: Vec<String> = self
            .0
            .keys()
            .filter(|k| k.starts_with("metadata[") && k.ends_with(']'))
            .cloned()
            .collect();
        if keys.len() > METADATA_KEYS_MAX {
            return Err(ApiError::invalid(
                "parameter_invalid",
                Some("metadata"),
                "too many metadata keys",
            ));
        }
        let mut out = BTreeMap::new();
        for k in keys {
            let v = self.0.remove(&k).unwrap_or_default();
            let inner = k
                .strip_prefix("metadata[")
                .and_then(|s| s.strip_suffix(']'))
                .unwrap_or_default()
                .to_owned();
            if inner.is_empty()
                || inner.len() > METADATA_KEY_BYTES_MAX
                || inner.contains(['[', ']'])
                || v.len() > METADATA_VALUE_BYTES_MAX
            {
                return Err(ApiError::invalid(
                    "parameter_invalid",
                    Some("metadata"),
                    "metadata keys are 1-40 bytes and values at most 500 bytes",
                ));
            }
            out.insert(inner, v);
        }
        Ok(out)
    }

    /// Refuses whatever was not taken.
    fn finish(self) -> Result<(), ApiError> {
        match self.0.keys().next() {
            None => Ok(()),
            Some(k) => Err(ApiError::invalid(
                "parameter_unknown",
                Some(k),
                format!("received unknown parameter: {}", short(k)),
            )),
        }
    }
}

/// At most 64 characters of user input, for messages.
fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

fn parse_amount(s: Option<String>, param: &str) -> Result<Option<i64>, ApiError> {
    let Some(s) = s else { return Ok(None) };
    let ok = !s.is_empty() && s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit());
    let n = s.parse::<i64>().ok().filter(|_| ok);
    match n {
        Some(n) if (1..=AMOUNT_MINOR_MAX).contains(&n) => Ok(Some(n)),
        _ => Err(ApiError::invalid(
            "parameter_invalid_integer",
            Some(param),
            format!("{param} must be an integer from 1 to {AMOUNT_MINOR_MAX}"),
        )),
    }
}

fn parse_bool(s: Option<String>, param: &str) -> Result<Option<bool>, ApiError> {
    match s.as_deref() {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(ApiError::invalid(
            "parameter_invalid_boolean",
            Some(param),
            format!("{param} must be true or false"),
        )),
    }
}

fn is_id(s: &str, prefix: &str) -> bool {
    s.len() > prefix.len()
        && s.len() <= 255
        && s.starts_with(prefix)
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// What a test payment method does when confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CardBehaviour {
    Succeed,
    Decline(&'static str),
    ThreeDs,
}

fn card_behaviour(pm: &str) -> Option<CardBehaviour> {
    match pm {
        "pm_card_visa" | "pm_card_mastercard" => Some(CardBehaviour::Succeed),
        "pm_card_chargeDeclined" => Some(CardBehaviour::Decline("generic_decline")),
        "pm_card_chargeDeclinedInsufficientFunds" => {
            Some(CardBehaviour::Decline("insufficient_funds"))
        }
        "pm_card_threeDSecure2Required" | "pm_card_authenticationRequired" => {
            Some(CardBehaviour::ThreeDs)
        }
        _ => None,
    }
}

struct Intent {
    id: String,
    amount: i64,
    currency: String,
    status: &'static str,
    payment_method: Option<String>,
    customer: Option<String>,
    metadata: BTreeMap<String, String>,
    client_secret: String,
    created: UnixTime,
    latest_charge: Option<String>,
    next_action: Option<Value>,
    last_payment_error: Option<Value>,
}

struct Charge {
    id: String,
    amount: i64,
    amount_refunded: i64,
    currency: String,
    payment_intent: String,
    payment_method: Option<String>,
    succeeded: bool,
    failure_code: Option<&'static str>,
    balance_transaction: Option<String>,
    metadata: BTreeMap<String, String>,
    created: UnixTime,
}

struct RefundRec {
    id: String,
    amount: i64,
    currency: String,
    charge: String,
    payment_intent: String,
    metadata: BTreeMap<String, String>,
    balance_transaction: String,
    created: UnixTime,
}

struct Txn {
    id: String,
    seq: u64,
    amount: i64,
    fee: i64,
    currency: String,
    kind: &'static str,
    source: String,
    created: UnixTime,
}

struct IdemEntry {
    fingerprint: String,
    status: u16,
    body: Value,
    expires: UnixTime,
}

/// The result of a remembered idempotent request.
pub(crate) enum IdemLookup {
    /// Not seen (or expired): run the request.
    New,
    /// Same request: replay this answer.
    Replay(u16, Value),
    /// Same key, different request.
    Mismatch,
}

/// Per-request context.
pub(crate) struct Ctx {
    pub(crate) now: UnixTime,
    pub(crate) fees: FeeSchedule,
    pub(crate) idempotency_key: Option<String>,
}

/// All sandbox state.
#[derive(Default)]
pub(crate) struct State {
    seq: u64,
    objects: usize,
    intents: HashMap<String, Intent>,
    charges: HashMap<String, Charge>,
    refunds: HashMap<String, RefundRec>,
    txns: Vec<Txn>,
    idempotency: HashMap<String, IdemEntry>,
    /// Events produced by the current request, drained by the HTTP layer.
    pub(crate) events: Vec<OutgoingEvent>,
}

impl State {
    fn next_id(&mut self, prefix: &str) -> (String, u64) {
        self.seq += 1;
        (format!("{prefix}_sbx{:010}", self.seq), self.seq)
    }

    fn reserve(&mut self, n: usize) -> Result<(), ApiError> {
        if self.objects + n > OBJECTS_MAX {
            return Err(full());
        }
        self.objects += n;
        Ok(())
    }

    // ---- idempotency ----

    pub(crate) fn idem_lookup(
        &mut self,
        key: &str,
        fingerprint: &str,
        now: UnixTime,
    ) -> IdemLookup {
        match self.idempotency.get(key) {
            Some(e) if e.expires > now => {
                if e.fingerprint == fingerprint {
                    IdemLookup::Replay(e.status, e.body.clone())
                } else {
                    IdemLookup::Mismatch
                }
            }
            _ => IdemLookup::New,
        }
    }

    /// Remembers an answer; `false` when the table is full even after dropping expired keys.
    pub(crate) fn idem_store(
        &mut self,
        key: String,
        fingerprint: String,
        status: u16,
        body: Value,
        expires: UnixTime,
        now: UnixTime,
    ) -> bool {
        if self.idempotency.len() >= IDEMPOTENCY_KEYS_MAX && !self.idempotency.contains_key(&key) {
            self.idempotency.retain(|_, e| e.expires > now);
            if self.idempotency.len() >= IDEMPOTENCY_KEYS_MAX {
                return false;
            }
        }
        self.idempotency.insert(
            key,
            IdemEntry {
                fingerprint,
                status,
                body,
                expires,
            },
        );
        true
    }

    pub(crate) fn idem_has_room(&mut self, key: &str, now: UnixTime) -> bool {
        if self.idempotency.len() < IDEMPOTENCY_KEYS_MAX || self.idempotency.contains_key(key) {
            return true;
        }
        self.idempotency.retain(|_, e| e.expires > now);
        self.idempotency.len() < IDEMPOTENCY_KEYS_MAX
    }

    // ---- events ----

    fn emit(&mut self, ctx: &Ctx, event_type: &str, object: Value) {
        let (id, _) = self.next_id("evt");
        let event = json!({
            "id": id,
            "object": "event",
            "api_version": EVENT_API_VERSION,
            "created": ctx.now,
            "livemode": false,
            "pending_webhooks": 1,
            "request": {"id": null, "idempotency_key": ctx.idempotency_key},
            "type": event_type,
            "data": {"object": object},
        });
        let body = serde_json::to_vec(&event).unwrap_or_default();
        self.events.push(OutgoingEvent {
            id,
            event_type: event_type.to_owned(),
            body,
        });
    }

    // ---- rendering ----

    fn intent_json(&self, pi: &Intent) -> Value {
        json!({
            "id": pi.id,
            "object": "payment_intent",
            "amount": pi.amount,
            "amount_received": if pi.status == "succeeded" { pi.amount } else { 0 },
            "currency": pi.currency,
            "status": pi.status,
            "capture_method": "automatic",
            "confirmation_method": "automatic",
            "client_secret": pi.client_secret,
            "created": pi.created,
            "customer": pi.customer,
            "livemode": false,
            "metadata": pi.metadata,
            "next_action": pi.next_action,
            "last_payment_error": pi.last_payment_error,
            "latest_charge": pi.latest_charge,
            "payment_method": pi.payment_method,
            "payment_method_types": ["card"],
        })
    }

    fn charge_json(ch: &Charge) -> Value {
        json!({
            "id": ch.id,
            "object": "charge",
            "amount": ch.amount,
            "amount_captured": if ch.succeeded { ch.amount } else { 0 },
            "amount_refunded": ch.amount_refunded,
            "balance_transaction": ch.balance_transaction,
            "captured": ch.succeeded,
            "created": ch.created,
            "currency": ch.currency,
            "failure_code": ch.failure_code,
            "livemode": false,
            "metadata": ch.metadata,
            "paid": ch.succeeded,
            "payment_intent": ch.payment_intent,
            "payment_method": ch.payment_method,
            "refunded": ch.succeeded && ch.amount_refunded == ch.amount,
            "status": if ch.succeeded { "succeeded" } else { "failed" },
        })
    }

    fn refund_json(r: &RefundRec) -> Value {
        json!({
            "id": r.id,
            "object": "refund",
            "amount": r.amount,
            "balance_transaction": r.balance_transaction,
            "charge": r.charge,
            "created": r.created,
            "currency": r.currency,
            "metadata": r.metadata,
            "payment_intent": r.payment_intent,
            "status": "succeeded",
        })
    }

    fn txn_json(t: &Txn) -> Value {
        json!({
            "id": t.id,
            "object": "balance_transaction",
            "amount": t.amount,
            "available_on": t.created,
            "created": t.created,
            "currency": t.currency,
            "exchange_rate": null,
            "fee": t.fee,
            "fee_details": if t.fee == 0 { json!([]) } else {
                json!([{"amount": t.fee, "currency": t.currency, "type": "stripe_fee", "description": "sandbox processing fees"}])
            },
            "net": t.amount - t.fee,
            "reporting_category": t.kind,
            "source": t.source,
            "status": "available",
            "type": t.kind,
        })
    }

    fn intent_value(&self, id: &str) -> Value {
        self.intents
            .get(id)
            .map(|pi| self.intent_json(pi))
            .unwrap_or(Value::Null)
    }

    fn missing(kind: &str, param: &str, id: &str) -> ApiError {
        ApiError::invalid(
            "resource_missing",
            Some(param),
            format!("no such {kind}: '{}'", short(id)),
        )
        .status(404)
    }

    // ---- operations ----

    /// `POST /v1/payment_intents`.
    pub(crate) fn create_intent(&mut self, ctx: &Ctx, mut p: Params) -> Result<Value, ApiError> {
        let amount = parse_amount(p.take("amount"), "amount")?.ok_or_else(|| {
            ApiError::invalid(
                "parameter_missing",
                Some("amount"),
                "missing required param: amount",
            )
        })?;
        let currency = p.take("currency").ok_or_else(|| {
            ApiError::invalid(
                "parameter_missing",
                Some("currency"),
                "missing required param: currency",
            )
        })?;
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(ApiError::invalid(
                "parameter_invalid",
                Some("currency"),
                "currency must be a three-letter iso code",
            ));
        }
        let currency = currency.to_ascii_lowercase();
        let payment_method = p.take("payment_method");
        if let Some(pm) = &payment_method
            && card_behaviour(pm).is_none()
        {
            return Err(Self::missing("payment_method", "payment_method", pm).status(400));
        }
        let confirm = parse_bool(p.take("confirm"), "confirm")?.unwrap_or(false);
        let customer = p.take("customer");
        if let Some(c) = &customer
            && !is_id(c, "cus_")
        {
            return Err(ApiError::invalid(
                "parameter_invalid",
                Some("customer"),
                "customer must be a `cus_` id",
            ));
        }
        let metadata = p.take_metadata()?;
        p.finish()?;
        if confirm && payment_method.is_none() {
            return Err(ApiError::invalid(
                "parameter_missing",
                Some("payment_method"),
                "confirm=true needs a payment_method",
            ));
        }
        self.reserve(1)?;
        let (id, _) = self.next_id("pi");
        let client_secret = format!("{id}_secret_{}", uuid::Uuid::new_v4().simple());
        let status = if payment_method.is_some() {
            "requires_confirmation"
        } else {
            "requires_payment_method"
        };
        self.intents.insert(
            id.clone(),
            Intent {
                id: id.clone(),
                amount,
                currency,
                status,
                payment_method,
                customer,
                metadata,
                client_secret,
                created: ctx.now,
                latest_charge: None,
                next_action: None,
                last_payment_error: None,
            },
        );
        if confirm {
            self.confirm(ctx, &id)?;
        }
        Ok(self.intent_value(&id))
    }

    /// `GET /v1/payment_intents/{id}`.
    pub(crate) fn get_intent(&self, id: &str, p: Params) -> Result<Value, ApiError> {
        p.finish()?;
        self.intents
            .get(id)
            .map(|pi| self.intent_json(pi))
            .ok_or_else(|| Self::missing("payment_intent", "intent", id))
    }

    /// `POST /v1/payment_intents/{id}/confirm`.
    pub(crate) fn confirm_intent(
        &mut self,
        ctx: &Ctx,
        id: &str,
        mut p: Params,
    ) -> Result<Value, ApiError> {
        let pm = p.take("payment_method");
        p.finish()?;
        let pi = self
            .intents
            .get_mut(id)
            .ok_or_else(|| Self::missing("payment_intent", "intent", id))?;
        if let Some(pm) = pm {
            if card_behaviour(&pm).is_none() {
                return Err(Self::missing("payment_method", "payment_method", &pm).status(400));
            }
            if !matches!(
                pi.status,
                "requires_payment_method" | "requires_confirmation"
            ) {
                return Err(unexpected_state(pi.status));
            }
            pi.payment_method = Some(pm);
            pi.status = "requires_confirmation";
        }
        if pi.status != "requires_confirmation" {
            return Err(unexpected_state(pi.status));
        }
        self.confirm(ctx, id)?;
        Ok(self.intent_value(id))
    }

    /// `POST /v1/payment_intents/{id}/_authenticate` (localstripe's 3DS completion).
    pub(crate) fn authenticate(
        &mut self,
        ctx: &Ctx,
        id: &str,
        mut p: Params,
    ) -> Result<Value, ApiError> {
        let secret = p.take("client_secret").unwrap_or_default();
        let success = parse_bool(p.take("success"), "success")?.unwrap_or(false);
        p.finish()?;
        let pi = self
            .intents
            .get_mut(id)
            .ok_or_else(|| Self::missing("payment_intent", "intent", id))?;
        if !bastion_crypto::ct_eq(secret.as_bytes(), pi.client_secret.as_bytes()) {
            return Err(ApiError::invalid(
                "client_secret_mismatch",
                Some("client_secret"),
                "client secret does not match",
            )
            .status(401));
        }
        if pi.status != "requires_action" {
            return Err(unexpected_state(pi.status));
        }
        pi.next_action = None;
        if success {
            self.charge(ctx, id, true)?;
        } else {
            pi.status = "requires_payment_method";
            pi.payment_method = None;
            pi.last_payment_error = Some(json!({
                "type": "card_error",
                "code": "payment_intent_authentication_failure",
                "message": "the payment method failed authentication",
            }));
            let v = self.intent_value(id);
            self.emit(ctx, "payment_intent.payment_failed", v);
        }
        Ok(self.intent_value(id))
    }

    /// Confirms an intent in `requires_confirmation`. A decline updates the intent and
    /// returns the 402 error carrying it.
    fn confirm(&mut self, ctx: &Ctx, id: &str) -> Result<(), ApiError> {
        let behaviour = self
            .intents
            .get(id)
            .and_then(|pi| pi.payment_method.as_deref())
            .and_then(card_behaviour)
            .ok_or_else(|| unexpected_state("requires_payment_method"))?;
        match behaviour {
            CardBehaviour::Succeed => self.charge(ctx, id, true),
            CardBehaviour::ThreeDs => {
                if let Some(pi) = self.intents.get_mut(id) {
                    pi.status = "requires_action";
                    pi.next_action = Some(json!({
                        "type": "use_stripe_sdk",
                        "use_stripe_sdk": {"type": "three_d_secure_redirect", "stripe_js": ""},
                    }));
                }
                let v = self.intent_value(id);
                self.emit(ctx, "payment_intent.requires_action", v);
                Ok(())
            }
            CardBehaviour::Decline(decline_code) => {
                self.charge(ctx, id, false)?;
                let mut err =
                    ApiError::invalid("card_declined", None, "your card was declined").status(402);
                err.error_type = "card_error";
                err.decline_code = Some(decline_code);
                err.payment_intent = Some(self.intent_value(id));
                Err(err)
            }
        }
    }

    /// Creates the intent's charge: succeeded (with its balance transaction) or failed.
    fn charge(&mut self, ctx: &Ctx, pi_id: &str, succeed: bool) -> Result<(), ApiError> {
        self.reserve(if succeed { 2 } else { 1 })?;
        let (charge_id, _) = self.next_id("ch");
        let (amount, currency, pm, metadata) = match self.intents.get(pi_id) {
            Some(pi) => (
                pi.amount,
                pi.currency.clone(),
                pi.payment_method.clone(),
                pi.metadata.clone(),
            ),
            None => return Err(Self::missing("payment_intent", "intent", pi_id)),
        };
        let mut balance_transaction = None;
        if succeed {
            let (txn_id, seq) = self.next_id("txn");
            self.txns.push(Txn {
                id: txn_id.clone(),
                seq,
                amount,
                fee: ctx.fees.fee_minor(amount),
                currency: currency.clone(),
                kind: "charge",
                source: charge_id.clone(),
                created: ctx.now,
            });
            balance_transaction = Some(txn_id);
        }
        self.charges.insert(
            charge_id.clone(),
            Charge {
                id: charge_id.clone(),
                amount,
                amount_refunded: 0,
                currency,
                payment_intent: pi_id.to_owned(),
                payment_method: pm,
                succeeded: succeed,
                failure_code: (!succeed).then_some("card_declined"),
                balance_transaction,
                metadata,
                created: ctx.now,
            },
        );
        if let Some(pi) = self.intents.get_mut(pi_id) {
            pi.latest_charge = Some(charge_id.clone());
            if succeed {
                pi.status = "succeeded";
                pi.last_payment_error = None;
            } else {
                pi.status = "requires_payment_method";
                pi.last_payment_error = Some(json!({
                    "type": "card_error",
                    "code": "card_declined",
                    "charge": charge_id,
                    "message": "your card was declined",
                }));
            }
        }
        let v = self.intent_value(pi_id);
        let event = if succeed {
            "payment_intent.succeeded"
        } else {
            "payment_intent.payment_failed"
        };
        self.emit(ctx, event, v);
        Ok(())
    }

    /// `POST /v1/refunds`.
    pub(crate) fn create_refund(&mut self, ctx: &Ctx, mut p: Params) -> Result<Value, ApiError> {
        let pi_param = p.take("payment_intent");
        let ch_param = p.take("charge");
        let amount = parse_amount(p.take("amount"), "amount")?;
        let metadata = p.take_metadata()?;
        p.finish()?;
        let charge_id = match (pi_param, ch_param) {
            (Some(pi), None) => {
                let intent = self
                    .intents
                    .get(&pi)
                    .ok_or_else(|| Self::missing("payment_intent", "payment_intent", &pi))?;
                match (&intent.latest_charge, intent.status) {
                    (Some(ch), "succeeded") => ch.clone(),
                    _ => {
                        return Err(ApiError::invalid(
                            "payment_intent_unexpected_state",
                            Some("payment_intent"),
                            "this payment intent has no successful charge to refund",
                        ));
                    }
                }
            }
            (None, Some(ch)) => ch,
            _ => {
                return Err(ApiError::invalid(
                    "parameter_missing",
                    Some("payment_intent"),
                    "give exactly one of payment_intent and charge",
                ));
            }
        };
        let charge = self
            .charges
            .get(&charge_id)
            .ok_or_else(|| Self::missing("charge", "charge", &charge_id))?;
        if !charge.succeeded {
            return Err(ApiError::invalid(
                "charge_not_refundable",
                Some("charge"),
                "a failed charge cannot be refunded",
            ));
        }
        let remaining = charge.amount - charge.amount_refunded;
        if remaining == 0 {
            return Err(ApiError::invalid(
                "charge_already_refunded",
                Some("charge"),
                format!("charge {charge_id} has already been refunded"),
            ));
        }
        let amount = amount.unwrap_or(remaining);
        if amount > remaining {
            return Err(ApiError::invalid(
                "amount_too_large",
                Some("amount"),
                format!(
                    "refund amount ({amount}) is greater than the unrefunded amount on the charge ({remaining})"
                ),
            ));
        }
        let currency = charge.currency.clone();
        let pi_id = charge.payment_intent.clone();
        self.reserve(2)?;
        let (refund_id, _) = self.next_id("re");
        let (txn_id, seq) = self.next_id("txn");
        self.txns.push(Txn {
            id: txn_id.clone(),
            seq,
            amount: -amount,
            fee: 0,
            currency: currency.clone(),
            kind: "refund",
            source: refund_id.clone(),
            created: ctx.now,
        });
        let refund = RefundRec {
            id: refund_id.clone(),
            amount,
            currency,
            charge: charge_id.clone(),
            payment_intent: pi_id,
            metadata,
            balance_transaction: txn_id,
            created: ctx.now,
        };
        let out = Self::refund_json(&refund);
        self.refunds.insert(refund_id, refund);
        if let Some(ch) = self.charges.get_mut(&charge_id) {
            ch.amount_refunded += amount;
            let v = Self::charge_json(ch);
            self.emit(ctx, "charge.refunded", v);
        }
        Ok(out)
    }

    /// Balance transactions, newest first (created, then creation order).
    fn sorted_txns(&self) -> Vec<&Txn> {
        let mut all: Vec<&Txn> = self.txns.iter().collect();
        all.sort_by(|a, b| b.created.cmp(&a.created).then(b.seq.cmp(&a.seq)));
        all
    }

    /// `GET /v1/balance_transactions`.
    pub(crate) fn list_txns(&self, mut p: Params) -> Result<Value, ApiError> {
        let limit = match p.take("limit") {
            None => 10,
            Some(l) => l
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=LIST_LIMIT_MAX).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "parameter_invalid_integer",
                        Some("limit"),
                        "limit must be 1 to 100",
                    )
                })?,
        };
        let starting_after = p.take("starting_after");
        let mut bound = |k: &str| -> Result<Option<i64>, ApiError> {
            match p.take(k) {
                None => Ok(None),
                Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                    ApiError::invalid(
                        "parameter_invalid_integer",
                        Some(k),
                        format!("{k} must be an integer"),
                    )
                }),
            }
        };
        let gte = bound("created[gte]")?;
        let gt = bound("created[gt]")?;
        let lt = bound("created[lt]")?;
        let lte = bound("created[lte]")?;
        p.finish()?;
        let in_range = |t: &Txn| {
            gte.is_none_or(|x| t.created >= x)
                && gt.is_none_or(|x| t.created > x)
                && lt.is_none_or(|x| t.created < x)
                && lte.is_none_or(|x| t.created <= x)
        };
        let matching: Vec<&Txn> = self
            .sorted_txns()
            .into_iter()
            .filter(|t| in_range(t))
            .collect();
        let start = match starting_after {
            None => 0,
            Some(after) => {
                matching.iter().position(|t| t.id == after).ok_or_else(|| {
                    Self::missing("balance_transaction", "starting_after", &after).status(400)
                })? + 1
            }
        };
        let page: Vec<Value> = matching
            .iter()
            .skip(start)
            .take(limit)
            .map(|t| Self::txn_json(t))
            .collect();
        let has_more = matching.len() > start + page.len();
        Ok(json!({
            "object": "list",
            "url": "/v1/balance_transactions",
            "has_more": has_more,
            "data": page,
        }))
    }

    /// `GET /v1/reporting/daily_balance?date=YYYY-MM-DD`: the UTC day's balance transactions
    /// and per-currency totals, amounts as **major-unit** decimal strings.
    pub(crate) fn daily_report(&self, mut p: Params) -> Result<Value, ApiError> {
        let date = p.take("date").ok_or_else(|| {
            ApiError::invalid(
                "parameter_missing",
                Some("date"),
                "missing required param: date",
            )
        })?;
        p.finish()?;
        let start = crate::parse_date_utc(&date).map_err(|_| {
            ApiError::invalid("parameter_invalid", Some("date"), "date must be YYYY-MM-DD")
        })?;
        let end = start + 86_400;
        let mut day: Vec<&Txn> = self
            .txns
            .iter()
            .filter(|t| t.created >= start && t.created < end)
            .collect();
        if day.len() > REPORT_LINES_MAX {
            return Err(ApiError::invalid(
                "report_too_large",
                Some("date"),
                "more lines than a report holds",
            ));
        }
        day.sort_by(|a, b| a.created.cmp(&b.created).then(a.seq.cmp(&b.seq)));
        let mut totals: BTreeMap<&str, (i64, i64, usize)> = BTreeMap::new();
        let mut lines = Vec::with_capacity(day.len());
        for t in &day {
            let e = minor_unit_exponent(&t.currency);
            lines.push(json!({
                "balance_transaction": t.id,
                "created": t.created,
                "type": t.kind,
                "source": t.source,
                "currency": t.currency,
                "gross": format_major(t.amount, e),
                "fee": format_major(t.fee, e),
                "net": format_major(t.amount - t.fee, e),
            }));
            let entry = totals.entry(t.currency.as_str()).or_insert((0, 0, 0));
            entry.0 = entry.0.saturating_add(t.amount);
            entry.1 = entry.1.saturating_add(t.fee);
            entry.2 += 1;
        }
        let currencies: Vec<Value> = totals
            .iter()
            .map(|(c, (gross, fee, count))| {
                let e = minor_unit_exponent(c);
                json!({
                    "currency": c,
                    "count": count,
                    "gross": format_major(*gross, e),
                    "fee": format_major(*fee, e),
                    "net": format_major(gross.saturating_sub(*fee), e),
                })
            })
            .collect();
        Ok(json!({
            "object": "reporting.daily_balance",
            "date": date,
            "timezone": "UTC",
            "units": "major",
            "currencies": currencies,
            "lines": lines,
        }))
    }
}

fn unexpected_state(status: &str) -> ApiError {
    ApiError::invalid(
        "payment_intent_unexpected_state",
        None,
        format!("this payment intent's status is {status}, which does not allow this"),
    )
}
