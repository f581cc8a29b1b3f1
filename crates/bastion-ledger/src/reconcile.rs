//! Daily reconciliation: the ledger's money events of one UTC day against what the PSP says
//! happened that day — its balance transactions (minor units) and its daily balance report
//! (**major** units, converted here with integer arithmetic: case P10).
//!
//! **Keys.** Both sides are keyed by the PSP object that moved the money: the balance
//! transaction's `source` (`ch_…` for a charge and its fee, `re_…` for a refund, `po_…` for
//! a payout, `dp_…`/`du_…` for a dispute). A ledger entry names it in its detail as
//! [`PSP_OBJECT_KEY`] (`{"psp_object": "ch_…"}`); a reversal inherits the key of the entry it
//! reverses. An entry without the key cannot be matched and is reported as
//! [`DriftKind::MissingAtPsp`] under its reference.
//!
//! **Amounts.** For an entry, `gross` = its postings on `psp_clearing` plus its postings on
//! `fees`, and `fee` = its postings on `fees` (minor units): a capture of 1 234 is gross
//! +1 234, a fee entry of 66 on the same charge is gross 0 and fee 66, a refund is gross
//! −amount, a payout −amount, a reversal the negation of what it reverses. A balance
//! transaction's `amount` is gross and its `fee` is fee, so a clean object has equal sums.
//!
//! **Classification** of each object with money on day D on either side ([`DriftKind`]):
//! `missing_in_ledger` (at the PSP on D, nowhere in the ledger on D−1..D+1),
//! `missing_at_psp` (the reverse), `timing` (on D on one side, on the adjacent day on the
//! other), `currency` (both on D, other currencies), `amount` and `fee` (both on D, same
//! currency, other sums; the item carries the difference in minor units). A clean day has no
//! item at all.
//!
//! **Tenants.** The PSP account is shared by every tenant and a balance transaction names no
//! tenant, so a run reads every tenant's ledger; an item carries the tenant of the ledger
//! side when there is one. [`Reconciliation::tenant`] narrows the report to one tenant's items
//! and the items of no tenant (PSP money that no ledger claims).
//!
//! **Effects** ([`record`]): every drift item is one `bastion::alert` log line (PSP ids,
//! kinds and amounts only — no PII, no secret) and one `reconcile.drift` audit record (on the
//! tenant's chain, or the system chain when no tenant is known); every run adds one
//! `reconcile.completed` record to the system chain.

use std::collections::{BTreeMap, BTreeSet};

use bastion_audit::{AuditEvent, Outcome};
use bastion_payments::psp::{BalanceTransaction, Psp, PspError, StripePsp, TimeRange};
use bastion_store::ledger::{self, Entry, EntryId};
use bastion_store::{Store, StoreError, TenantScope, audit, tenants};
use bastion_types::{Currency, TenantId, UnixTime};
use serde::Serialize;
use serde_json::{Value, json};

use crate::chart::{FEES, PSP_CLEARING};

/// The detail key of a ledger entry naming the PSP object that moved the money.
pub const PSP_OBJECT_KEY: &str = "psp_object";
/// Seconds in a UTC day.
pub const DAY_SECS: i64 = 86_400;
/// Most drift items a report lists (and alerts, and audits one by one); the counts are
/// always complete and [`ReconcileReport::truncated`] says when items were left out.
pub const DRIFT_ITEMS_MAX: usize = 1_000;
/// Most lines read from one daily report.
pub const REPORT_LINES_MAX: usize = 10_000;
/// Longest major-unit decimal accepted, bytes.
pub const DECIMAL_BYTES_MAX: usize = 24;

