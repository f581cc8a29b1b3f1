//! Key files, the key ring and the JWKS.

use std::os::unix::fs::PermissionsExt as _;

use bastion_crypto::{CryptoError, KeyRing, SigningKey, jwk_thumbprint_sha256};

#[test]
fn generated_key_is_written_0600_and_reloads_with_the_same_kid() {
    let dir = tempfile::tempdir().unwrap();
    let keydir = dir.path().join("keys");
    let ring = KeyRing::load_or_generate(&keydir).unwrap();
    let kid = ring.active().kid().to_owned();
    let path = keydir.join(format!("signing-{kid}.pk8"));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(&keydir).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // PKCS#8 v2 (RFC 5958): version INTEGER 1 right after the outer SEQUENCE header.
    let der = std::fs::read(&path).unwrap();
    assert_eq!(&der[2..5], &[0x02, 0x01, 0x01], "pkcs#8 v2");

    let again = KeyRing::load_or_generate(&keydir).unwrap();
    assert_eq!(again.active().kid(), kid);
    assert_eq!(again.active().public_key(), ring.active().public_key());
}

#[test]
fn kid_is_the_rfc7638_thumbprint_of_the_public_jwk() {
    let key = SigningKey::generate().unwrap();
    let jwk = key.verifying_key().jwk();
    assert_eq!(jwk_thumbprint_sha256(&jwk).unwrap(), key.kid());
    assert_eq!(key.kid().len(), 43);
}

#[test]
fn jwks_is_rfc8037_okp() {
    let ring = KeyRing::ephemeral().unwrap();
    let jwks = ring.jwks();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    assert_eq!(k["kty"], "OKP");
    assert_eq!(k["crv"], "Ed25519");
    assert_eq!(k["alg"], "EdDSA");
    assert_eq!(k["use"], "sig");
    assert_eq!(k["kid"], ring.active().kid());
    assert_eq!(k["x"].as_str().unwrap().len(), 43);
    assert!(k.get("d").is_none(), "private key must never be published");
}

#[test]
fn renamed_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate().unwrap();
    let path = key.write_to_dir(dir.path()).unwrap();
    std::fs::rename(&path, dir.path().join("signing-AAAA.pk8")).unwrap();
    assert!(matches!(
        KeyRing::load(dir.path()),
        Err(CryptoError::KidMismatch(_))
    ));
}

#[test]
fn world_readable_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate().unwrap();
    let path = key.write_to_dir(dir.path()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(KeyRing::load(dir.path()).is_err());
}

#[test]
fn rotation_keeps_previous_public_keys() {
    let dir = tempfile::tempdir().unwrap();
    let first = KeyRing::load_or_generate(dir.path()).unwrap();
    let old_kid = first.active().kid().to_owned();
    let rotated = KeyRing::rotate_in_dir(dir.path()).unwrap();
    assert_ne!(rotated.active().kid(), old_kid);
    assert!(rotated.verifying_key(&old_kid).is_some());
    assert_eq!(rotated.jwks()["keys"].as_array().unwrap().len(), 2);
    assert_eq!(rotated.jwks()["keys"][0]["kid"], rotated.active().kid());
    // Reloading picks the marked active key.
    let reloaded = KeyRing::load(dir.path()).unwrap();
    assert_eq!(reloaded.active().kid(), rotated.active().kid());
}

#[test]
fn signatures_verify_and_kid_lookup_is_exact() {
    let ring = KeyRing::ephemeral().unwrap();
    let sig = ring.active().sign(b"msg");
    let vk = ring.verifying_key(ring.active().kid()).unwrap();
    assert!(vk.verify(b"msg", &sig));
    assert!(!vk.verify(b"msh", &sig));
    for bad in [
        "",
        "../../../../dev/null",
        "' UNION SELECT 'k'--",
        &ring.active().kid().to_uppercase(),
    ] {
        assert!(ring.verifying_key(bad).is_none());
    }
}

#[test]
fn jsonwebtoken_round_trip_with_eddsa() {
    let ring = KeyRing::ephemeral().unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(ring.active().kid().to_owned());
    let token = jsonwebtoken::encode(
        &header,
        &serde_json::json!({"sub": "x"}),
        ring.active().encoding_key(),
    )
    .unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    let dk = ring
        .verifying_key(ring.active().kid())
        .unwrap()
        .decoding_key();
    let data = jsonwebtoken::decode::<serde_json::Value>(&token, dk, &v).unwrap();
    assert_eq!(data.claims["sub"], "x");
    // SPKI forms used by the key-confusion tests are well formed.
    let vk = ring.active().verifying_key();
    assert_eq!(vk.spki_der().len(), 44);
    assert!(vk.spki_pem().starts_with("-----BEGIN PUBLIC KEY-----\n"));
}
