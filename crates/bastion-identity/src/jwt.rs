//! Access tokens: RFC 9068 JWT profile, signed with EdDSA/Ed25519 (RFC 8037 §3.1).
//!
//! Verification never trusts the header: it is decoded here first and must be exactly
//! `{"alg":"EdDSA","typ":"at+jwt","kid":...}`; any other member (`jwk`, `jku`, `x5u`,
//! `x5c`, `crit`, ...) refuses the token before any key is looked up, so header key material
//! is never used or fetched (I3). The `kid` is matched exactly in the in-memory key ring
//! only (I4). Time claims are checked against the [`bastion_types::Clock`], not the system
//! clock, and must be JSON integers (I5).

use bastion_crypto::KeyRing;
use bastion_types::{AuthMethod, Slug, TenantId, UnixTime, UserId};
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::AuthError;

/// The JOSE `typ` of access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// The only accepted JWS `alg` (RFC 8037 §3.1).
pub const ACCESS_TOKEN_ALG: &str = "EdDSA";
/// Longest access token accepted, in bytes.
pub const ACCESS_TOKEN_BYTES_MAX: usize = 8 * 1024;
/// Header members an access token may carry; anything else is refused.
const HEADER_MEMBERS: [&str; 3] = ["alg", "kid", "typ"];

/// The claims of a Bastion access token (RFC 9068 §2.2, RFC 7519 §4.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Audience: one string.
    pub aud: String,
    /// Subject: the user id.
    pub sub: UserId,
    /// Tenant slug.
    pub tenant: Slug,
    /// Tenant id.
    pub tid: TenantId,
    /// Roles at issue time.
    pub roles: Vec<Slug>,
    /// Authentication methods (RFC 8176).
    pub amr: Vec<AuthMethod>,
    /// When the second factor was proven (OIDC Core §2 `auth_time`).
    pub auth_time: UnixTime,
    /// Issued at.
    pub iat: UnixTime,
    /// Not before.
    pub nbf: UnixTime,
    /// Expiry.
    pub exp: UnixTime,
    /// Token id.
    pub jti: String,
    /// Session id: the refresh family.
    pub sid: String,
    /// The user's session epoch at issue; bumping it invalidates every earlier token.
    pub sep: i64,
}

/// Signs `claims` with the ring's active key: header `{"alg":"EdDSA","typ":"at+jwt","kid"}`.
///
/// # Errors
/// [`AuthError::Unavailable`] when signing fails.
pub fn sign_access_token(keys: &KeyRing, claims: &AccessClaims) -> Result<String, AuthError> {
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
    header.kid = Some(keys.active().kid().to_owned());
    jsonwebtoken::encode(&header, claims, keys.active().encoding_key())
        .map_err(|_| AuthError::Unavailable)
}