/// Why a reconciliation could not run. Never holds a key or a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// The date is not `YYYY-MM-DD` (a real day from 1970-01-01 to 9999-12-31).
    #[error("date must be `YYYY-MM-DD`")]
    Date,
    /// A major-unit amount does not parse for its currency (too many fraction digits, not
    /// a decimal, out of range).
    #[error("bad major-unit amount in the daily report")]
    Decimal,
    /// The daily report does not have the documented shape.
    #[error("the daily report does not have the documented shape")]
    Report,
    /// More tenants than one run reads ([`tenants::TENANTS_LIST_MAX`]): refused rather than
    /// reporting the money of unread tenants as missing from the ledger.
    #[error("more tenants than one reconciliation reads")]
    TooManyTenants,
    /// The PSP failed.
    #[error(transparent)]
    Psp(#[from] PspError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One UTC calendar day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day {
    /// Days since 1970-01-01.
    days: i64,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant, "chrono-compatible
/// low-level date algorithms", `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse (Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

impl Day {
    /// Parses `YYYY-MM-DD` strictly (a date that exists, year 1970 to 9999).
    ///
    /// # Errors
    /// [`ReconcileError::Date`].
    pub fn parse(s: &str) -> Result<Self, ReconcileError> {
        let b = s.as_bytes();
        if b.len() != 10 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
            return Err(ReconcileError::Date);
        }
        let num = |r: std::ops::Range<usize>| -> Result<i64, ReconcileError> {
            let part = s.get(r).ok_or(ReconcileError::Date)?;
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return Err(ReconcileError::Date);
            }
            part.parse::<i64>().map_err(|_| ReconcileError::Date)
        };
        let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let days_in_month = match m {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return Err(ReconcileError::Date),
        };
        if y < 1970 || d < 1 || d > days_in_month {
            return Err(ReconcileError::Date);
        }
        Ok(Self {
            days: days_from_civil(y, m, d),
        })
    }

    /// The day holding Unix second `t` (UTC).
    #[must_use]
    pub fn of(t: UnixTime) -> Self {
        Self {
            days: t.div_euclid(DAY_SECS),
        }
    }

    /// Its first second (00:00:00 UTC).
    #[must_use]
    pub fn start(self) -> UnixTime {
        self.days.saturating_mul(DAY_SECS)
    }

    /// The day before.
    #[must_use]
    pub fn prev(self) -> Self {
        Self {
            days: self.days - 1,
        }
    }

    /// The day after.
    #[must_use]
    pub fn next(self) -> Self {
        Self {
            days: self.days + 1,
        }
    }
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (y, m, d) = civil_from_days(self.days);
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

/// ISO 4217 zero-decimal currencies among Stripe's (Stripe docs, "Zero-decimal currencies").
const ZERO_DECIMAL: [&str; 16] = [
    "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV",
    "XAF", "XOF", "XPF",
];
/// ISO 4217 three-decimal currencies among Stripe's (Stripe docs, "Three-decimal currencies").
const THREE_DECIMAL: [&str; 5] = ["BHD", "JOD", "KWD", "OMR", "TND"];

/// The minor-unit exponent of `currency` (ISO 4217): 0 for JPY, KRW and the other
/// zero-decimal currencies, 3 for BHD, JOD, KWD, OMR, TND, otherwise 2.
#[must_use]
pub fn exponent(currency: Currency) -> u32 {
    let c = currency.as_str();
    if ZERO_DECIMAL.contains(&c) {
        0
    } else if THREE_DECIMAL.contains(&c) {
        3
    } else {
        2
    }
}

/// Converts a major-unit decimal string to minor units with integer arithmetic only (case
/// P10): `"12.34"` with exponent 2 → 1 234, `"-0.05"` → −5, `"12.3"` → 1 230, `"12"` →
/// 1 200, `"1234"` with exponent 0 → 1 234. More fraction digits than `exponent` (`"1.234"`
/// for EUR, `"5.0"` for JPY), signs other than a leading `-`, exponents, spaces and anything
/// over [`DECIMAL_BYTES_MAX`] bytes or outside `i64` are refused — never rounded.
///
/// # Errors
/// [`ReconcileError::Decimal`].
pub fn parse_major(s: &str, exponent: u32) -> Result<i64, ReconcileError> {
    if s.is_empty() || s.len() > DECIMAL_BYTES_MAX {
        return Err(ReconcileError::Decimal);
    }
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) if !f.is_empty() => (i, f),
        Some(_) => return Err(ReconcileError::Decimal),
        None => (digits, ""),
    };
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !all_digits(int) || !all_digits(frac) {
        return Err(ReconcileError::Decimal);
    }
    let frac_len = u32::try_from(frac.len()).map_err(|_| ReconcileError::Decimal)?;
    if frac_len > exponent {
        return Err(ReconcileError::Decimal);
    }
    let scale = 10_i64
        .checked_pow(exponent)
        .ok_or(ReconcileError::Decimal)?;
    let int_v: i64 = int.parse().map_err(|_| ReconcileError::Decimal)?;
    let frac_v: i64 = if frac.is_empty() {
        0
    } else {
        let f: i64 = frac.parse().map_err(|_| ReconcileError::Decimal)?;
        f.checked_mul(10_i64.pow(exponent - frac_len))
            .ok_or(ReconcileError::Decimal)?
    };
    let abs = int_v
        .checked_mul(scale)
        .and_then(|v| v.checked_add(frac_v))
        .ok_or(ReconcileError::Decimal)?;
    Ok(if negative { -abs } else { abs })
}

