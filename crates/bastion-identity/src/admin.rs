//! Operator functions behind `bastion tenants ...` and `bastion users ...`.
//!
//! Each runs as the operator (no principal), uses [`TenantScope::pre_auth`] with a tenant
//! resolved from its slug, and writes an audit record in the same transaction as its effect
//! (`admin.*` actions, actor absent, `detail.via` = `operator`). Passwords, secrets and
//! recovery codes never enter an audit record or a log.
//!
//! [`TenantScope::pre_auth`]: bastion_store::TenantScope::pre_auth

use bastion_audit::Outcome;
use bastion_store::tenants::{self, Tenant};
use bastion_store::users::{self, NewUser, User};
use bastion_store::{Page, StoreError, audit, mfa, refresh};
use bastion_types::{Slug, TenantId, UserId};
use serde::Serialize;
use serde_json::json;

use crate::service::{event, store_err};
use crate::totp::{
    new_recovery_codes, new_totp_secret, otpauth_uri, recovery_code_hash, secret_base32,
};
use crate::{AuthError, IdentityService};

/// Most users [`IdentityService::list_users`] returns.
pub const USERS_LIST_MAX: usize = 10_000;
/// Users fetched per page while listing.
const USERS_PAGE: u32 = 100;

/// A user to create. `Debug` redacts the password.
#[derive(Clone, PartialEq, Eq)]
pub struct NewAccount {
    /// Unique within the tenant.
    pub username: Slug,
    /// The initial password (12..=1024 bytes); hashed with argon2id before it is stored.
    pub password: String,
    /// Manifest roles.
    pub roles: Vec<Slug>,
    /// A seeded demo account (production refuses to start while one exists).
    pub is_demo: bool,
}

impl std::fmt::Debug for NewAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAccount")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("roles", &self.roles)
            .field("is_demo", &self.is_demo)
            .finish()
    }
}

/// A user as operators see it: no hash, no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserSummary {
    /// The user id.
    pub id: UserId,
    /// The username.
    pub username: Slug,
    /// Manifest roles.
    pub roles: Vec<Slug>,
    /// Seeded demo account.
    pub is_demo: bool,
    /// Disabled accounts cannot log in.
    pub disabled: bool,
    /// Whether a confirmed TOTP second factor exists.
    pub mfa_enrolled: bool,
}

/// A TOTP factor set up by an operator (e.g. for `bastion demo`). `Debug` redacts it.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct ProvisionedTotp {
    /// The secret as unpadded RFC 4648 base32.
    pub secret_base32: String,
    /// `otpauth://` key URI.
    pub otpauth_uri: String,
    /// Ten single-use recovery codes.
    pub recovery_codes: Vec<String>,
}

impl std::fmt::Debug for ProvisionedTotp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisionedTotp").finish_non_exhaustive()
    }
}

fn nil_tenant() -> TenantId {
    TenantId::from_uuid(uuid::Uuid::nil())
}

fn user_target(u: &User) -> Option<String> {
    Some(format!("user:{}", u.id))
}

impl IdentityService {
    /// Creates a tenant (`bastion tenants create`). Audited on the system chain.
    ///
    /// # Errors
    /// [`AuthError::Conflict`] when the slug is taken; [`AuthError::BadRequest`] for a bad
    /// region.
    pub async fn create_tenant(&self, slug: &Slug, region: &str) -> Result<TenantId, AuthError> {
        let mut sys = self.inner.store.system().await.map_err(store_err)?;
        let id = match tenants::create_tenant(&mut sys, slug, region).await {
            Ok(id) => id,
            Err(StoreError::Duplicate) => {
                return Err(AuthError::Conflict(format!("tenant `{slug}` exists")));
            }
            Err(StoreError::Invalid { reason }) => {
                return Err(AuthError::BadRequest(reason.to_owned()));
            }
            Err(e) => return Err(store_err(e)),
        };
        let ev = event(
            self.now(),
            nil_tenant(),
            None,
            "admin.tenant.create",
            Some(format!("tenant:{id}")),
            Outcome::Ok,
            json!({ "slug": slug.as_str(), "region": region, "via": "operator" }),
        );
        audit::system_append_audit(&mut sys, &ev)
            .await
            .map_err(store_err)?;
        sys.commit().await.map_err(store_err)?;
        Ok(id)
    }

