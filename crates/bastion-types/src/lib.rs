//! Bastion's shared vocabulary: identifiers, the authenticated [`Principal`], [`Money`] and
//! the [`Clock`] every time-dependent decision reads from.
//!
//! This crate does no I/O. Everything above it (store, identity, authorization, the
//! pipeline) speaks in these types, so a tenant id can never be confused with a user id and
//! an amount can never be a float.

mod clock;
mod ids;
mod money;
mod principal;
mod record;

pub use clock::{Clock, FixedClock, SharedClock, SystemClock, UnixTime};
pub use ids::{IdError, RecordId, Slug, TenantId, UserId};
pub use money::{Currency, Money, MoneyError};
pub use principal::{AuthMethod, Principal};
pub use record::Record;
