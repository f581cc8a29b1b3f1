//! The authenticated caller.

use serde::{Deserialize, Serialize};

use crate::{Slug, TenantId, UnixTime, UserId};

/// How a factor was proven, as RFC 8176 Authentication Method Reference values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// Password (`pwd`).
    Pwd,
    /// One-time password, here TOTP (`otp`).
    Otp,
    /// A single-use recovery code; reported as `otp`-class but kept distinct for audit.
    Rec,
    /// Multiple factors were used (`mfa`).
    Mfa,
}

/// An authenticated caller: who, for which tenant, with which roles, since when.
///
/// Only the identity crate builds one, from a verified access token; the tenant here is the
/// only tenant a request may touch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The tenant from the token. Never taken from a request body or path.
    pub tenant_id: TenantId,
    /// The tenant's slug, for display and policy attributes.
    pub tenant: Slug,
    /// The user.
    pub user_id: UserId,
    /// The username within the tenant.
    pub username: Slug,
    /// Roles from the manifest held by the user.
    pub roles: Vec<Slug>,
    /// Methods used at login (`pwd`, `otp`, `mfa`).
    pub amr: Vec<AuthMethod>,
    /// When the user last proved a second factor, seconds since the epoch.
    pub auth_time: UnixTime,
    /// The access token's `jti`, for audit correlation.
    pub token_id: String,
}

impl Principal {
    /// Whether the principal holds `role`.
    #[must_use]
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r.as_str() == role)
    }
}