    /// All tenants, ordered by slug (`bastion tenants list`).
    ///
    /// # Errors
    /// [`AuthError::Unavailable`] when the store fails.
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, AuthError> {
        let mut sys = self.inner.store.system().await.map_err(store_err)?;
        let list = tenants::list_tenants(&mut sys).await.map_err(store_err)?;
        sys.rollback().await.map_err(store_err)?;
        Ok(list)
    }

    async fn tenant_by_slug(&self, slug: &Slug) -> Result<Tenant, AuthError> {
        let mut sys = self.inner.store.system().await.map_err(store_err)?;
        let t = tenants::tenant_by_slug(&mut sys, slug)
            .await
            .map_err(store_err)?;
        sys.rollback().await.map_err(store_err)?;
        t.ok_or_else(|| AuthError::NotFound(format!("tenant `{slug}`")))
    }

    /// Adds a user with an argon2id-hashed password (`bastion users add`). The user enrolls
    /// TOTP at first login (or an operator provisions it with
    /// [`IdentityService::provision_totp`]).
    ///
    /// # Errors
    /// [`AuthError::NotFound`] for an unknown tenant; [`AuthError::BadRequest`] for a
    /// password outside the policy; [`AuthError::Conflict`] when the username is taken.
    pub async fn add_user(&self, tenant: &Slug, account: NewAccount) -> Result<UserId, AuthError> {
        let t = self.tenant_by_slug(tenant).await?;
        let password_hash = self.inner.hasher.hash(&account.password).await?;
        let mut tx = self.begin(t.id).await?;
        let new = NewUser {
            username: account.username.clone(),
            password_hash,
            roles: account.roles.clone(),
            is_demo: account.is_demo,
        };
        let user = match users::create_user(&mut tx, new).await {
            Ok(u) => u,
            Err(StoreError::Duplicate) => {
                return Err(AuthError::Conflict(format!(
                    "user `{}` exists",
                    account.username
                )));
            }
            Err(StoreError::Invalid { reason }) => {
                return Err(AuthError::BadRequest(reason.to_owned()));
            }
            Err(e) => return Err(store_err(e)),
        };
        let roles: Vec<&str> = account.roles.iter().map(Slug::as_str).collect();
        let ev = event(
            self.now(),
            t.id,
            None,
            "admin.user.create",
            user_target(&user),
            Outcome::Ok,
            json!({ "username": account.username.as_str(), "roles": roles, "is_demo": account.is_demo, "via": "operator" }),
        );
        audit::append_audit(&mut tx, &ev).await.map_err(store_err)?;
        tx.commit().await.map_err(store_err)?;
        Ok(user.id)
    }

    /// The tenant's users, ordered by username, at most [`USERS_LIST_MAX`].
    ///
    /// # Errors
    /// [`AuthError::NotFound`] for an unknown tenant.
    pub async fn list_users(&self, tenant: &Slug) -> Result<Vec<UserSummary>, AuthError> {
        let t = self.tenant_by_slug(tenant).await?;
        let mut tx = self.begin(t.id).await?;
        let mut out = Vec::new();
        let mut offset: u32 = 0;
        while out.len() < USERS_LIST_MAX {
            let page = users::list_users(
                &mut tx,
                Page {
                    offset,
                    limit: USERS_PAGE,
                },
            )
            .await
            .map_err(store_err)?;
            let n = page.len();
            for u in page {
                let enrolled = mfa::totp_for(&mut tx, u.id)
                    .await
                    .map_err(store_err)?
                    .is_some_and(|s| s.confirmed);
                out.push(UserSummary {
                    id: u.id,
                    username: u.username,
                    roles: u.roles,
                    is_demo: u.is_demo,
                    disabled: u.disabled,
                    mfa_enrolled: enrolled,
                });
            }
            if n < USERS_PAGE as usize {
                break;
            }
            offset = offset.saturating_add(USERS_PAGE);
        }
        tx.rollback().await.map_err(store_err)?;
        out.truncate(USERS_LIST_MAX);
        Ok(out)
    }

