//! The identity service: login → second factor → tokens; refresh; logout; verification.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use bastion_audit::{AuditEvent, Outcome};
use bastion_crypto::KeyRing;
use bastion_store::mfa::{self, Challenge};
use bastion_store::tenants::{self, Tenant};
use bastion_store::users::{self, User};
use bastion_store::{
    FamilyId, RotateOutcome, Store, StoreError, TenantScope, TenantTx, audit, refresh, throttle,
};
use bastion_types::{AuthMethod, Principal, SharedClock, TenantId, UnixTime, UserId};
use serde::Serialize;
use serde_json::{Value, json};

use crate::jwt::{AccessClaims, sign_access_token, verify_access_token_claims};
use crate::totp::{
    new_recovery_codes, new_totp_secret, otpauth_uri, recovery_code_hash, secret_base32,
    verify_totp,
};
use crate::{AuthError, IdentityConfig, PasswordHasher};

/// Challenge kind between the password step and the TOTP/recovery step.
pub(crate) const KIND_MFA: &str = "mfa";
/// Challenge kind between the password step and TOTP enrollment.
pub(crate) const KIND_ENROLL: &str = "enroll";
/// Random bytes in opaque tokens (refresh, MFA, enrollment): 256 bits.
const OPAQUE_RANDOM_BYTES: usize = 32;
/// Length of the base64url random part of an opaque token.
const OPAQUE_RANDOM_CHARS: usize = 43;
/// Longest opaque token accepted, in bytes.
const OPAQUE_BYTES_MAX: usize = 128;
/// Longest TOTP or recovery code accepted, in bytes.
const CODE_BYTES_MAX: usize = 64;
/// Longest username or tenant slug considered at login, in bytes.
const LOGIN_NAME_BYTES_MAX: usize = 256;
/// The field name bound into the additional data of sealed TOTP secrets.
pub(crate) const TOTP_SECRET_FIELD: &str = "mfa_totp.secret";
/// The second-factor methods offered after the password step.
pub const MFA_METHODS: [&str; 2] = ["totp", "recovery_code"];

/// Access and refresh token as returned to the client (RFC 6749 §5.1). `Debug` redacts both.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct TokenPair {
    /// The JWT access token (RFC 9068).
    pub access_token: String,
    /// Always `Bearer` (RFC 6750).
    pub token_type: &'static str,
    /// Access token lifetime in seconds.
    pub expires_in: i64,
    /// The opaque refresh token; rotated on every use.
    pub refresh_token: String,
}

impl std::fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPair")
            .field("access_token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("refresh_token", &"<redacted>")
            .finish()
    }
}

/// The result of a correct password. Never a token usable as an access token (I10).
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum LoginOutcome {
    /// The user has a confirmed second factor: prove it with the `mfa_token`.
    MfaRequired {
        /// Opaque, single use, valid for the challenge TTL (5 minutes by default).
        mfa_token: String,
        /// `["totp", "recovery_code"]`.
        methods: Vec<String>,
    },
    /// The user has no confirmed TOTP yet: enroll with the `enrollment_token`.
    EnrollmentRequired {
        /// Opaque, valid for the challenge TTL; used by enroll and then by confirm.
        enrollment_token: String,
    },
}

impl std::fmt::Debug for LoginOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MfaRequired { methods, .. } => f
                .debug_struct("MfaRequired")
                .field("mfa_token", &"<redacted>")
                .field("methods", methods)
                .finish(),
            Self::EnrollmentRequired { .. } => f
                .debug_struct("EnrollmentRequired")
                .field("enrollment_token", &"<redacted>")
                .finish(),
        }
    }
}

/// A new TOTP secret for the user's authenticator. `Debug` redacts it.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct TotpEnrollment {
    /// The secret as unpadded RFC 4648 base32.
    pub secret_base32: String,
    /// `otpauth://totp/...` key URI for QR codes.
    pub otpauth_uri: String,
}

impl std::fmt::Debug for TotpEnrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpEnrollment").finish_non_exhaustive()
    }
}

/// The result of a confirmed enrollment: recovery codes (shown once) and the first tokens.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct TotpConfirmation {
    /// Ten single-use recovery codes; only their hashes are stored.
    pub recovery_codes: Vec<String>,
    /// The first token pair.
    pub tokens: TokenPair,
}

impl std::fmt::Debug for TotpConfirmation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpConfirmation")
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

/// Login, MFA, tokens, refresh, logout and access-token verification over a [`Store`].
///
/// Cheap to clone. Flows that run before a principal exists use
/// [`TenantScope::pre_auth`] with the tenant resolved from the slug the user typed or from
/// the tenant id inside an opaque token issued by this service.
#[derive(Clone)]
pub struct IdentityService {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    keys: RwLock<Arc<KeyRing>>,
    clock: SharedClock,
    pub(crate) config: IdentityConfig,
    pub(crate) hasher: PasswordHasher,
}

impl std::fmt::Debug for IdentityService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityService")
            .field("issuer", &self.inner.config.issuer)
            .field("audience", &self.inner.config.audience)
            .finish_non_exhaustive()
    }
}

/// Maps a store failure to [`AuthError::Unavailable`] (fail closed), logging the cause.
pub(crate) fn store_err(e: StoreError) -> AuthError {
    tracing::error!(error = %e, "identity: store failure");
    AuthError::Unavailable
}

/// A fresh opaque token `<tenant-id>.<43 base64url chars>` and the SHA-256 of all of it.
///
/// The tenant id lets a pre-auth flow open the right tenant's transaction; it is not
/// trusted: the hash is looked up only within that tenant.
pub(crate) fn new_opaque(tenant: TenantId) -> Result<(String, [u8; 32]), AuthError> {
    let random =
        bastion_crypto::random_token(OPAQUE_RANDOM_BYTES).map_err(|_| AuthError::Unavailable)?;
    let token = format!("{tenant}.{random}");
    let hash = bastion_crypto::sha256(token.as_bytes());
    Ok((token, hash))
}

