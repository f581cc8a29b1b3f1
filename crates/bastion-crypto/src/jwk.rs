//! JWK helpers: RFC 7638 thumbprints and RFC 8037 OKP keys.

use serde_json::{Map, Value};

use crate::{CryptoError, b64url_encode, sha256};

/// The RFC 7638 JWK thumbprint with SHA-256, base64url-encoded.
///
/// Per RFC 7638 §3.2 only the required members for the key type are hashed (`RSA`: `e`,
/// `kty`, `n`; `EC`: `crv`, `kty`, `x`, `y`; `OKP` (RFC 8037 §2): `crv`, `kty`, `x`;
/// `oct`: `k`, `kty`), in lexicographic order, as JSON without whitespace (§3.3).
///
/// # Errors
/// [`CryptoError::Jwk`] when `kty` is missing or unknown or a required member is missing or
/// not a string.
pub fn jwk_thumbprint_sha256(jwk: &Value) -> Result<String, CryptoError> {
    let kty = jwk
        .get("kty")
        .and_then(Value::as_str)
        .ok_or(CryptoError::Jwk("missing kty"))?;
    let required: &[&str] = match kty {
        "RSA" => &["e", "kty", "n"],
        "EC" => &["crv", "kty", "x", "y"],
        "OKP" => &["crv", "kty", "x"],
        "oct" => &["k", "kty"],
        _ => return Err(CryptoError::Jwk("unsupported kty")),
    };
    // serde_json's default Map is a BTreeMap, so members serialize in lexicographic order;
    // every value is a JSON string, so the serialization has no whitespace (RFC 7638 §3.3).
    let mut members = Map::new();
    for name in required {
        let v = jwk
            .get(*name)
            .and_then(Value::as_str)
            .ok_or(CryptoError::Jwk("missing required member"))?;
        members.insert((*name).to_owned(), Value::String(v.to_owned()));
    }
    let canonical = canonical_json(&members);
    Ok(b64url_encode(&sha256(canonical.as_bytes())))
}

/// Serializes string members in lexicographic order without whitespace.
fn canonical_json(members: &Map<String, Value>) -> String {
    let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let parts: Vec<String> = sorted
        .into_iter()
        .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), v))
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// The public JWK of an Ed25519 key (RFC 8037 §2): `kty` `OKP`, `crv` `Ed25519`, `x` the
/// base64url public key, plus `kid`, `alg` `EdDSA` and `use` `sig` (RFC 7517 §4).
#[must_use]
pub fn okp_ed25519_jwk(public_key: &[u8], kid: &str) -> Value {
    serde_json::json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url_encode(public_key),
        "kid": kid,
        "alg": "EdDSA",
        "use": "sig",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8037_appendix_a3_thumbprint() {
        // RFC 8037 Appendix A.3.
        let jwk = serde_json::json!({
            "kty": "OKP", "crv": "Ed25519",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        });
        assert_eq!(
            jwk_thumbprint_sha256(&jwk).unwrap(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn missing_members_are_refused() {
        assert!(
            jwk_thumbprint_sha256(&serde_json::json!({"kty": "OKP", "crv": "Ed25519"})).is_err()
        );
        assert!(jwk_thumbprint_sha256(&serde_json::json!({"kty": "XYZ"})).is_err());
        assert!(jwk_thumbprint_sha256(&serde_json::json!({"x": "a"})).is_err());
    }
}