/// What kind of drift an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// The PSP moved money on D for an object no ledger entry of D−1..D+1 names.
    MissingInLedger,
    /// The ledger has money on D for an object the PSP does not show on D−1..D+1.
    MissingAtPsp,
    /// Both sides on D, same currency, other gross amounts.
    Amount,
    /// Both sides on D, same currency, same gross, other fees.
    Fee,
    /// Both sides on D in other currencies.
    Currency,
    /// On D on one side and on the adjacent day on the other (e.g. posted at 23:59:59, at
    /// the PSP at 00:00:01): usually settles by itself; listed so it is seen.
    Timing,
}

impl DriftKind {
    /// The snake_case name (as serialized).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingInLedger => "missing_in_ledger",
            Self::MissingAtPsp => "missing_at_psp",
            Self::Amount => "amount",
            Self::Fee => "fee",
            Self::Currency => "currency",
            Self::Timing => "timing",
        }
    }
}

/// Which PSP statement an item was found against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PspSource {
    /// `GET /v1/balance_transactions` (minor units).
    BalanceTransactions,
    /// The daily balance report (major units, converted).
    DailyReport,
}

/// One money movement on the PSP side, minor units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PspLine {
    /// The object that moved the money (`ch_…`, `re_…`, …; the balance transaction's id
    /// when it names no source).
    pub object: String,
    /// Its currency.
    pub currency: Currency,
    /// Gross amount (negative for refunds, payouts, disputes).
    pub amount_minor: i64,
    /// The PSP's fee.
    pub fee_minor: i64,
    /// When, Unix seconds.
    pub created: UnixTime,
}

impl From<&BalanceTransaction> for PspLine {
    fn from(t: &BalanceTransaction) -> Self {
        Self {
            object: t.source.clone().unwrap_or_else(|| t.id.clone()),
            currency: t.currency,
            amount_minor: t.amount_minor,
            fee_minor: t.fee_minor,
            created: t.created,
        }
    }
}

/// The lines of a daily balance report (`{"lines": [{"source", "currency", "gross", "fee",
/// "created", …}]}`, amounts major-unit strings), converted to minor units by
/// [`parse_major`] with the currency's [`exponent`].
///
/// # Errors
/// [`ReconcileError::Report`] for another shape or more than [`REPORT_LINES_MAX`] lines,
/// [`ReconcileError::Decimal`] for an amount that does not convert exactly.
pub fn report_lines(report: &Value) -> Result<Vec<PspLine>, ReconcileError> {
    let lines = report
        .get("lines")
        .and_then(Value::as_array)
        .ok_or(ReconcileError::Report)?;
    if lines.len() > REPORT_LINES_MAX {
        return Err(ReconcileError::Report);
    }
    let text = |l: &Value, k: &str| -> Result<String, ReconcileError> {
        l.get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(ReconcileError::Report)
    };
    let mut out = Vec::with_capacity(lines.len());
    for l in lines {
        let currency = Currency::parse(&text(l, "currency")?.to_ascii_uppercase())
            .map_err(|_| ReconcileError::Report)?;
        let e = exponent(currency);
        let object = match l.get("source").and_then(Value::as_str) {
            Some(s) => s.to_owned(),
            None => text(l, "balance_transaction")?,
        };
        out.push(PspLine {
            object,
            currency,
            amount_minor: parse_major(&text(l, "gross")?, e)?,
            fee_minor: parse_major(&text(l, "fee")?, e)?,
            created: l
                .get("created")
                .and_then(Value::as_i64)
                .ok_or(ReconcileError::Report)?,
        });
    }
    Ok(out)
}