/// Verifies signature, header and claims of an access token and returns its claims.
///
/// Checks, in order: size; three non-empty base64url segments; header is a JSON object with
/// exactly `alg` = `EdDSA`, `typ` = `at+jwt` and a string `kid` found by exact match in
/// `keys`; the Ed25519 signature (through `jsonwebtoken` with the algorithm pinned and its
/// own time checks off); every claim present with its JSON type; `iss` and `aud` equal to
/// ours; `nbf <= now`, `iat <= now`, `auth_time <= now`, `now < exp` and
/// `exp - iat <= ttl_secs_max`.
///
/// # Errors
/// [`AuthError::InvalidToken`] for anything wrong, [`AuthError::Expired`] for a token past
/// its `exp` that is otherwise valid.
pub fn verify_access_token_claims(
    token: &str,
    keys: &KeyRing,
    issuer: &str,
    audience: &str,
    now: UnixTime,
    ttl_secs_max: i64,
) -> Result<AccessClaims, AuthError> {
    if token.is_empty() || token.len() > ACCESS_TOKEN_BYTES_MAX {
        return Err(AuthError::InvalidToken);
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [header_b64, _payload_b64, signature_b64] = parts.as_slice() else {
        return Err(AuthError::InvalidToken);
    };
    if signature_b64.is_empty() {
        return Err(AuthError::InvalidToken);
    }
    let header = decode_json_object(header_b64)?;
    if header.len() != HEADER_MEMBERS.len()
        || header.keys().any(|k| !HEADER_MEMBERS.contains(&k.as_str()))
    {
        return Err(AuthError::InvalidToken);
    }
    if header.get("alg").and_then(Value::as_str) != Some(ACCESS_TOKEN_ALG)
        || header.get("typ").and_then(Value::as_str) != Some(ACCESS_TOKEN_TYP)
    {
        return Err(AuthError::InvalidToken);
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or(AuthError::InvalidToken)?;
    let key = keys.verifying_key(kid).ok_or(AuthError::InvalidToken)?;

    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.algorithms = vec![Algorithm::EdDSA];
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.leeway = 0;
    validation.set_required_spec_claims(&["iss", "aud", "sub", "exp", "nbf", "iat"]);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    let data = jsonwebtoken::decode::<Value>(token, key.decoding_key(), &validation)
        .map_err(|_| AuthError::InvalidToken)?;
    let Value::Object(claims) = data.claims else {
        return Err(AuthError::InvalidToken);
    };
    let claims = parse_claims(&claims)?;

    if claims.iss != issuer || claims.aud != audience {
        return Err(AuthError::InvalidToken);
    }
    if claims.nbf > now || claims.iat > now || claims.auth_time > now {
        return Err(AuthError::InvalidToken);
    }
    if claims.exp <= claims.iat || claims.exp - claims.iat > ttl_secs_max {
        return Err(AuthError::InvalidToken);
    }
    if now >= claims.exp {
        return Err(AuthError::Expired);
    }
    Ok(claims)
}

fn decode_json_object(segment: &str) -> Result<Map<String, Value>, AuthError> {
    let bytes = bastion_crypto::b64url_decode(segment).ok_or(AuthError::InvalidToken)?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(AuthError::InvalidToken),
    }
}

fn string_claim<'a>(c: &'a Map<String, Value>, name: &str) -> Result<&'a str, AuthError> {
    c.get(name)
        .and_then(Value::as_str)
        .ok_or(AuthError::InvalidToken)
}

/// An integer claim: a JSON number without fraction or exponent that fits an `i64`.
/// Strings (`"99999999999"`), floats and `null` are refused (I5).
fn int_claim(c: &Map<String, Value>, name: &str) -> Result<i64, AuthError> {
    c.get(name)
        .and_then(Value::as_i64)
        .ok_or(AuthError::InvalidToken)
}

fn slug_array(c: &Map<String, Value>, name: &str) -> Result<Vec<Slug>, AuthError> {
    let arr = c
        .get(name)
        .and_then(Value::as_array)
        .ok_or(AuthError::InvalidToken)?;
    arr.iter()
        .map(|v| {
            v.as_str()
                .and_then(|s| Slug::parse(s).ok())
                .ok_or(AuthError::InvalidToken)
        })
        .collect()
}

fn parse_claims(c: &Map<String, Value>) -> Result<AccessClaims, AuthError> {
    let amr = c
        .get("amr")
        .and_then(Value::as_array)
        .ok_or(AuthError::InvalidToken)?
        .iter()
        .map(|v| {
            serde_json::from_value::<AuthMethod>(v.clone()).map_err(|_| AuthError::InvalidToken)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AccessClaims {
        iss: string_claim(c, "iss")?.to_owned(),
        aud: string_claim(c, "aud")?.to_owned(),
        sub: UserId::parse(string_claim(c, "sub")?).map_err(|_| AuthError::InvalidToken)?,
        tenant: Slug::parse(string_claim(c, "tenant")?).map_err(|_| AuthError::InvalidToken)?,
        tid: TenantId::parse(string_claim(c, "tid")?).map_err(|_| AuthError::InvalidToken)?,
        roles: slug_array(c, "roles")?,
        amr,
        auth_time: int_claim(c, "auth_time")?,
        iat: int_claim(c, "iat")?,
        nbf: int_claim(c, "nbf")?,
        exp: int_claim(c, "exp")?,
        jti: string_claim(c, "jti")?.to_owned(),
        sid: string_claim(c, "sid")?.to_owned(),
        sep: int_claim(c, "sep")?,
    })
}
