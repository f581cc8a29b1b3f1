//! Server configuration, per profile, and the start-up refusals of unsafe configurations.
//!
//! A config is TOML:
//!
//! ```toml
//! profile = "prod"                   # dev | stage | prod
//! [server]
//! listen = "0.0.0.0:8443"
//! tls_cert = "/etc/bastion/cert.pem" # PEM chain; TLS 1.3 only
//! tls_key = "/etc/bastion/key.pem"
//! trusted_proxy = false              # true: TLS ends at a proxy you run (then no cert here)
//! cors_allowed_origins = ["https://app.example.com"]
//! max_body_bytes = 1048576
//! request_timeout_secs = 30
//! [app]
//! dir = "/srv/apps/vendor-quote"
//! [database]
//! url = "sqlite:///var/lib/bastion/bastion.db"
//! [identity]
//! issuer = "https://bastion.example.com"
//! audience = "bastion"
//! key_dir = "/var/lib/bastion/keys"
//! secret_key_file = "/etc/bastion/secret.key"   # ≥ 32 random bytes
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Deployment profile. `prod` refuses anything unsafe; `dev` allows plain HTTP on loopback
/// and demo accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Local development and `bastion demo`.
    Dev,
    /// Pre-production: prod rules, test data allowed.
    Stage,
    /// Production.
    Prod,
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Profile, default `prod` so a forgotten line fails safe.
    #[serde(default = "default_profile")]
    pub profile: Profile,
    /// HTTP listener.
    pub server: ServerSection,
    /// The app manifest.
    pub app: AppSection,
    /// The database.
    pub database: DatabaseSection,
    /// Token issuance.
    pub identity: IdentitySection,
}

fn default_profile() -> Profile {
    Profile::Prod
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Address to bind.
    pub listen: SocketAddr,
    /// PEM certificate chain for TLS 1.3.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS 1.3.
    pub tls_key: Option<PathBuf>,
    /// TLS is terminated by a proxy the operator runs; plain HTTP is then allowed.
    #[serde(default)]
    pub trusted_proxy: bool,
    /// Exact origins allowed by CORS (`scheme://host[:port]`); never `*`.
    #[serde(default)]
    pub cors_allowed_origins: Vec<String>,
    /// Largest accepted request body, bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Whole-request time limit, seconds.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
}

/// Default body limit: 1 MiB.
pub const MAX_BODY_BYTES_DEFAULT: usize = 1024 * 1024;
/// Default request time limit.
pub const REQUEST_TIMEOUT_SECS_DEFAULT: u64 = 30;

fn default_max_body_bytes() -> usize {
    MAX_BODY_BYTES_DEFAULT
}
fn default_request_timeout_secs() -> u64 {
    REQUEST_TIMEOUT_SECS_DEFAULT
}

/// `[app]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSection {
    /// Folder holding `app.toml`, `policies/` and schemas.
    pub dir: PathBuf,
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// `sqlite://PATH` (PostgreSQL arrives with its own issue).
    pub url: String,
}

/// `[identity]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    /// `iss` of issued tokens, an https URL in prod.
    pub issuer: String,
    /// `aud` of issued access tokens.
    pub audience: String,
    /// Folder of Ed25519 signing keys (PKCS#8).
    pub key_dir: PathBuf,
    /// File holding the server master secret (≥ 32 bytes): per-tenant keys that encrypt TOTP
    /// secrets at rest are derived from it. Keep it stable and backed up: losing or changing
    /// it disables every enrolled TOTP factor.
    pub secret_key_file: Option<PathBuf>,
}

/// Minimum length of the server secret, bytes.
pub const SECRET_KEY_LEN_MIN: usize = 32;

/// Values shipped in docs or the demo that must never be a production secret.
pub const KNOWN_DEFAULT_SECRETS: &[&str] = &[
    "changeme",
    "change-me",
    "secret",
    "bastion",
    "bastion-demo-secret-not-for-production",
];

/// A configuration that must not start, with a one-line reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config `{0}`")]
    Read(String),
    /// The file is not valid TOML for this schema.
    #[error("invalid config: {0}")]
    Parse(String),
    /// The config is unsafe for its profile.
    #[error("refusing to start: {0}")]
    Unsafe(String),
}