/// Splits an opaque token into its tenant and the hash to look up.
pub(crate) fn parse_opaque(token: &str) -> Result<(TenantId, [u8; 32]), AuthError> {
    if token.len() > OPAQUE_BYTES_MAX {
        return Err(AuthError::InvalidToken);
    }
    let (tenant, random) = token.split_once('.').ok_or(AuthError::InvalidToken)?;
    let tenant = TenantId::parse(tenant).map_err(|_| AuthError::InvalidToken)?;
    if tenant.as_uuid().is_nil()
        || random.len() != OPAQUE_RANDOM_CHARS
        || !random
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(AuthError::InvalidToken);
    }
    Ok((tenant, bastion_crypto::sha256(token.as_bytes())))
}

/// An audit event; `detail` must already be redacted (no secrets, codes or tokens).
pub(crate) fn event(
    at: UnixTime,
    tenant_id: TenantId,
    actor: Option<UserId>,
    action: &str,
    target: Option<String>,
    outcome: Outcome,
    detail: Value,
) -> AuditEvent {
    tracing::info!(
        tenant = %tenant_id,
        actor = actor.map(|a| a.to_string()).unwrap_or_default(),
        action,
        outcome = outcome.as_str(),
        "audit"
    );
    AuditEvent {
        at,
        tenant_id,
        actor,
        action: action.to_owned(),
        target,
        outcome,
        policy_ids: Vec::new(),
        detail,
    }
}

