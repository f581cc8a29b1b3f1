//! Rate limits and budgets of the AI doors (`/v1/agent/chat`, `/mcp`): GCRA limiters from
//! `governor` per tenant and per principal, in memory, on the server's [`Clock`]; the daily
//! model-token budget per tenant in the store's `throttles` table (shared by instances); and
//! the spike alert on a tenant's chats per minute (OWASP LLM10, unbounded consumption; case
//! A7).
//!
//! The in-memory limiters are per instance: N instances admit up to N× the configured rate
//! in total. The token budget is shared through the database.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use bastion_types::{SharedClock, TenantId, UserId};
use governor::clock::Clock as GovClock;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

/// Default chats per minute for one tenant (all its users together).
pub const CHATS_PER_MINUTE_TENANT_DEFAULT: u32 = 600;
/// Default chats per minute for one principal.
pub const CHATS_PER_MINUTE_USER_DEFAULT: u32 = 60;
/// Default agent and MCP tool calls per minute for one tenant.
pub const TOOL_CALLS_PER_MINUTE_TENANT_DEFAULT: u32 = 3_000;
/// Default agent and MCP tool calls per minute for one principal.
pub const TOOL_CALLS_PER_MINUTE_USER_DEFAULT: u32 = 300;
/// Default model tokens per tenant per UTC day.
pub const TENANT_DAILY_TOKENS_DEFAULT: u64 = 2_000_000;
/// Default spike factor: a minute with more chats than this many times the tenant's
/// trailing average raises the alert.
pub const SPIKE_FACTOR_DEFAULT: u32 = 5;
/// Default spike floor: fewer chats per minute than this never raise the alert; at least this
/// many always do.
pub const SPIKE_MIN_PER_MINUTE_DEFAULT: u32 = 120;
/// Keys kept by one keyed limiter before idle ones are dropped (`retain_recent`).
const LIMITER_KEYS_MAX: usize = 100_000;
/// Tenants whose per-minute chat counts are tracked for the spike alert.
const SPIKE_TENANTS_MAX: usize = 100_000;
/// Weight of the newest minute in the trailing average (exponential, in percent).
const SPIKE_EWMA_PERCENT: u64 = 20;
/// Seconds in a UTC day: token budgets reset at midnight UTC.
pub const DAY_SECS: i64 = 86_400;

/// The limits. Every field has a named default ([`Default`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentQuotas {
    /// Chats per minute per tenant ([`CHATS_PER_MINUTE_TENANT_DEFAULT`]).
    pub chats_per_minute_tenant: u32,
    /// Chats per minute per principal ([`CHATS_PER_MINUTE_USER_DEFAULT`]).
    pub chats_per_minute_user: u32,
    /// Tool calls (agent and MCP) per minute per tenant.
    pub tool_calls_per_minute_tenant: u32,
    /// Tool calls (agent and MCP) per minute per principal.
    pub tool_calls_per_minute_user: u32,
    /// Model tokens (prompt + completion) per tenant per UTC day; 0 refuses every chat.
    pub tenant_daily_tokens: u64,
    /// Spike factor over the trailing average ([`SPIKE_FACTOR_DEFAULT`]).
    pub spike_factor: u32,
    /// Spike floor, chats per minute ([`SPIKE_MIN_PER_MINUTE_DEFAULT`]).
    pub spike_min_per_minute: u32,
}

impl Default for AgentQuotas {
    fn default() -> Self {
        AgentQuotas {
            chats_per_minute_tenant: CHATS_PER_MINUTE_TENANT_DEFAULT,
            chats_per_minute_user: CHATS_PER_MINUTE_USER_DEFAULT,
            tool_calls_per_minute_tenant: TOOL_CALLS_PER_MINUTE_TENANT_DEFAULT,
            tool_calls_per_minute_user: TOOL_CALLS_PER_MINUTE_USER_DEFAULT,
            tenant_daily_tokens: TENANT_DAILY_TOKENS_DEFAULT,
            spike_factor: SPIKE_FACTOR_DEFAULT,
            spike_min_per_minute: SPIKE_MIN_PER_MINUTE_DEFAULT,
        }
    }
}

/// governor's view of Bastion's [`Clock`](bastion_types::Clock): whole seconds since the
/// epoch as a `Duration` (governor's `Reference` for `Duration`).
#[derive(Clone)]
struct ServerClock(SharedClock);

impl GovClock for ServerClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.0.now()).unwrap_or(0))
    }
}