impl Config {
    /// Reads and parses a config file (no safety checks yet: see [`Config::check_safe`]).
    ///
    /// # Errors
    /// [`ConfigError::Read`] or [`ConfigError::Parse`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|_| ConfigError::Read(path.display().to_string()))?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse(e.message().to_owned()))
    }

    /// Refuses configurations that are unsafe for the profile (platform cases L1–L3).
    ///
    /// In `stage` and `prod`: TLS certificate and key, or a declared trusted proxy; no
    /// wildcard or non-exact CORS origin; a secret key file that exists, is at least
    /// [`SECRET_KEY_LEN_MIN`] bytes and is not a known default. Demo accounts are checked
    /// against the database separately ([`crate::startup`]).
    ///
    /// # Errors
    /// [`ConfigError::Unsafe`] naming the first problem.
    pub fn check_safe(&self) -> Result<(), ConfigError> {
        for o in &self.server.cors_allowed_origins {
            check_origin(o)?;
        }
        if self.profile == Profile::Dev {
            return Ok(());
        }
        let unsafe_ = |m: &str| Err(ConfigError::Unsafe(m.to_owned()));
        match (
            &self.server.tls_cert,
            &self.server.tls_key,
            self.server.trusted_proxy,
        ) {
            (Some(_), Some(_), _) => {}
            (None, None, true) => {}
            (None, None, false) => {
                return unsafe_(
                    "plain HTTP without a trusted proxy: set server.tls_cert and server.tls_key, or server.trusted_proxy = true",
                );
            }
            _ => return unsafe_("server.tls_cert and server.tls_key must be set together"),
        }
        let Some(path) = &self.identity.secret_key_file else {
            return unsafe_("identity.secret_key_file is not set");
        };
        let secret = std::fs::read(path).map_err(|_| {
            ConfigError::Unsafe(format!(
                "identity.secret_key_file `{}` cannot be read",
                path.display()
            ))
        })?;
        let trimmed = trim_ascii(&secret);
        if KNOWN_DEFAULT_SECRETS
            .iter()
            .any(|d| d.as_bytes() == trimmed)
        {
            return unsafe_("identity.secret_key_file holds a known default secret");
        }
        if trimmed.len() < SECRET_KEY_LEN_MIN {
            return Err(ConfigError::Unsafe(format!(
                "identity.secret_key_file is shorter than {SECRET_KEY_LEN_MIN} bytes"
            )));
        }
        if !self.identity.issuer.starts_with("https://") {
            return unsafe_("identity.issuer must be an https URL");
        }
        Ok(())
    }
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    b.get(start..end).unwrap_or_default()
}

/// An allowed CORS origin must be an exact `http(s)://host[:port]` with no path or wildcard.
///
/// # Errors
/// [`ConfigError::Unsafe`] for `*`, `null`, wildcards, paths.
pub fn check_origin(o: &str) -> Result<(), ConfigError> {
    let bad = o.contains('*')
        || o == "null"
        || !(o.starts_with("https://") || o.starts_with("http://"))
        || o.split("://")
            .nth(1)
            .is_none_or(|rest| rest.is_empty() || rest.contains('/'));
    if bad {
        return Err(ConfigError::Unsafe(format!(
            "CORS origin `{}` is not an exact scheme://host[:port]",
            o.chars().take(100).collect::<String>()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(profile: &str, extra_server: &str, secret_file: Option<&Path>) -> Config {
        let secret = secret_file.map_or(String::new(), |p| {
            format!("secret_key_file = {:?}", p.display().to_string())
        });
        let text = format!(
            "profile = \"{profile}\"\n[server]\nlisten = \"127.0.0.1:0\"\n{extra_server}\n[app]\ndir = \"x\"\n[database]\nurl = \"sqlite://x.db\"\n[identity]\nissuer = \"https://b.example\"\naudience = \"bastion\"\nkey_dir = \"k\"\n{secret}\n"
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn prod_refuses_missing_default_and_short_secrets() {
        let dir = std::env::temp_dir().join(format!("bastion-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tls = "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"";
        let err = base("prod", tls, None).check_safe().unwrap_err();
        assert!(
            err.to_string().contains("secret_key_file is not set"),
            "{err}"
        );
        let f = dir.join("s");
        std::fs::write(&f, "changeme\n").unwrap();
        assert!(
            base("prod", tls, Some(&f))
                .check_safe()
                .unwrap_err()
                .to_string()
                .contains("known default")
        );
        std::fs::write(&f, "short-secret").unwrap();
        assert!(
            base("prod", tls, Some(&f))
                .check_safe()
                .unwrap_err()
                .to_string()
                .contains("shorter")
        );
        std::fs::write(&f, "x".repeat(40)).unwrap();
        base("prod", tls, Some(&f)).check_safe().unwrap();
        let plain = base("prod", "", Some(&f)).check_safe().unwrap_err();
        assert!(plain.to_string().contains("plain HTTP"), "{plain}");
        base("prod", "trusted_proxy = true", Some(&f))
            .check_safe()
            .unwrap();
        let wild = base(
            "prod",
            "trusted_proxy = true\ncors_allowed_origins = [\"*\"]",
            Some(&f),
        );
        assert!(
            wild.check_safe()
                .unwrap_err()
                .to_string()
                .contains("CORS origin")
        );
        base("dev", "", None).check_safe().unwrap();
    }

    #[test]
    fn origins_must_be_exact() {
        for ok in ["https://app.example.com", "http://localhost:3000"] {
            check_origin(ok).unwrap();
        }
        for bad in [
            "*",
            "null",
            "https://*.example.com",
            "https://a.example/path",
            "app.example.com",
            "https://",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
    }
}
