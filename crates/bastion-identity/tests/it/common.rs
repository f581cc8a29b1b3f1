//! The test harness: a tempdir with a SQLite file and a key directory, a fixed clock, and a
//! tenant `acme` with user `alice`.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test harness: a failure aborts the test"
)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, OnceLock};

use bastion_crypto::KeyRing;
use bastion_identity::{
    AuthError, IdentityConfig, IdentityService, LoginOutcome, NewAccount, PasswordParams,
    TokenPair, totp_code,
};
use bastion_store::Store;
use bastion_types::{FixedClock, SharedClock, Slug};

/// A Unix time on a TOTP step boundary (1_800_000_000 / 30 = 60_000_000).
pub const T0: i64 = 1_800_000_000;
pub const ISSUER: &str = "https://bastion.test";
pub const AUDIENCE: &str = "bastion-api";
pub const PASSWORD: &str = "correct horse battery staple";

pub fn vectors() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/vectors/identity.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub fn slug(s: &str) -> Slug {
    Slug::parse(s).unwrap()
}

pub fn addr(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub clock: FixedClock,
    pub store: Store,
    pub keys: Arc<KeyRing>,
    pub svc: IdentityService,
}

pub fn config() -> IdentityConfig {
    let mut c = IdentityConfig::new(ISSUER, AUDIENCE);
    c.password = PasswordParams::TEST_ONLY;
    c
}

impl Harness {
    pub async fn new() -> Self {
        Self::with_config(config()).await
    }

    pub async fn with_config(config: IdentityConfig) -> Self {
        let _ = captured_logs();
        let dir = tempfile::tempdir().unwrap();
        let clock = FixedClock::new(T0);
        let shared: SharedClock = Arc::new(clock.clone());
        // SQLite or PostgreSQL (as the non-owner application role), per BASTION_TEST_DATABASE.
        let (store, _pg) = bastion_store::testing::open_test_store(dir.path(), shared.clone())
            .await
            .unwrap();
        let keys = Arc::new(KeyRing::load_or_generate(&dir.path().join("keys")).unwrap());
        let svc = IdentityService::new(store.clone(), keys.clone(), shared, config)
            .await
            .unwrap();
        svc.create_tenant(&slug("acme"), "eu").await.unwrap();
        svc.add_user(
            &slug("acme"),
            NewAccount {
                username: slug("alice"),
                password: PASSWORD.to_owned(),
                roles: vec![slug("buyer")],
                is_demo: false,
            },
        )
        .await
        .unwrap();
        Self {
            dir,
            clock,
            store,
            keys,
            svc,
        }
    }

    pub fn now(&self) -> i64 {
        bastion_types::Clock::now(&self.clock)
    }

    /// The 6-digit code for `secret` at the clock's time.
    pub fn code(&self, secret: &[u8]) -> String {
        totp_code(secret, u64::try_from(self.now()).unwrap(), 6)
    }

    pub async fn login(&self, user: &str, password: &str) -> Result<LoginOutcome, AuthError> {
        self.svc.login("acme", user, password, addr(1)).await
    }

    /// Password → enroll → confirm for `alice`. Returns the raw TOTP secret, the recovery
    /// codes and the first token pair. The clock is then moved to the next step.
    pub async fn enroll_alice(&self) -> (Vec<u8>, Vec<String>, TokenPair) {
        let LoginOutcome::EnrollmentRequired { enrollment_token } =
            self.login("alice", PASSWORD).await.unwrap()
        else {
            panic!("expected enrollment")
        };
        let enrollment = self.svc.totp_enroll(&enrollment_token).await.unwrap();
        let secret = data_encoding::BASE32_NOPAD
            .decode(enrollment.secret_base32.as_bytes())
            .unwrap();
        assert_eq!(secret.len(), 20);
        let confirmed = self
            .svc
            .totp_confirm(&enrollment_token, &self.code(&secret))
            .await
            .unwrap();
        self.clock.advance(30);
        (secret, confirmed.recovery_codes, confirmed.tokens)
    }

    /// A full MFA login for an enrolled alice at the current time.
    pub async fn mfa_login(&self, secret: &[u8]) -> TokenPair {
        let token = self.mfa_token().await;
        let pair = self
            .svc
            .verify_totp(&token, &self.code(secret))
            .await
            .unwrap();
        self.clock.advance(30);
        pair
    }

    pub async fn mfa_token(&self) -> String {
        match self.login("alice", PASSWORD).await.unwrap() {
            LoginOutcome::MfaRequired { mfa_token, methods } => {
                assert_eq!(methods, ["totp", "recovery_code"]);
                mfa_token
            }
            other => panic!("expected MFA, got {other:?}"),
        }
    }

    /// Every audit body of tenant `acme` and of the system chain.
    pub async fn audit_bodies(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut sys = self.store.system().await.unwrap();
        let tenants = bastion_store::tenants::list_tenants(&mut sys)
            .await
            .unwrap();
        let chain = bastion_store::audit::system_read_chain(&mut sys)
            .await
            .unwrap();
        sys.rollback().await.unwrap();
        out.extend(chain.records.into_iter().map(|r| r.body));
        for t in tenants {
            let mut tx = self
                .store
                .begin(bastion_store::TenantScope::pre_auth(t.id))
                .await
                .unwrap();
            let chain = bastion_store::audit::read_chain(&mut tx).await.unwrap();
            tx.rollback().await.unwrap();
            let count = chain.records.len();
            let verified = bastion_audit::verify(&chain.records, chain.head).unwrap();
            assert_eq!(usize::try_from(verified.count).unwrap(), count);
            out.extend(chain.records.into_iter().map(|r| r.body));
        }
        out
    }

    pub async fn audit_actions(&self) -> Vec<String> {
        self.audit_bodies()
            .await
            .iter()
            .map(|b| {
                serde_json::from_str::<serde_json::Value>(b).unwrap()["action"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }
}

/// Builds a JWS by hand: base64url(header) . base64url(payload) . base64url(sign(input)).
pub fn forge(
    header: &serde_json::Value,
    payload: &serde_json::Value,
    sign: impl Fn(&[u8]) -> Vec<u8>,
) -> String {
    let h = bastion_crypto::b64url_encode(header.to_string().as_bytes());
    let p = bastion_crypto::b64url_encode(payload.to_string().as_bytes());
    let input = format!("{h}.{p}");
    let sig = sign(input.as_bytes());
    format!("{input}.{}", bastion_crypto::b64url_encode(&sig))
}

/// Splits a JWT and decodes its payload.
pub fn payload_of(token: &str) -> serde_json::Value {
    let p = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&bastion_crypto::b64url_decode(p).unwrap()).unwrap()
}

pub fn header_of(token: &str) -> serde_json::Value {
    let h = token.split('.').next().unwrap();
    serde_json::from_slice(&bastion_crypto::b64url_decode(h).unwrap()).unwrap()
}

/// A `tracing` writer that keeps everything in memory.
#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// Installs (once) a global TRACE-level subscriber writing to memory and returns its buffer.
pub fn captured_logs() -> Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
    .clone()
}