type Keyed<K> = RateLimiter<
    K,
    HashMapStateStore<K>,
    ServerClock,
    governor::middleware::NoOpMiddleware<Duration>,
>;

fn keyed<K: std::hash::Hash + Eq + Clone>(per_minute: u32, clock: &SharedClock) -> Keyed<K> {
    // A whole minute's allowance may come as one burst; it refills evenly over the minute.
    let n = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
    RateLimiter::hashmap_with_clock(Quota::per_minute(n), ServerClock(clock.clone()))
}

/// Refused by a rate limit: wait this many seconds (`Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub u64);

/// A spike to report (log `bastion::alert` + audit), raised once per tenant and minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spike {
    /// Chats admitted in the current minute.
    pub per_minute: u64,
    /// The tenant's trailing average, chats per minute (rounded up).
    pub trailing_average: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct MinuteCount {
    minute: i64,
    count: u64,
    /// Trailing average in thousandths of a chat per minute.
    average_milli: u64,
    alerted: bool,
}

/// The limiters of one server instance.
pub struct AgentGovernor {
    quotas: AgentQuotas,
    clock: SharedClock,
    tenant_chats: Keyed<TenantId>,
    user_chats: Keyed<(TenantId, UserId)>,
    tenant_tools: Keyed<TenantId>,
    user_tools: Keyed<(TenantId, UserId)>,
    minutes: Mutex<HashMap<TenantId, MinuteCount>>,
}

impl std::fmt::Debug for AgentGovernor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentGovernor")
            .field("quotas", &self.quotas)
            .finish_non_exhaustive()
    }
}

impl AgentGovernor {
    /// Limiters for `quotas`, on `clock`.
    #[must_use]
    pub fn new(quotas: AgentQuotas, clock: SharedClock) -> Self {
        AgentGovernor {
            tenant_chats: keyed(quotas.chats_per_minute_tenant, &clock),
            user_chats: keyed(quotas.chats_per_minute_user, &clock),
            tenant_tools: keyed(quotas.tool_calls_per_minute_tenant, &clock),
            user_tools: keyed(quotas.tool_calls_per_minute_user, &clock),
            minutes: Mutex::new(HashMap::new()),
            quotas,
            clock,
        }
    }

    /// The quotas.
    #[must_use]
    pub fn quotas(&self) -> AgentQuotas {
        self.quotas
    }

    /// Admits one chat of `user` in `tenant`, or says how long to wait. The user's limit is
    /// checked first, so one user's flood does not use up the tenant's allowance.
    ///
    /// # Errors
    /// [`RetryAfter`] when the user's or the tenant's limit is reached.
    pub fn check_chat(&self, tenant: TenantId, user: UserId) -> Result<(), RetryAfter> {
        self.check(&self.user_chats, &self.tenant_chats, tenant, user)
    }

    /// Admits one tool call (agent or MCP) of `user` in `tenant`.
    ///
    /// # Errors
    /// [`RetryAfter`] when the user's or the tenant's limit is reached.
    pub fn check_tool_call(&self, tenant: TenantId, user: UserId) -> Result<(), RetryAfter> {
        self.check(&self.user_tools, &self.tenant_tools, tenant, user)
    }

    fn check(
        &self,
        users: &Keyed<(TenantId, UserId)>,
        tenants: &Keyed<TenantId>,
        tenant: TenantId,
        user: UserId,
    ) -> Result<(), RetryAfter> {
        for l in [users.len(), tenants.len()] {
            if l > LIMITER_KEYS_MAX {
                users.retain_recent();
                tenants.retain_recent();
            }
        }
        let now = ServerClock(self.clock.clone()).now();
        let wait = |nu: governor::NotUntil<Duration>| {
            // Whole seconds, rounded up, at least 1.
            let w = nu.wait_time_from(now);
            RetryAfter((w.as_secs() + u64::from(w.subsec_nanos() > 0)).max(1))
        };
        users.check_key(&(tenant, user)).map_err(wait)?;
        tenants.check_key(&tenant).map_err(wait)?;
        Ok(())
    }