    /// Runs `f` on the named user inside one transaction with an audit record, then commits.
    async fn with_user<F>(
        &self,
        tenant: &Slug,
        username: &Slug,
        action: &str,
        f: F,
    ) -> Result<(), AuthError>
    where
        F: for<'a> FnOnce(
            &'a mut bastion_store::TenantTx,
            &'a User,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<Output = Result<serde_json::Value, StoreError>> + Send + 'a,
            >,
        >,
    {
        let t = self.tenant_by_slug(tenant).await?;
        let mut tx = self.begin(t.id).await?;
        let user = users::user_by_username(&mut tx, username)
            .await
            .map_err(store_err)?
            .ok_or_else(|| AuthError::NotFound(format!("user `{username}`")))?;
        let mut detail = match f(&mut tx, &user).await {
            Ok(d) => d,
            Err(StoreError::Invalid { reason }) => {
                return Err(AuthError::BadRequest(reason.to_owned()));
            }
            Err(e) => return Err(store_err(e)),
        };
        if let Some(obj) = detail.as_object_mut() {
            obj.insert("via".to_owned(), json!("operator"));
        }
        let ev = event(
            self.now(),
            t.id,
            None,
            action,
            user_target(&user),
            Outcome::Ok,
            detail,
        );
        audit::append_audit(&mut tx, &ev).await.map_err(store_err)?;
        tx.commit().await.map_err(store_err)
    }

    /// Replaces a user's roles (`bastion users set-roles`). Takes effect on the next request:
    /// access-token verification reads roles from the store.
    ///
    /// # Errors
    /// [`AuthError::NotFound`] for an unknown tenant or user.
    pub async fn set_roles(
        &self,
        tenant: &Slug,
        username: &Slug,
        roles: Vec<Slug>,
    ) -> Result<(), AuthError> {
        self.with_user(tenant, username, "admin.user.set_roles", move |tx, user| {
            Box::pin(async move {
                users::set_roles(tx, user.id, &roles).await?;
                let names: Vec<&str> = roles.iter().map(Slug::as_str).collect();
                Ok(json!({ "roles": names }))
            })
        })
        .await
    }

    /// Disables a user (`bastion users disable`): login refused, every session revoked and
    /// the session epoch bumped, so live access tokens die at once.
    ///
    /// # Errors
    /// [`AuthError::NotFound`] for an unknown tenant or user.
    pub async fn disable_user(&self, tenant: &Slug, username: &Slug) -> Result<(), AuthError> {
        self.with_user(tenant, username, "admin.user.disable", |tx, user| {
            Box::pin(async move {
                users::set_disabled(tx, user.id, true).await?;
                let n = refresh::revoke_user_families(tx, user.id, "user disabled").await?;
                users::bump_session_epoch(tx, user.id).await?;
                Ok(json!({ "sessions_revoked": n }))
            })
        })
        .await
    }

    /// Re-enables a disabled user (`bastion users enable`).
    ///
    /// # Errors
    /// [`AuthError::NotFound`] for an unknown tenant or user.
    pub async fn enable_user(&self, tenant: &Slug, username: &Slug) -> Result<(), AuthError> {
        self.with_user(tenant, username, "admin.user.enable", |tx, user| {
            Box::pin(async move {
                users::set_disabled(tx, user.id, false).await?;
                Ok(json!({}))
            })
        })
        .await
    }