/// One money movement on the ledger side: one journal entry's effect on the PSP balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerLine {
    /// The tenant whose ledger holds it.
    pub tenant: TenantId,
    /// The PSP object ([`PSP_OBJECT_KEY`]), or the entry's reference when it names none.
    pub object: String,
    /// Whether the entry named its PSP object.
    pub keyed: bool,
    /// The entry.
    pub entry: EntryId,
    /// The currency.
    pub currency: Currency,
    /// Gross: postings on `psp_clearing` plus postings on `fees`.
    pub amount_minor: i64,
    /// Postings on `fees`.
    pub fee_minor: i64,
    /// When it was posted, Unix seconds.
    pub created: UnixTime,
}

/// One drift finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriftItem {
    /// What kind.
    pub kind: DriftKind,
    /// The PSP object (`ch_…`, `re_…`, …).
    pub object: String,
    /// The tenant of the ledger side, when there is one.
    pub tenant: Option<TenantId>,
    /// The currency of the ledger side (or the PSP side when the ledger has none).
    pub currency: Currency,
    /// The PSP side's currency when it differs ([`DriftKind::Currency`]).
    pub psp_currency: Option<Currency>,
    /// The ledger's gross on the day compared, minor units (`None`: nothing there).
    pub ledger_minor: Option<i64>,
    /// The PSP's gross on the day compared, minor units.
    pub psp_minor: Option<i64>,
    /// The ledger's fee, minor units.
    pub ledger_fee_minor: Option<i64>,
    /// The PSP's fee, minor units.
    pub psp_fee_minor: Option<i64>,
    /// For `amount`: ledger − PSP gross; for `fee`: ledger − PSP fee; minor units.
    pub difference_minor: Option<i64>,
    /// The PSP statements that show this drift.
    pub seen_in: Vec<PspSource>,
}

/// The result of reconciling one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    /// The day, `YYYY-MM-DD` (UTC).
    pub date: String,
    /// The tenant the report is narrowed to, if any.
    pub tenant: Option<TenantId>,
    /// Balance transactions of the day.
    pub psp_transactions: usize,
    /// Daily report lines of the day (`None`: no report was compared).
    pub report_lines: Option<usize>,
    /// Ledger entries of the day (touching the PSP balance).
    pub ledger_entries: usize,
    /// Objects of the day that matched on every statement compared.
    pub matched: usize,
    /// Drift items in all (never cut).
    pub drift_count: usize,
    /// Drift items per kind (every kind present, zeros included).
    pub counts: BTreeMap<DriftKind, usize>,
    /// The items, at most [`DRIFT_ITEMS_MAX`], ordered by object then kind.
    pub items: Vec<DriftItem>,
    /// Whether items were left out.
    pub truncated: bool,
}

impl ReconcileReport {
    /// Whether the day reconciled with zero drift.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.drift_count == 0
    }
}

/// Both sides' amounts of one object on one day, per currency.
#[derive(Debug, Default, Clone)]
struct Side {
    /// currency → (gross, fee)
    by_currency: BTreeMap<Currency, (i64, i64)>,
    tenant: Option<TenantId>,
    keyed: bool,
}

impl Side {
    fn add(&mut self, currency: Currency, amount: i64, fee: i64) {
        let slot = self.by_currency.entry(currency).or_insert((0, 0));
        slot.0 = slot.0.saturating_add(amount);
        slot.1 = slot.1.saturating_add(fee);
    }
}

/// Offset of `t` from `day`: −1, 0, 1, or `None` outside D−1..D+1.
fn offset(day: Day, t: UnixTime) -> Option<i8> {
    match Day::of(t).days - day.days {
        -1 => Some(-1),
        0 => Some(0),
        1 => Some(1),
        _ => None,
    }
}