impl IdentityService {
    /// Builds the service. Hashes a dummy password once (same parameters as real hashes) so
    /// unknown users cost the same as known ones (I12).
    ///
    /// # Errors
    /// [`AuthError::Unavailable`] when the password parameters are invalid.
    pub async fn new(
        store: Store,
        keys: Arc<KeyRing>,
        clock: SharedClock,
        config: IdentityConfig,
    ) -> Result<Self, AuthError> {
        let hasher = PasswordHasher::new(config.password, config.hash_concurrency_max).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                keys: RwLock::new(keys),
                clock,
                config,
                hasher,
            }),
        })
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &IdentityConfig {
        &self.inner.config
    }

    /// The password hasher (for operator tools that set passwords).
    #[must_use]
    pub fn hasher(&self) -> &PasswordHasher {
        &self.inner.hasher
    }

    /// Swaps in a new key ring (after `bastion keys rotate`); tokens signed by keys still in
    /// the new ring keep verifying.
    ///
    /// # Errors
    /// [`AuthError::Unavailable`] when the lock is poisoned.
    pub fn set_key_ring(&self, keys: Arc<KeyRing>) -> Result<(), AuthError> {
        let mut guard = self
            .inner
            .keys
            .write()
            .map_err(|_| AuthError::Unavailable)?;
        *guard = keys;
        Ok(())
    }

    fn keys(&self) -> Result<Arc<KeyRing>, AuthError> {
        self.inner
            .keys
            .read()
            .map(|k| Arc::clone(&k))
            .map_err(|_| AuthError::Unavailable)
    }

    pub(crate) fn now(&self) -> UnixTime {
        self.inner.clock.now()
    }

    /// The public JWK Set (RFC 7517 §5, RFC 8037 OKP keys) for `/.well-known/jwks.json`.
    ///
    /// # Errors
    /// [`AuthError::Unavailable`] when the key ring lock is poisoned.
    pub fn jwks(&self) -> Result<Value, AuthError> {
        Ok(self.keys()?.jwks())
    }

    /// Seals a TOTP secret for storage: AES-256-GCM under `tenant`'s field key, bound to the
    /// user's row and the field name, with a fresh random nonce.
    pub(crate) fn seal_totp_secret(
        &self,
        tenant: TenantId,
        user: UserId,
        secret: &[u8],
    ) -> Result<Vec<u8>, AuthError> {
        self.inner
            .config
            .field_key
            .tenant_key(tenant.as_uuid().as_bytes())
            .and_then(|k| k.seal(user.as_uuid().as_bytes(), TOTP_SECRET_FIELD, secret))
            .map_err(|e| {
                tracing::error!(target: "bastion::alert", tenant = %tenant, error = %e, "identity: cannot seal a totp secret");
                AuthError::Unavailable
            })
    }

    /// Opens a stored TOTP secret. `None` — no usable factor, so the code is refused — when
    /// it does not decrypt (another key, a row copied from another user or tenant, a
    /// clear-text row from before encryption, tampering); that raises an alert naming the
    /// tenant and user, never any secret bytes.
    pub(crate) fn open_totp_secret(
        &self,
        tenant: TenantId,
        user: UserId,
        stored: &[u8],
    ) -> Option<Vec<u8>> {
        let opened = self
            .inner
            .config
            .field_key
            .tenant_key(tenant.as_uuid().as_bytes())
            .and_then(|k| k.open(user.as_uuid().as_bytes(), TOTP_SECRET_FIELD, stored));
        match opened {
            Ok(secret) => Some(secret),
            Err(e) => {
                tracing::error!(target: "bastion::alert", tenant = %tenant, user = %user, error = %e, "identity: stored totp secret does not decrypt; factor refused");
                None
            }
        }
    }

    pub(crate) async fn begin(&self, tenant: TenantId) -> Result<TenantTx, AuthError> {
        self.inner
            .store
            .begin(TenantScope::pre_auth(tenant))
            .await
            .map_err(store_err)
    }

    pub(crate) async fn tenant_by_id(&self, tenant: TenantId) -> Result<Option<Tenant>, AuthError> {
        let mut sys = self.inner.store.system().await.map_err(store_err)?;
        let t = tenants::tenant_by_id(&mut sys, tenant)
            .await
            .map_err(store_err)?;
        sys.rollback().await.map_err(store_err)?;
        Ok(t)
    }

    /// Appends one audit event to `tenant`'s chain in its own transaction.
    pub(crate) async fn audit_own_tx(&self, ev: AuditEvent) -> Result<(), AuthError> {
        if ev.tenant_id.as_uuid().is_nil() {
            let mut sys = self.inner.store.system().await.map_err(store_err)?;
            audit::system_append_audit(&mut sys, &ev)
                .await
                .map_err(store_err)?;
            return sys.commit().await.map_err(store_err);
        }
        let mut tx = self.begin(ev.tenant_id).await?;
        audit::append_audit(&mut tx, &ev).await.map_err(store_err)?;
        tx.commit().await.map_err(store_err)
    }

    // ----- password step -------------------------------------------------------------

    /// The password step (first factor). On success returns a challenge for the second
    /// factor — never an access token (I10).
    ///
    /// Every failure — unknown tenant or user, wrong password, disabled user, account
    /// throttled — is the same [`AuthError::InvalidCredentials`], and unknown users are
    /// verified against a dummy hash so timing does not tell them apart (I12). Failures count
    /// against the account (tenant + username) and the client address in fixed windows;
    /// a throttled account refuses even the right password until its window ends.
    ///
    /// # Errors
    /// [`AuthError::InvalidCredentials`]; [`AuthError::Throttled`] when `client_addr` is over
    /// its limit; [`AuthError::Unavailable`] when the store fails.
    pub async fn login(
        &self,
        tenant_slug: &str,
        username: &str,
        password: &str,
        client_addr: IpAddr,
    ) -> Result<LoginOutcome, AuthError> {
        let cfg = self.inner.config.throttle;
        let tenant_norm = tenant_slug.to_ascii_lowercase();
        let user_norm = username.to_ascii_lowercase();
        let account_key = format!(
            "login:acct:{}",
            bastion_crypto::sha256_hex(format!("{tenant_norm}\n{user_norm}").as_bytes())
        );
        let address_key = format!("login:addr:{}", address_bucket(client_addr));

        // Throttle checks, and the tenant lookup, in one short system transaction.
        let mut sys = self.inner.store.system().await.map_err(store_err)?;
        let address_hits = throttle::throttle_count(&mut sys, &address_key, cfg.window_secs)
            .await
            .map_err(store_err)?;
        let account_hits = throttle::throttle_count(&mut sys, &account_key, cfg.window_secs)
            .await
            .map_err(store_err)?;
        let tenant = match bastion_types::Slug::parse(&tenant_norm) {
            Ok(slug) if tenant_slug.len() <= LOGIN_NAME_BYTES_MAX => {
                tenants::tenant_by_slug(&mut sys, &slug)
                    .await
                    .map_err(store_err)?
            }
            _ => None,
        };
        sys.rollback().await.map_err(store_err)?;

        if address_hits >= cfg.address_failures_max {
            // Only the first refusal of a throttle window is audited: a flood of refused
            // attempts must not grow the append-only audit log (nor a tenant's chain).
            if self.first_refusal_in_window(&address_key).await? {
                self.login_failed(tenant.as_ref(), None, "address_throttled", None)
                    .await?;
            }
            return Err(AuthError::Throttled {
                retry_after_secs: cfg.window_secs.unsigned_abs(),
            });
        }
        if account_hits >= cfg.account_failures_max {
            // No hash is computed: the account is refused whatever the password, and the
            // same happens for names that do not exist, so this reveals nothing.
            if self.first_refusal_in_window(&account_key).await? {
                self.login_failed(
                    tenant.as_ref(),
                    None,
                    "account_throttled",
                    Some(&address_key),
                )
                .await?;
            } else {
                // Not audited again, but still counted against the address.
                let mut sys = self.inner.store.system().await.map_err(store_err)?;
                throttle::throttle_hit(&mut sys, &address_key, cfg.window_secs)
                    .await
                    .map_err(store_err)?;
                sys.commit().await.map_err(store_err)?;
            }
            return Err(AuthError::InvalidCredentials);
        }

        // Look the user up, then release the transaction before hashing.
        let (user, totp_confirmed) = match (&tenant, bastion_types::Slug::parse(&user_norm)) {
            (Some(t), Ok(name)) if username.len() <= LOGIN_NAME_BYTES_MAX => {
                let mut tx = self.begin(t.id).await?;
                let user = users::user_by_username(&mut tx, &name)
                    .await
                    .map_err(store_err)?;
                // Only the flag is read here. A confirmed factor whose secret no longer
                // decrypts still counts: its user proves the second factor with a recovery
                // code or gets an operator reset — never re-enrolls with a password alone.
                let confirmed = match &user {
                    Some(u) => mfa::totp_for(&mut tx, u.id)
                        .await
                        .map_err(store_err)?
                        .is_some_and(|s| s.confirmed),
                    None => false,
                };
                tx.rollback().await.map_err(store_err)?;
                (user, confirmed)
            }
            _ => (None, false),
        };

        let password_ok = self
            .inner
            .hasher
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await?;
        let user = match user {
            Some(u) if password_ok && !u.disabled => u,
            other => {
                let reason = match &other {
                    None => "unknown_user",
                    Some(u) if u.disabled => "disabled",
                    Some(_) => "wrong_password",
                };
                let mut sys = self.inner.store.system().await.map_err(store_err)?;
                throttle::throttle_hit(&mut sys, &account_key, cfg.window_secs)
                    .await
                    .map_err(store_err)?;
                throttle::throttle_hit(&mut sys, &address_key, cfg.window_secs)
                    .await
                    .map_err(store_err)?;
                sys.commit().await.map_err(store_err)?;
                self.login_failed(tenant.as_ref(), other.as_ref().map(|u| u.id), reason, None)
                    .await?;
                return Err(AuthError::InvalidCredentials);
            }
        };
        let Some(tenant) = tenant else {
            return Err(AuthError::InvalidCredentials);
        };

        let mut sys = self.inner.store.system().await.map_err(store_err)?;
        let second_factor_failures = throttle::throttle_count(
            &mut sys,
            &second_factor_key(tenant.id, user.id),
            cfg.window_secs,
        )
        .await
        .map_err(store_err)?;
        if second_factor_failures >= cfg.second_factor_failures_max {
            sys.commit().await.map_err(store_err)?;
            tracing::warn!(
                target: "bastion::alert",
                tenant = %tenant.id,
                user = %user.id,
                "second factor throttled: too many wrong codes for one user"
            );
            self.login_failed(
                Some(&tenant),
                Some(user.id),
                "second_factor_throttled",
                None,
            )
            .await?;
            return Err(AuthError::InvalidCredentials);
        }
        throttle::throttle_clear(&mut sys, &account_key)
            .await
            .map_err(store_err)?;
        sys.commit().await.map_err(store_err)?;

        let now = self.now();
        let kind = if totp_confirmed {
            KIND_MFA
        } else {
            KIND_ENROLL
        };
        let (token, hash) = new_opaque(tenant.id)?;
        let mut tx = self.begin(tenant.id).await?;
        mfa::create_challenge(
            &mut tx,
            user.id,
            kind,
            &hash,
            now + self.inner.config.challenge_ttl_secs,
        )
        .await
        .map_err(store_err)?;
        let ev = event(
            now,
            tenant.id,
            Some(user.id),
            "auth.login",
            Some(format!("user:{}", user.id)),
            Outcome::Ok,
            json!({ "step": "password", "next": kind }),
        );
        audit::append_audit(&mut tx, &ev).await.map_err(store_err)?;
        tx.commit().await.map_err(store_err)?;
        Ok(if totp_confirmed {
            LoginOutcome::MfaRequired {
                mfa_token: token,
                methods: MFA_METHODS.iter().map(|m| (*m).to_owned()).collect(),
            }
        } else {
            LoginOutcome::EnrollmentRequired {
                enrollment_token: token,
            }
        })
    }

    /// Audits a failed login: on the tenant's chain when the tenant exists, else on the
    /// system chain. Never records the typed username or password; the reason stays internal.
    /// Whether this is the first throttled refusal of `key` in the throttle window (counted
    /// in the throttle table under `audited:<key>`).
    async fn first_refusal_in_window(&self, key: &str) -> Result<bool, AuthError> {
        let mut sys = self.inner.store.system().await.map_err(store_err)?;
        let hits = throttle::throttle_hit(
            &mut sys,
            &format!("audited:{key}"),
            self.inner.config.throttle.window_secs,
        )
        .await
        .map_err(store_err)?;
        sys.commit().await.map_err(store_err)?;
        Ok(hits == 1)
    }

    async fn login_failed(
        &self,
        tenant: Option<&Tenant>,
        user: Option<UserId>,
        reason: &str,
        also_count: Option<&str>,
    ) -> Result<(), AuthError> {
        if let Some(key) = also_count {
            let mut sys = self.inner.store.system().await.map_err(store_err)?;
            throttle::throttle_hit(&mut sys, key, self.inner.config.throttle.window_secs)
                .await
                .map_err(store_err)?;
            sys.commit().await.map_err(store_err)?;
        }
        let tenant_id = tenant.map_or_else(|| TenantId::from_uuid(uuid_nil()), |t| t.id);
        let ev = event(
            self.now(),
            tenant_id,
            user,
            "auth.login",
            user.map(|u| format!("user:{u}")),
            Outcome::Fail,
            json!({ "step": "password", "reason": reason }),
        );
        self.audit_own_tx(ev).await
    }

    // ----- second factor ---------------------------------------------------------------

    /// Counts one attempt on a challenge and resolves its tenant. More than
    /// `challenge_attempts_max` attempts burn the challenge.
    async fn challenge_attempt(
        &self,
        tenant: TenantId,
        hash: &[u8; 32],
        kind: &str,
    ) -> Result<(Tenant, i64), AuthError> {
        let key = format!("challenge:{}", hex_lower(hash));
        let mut sys = self.inner.store.system().await.map_err(store_err)?;
        let t = tenants::tenant_by_id(&mut sys, tenant)
            .await
            .map_err(store_err)?;
        let Some(t) = t else {
            sys.rollback().await.map_err(store_err)?;
            return Err(AuthError::InvalidToken);
        };
        let n = throttle::throttle_hit(&mut sys, &key, self.inner.config.challenge_ttl_secs.max(1))
            .await
            .map_err(store_err)?;
        sys.commit().await.map_err(store_err)?;
        if n > self.inner.config.challenge_attempts_max {
            self.burn_challenge(tenant, hash, kind).await?;
            return Err(AuthError::InvalidToken);
        }
        Ok((t, n))
    }

    async fn burn_challenge(
        &self,
        tenant: TenantId,
        hash: &[u8; 32],
        kind: &str,
    ) -> Result<(), AuthError> {
        let mut tx = self.begin(tenant).await?;
        let _burnt = mfa::take_challenge(&mut tx, hash, kind)
            .await
            .map_err(store_err)?;
        tx.commit().await.map_err(store_err)
    }

    /// After a wrong code: the attempt was already counted; audit, and burn the challenge
    /// when that was the last attempt.
    async fn wrong_code(
        &self,
        tenant: TenantId,
        hash: &[u8; 32],
        kind: &str,
        user: UserId,
        attempt: i64,
        action: &str,
    ) -> Result<(), AuthError> {
        let max = self.inner.config.challenge_attempts_max;
        let mut sys = self.inner.store.system().await.map_err(store_err)?;
        throttle::throttle_hit(
            &mut sys,
            &second_factor_key(tenant, user),
            self.inner.config.throttle.window_secs,
        )
        .await
        .map_err(store_err)?;
        sys.commit().await.map_err(store_err)?;
        let mut tx = self.begin(tenant).await?;
        if attempt >= max {
            let _burnt = mfa::take_challenge(&mut tx, hash, kind)
                .await
                .map_err(store_err)?;
        }
        let ev = event(
            self.now(),
            tenant,
            Some(user),
            action,
            Some(format!("user:{user}")),
            Outcome::Fail,
            json!({ "reason": "invalid_code", "attempts_left": (max - attempt).max(0) }),
        );
        audit::append_audit(&mut tx, &ev).await.map_err(store_err)?;
        tx.commit().await.map_err(store_err)
    }

    /// Takes the challenge and loads its user; `None` (after committing the burn) when the
    /// user is gone or disabled.
    async fn take_with_user(
        &self,
        tx: &mut TenantTx,
        hash: &[u8; 32],
        kind: &str,
    ) -> Result<Option<(Challenge, User)>, AuthError> {
        let Some(ch) = mfa::take_challenge(tx, hash, kind)
            .await
            .map_err(store_err)?
        else {
            return Ok(None);
        };
        match users::user_by_id(tx, ch.user_id).await.map_err(store_err)? {
            Some(u) if !u.disabled => Ok(Some((ch, u))),
            _ => Ok(None),
        }
    }

    /// The second factor by TOTP (RFC 6238): a correct code for the current step ±1 that is
    /// newer than the last accepted step (each step usable once — I9). Issues the tokens.
    ///
    /// # Errors
    /// [`AuthError::InvalidToken`] for an unknown, used, expired or burnt `mfa_token`;
    /// [`AuthError::InvalidCode`] for a wrong or replayed code (one attempt spent).
    pub async fn verify_totp(&self, mfa_token: &str, code: &str) -> Result<TokenPair, AuthError> {
        self.second_factor(mfa_token, SecondFactor::Totp(code))
            .await
    }

    /// The second factor by a single-use recovery code. Issues the tokens.
    ///
    /// # Errors
    /// As [`IdentityService::verify_totp`].
    pub async fn verify_recovery_code(
        &self,
        mfa_token: &str,
        code: &str,
    ) -> Result<TokenPair, AuthError> {
        self.second_factor(mfa_token, SecondFactor::Recovery(code))
            .await
    }

    async fn second_factor(
        &self,
        mfa_token: &str,
        factor: SecondFactor<'_>,
    ) -> Result<TokenPair, AuthError> {
        let (tid, hash) = parse_opaque(mfa_token)?;
        let (tenant, attempt) = self.challenge_attempt(tid, &hash, KIND_MFA).await?;
        let now = self.now();
        let mut tx = self.begin(tid).await?;
        let Some((_ch, user)) = self.take_with_user(&mut tx, &hash, KIND_MFA).await? else {
            tx.commit().await.map_err(store_err)?;
            return Err(AuthError::InvalidToken);
        };
        let (ok, amr, method) = match factor {
            SecondFactor::Totp(code) => {
                let totp = mfa::totp_for(&mut tx, user.id)
                    .await
                    .map_err(store_err)?
                    .filter(|t| t.confirmed);
                let step = if code.len() <= CODE_BYTES_MAX {
                    totp.and_then(|t| self.open_totp_secret(tid, user.id, &t.secret))
                        .and_then(|secret| verify_totp(&secret, code, now))
                } else {
                    None
                };
                let ok = match step {
                    Some(step) => mfa::record_totp_step(&mut tx, user.id, step)
                        .await
                        .map_err(store_err)?,
                    None => false,
                };
                (
                    ok,
                    vec![AuthMethod::Pwd, AuthMethod::Otp, AuthMethod::Mfa],
                    "totp",
                )
            }
            SecondFactor::Recovery(code) => {
                let ok = code.len() <= CODE_BYTES_MAX
                    && mfa::use_recovery_code(&mut tx, user.id, &recovery_code_hash(code))
                        .await
                        .map_err(store_err)?;
                (
                    ok,
                    vec![AuthMethod::Pwd, AuthMethod::Rec, AuthMethod::Mfa],
                    "recovery_code",
                )
            }
        };
        if !ok {
            // Roll back: the challenge stays usable for the attempts that are left.
            tx.rollback().await.map_err(store_err)?;
            self.wrong_code(tid, &hash, KIND_MFA, user.id, attempt, "auth.mfa")
                .await?;
            return Err(AuthError::InvalidCode);
        }
        let pair = self.issue_tokens(&mut tx, &tenant, &user, amr, now).await?;
        let ev = event(
            now,
            tid,
            Some(user.id),
            "auth.mfa",
            Some(format!("user:{}", user.id)),
            Outcome::Ok,
            json!({ "method": method }),
        );
        audit::append_audit(&mut tx, &ev).await.map_err(store_err)?;
        tx.commit().await.map_err(store_err)?;
        Ok(pair)
    }

    /// Starts TOTP enrollment: a fresh 20-byte secret (stored unconfirmed, sealed under the
    /// tenant's field key) for the user of
    /// `enrollment_token`. May be called again to replace an unconfirmed secret; the token
    /// stays valid for [`IdentityService::totp_confirm`].
    ///
    /// # Errors
    /// [`AuthError::InvalidToken`] for an unknown, used or expired token or an already
    /// enrolled user.
    pub async fn totp_enroll(&self, enrollment_token: &str) -> Result<TotpEnrollment, AuthError> {
        let (tid, hash) = parse_opaque(enrollment_token)?;
        let tenant = self
            .tenant_by_id(tid)
            .await?
            .ok_or(AuthError::InvalidToken)?;
        // Peek: take the challenge and roll back, so it stays for confirm.
        let mut tx = self.begin(tid).await?;
        let found = self.take_with_user(&mut tx, &hash, KIND_ENROLL).await?;
        tx.rollback().await.map_err(store_err)?;
        let Some((_ch, user)) = found else {
            return Err(AuthError::InvalidToken);
        };

        let secret = new_totp_secret()?;
        let mut tx = self.begin(tid).await?;
        // Re-checked inside the writing transaction: never replace a confirmed secret.
        if mfa::totp_for(&mut tx, user.id)
            .await
            .map_err(store_err)?
            .is_some_and(|t| t.confirmed)
        {
            tx.rollback().await.map_err(store_err)?;
            return Err(AuthError::InvalidToken);
        }
        let sealed = self.seal_totp_secret(tid, user.id, &secret)?;
        mfa::set_totp_secret(&mut tx, user.id, &sealed, false)
            .await
            .map_err(store_err)?;
        let ev = event(
            self.now(),
            tid,
            Some(user.id),
            "auth.mfa.enroll_start",
            Some(format!("user:{}", user.id)),
            Outcome::Ok,
            json!({ "method": "totp" }),
        );
        audit::append_audit(&mut tx, &ev).await.map_err(store_err)?;
        tx.commit().await.map_err(store_err)?;
        Ok(TotpEnrollment {
            secret_base32: secret_base32(&secret),
            otpauth_uri: otpauth_uri(
                &self.inner.config.totp_issuer,
                &format!("{}@{}", user.username, tenant.slug),
                &secret,
            ),
        })
    }

    /// Finishes enrollment with a code from the new authenticator: confirms the secret,
    /// records the code's step (so the same code cannot log in again — I9), issues ten
    /// recovery codes and the first tokens (`amr` `pwd`, `otp`, `mfa`).
    ///
    /// # Errors
    /// [`AuthError::InvalidToken`] for a bad token; [`AuthError::BadRequest`] when
    /// [`IdentityService::totp_enroll`] was not called; [`AuthError::InvalidCode`] for a
    /// wrong code (one attempt spent).
    pub async fn totp_confirm(
        &self,
        enrollment_token: &str,
        code: &str,
    ) -> Result<TotpConfirmation, AuthError> {
        let (tid, hash) = parse_opaque(enrollment_token)?;
        let (tenant, attempt) = self.challenge_attempt(tid, &hash, KIND_ENROLL).await?;
        let now = self.now();
        let mut tx = self.begin(tid).await?;
        let Some((_ch, user)) = self.take_with_user(&mut tx, &hash, KIND_ENROLL).await? else {
            tx.commit().await.map_err(store_err)?;
            return Err(AuthError::InvalidToken);
        };
        let Some(totp) = mfa::totp_for(&mut tx, user.id).await.map_err(store_err)? else {
            tx.rollback().await.map_err(store_err)?;
            return Err(AuthError::BadRequest(
                "totp enrollment was not started".to_owned(),
            ));
        };
        if totp.confirmed {
            tx.commit().await.map_err(store_err)?;
            return Err(AuthError::InvalidToken);
        }
        let step = if code.len() <= CODE_BYTES_MAX {
            self.open_totp_secret(tid, user.id, &totp.secret)
                .and_then(|secret| verify_totp(&secret, code, now))
        } else {
            None
        };
        let ok = match step {
            Some(step) => mfa::record_totp_step(&mut tx, user.id, step)
                .await
                .map_err(store_err)?,
            None => false,
        };
        if !ok {
            tx.rollback().await.map_err(store_err)?;
            self.wrong_code(tid, &hash, KIND_ENROLL, user.id, attempt, "auth.mfa.enroll")
                .await?;
            return Err(AuthError::InvalidCode);
        }
        mfa::confirm_totp(&mut tx, user.id)
            .await
            .map_err(store_err)?;
        let codes = new_recovery_codes()?;
        let hashes: Vec<[u8; 32]> = codes.iter().map(|c| recovery_code_hash(c)).collect();
        mfa::replace_recovery_codes(&mut tx, user.id, &hashes)
            .await
            .map_err(store_err)?;
        let amr = vec![AuthMethod::Pwd, AuthMethod::Otp, AuthMethod::Mfa];
        let tokens = self.issue_tokens(&mut tx, &tenant, &user, amr, now).await?;
        let ev = event(
            now,
            tid,
            Some(user.id),
            "auth.mfa.enroll",
            Some(format!("user:{}", user.id)),
            Outcome::Ok,
            json!({ "method": "totp", "recovery_codes": codes.len() }),
        );
        audit::append_audit(&mut tx, &ev).await.map_err(store_err)?;
        tx.commit().await.map_err(store_err)?;
        Ok(TotpConfirmation {
            recovery_codes: codes,
            tokens,
        })
    }

    // ----- tokens ------------------------------------------------------------------------

    /// Starts a refresh family and returns its first token pair. Runs in the caller's
    /// transaction, after the second factor passed.
    async fn issue_tokens(
        &self,
        tx: &mut TenantTx,
        tenant: &Tenant,
        user: &User,
        amr: Vec<AuthMethod>,
        now: UnixTime,
    ) -> Result<TokenPair, AuthError> {
        let cfg = &self.inner.config;
        let family =
            refresh::create_family(tx, user.id, now, &amr, now + cfg.refresh_absolute_ttl_secs)
                .await
                .map_err(store_err)?;
        let (refresh_token, refresh_hash) = new_opaque(tenant.id)?;
        refresh::insert_refresh_token(tx, family, &refresh_hash, now + cfg.refresh_idle_ttl_secs)
            .await
            .map_err(store_err)?;
        let access_token = self.sign_access(tenant, user, amr, now, family, now)?;
        Ok(TokenPair {
            access_token,
            token_type: "Bearer",
            expires_in: cfg.access_ttl_secs,
            refresh_token,
        })
    }

    fn sign_access(
        &self,
        tenant: &Tenant,
        user: &User,
        amr: Vec<AuthMethod>,
        auth_time: UnixTime,
        family: FamilyId,
        now: UnixTime,
    ) -> Result<String, AuthError> {
        let cfg = &self.inner.config;
        let random = bastion_crypto::random_token(16).map_err(|_| AuthError::Unavailable)?;
        let claims = AccessClaims {
            iss: cfg.issuer.clone(),
            aud: cfg.audience.clone(),
            sub: user.id,
            tenant: tenant.slug.clone(),
            tid: tenant.id,
            roles: user.roles.clone(),
            amr,
            auth_time,
            iat: now,
            nbf: now,
            exp: now + cfg.access_ttl_secs,
            // The session id leads the jti so a Principal can name its session at logout.
            jti: format!("{family}.{random}"),
            sid: family.to_string(),
            sep: user.session_epoch,
        };
        sign_access_token(&*self.keys()?, &claims)
    }

    /// Rotates a refresh token (RFC 9700 §4.14.2): the presented token is spent and a new
    /// pair is returned. Presenting a token that was already rotated revokes the whole
    /// family and writes an `auth.refresh_reuse` audit record (I7, I8). Rotation never
    /// extends the family's absolute lifetime.
    ///
    /// # Errors
    /// [`AuthError::InvalidToken`] for unknown, reused or revoked tokens or a disabled user;
    /// [`AuthError::Expired`] past the token's idle or the family's absolute expiry.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, AuthError> {
        let (tid, old_hash) = parse_opaque(refresh_token)?;
        let tenant = self
            .tenant_by_id(tid)
            .await?
            .ok_or(AuthError::InvalidToken)?;
        let now = self.now();
        let (new_token, new_hash) = new_opaque(tid)?;
        let mut tx = self.begin(tid).await?;
        let outcome = refresh::rotate_refresh_token(
            &mut tx,
            &old_hash,
            &new_hash,
            now + self.inner.config.refresh_idle_ttl_secs,
        )
        .await
        .map_err(store_err)?;
        match outcome {
            RotateOutcome::Rotated {
                family,
                user,
                auth_time,
                amr,
                ..
            } => {
                let user = match users::user_by_id(&mut tx, user).await.map_err(store_err)? {
                    Some(u) if !u.disabled => u,
                    _ => {
                        let _ = refresh::revoke_family(&mut tx, family, "user disabled")
                            .await
                            .map_err(store_err)?;
                        tx.commit().await.map_err(store_err)?;
                        return Err(AuthError::InvalidToken);
                    }
                };
                let access_token = self.sign_access(&tenant, &user, amr, auth_time, family, now)?;
                tx.commit().await.map_err(store_err)?;
                Ok(TokenPair {
                    access_token,
                    token_type: "Bearer",
                    expires_in: self.inner.config.access_ttl_secs,
                    refresh_token: new_token,
                })
            }
            RotateOutcome::Reused { family, user } => {
                self.audit_reuse(&mut tx, tid, family, user, now).await?;
                tx.commit().await.map_err(store_err)?;
                Err(AuthError::InvalidToken)
            }
            RotateOutcome::Expired => {
                tx.rollback().await.map_err(store_err)?;
                Err(AuthError::Expired)
            }
            RotateOutcome::Unknown | RotateOutcome::Revoked => {
                tx.rollback().await.map_err(store_err)?;
                Err(AuthError::InvalidToken)
            }
        }
    }

    async fn audit_reuse(
        &self,
        tx: &mut TenantTx,
        tenant: TenantId,
        family: FamilyId,
        user: UserId,
        now: UnixTime,
    ) -> Result<(), AuthError> {
        tracing::warn!(tenant = %tenant, family = %family, "refresh token reuse: family revoked");
        let ev = event(
            now,
            tenant,
            Some(user),
            "auth.refresh_reuse",
            Some(format!("session:{family}")),
            Outcome::Fail,
            json!({ "family_revoked": true }),
        );
        audit::append_audit(tx, &ev).await.map_err(store_err)?;
        Ok(())
    }

    /// Logs out the session of `refresh_token`: its family is revoked, so the refresh token
    /// and every access token of the session stop working at once.
    ///
    /// The token's family is found by a read-only lookup, so logout never trips reuse
    /// detection by itself. Like RFC 7009 §2.2, a token whose session is already over
    /// (logged out, revoked) is not an error: a second logout with the same token is a quiet
    /// no-op and writes nothing. A token that had already been rotated, presented while its
    /// session is still live, is a replay (RFC 9700 §4.14.2): the family is revoked all the
    /// same and an `auth.refresh_reuse` record is written, as [`IdentityService::refresh`]
    /// would. A token past its idle expiry still ends its session.
    ///
    /// # Errors
    /// [`AuthError::InvalidToken`] for a token this service never issued.
    pub async fn logout(&self, refresh_token: &str) -> Result<(), AuthError> {
        let (tid, hash) = parse_opaque(refresh_token)?;
        let now = self.now();
        let mut tx = self.begin(tid).await?;
        let found = refresh::family_of_token(&mut tx, &hash)
            .await
            .map_err(store_err)?;
        let Some(found) = found else {
            tx.rollback().await.map_err(store_err)?;
            return Err(AuthError::InvalidToken);
        };
        if found.family_revoked {
            return tx.rollback().await.map_err(store_err);
        }
        if found.used {
            let _ = refresh::revoke_family(&mut tx, found.family, "refresh token reuse")
                .await
                .map_err(store_err)?;
            self.audit_reuse(&mut tx, tid, found.family, found.user, now)
                .await?;
            return tx.commit().await.map_err(store_err);
        }
        let _ = refresh::revoke_family(&mut tx, found.family, "logout")
            .await
            .map_err(store_err)?;
        let ev = event(
            now,
            tid,
            Some(found.user),
            "auth.logout",
            Some(format!("session:{}", found.family)),
            Outcome::Ok,
            json!({}),
        );
        audit::append_audit(&mut tx, &ev).await.map_err(store_err)?;
        tx.commit().await.map_err(store_err)
    }

    /// Logs out the session the principal's access token belongs to (its `sid`).
    ///
    /// # Errors
    /// [`AuthError::InvalidToken`] when the principal's token id names no session.
    pub async fn logout_principal(&self, principal: &Principal) -> Result<(), AuthError> {
        let sid = principal
            .token_id
            .split_once('.')
            .map(|(s, _)| s)
            .ok_or(AuthError::InvalidToken)?;
        let family = FamilyId::parse(sid).map_err(|_| AuthError::InvalidToken)?;
        let now = self.now();
        let mut tx = self.begin(principal.tenant_id).await?;
        let _ = refresh::revoke_family(&mut tx, family, "logout")
            .await
            .map_err(store_err)?;
        let ev = event(
            now,
            principal.tenant_id,
            Some(principal.user_id),
            "auth.logout",
            Some(format!("session:{family}")),
            Outcome::Ok,
            json!({}),
        );
        audit::append_audit(&mut tx, &ev).await.map_err(store_err)?;
        tx.commit().await.map_err(store_err)
    }

    /// Logs the principal's user out of every session: all families revoked and the
    /// session epoch bumped, so every access token of the user dies at once.
    ///
    /// # Errors
    /// [`AuthError::Unavailable`] when the store fails.
    pub async fn logout_everywhere(&self, principal: &Principal) -> Result<(), AuthError> {
        let now = self.now();
        let mut tx = self.begin(principal.tenant_id).await?;
        let n = refresh::revoke_user_families(&mut tx, principal.user_id, "logout everywhere")
            .await
            .map_err(store_err)?;
        users::bump_session_epoch(&mut tx, principal.user_id)
            .await
            .map_err(store_err)?;
        let ev = event(
            now,
            principal.tenant_id,
            Some(principal.user_id),
            "auth.logout",
            Some(format!("user:{}", principal.user_id)),
            Outcome::Ok,
            json!({ "sessions_revoked": n, "everywhere": true }),
        );
        audit::append_audit(&mut tx, &ev).await.map_err(store_err)?;
        tx.commit().await.map_err(store_err)
    }

    /// Verifies an access token and returns the caller (RFC 9068 §4).
    ///
    /// The token itself must pass [`crate::verify_access_token_claims`] (pinned `EdDSA`,
    /// `typ` `at+jwt`, exact in-memory `kid`, no header key material, typed claims, our `iss`
    /// and `aud`, times against the clock). Then the store must show its session (`sid`)
    /// active, the user present and not disabled, and the user's session epoch unchanged,
    /// so logout, disable and MFA reset end access at once. Roles come from the store.
    ///
    /// # Errors
    /// [`AuthError::InvalidToken`], or [`AuthError::Expired`] for an expired token.
    pub async fn verify_access_token(&self, token: &str) -> Result<Principal, AuthError> {
        let cfg = &self.inner.config;
        let now = self.now();
        let claims = verify_access_token_claims(
            token,
            &*self.keys()?,
            &cfg.issuer,
            &cfg.audience,
            now,
            cfg.access_ttl_secs,
        )?;
        let family = FamilyId::parse(&claims.sid).map_err(|_| AuthError::InvalidToken)?;
        if !claims.jti.starts_with(&format!("{family}.")) {
            return Err(AuthError::InvalidToken);
        }
        let mut tx = self.begin(claims.tid).await?;
        let user = users::user_by_id(&mut tx, claims.sub)
            .await
            .map_err(store_err)?;
        let active = refresh::family_active_for(&mut tx, family, Some(claims.sub))
            .await
            .map_err(store_err)?;
        tx.rollback().await.map_err(store_err)?;
        let user = match user {
            Some(u) if active && !u.disabled && u.session_epoch == claims.sep => u,
            _ => return Err(AuthError::InvalidToken),
        };
        Ok(Principal {
            tenant_id: claims.tid,
            tenant: claims.tenant,
            user_id: user.id,
            username: user.username,
            roles: user.roles,
            amr: claims.amr,
            auth_time: claims.auth_time,
            token_id: claims.jti,
        })
    }
}

/// The throttling bucket of a client address: the IPv4 address itself, or the /64 of an
/// IPv6 address (one subscriber usually holds a whole /64, so single IPv6 addresses would
/// be free to rotate). IPv4-mapped IPv6 addresses count as their IPv4 address.
fn address_bucket(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

enum SecondFactor<'a> {
    Totp(&'a str),
    Recovery(&'a str),
}

fn uuid_nil() -> uuid::Uuid {
    uuid::Uuid::nil()
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Throttle key of one user's wrong second-factor codes.
fn second_factor_key(tenant: TenantId, user: UserId) -> String {
    format!("mfa-user:{tenant}:{user}")
}