    /// Resets a user's MFA (`bastion users reset-mfa`): TOTP secret, recovery codes and
    /// pending challenges removed, sessions revoked, epoch bumped; the user enrolls again at
    /// next login.
    ///
    /// # Errors
    /// [`AuthError::NotFound`] for an unknown tenant or user.
    pub async fn reset_mfa(&self, tenant: &Slug, username: &Slug) -> Result<(), AuthError> {
        self.with_user(tenant, username, "admin.user.reset_mfa", |tx, user| {
            Box::pin(async move {
                mfa::reset_mfa(tx, user.id).await?;
                let n = refresh::revoke_user_families(tx, user.id, "mfa reset").await?;
                users::bump_session_epoch(tx, user.id).await?;
                Ok(json!({ "sessions_revoked": n }))
            })
        })
        .await
    }

    /// Sets a user's password (`bastion users set-password`); revokes every session.
    ///
    /// # Errors
    /// [`AuthError::BadRequest`] for a password outside the policy; [`AuthError::NotFound`].
    pub async fn set_password(
        &self,
        tenant: &Slug,
        username: &Slug,
        password: &str,
    ) -> Result<(), AuthError> {
        let hash = self.inner.hasher.hash(password).await?;
        self.with_user(
            tenant,
            username,
            "admin.user.set_password",
            move |tx, user| {
                Box::pin(async move {
                    users::set_password_hash(tx, user.id, &hash).await?;
                    let n = refresh::revoke_user_families(tx, user.id, "password changed").await?;
                    users::bump_session_epoch(tx, user.id).await?;
                    Ok(json!({ "sessions_revoked": n }))
                })
            },
        )
        .await
    }

    /// Gives a user a confirmed TOTP factor and fresh recovery codes chosen by the operator
    /// (for `bastion demo`, which writes the secret to `demo-credentials.json`). Replaces any
    /// existing factor. The secret is stored sealed under the tenant's field key.
    ///
    /// # Errors
    /// [`AuthError::NotFound`] for an unknown tenant or user.
    pub async fn provision_totp(
        &self,
        tenant: &Slug,
        username: &Slug,
    ) -> Result<ProvisionedTotp, AuthError> {
        let secret = new_totp_secret()?;
        let codes = new_recovery_codes()?;
        let hashes: Vec<[u8; 32]> = codes.iter().map(|c| recovery_code_hash(c)).collect();
        let t = self.tenant_by_slug(tenant).await?;
        let mut tx = self.begin(t.id).await?;
        let user = users::user_by_username(&mut tx, username)
            .await
            .map_err(store_err)?
            .ok_or_else(|| AuthError::NotFound(format!("user `{username}`")))?;
        let sealed = self.seal_totp_secret(t.id, user.id, &secret)?;
        let written = async {
            mfa::set_totp_secret(&mut tx, user.id, &sealed, true).await?;
            mfa::replace_recovery_codes(&mut tx, user.id, &hashes).await
        }
        .await;
        match written {
            Ok(()) => {}
            Err(StoreError::Invalid { reason }) => {
                return Err(AuthError::BadRequest(reason.to_owned()));
            }
            Err(e) => return Err(store_err(e)),
        }
        let ev = event(
            self.now(),
            t.id,
            None,
            "admin.user.provision_totp",
            user_target(&user),
            Outcome::Ok,
            json!({ "method": "totp", "via": "operator" }),
        );
        audit::append_audit(&mut tx, &ev).await.map_err(store_err)?;
        tx.commit().await.map_err(store_err)?;
        Ok(ProvisionedTotp {
            secret_base32: secret_base32(&secret),
            otpauth_uri: otpauth_uri(
                &self.config().totp_issuer,
                &format!("{username}@{tenant}"),
                &secret,
            ),
            recovery_codes: codes,
        })
    }
}