/// Compares the ledger lines with one PSP statement's lines for `day`. Both may hold lines
/// of D−1..D+1 (needed to tell timing from missing); lines outside are ignored. Returns the
/// items (unordered) and the number of objects of D that matched.
#[must_use]
pub fn compare(
    day: Day,
    ledger: &[LedgerLine],
    psp: &[PspLine],
    source: PspSource,
) -> (Vec<DriftItem>, usize) {
    // object → offset → side
    let mut l: BTreeMap<&str, BTreeMap<i8, Side>> = BTreeMap::new();
    for x in ledger {
        if let Some(o) = offset(day, x.created) {
            let side = l.entry(&x.object).or_default().entry(o).or_default();
            side.add(x.currency, x.amount_minor, x.fee_minor);
            side.tenant = Some(x.tenant);
            side.keyed = x.keyed;
        }
    }
    let mut p: BTreeMap<&str, BTreeMap<i8, Side>> = BTreeMap::new();
    for x in psp {
        if let Some(o) = offset(day, x.created) {
            p.entry(&x.object).or_default().entry(o).or_default().add(
                x.currency,
                x.amount_minor,
                x.fee_minor,
            );
        }
    }
    let objects: BTreeSet<&str> = l
        .iter()
        .filter(|(_, d)| d.contains_key(&0))
        .chain(p.iter().filter(|(_, d)| d.contains_key(&0)))
        .map(|(o, _)| *o)
        .collect();
    let mut items = Vec::new();
    let mut matched = 0;
    let empty = BTreeMap::new();
    for object in objects {
        let ld = l.get(object).unwrap_or(&empty);
        let pd = p.get(object).unwrap_or(&empty);
        let tenant = ld.values().find_map(|s| s.tenant);
        let item =
            |kind, currency, psp_currency, lv: Option<(i64, i64)>, pv: Option<(i64, i64)>| {
                DriftItem {
                    kind,
                    object: object.to_owned(),
                    tenant,
                    currency,
                    psp_currency,
                    ledger_minor: lv.map(|v| v.0),
                    psp_minor: pv.map(|v| v.0),
                    ledger_fee_minor: lv.map(|v| v.1),
                    psp_fee_minor: pv.map(|v| v.1),
                    difference_minor: None,
                    seen_in: vec![source],
                }
            };
        let first = |s: &Side| s.by_currency.iter().next().map(|(c, v)| (*c, *v));
        match (ld.get(&0), pd.get(&0)) {
            (None, Some(ps)) => {
                let kind = if ld.contains_key(&-1) || ld.contains_key(&1) {
                    DriftKind::Timing
                } else {
                    DriftKind::MissingInLedger
                };
                for (c, v) in &ps.by_currency {
                    items.push(item(kind, *c, None, None, Some(*v)));
                }
            }
            (Some(ls), None) => {
                let kind = if ls.keyed && (pd.contains_key(&-1) || pd.contains_key(&1)) {
                    DriftKind::Timing
                } else {
                    DriftKind::MissingAtPsp
                };
                for (c, v) in &ls.by_currency {
                    items.push(item(kind, *c, None, Some(*v), None));
                }
            }
            (Some(ls), Some(ps)) => {
                let lc: BTreeSet<Currency> = ls.by_currency.keys().copied().collect();
                let pc: BTreeSet<Currency> = ps.by_currency.keys().copied().collect();
                if lc != pc {
                    let (Some((c, lv)), Some((pcur, pv))) = (first(ls), first(ps)) else {
                        continue;
                    };
                    items.push(item(DriftKind::Currency, c, Some(pcur), Some(lv), Some(pv)));
                    continue;
                }
                let mut clean = true;
                for (c, lv) in &ls.by_currency {
                    let pv = ps.by_currency.get(c).copied().unwrap_or((0, 0));
                    if lv.0 != pv.0 {
                        let mut it = item(DriftKind::Amount, *c, None, Some(*lv), Some(pv));
                        it.difference_minor = Some(lv.0.saturating_sub(pv.0));
                        items.push(it);
                        clean = false;
                    } else if lv.1 != pv.1 {
                        let mut it = item(DriftKind::Fee, *c, None, Some(*lv), Some(pv));
                        it.difference_minor = Some(lv.1.saturating_sub(pv.1));
                        items.push(it);
                        clean = false;
                    }
                }
                if clean {
                    matched += 1;
                }
            }
            (None, None) => {}
        }
    }
    (items, matched)
}

