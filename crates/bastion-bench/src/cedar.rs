//! Cedar decision latency: `Authorizer::decide` for the vendor-quote policies over a fixed
//! mix of allowed and denied requests, each call timed on its own.

use std::hint::black_box;

use bastion_authz::{Authorizer, AuthzRequest, Resource};
use bastion_types::{Principal, Record, TenantId};

use crate::BenchError;
use crate::stats::{Samples, now};

/// The principals and the record the mix is made of.
pub struct CedarCase<'a> {
    /// Acme buyer who owns `quote`.
    pub buyer: &'a Principal,
    /// Another acme buyer.
    pub other_buyer: &'a Principal,
    /// Acme seller assigned to `quote`.
    pub seller: &'a Principal,
    /// Acme finance.
    pub finance: &'a Principal,
    /// A globex buyer.
    pub foreign_buyer: &'a Principal,
    /// An acme quote, as stored.
    pub quote: &'a Record,
    /// Acme's id (the quote's tenant).
    pub acme: TenantId,
}

/// One kind of request in the mix.
pub struct Kind {
    /// Row label.
    pub label: &'static str,
    /// The decision the policies must give.
    pub expect_allow: bool,
}

/// The mix, in round-robin order.
pub const KINDS: [Kind; 6] = [
    Kind {
        label: "get_quote, buyer on own quote",
        expect_allow: true,
    },
    Kind {
        label: "get_quote, another buyer",
        expect_allow: false,
    },
    Kind {
        label: "get_quote, assigned seller",
        expect_allow: true,
    },
    Kind {
        label: "get_quote, finance",
        expect_allow: true,
    },
    Kind {
        label: "get_quote, cross-tenant buyer",
        expect_allow: false,
    },
    Kind {
        label: "list_quotes on Tenant, buyer",
        expect_allow: true,
    },
];

impl CedarCase<'_> {
    fn request(&self, kind: usize, now: i64) -> AuthzRequest<'_> {
        let on_quote = Resource::Record {
            record: self.quote,
            parent: None,
        };
        let (principal, action, resource) = match kind {
            0 => (self.buyer, "get_quote", on_quote),
            1 => (self.other_buyer, "get_quote", on_quote),
            2 => (self.seller, "get_quote", on_quote),
            3 => (self.finance, "get_quote", on_quote),
            // The record is acme's; the caller is globex's: the tenant guard must forbid.
            4 => (
                self.foreign_buyer,
                "get_quote",
                Resource::RecordIn {
                    tenant: self.acme,
                    record: self.quote,
                    parent: None,
                },
            ),
            _ => (self.buyer, "list_quotes", Resource::Tenant),
        };
        AuthzRequest {
            principal,
            action,
            resource,
            now,
        }
    }
}

/// Result: all calls together and per kind.
pub struct CedarResult {
    /// Every call.
    pub all: Samples,
    /// Per kind, in [`KINDS`] order.
    pub per_kind: Vec<Samples>,
    /// Allowed decisions among the timed calls.
    pub allowed: usize,
}

/// Checks each kind gives its expected decision (with no evaluation error), warms up, then
/// times `n` calls round-robin over the kinds.
///
/// # Errors
/// A kind whose decision is not the expected one.
pub fn run(
    authz: &Authorizer,
    case: &CedarCase<'_>,
    n: usize,
    now_secs: i64,
) -> Result<CedarResult, BenchError> {
    for (i, k) in KINDS.iter().enumerate() {
        let d = authz.decide(&case.request(i, now_secs));
        if d.allowed != k.expect_allow || !d.errors.is_empty() {
            return Err(BenchError(format!(
                "cedar case `{}`: expected allowed={}, got {d:?}",
                k.label, k.expect_allow
            )));
        }
    }
    for i in 0..(n / 10).max(KINDS.len()) {
        black_box(authz.decide(&case.request(i % KINDS.len(), now_secs)));
    }
    time_calls(authz, case, n, now_secs)
}

fn time_calls(
    authz: &Authorizer,
    case: &CedarCase<'_>,
    n: usize,
    now_secs: i64,
) -> Result<CedarResult, BenchError> {
    let mut all = Samples::with_capacity(n);
    let mut per_kind: Vec<Samples> = KINDS
        .iter()
        .map(|_| Samples::with_capacity(n / KINDS.len() + 1))
        .collect();
    let mut allowed = 0;
    let start = now();
    for i in 0..n {
        let kind = i % KINDS.len();
        let req = case.request(kind, now_secs);
        let t = now();
        let d = black_box(authz.decide(black_box(&req)));
        let took = t.elapsed();
        all.push(took);
        if let Some(s) = per_kind.get_mut(kind) {
            s.push(took);
        }
        if d.allowed {
            allowed += 1;
        }
    }
    all.wall = start.elapsed();
    let kinds = KINDS.len();
    for s in &mut per_kind {
        // Each kind's share of the wall time, for completeness; rows show latency only.
        s.wall = all.wall / u32::try_from(kinds).unwrap_or(1);
    }
    if allowed == 0 {
        return Err(BenchError("no decision allowed".to_owned()));
    }
    Ok(CedarResult {
        all,
        per_kind,
        allowed,
    })
}