    /// Counts an admitted chat of `tenant` in the current minute and returns a [`Spike`] the
    /// first time in a minute the count exceeds both [`AgentQuotas::spike_min_per_minute`]
    /// and [`AgentQuotas::spike_factor`] × the trailing average of earlier minutes.
    pub fn note_chat(&self, tenant: TenantId) -> Option<Spike> {
        let minute = self.clock.now().div_euclid(60);
        let Ok(mut map) = self.minutes.lock() else {
            return None;
        };
        if map.len() >= SPIKE_TENANTS_MAX && !map.contains_key(&tenant) {
            map.retain(|_, m| m.minute >= minute - 60);
            if map.len() >= SPIKE_TENANTS_MAX {
                return None;
            }
        }
        let m = map.entry(tenant).or_insert(MinuteCount {
            minute,
            ..MinuteCount::default()
        });
        if m.minute != minute {
            // Fold the finished minute (and any idle minutes since, as zeros) into the average.
            let idle = u64::try_from(minute - m.minute - 1).unwrap_or(0).min(60);
            let mut avg = ewma(m.average_milli, m.count.saturating_mul(1000));
            for _ in 0..idle {
                avg = ewma(avg, 0);
            }
            *m = MinuteCount {
                minute,
                count: 0,
                average_milli: avg,
                alerted: false,
            };
        }
        m.count = m.count.saturating_add(1);
        let floor = u64::from(self.quotas.spike_min_per_minute);
        let relative = m
            .average_milli
            .saturating_mul(u64::from(self.quotas.spike_factor))
            / 1000;
        if !m.alerted && m.count > floor.max(relative) {
            m.alerted = true;
            return Some(Spike {
                per_minute: m.count,
                trailing_average: m.average_milli.div_ceil(1000),
            });
        }
        None
    }
}

fn ewma(avg: u64, sample: u64) -> u64 {
    (avg.saturating_mul(100 - SPIKE_EWMA_PERCENT) + sample.saturating_mul(SPIKE_EWMA_PERCENT)) / 100
}

/// The throttle key of `tenant`'s token count for the UTC day of `now`.
#[must_use]
pub fn token_key(tenant: TenantId, now: i64) -> String {
    format!("agent-tokens:{tenant}:{}", now.div_euclid(DAY_SECS))
}

/// Seconds until the next UTC midnight (at least 1).
#[must_use]
pub fn secs_to_next_day(now: i64) -> u64 {
    u64::try_from(DAY_SECS - now.rem_euclid(DAY_SECS))
        .unwrap_or(1)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bastion_types::FixedClock;
    use std::sync::Arc;

    #[test]
    fn a_flooding_tenant_is_throttled_and_another_is_not() {
        let clock = FixedClock::new(1_800_000_000);
        let quotas = AgentQuotas {
            chats_per_minute_tenant: 10,
            chats_per_minute_user: 10,
            ..AgentQuotas::default()
        };
        let g = AgentGovernor::new(quotas, Arc::new(clock.clone()));
        let (a, b) = (TenantId::new_random(), TenantId::new_random());
        let (ua, ub) = (UserId::new_random(), UserId::new_random());
        let admitted = (0..100).filter(|_| g.check_chat(a, ua).is_ok()).count();
        assert_eq!(admitted, 10);
        let refused = g.check_chat(a, ua).unwrap_err();
        assert!((1..=60).contains(&refused.0), "{refused:?}");
        assert!(g.check_chat(b, ub).is_ok());
        // A minute later the allowance is back.
        clock.advance(60);
        assert!(g.check_chat(a, ua).is_ok());
    }

    #[test]
    fn a_spike_over_the_trailing_average_alerts_once_per_minute() {
        let clock = FixedClock::new(1_800_000_000);
        let quotas = AgentQuotas {
            spike_factor: 3,
            spike_min_per_minute: 5,
            ..AgentQuotas::default()
        };
        let g = AgentGovernor::new(quotas, Arc::new(clock.clone()));
        let t = TenantId::new_random();
        // Five quiet minutes of 4 chats: never above the floor of 5.
        for _ in 0..5 {
            for _ in 0..4 {
                assert_eq!(g.note_chat(t), None);
            }
            clock.advance(60);
        }
        // Now a burst: the alert comes once, past max(5, 3 × average).
        let spikes: Vec<Spike> = (0..50).filter_map(|_| g.note_chat(t)).collect();
        assert_eq!(spikes.len(), 1);
        assert!(spikes[0].per_minute > 5);
        assert!(spikes[0].trailing_average >= 1);
    }

    #[test]
    fn token_days_are_utc_days() {
        assert_eq!(secs_to_next_day(86_400 * 3), 86_400);
        assert_eq!(secs_to_next_day(86_400 * 3 + 86_399), 1);
        let t = TenantId::new_random();
        assert_ne!(token_key(t, 86_399), token_key(t, 86_400));
    }
}