/// Merges the items of several statements: the same finding (kind, object, currencies,
/// amounts) seen in two statements is one item listing both.
fn merge(all: Vec<DriftItem>) -> Vec<DriftItem> {
    let mut out: Vec<DriftItem> = Vec::new();
    for it in all {
        let same = out.iter_mut().find(|o| {
            o.kind == it.kind
                && o.object == it.object
                && o.currency == it.currency
                && o.psp_currency == it.psp_currency
                && o.ledger_minor == it.ledger_minor
                && o.psp_minor == it.psp_minor
                && o.ledger_fee_minor == it.ledger_fee_minor
                && o.psp_fee_minor == it.psp_fee_minor
        });
        match same {
            Some(o) => {
                for s in it.seen_in {
                    if !o.seen_in.contains(&s) {
                        o.seen_in.push(s);
                    }
                }
            }
            None => out.push(it),
        }
    }
    out.sort_by(|a, b| (&a.object, a.kind).cmp(&(&b.object, b.kind)));
    out
}

/// The PSP side of one day: balance transactions of D−1..D+1, and optionally the daily
/// reports of D−1, D and D+1.
#[derive(Debug, Clone, Default)]
pub struct PspSide {
    /// Balance transactions created in `[start(D−1), start(D+2))`.
    pub transactions: Vec<PspLine>,
    /// The daily report lines of D−1, D and D+1 (`None`: not compared).
    pub report: Option<Vec<PspLine>>,
}

/// Reads the PSP side of `day` through `psp`; with `report`, also the daily reports of the
/// three days ([`StripePsp::daily_balance_report`], the built-in sandbox's report).
///
/// # Errors
/// [`ReconcileError::Psp`], [`ReconcileError::Report`], [`ReconcileError::Decimal`].
pub async fn fetch_psp_side(
    psp: &dyn Psp,
    report: Option<&StripePsp>,
    day: Day,
) -> Result<PspSide, ReconcileError> {
    let range = TimeRange {
        from: day.prev().start(),
        to: day.next().next().start(),
    };
    let transactions = psp
        .list_balance_transactions(range)
        .await?
        .iter()
        .map(PspLine::from)
        .collect();
    let report = match report {
        None => None,
        Some(r) => {
            let mut lines = Vec::new();
            for d in [day.prev(), day, day.next()] {
                lines.extend(report_lines(
                    &r.daily_balance_report(&d.to_string()).await?,
                )?);
            }
            Some(lines)
        }
    };
    Ok(PspSide {
        transactions,
        report,
    })
}

/// The ledger lines of `tenant` posted in D−1..D+1: one per entry that touches
/// `psp_clearing` or `fees`.
///
/// # Errors
/// [`ReconcileError::Store`].
pub async fn ledger_lines(
    store: &Store,
    tenant: TenantId,
    day: Day,
) -> Result<Vec<LedgerLine>, ReconcileError> {
    let mut tx = store.begin(TenantScope::pre_auth(tenant)).await?;
    let entries =
        ledger::entries_between(&mut tx, day.prev().start(), day.next().next().start()).await?;
    let clearing: BTreeSet<_> = ledger::accounts_with_code(&mut tx, PSP_CLEARING)
        .await?
        .into_iter()
        .map(|a| a.id)
        .collect();
    let fees: BTreeSet<_> = ledger::accounts_with_code(&mut tx, FEES)
        .await?
        .into_iter()
        .map(|a| a.id)
        .collect();
    let by_id: BTreeMap<EntryId, &Entry> = entries.iter().map(|e| (e.id, e)).collect();
    let mut out = Vec::new();
    for e in &entries {
        // A reversal is about what it reverses: take the original's PSP object.
        let named = |x: &Entry| {
            x.detail
                .get(PSP_OBJECT_KEY)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let object = match e.reverses {
            None => named(e),
            Some(r) => match by_id.get(&r) {
                Some(orig) => named(orig),
                None => ledger::entry(&mut tx, r).await?.as_ref().and_then(named),
            },
        };
        let mut per_currency: BTreeMap<Currency, (i64, i64)> = BTreeMap::new();
        for p in &e.postings {
            let is_fee = fees.contains(&p.account_id);
            if is_fee || clearing.contains(&p.account_id) {
                let slot = per_currency.entry(p.currency).or_insert((0, 0));
                slot.0 = slot.0.saturating_add(p.amount_minor);
                if is_fee {
                    slot.1 = slot.1.saturating_add(p.amount_minor);
                }
            }
        }
        for (currency, (amount, fee)) in per_currency {
            out.push(LedgerLine {
                tenant,
                object: object.clone().unwrap_or_else(|| e.reference.clone()),
                keyed: object.is_some(),
                entry: e.id,
                currency,
                amount_minor: amount,
                fee_minor: fee,
                created: e.created_at,
            });
        }
    }
    tx.rollback().await?;
    Ok(out)
}

/// What to reconcile.
#[derive(Debug, Clone, Copy)]
pub struct Reconciliation {
    /// The UTC day.
    pub day: Day,
    /// Narrow the report to this tenant's items (and items of no tenant).
    pub tenant: Option<TenantId>,
}

/// Reconciles `r.day`: reads every tenant's ledger lines and compares them with `psp`'s
/// balance transactions and, when present, its daily report. Pure reading: call [`record`]
/// to alert and audit.
///
/// # Errors
/// [`ReconcileError::Store`], [`ReconcileError::TooManyTenants`].
pub async fn reconcile(
    store: &Store,
    psp: &PspSide,
    r: Reconciliation,
) -> Result<ReconcileReport, ReconcileError> {
    let mut sys = store.system().await?;
    let all = tenants::list_tenants(&mut sys).await?;
    sys.rollback().await?;
    if i64::try_from(all.len()).unwrap_or(i64::MAX) >= tenants::TENANTS_LIST_MAX {
        return Err(ReconcileError::TooManyTenants);
    }
    let mut ledger = Vec::new();
    for t in &all {
        ledger.extend(ledger_lines(store, t.id, r.day).await?);
    }
    Ok(report_from(r, &ledger, psp))
}

/// Builds the report of `r` from lines already read (the pure part of [`reconcile`]).
#[must_use]
pub fn report_from(r: Reconciliation, ledger: &[LedgerLine], psp: &PspSide) -> ReconcileReport {
    let day = r.day;
    let on_day = |t: UnixTime| offset(day, t) == Some(0);
    let (mut items, matched_txns) = compare(
        day,
        ledger,
        &psp.transactions,
        PspSource::BalanceTransactions,
    );
    let mut matched = matched_txns;
    if let Some(report) = &psp.report {
        let (more, matched_report) = compare(day, ledger, report, PspSource::DailyReport);
        items.extend(more);
        matched = matched.min(matched_report);
    }
    let mut items = merge(items);
    if let Some(t) = r.tenant {
        items.retain(|i| i.tenant.is_none_or(|x| x == t));
    }
    let mut counts: BTreeMap<DriftKind, usize> = [
        DriftKind::MissingInLedger,
        DriftKind::MissingAtPsp,
        DriftKind::Amount,
        DriftKind::Fee,
        DriftKind::Currency,
        DriftKind::Timing,
    ]
    .into_iter()
    .map(|k| (k, 0))
    .collect();
    for i in &items {
        *counts.entry(i.kind).or_insert(0) += 1;
    }
    let drift_count = items.len();
    let truncated = items.len() > DRIFT_ITEMS_MAX;
    items.truncate(DRIFT_ITEMS_MAX);
    let ledger_entries: BTreeSet<EntryId> = ledger
        .iter()
        .filter(|l| on_day(l.created) && r.tenant.is_none_or(|t| t == l.tenant))
        .map(|l| l.entry)
        .collect();
    ReconcileReport {
        date: day.to_string(),
        tenant: r.tenant,
        psp_transactions: psp
            .transactions
            .iter()
            .filter(|t| on_day(t.created))
            .count(),
        report_lines: psp
            .report
            .as_ref()
            .map(|l| l.iter().filter(|t| on_day(t.created)).count()),
        ledger_entries: ledger_entries.len(),
        matched,
        drift_count,
        counts,
        items,
        truncated,
    }
}

fn nil_tenant() -> TenantId {
    TenantId::from_uuid(uuid::Uuid::nil())
}

/// The audit detail of an item: kinds, PSP ids, currencies and amounts only.
fn item_detail(date: &str, i: &DriftItem) -> Value {
    json!({
        "date": date,
        "kind": i.kind.as_str(),
        "object": i.object,
        "currency": i.currency.as_str(),
        "psp_currency": i.psp_currency.map(|c| c.as_str().to_owned()),
        "ledger_minor": i.ledger_minor,
        "psp_minor": i.psp_minor,
        "ledger_fee_minor": i.ledger_fee_minor,
        "psp_fee_minor": i.psp_fee_minor,
        "difference_minor": i.difference_minor,
        "seen_in": i.seen_in,
    })
}

/// Alerts and audits `report`: per item a `bastion::alert` warning and a `reconcile.drift`
/// audit record (outcome `fail`, target `psp:<object>`) on the item's tenant chain or, for
/// an item of no tenant, the system chain; then one `reconcile.completed` record on the
/// system chain (outcome `ok` when clean, `fail` otherwise) with the counts.
///
/// # Errors
/// [`ReconcileError::Store`] (records already committed stay: each chain commits on its own).
pub async fn record(store: &Store, report: &ReconcileReport) -> Result<(), ReconcileError> {
    for i in &report.items {
        tracing::warn!(
            target: "bastion::alert",
            date = %report.date,
            kind = i.kind.as_str(),
            object = %i.object,
            tenant = ?i.tenant.map(|t| t.to_string()),
            currency = i.currency.as_str(),
            difference_minor = ?i.difference_minor,
            "reconciliation drift"
        );
        let detail = item_detail(&report.date, i);
        match i.tenant {
            Some(t) => {
                let mut tx = store.begin(TenantScope::pre_auth(t)).await?;
                let ev = AuditEvent {
                    at: tx.now(),
                    tenant_id: t,
                    actor: None,
                    action: "reconcile.drift".to_owned(),
                    target: Some(format!("psp:{}", i.object)),
                    outcome: Outcome::Fail,
                    policy_ids: Vec::new(),
                    detail,
                };
                audit::append_audit(&mut tx, &ev).await?;
                tx.commit().await?;
            }
            None => {
                let mut sys = store.system().await?;
                let ev = AuditEvent {
                    at: sys.now(),
                    tenant_id: nil_tenant(),
                    actor: None,
                    action: "reconcile.drift".to_owned(),
                    target: Some(format!("psp:{}", i.object)),
                    outcome: Outcome::Fail,
                    policy_ids: Vec::new(),
                    detail,
                };
                audit::system_append_audit(&mut sys, &ev).await?;
                sys.commit().await?;
            }
        }
    }
    let mut sys = store.system().await?;
    let counts: BTreeMap<&str, usize> = report
        .counts
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    let ev = AuditEvent {
        at: sys.now(),
        tenant_id: nil_tenant(),
        actor: None,
        action: "reconcile.completed".to_owned(),
        target: Some(format!("day:{}", report.date)),
        outcome: if report.is_clean() {
            Outcome::Ok
        } else {
            Outcome::Fail
        },
        policy_ids: Vec::new(),
        detail: json!({
            "date": report.date,
            "tenant": report.tenant.map(|t| t.to_string()),
            "psp_transactions": report.psp_transactions,
            "report_lines": report.report_lines,
            "ledger_entries": report.ledger_entries,
            "matched": report.matched,
            "drift_count": report.drift_count,
            "counts": counts,
            "truncated": report.truncated,
        }),
    };
    audit::system_append_audit(&mut sys, &ev).await?;
    sys.commit().await?;
    if report.is_clean() {
        tracing::info!(date = %report.date, matched = report.matched, "reconciliation clean");
    }
    Ok(())
}
