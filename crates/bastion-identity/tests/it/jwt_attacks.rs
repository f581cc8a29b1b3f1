//! Access-token attacks I1–I6, plus `typ`, expiry and tampering. Tokens are built by hand.

use std::net::TcpListener;

use bastion_crypto::SigningKey;
use bastion_identity::AuthError;
use serde_json::{Value, json};

use crate::common::{AUDIENCE, Harness, ISSUER, forge, header_of, payload_of};

/// An enrolled alice, her real access token, and a signer with Bastion's real key.
async fn setup() -> (Harness, String) {
    let h = Harness::new().await;
    let (_secret, _codes, pair) = h.enroll_alice().await;
    (h, pair.access_token)
}

fn our_header(h: &Harness) -> Value {
    json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": h.keys.active().kid() })
}

#[expect(clippy::panic, reason = "test assertion helper")]
async fn assert_rejected(h: &Harness, token: &str, why: &str) {
    match h.svc.verify_access_token(token).await {
        Err(AuthError::InvalidToken | AuthError::Expired) => {}
        other => panic!("{why}: accepted or wrong error: {other:?}"),
    }
}

#[tokio::test]
async fn real_token_has_the_profile_and_verifies() {
    let (h, token) = setup().await;
    let header = header_of(&token);
    assert_eq!(header, our_header(&h));
    let p = payload_of(&token);
    for claim in [
        "iss",
        "aud",
        "sub",
        "tenant",
        "tid",
        "roles",
        "amr",
        "auth_time",
        "iat",
        "nbf",
        "exp",
        "jti",
        "sid",
    ] {
        assert!(p.get(claim).is_some(), "missing {claim}");
    }
    assert_eq!(p["iss"], ISSUER);
    assert_eq!(p["aud"], AUDIENCE);
    assert_eq!(p["tenant"], "acme");
    assert_eq!(p["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(p["exp"].as_i64().unwrap() - p["iat"].as_i64().unwrap(), 300);
    let principal = h.svc.verify_access_token(&token).await.unwrap();
    assert_eq!(principal.username.as_str(), "alice");
    assert_eq!(principal.tenant.as_str(), "acme");
    assert!(principal.has_role("buyer"));
    assert_eq!(principal.token_id, p["jti"].as_str().unwrap());

    // Control: the hand-built signer produces tokens Bastion accepts, so every rejection
    // below is for the reason under test.
    let resigned = forge(&our_header(&h), &p, |m| h.keys.active().sign(m));
    h.svc.verify_access_token(&resigned).await.unwrap();
}

#[tokio::test]
async fn i1_alg_none_is_rejected() {
    let (h, token) = setup().await;
    let mut p = payload_of(&token);
    p["roles"] = json!(["admin", "finance"]);
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = json!({ "alg": alg, "typ": "at+jwt", "kid": h.keys.active().kid() });
        let unsigned = forge(&header, &p, |_| Vec::new());
        assert!(unsigned.ends_with('.'));
        assert_rejected(&h, &unsigned, alg).await;
        let junk = forge(&header, &p, |_| b"sig".to_vec());
        assert_rejected(&h, &junk, alg).await;
        let no_typ = forge(&json!({ "alg": alg }), &p, |_| Vec::new());
        assert_rejected(&h, &no_typ, alg).await;
    }
}

#[tokio::test]
async fn i2_hs256_keyed_with_our_public_key_is_rejected() {
    let (h, token) = setup().await;
    let p = payload_of(&token);
    let vk = h.keys.active().verifying_key();
    let jwk_json = vk.jwk().to_string();
    let jwks_json = h.svc.jwks().unwrap().to_string();
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("spki der", vk.spki_der()),
        ("spki pem", vk.spki_pem().into_bytes()),
        (
            "pem without newline",
            vk.spki_pem().trim_end().as_bytes().to_vec(),
        ),
        ("jwk json", jwk_json.into_bytes()),
        ("jwks json", jwks_json.into_bytes()),
        ("raw public key", vk.public_key().to_vec()),
        (
            "x base64url",
            bastion_crypto::b64url_encode(vk.public_key()).into_bytes(),
        ),
    ];
    for (what, secret) in secrets {
        for alg in ["HS256", "HS384", "HS512"] {
            let header = json!({ "alg": alg, "typ": "at+jwt", "kid": h.keys.active().kid() });
            // HMAC-SHA-256 through aws-lc-rs for every HS alg: the header alg is what matters.
            let forged = forge(&header, &p, |m| {
                bastion_crypto::hmac_sha256(&secret, m).to_vec()
            });
            assert_rejected(&h, &forged, &format!("{alg} keyed with {what}")).await;
        }
    }
    // Other asymmetric algs naming our key are refused as well.
    for alg in ["RS256", "ES256", "PS256", "Ed25519", "EdDSA "] {
        let header = json!({ "alg": alg, "typ": "at+jwt", "kid": h.keys.active().kid() });
        let forged = forge(&header, &p, |m| h.keys.active().sign(m));
        assert_rejected(&h, &forged, alg).await;
    }
}

#[tokio::test]
async fn i3_header_key_material_is_never_used_or_fetched() {
    let (h, token) = setup().await;
    let p = payload_of(&token);
    let attacker = SigningKey::generate().unwrap();
    let attacker_jwk = attacker.verifying_key().jwk();

    // A local listener stands in for the attacker's key server: nothing may connect to it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());

    let headers = [
        json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": attacker.kid(), "jwk": attacker_jwk }),
        json!({ "alg": "EdDSA", "typ": "at+jwt", "jwk": attacker_jwk }),
        json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": attacker.kid(), "jku": url }),
        json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": attacker.kid(), "x5u": url }),
        json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": attacker.kid(), "x5c": ["MIIB"] }),
        // Our own kid next to the attacker's key: the signature is the attacker's.
        json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": h.keys.active().kid(), "jwk": attacker_jwk }),
    ];
    for header in &headers {
        let forged = forge(header, &p, |m| attacker.sign(m));
        assert_rejected(&h, &forged, &header.to_string()).await;
    }
    // Even signed by Bastion's own key, a token carrying key-material members is refused.
    for member in ["jwk", "jku", "x5u", "x5c", "x5t", "crit"] {
        let mut header = our_header(&h);
        header[member] = json!(url);
        let forged = forge(&header, &p, |m| h.keys.active().sign(m));
        assert_rejected(&h, &forged, member).await;
    }
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a key URL was fetched"
    );
}

#[tokio::test]
async fn i4_kid_injection_is_rejected_without_touching_files_or_sql() {
    let (h, token) = setup().await;
    let p = payload_of(&token);
    let before = h.audit_bodies().await.len();
    let marker = h.dir.path().join("keys").join("touched");
    for kid in [
        "../../../../dev/null",
        "../keys/active-kid",
        "' UNION SELECT 'k'--",
        "\" OR 1=1 --",
        "",
        "signing-x.pk8",
        &h.keys.active().kid().to_uppercase(),
        &format!("{} ", h.keys.active().kid()),
    ] {
        let header = json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": kid });
        // Signed with the real key: only the kid lookup can refuse it.
        let forged = forge(&header, &p, |m| h.keys.active().sign(m));
        assert_rejected(&h, &forged, kid).await;
        // A kid of the wrong JSON type too.
        let header = json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": [kid] });
        assert_rejected(&h, &forge(&header, &p, |m| h.keys.active().sign(m)), kid).await;
    }
    let no_kid = forge(&json!({ "alg": "EdDSA", "typ": "at+jwt" }), &p, |m| {
        h.keys.active().sign(m)
    });
    assert_rejected(&h, &no_kid, "no kid").await;
    assert!(!marker.exists());
    // Rejections are decided in memory: nothing was written.
    assert_eq!(h.audit_bodies().await.len(), before);

    // With the database closed, any query would fail as `Unavailable`: the injected kids
    // are still refused as invalid tokens, so no SQL ran for them.
    h.store.close().await;
    for kid in ["../../../../dev/null", "' UNION SELECT 'k'--"] {
        let header = json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": kid });
        let forged = forge(&header, &p, |m| h.keys.active().sign(m));
        assert_eq!(
            h.svc.verify_access_token(&forged).await,
            Err(AuthError::InvalidToken)
        );
    }
    // Control: a genuine token does reach the store, which is closed.
    assert_eq!(
        h.svc.verify_access_token(&token).await,
        Err(AuthError::Unavailable)
    );
}

#[tokio::test]
async fn i5_string_and_float_time_claims_are_rejected() {
    let (h, token) = setup().await;
    let p = payload_of(&token);
    let cases: Vec<(&str, Value)> = vec![
        ("exp", json!("never")),
        ("exp", json!("99999999999")),
        ("nbf", json!("never")),
        ("nbf", json!("0")),
        ("iat", json!("0")),
        ("auth_time", json!("0")),
        ("exp", json!(99_999_999_999.5)),
        ("exp", json!(null)),
        ("exp", json!(true)),
        ("exp", json!([p["exp"].clone()])),
        ("nbf", json!({ "value": 0 })),
    ];
    for (claim, value) in cases {
        let mut bad = p.clone();
        bad[claim] = value.clone();
        let forged = forge(&our_header(&h), &bad, |m| h.keys.active().sign(m));
        assert_rejected(&h, &forged, &format!("{claim} = {value}")).await;
    }
    for claim in [
        "exp",
        "nbf",
        "iat",
        "sub",
        "jti",
        "sid",
        "tid",
        "tenant",
        "roles",
        "amr",
        "auth_time",
        "iss",
    ] {
        let mut bad = p.clone();
        bad.as_object_mut().unwrap().remove(claim);
        let forged = forge(&our_header(&h), &bad, |m| h.keys.active().sign(m));
        assert_rejected(&h, &forged, &format!("missing {claim}")).await;
    }
}

#[tokio::test]
async fn i6_wrong_or_missing_audience_and_issuer_are_rejected() {
    let (h, token) = setup().await;
    let p = payload_of(&token);
    let auds: Vec<Option<Value>> = vec![
        Some(json!("other-service")),
        Some(json!("")),
        Some(json!(["other-service"])),
        Some(json!([AUDIENCE, "other-service"])),
        Some(json!(null)),
        None,
    ];
    for aud in auds {
        let mut bad = p.clone();
        match &aud {
            Some(v) => bad["aud"] = v.clone(),
            None => {
                bad.as_object_mut().unwrap().remove("aud");
            }
        }
        let forged = forge(&our_header(&h), &bad, |m| h.keys.active().sign(m));
        assert_rejected(&h, &forged, &format!("aud {aud:?}")).await;
    }
    for iss in [
        json!("https://evil.example"),
        json!(ISSUER.to_uppercase()),
        json!([ISSUER]),
    ] {
        let mut bad = p.clone();
        bad["iss"] = iss.clone();
        let forged = forge(&our_header(&h), &bad, |m| h.keys.active().sign(m));
        assert_rejected(&h, &forged, &format!("iss {iss}")).await;
    }
}

#[tokio::test]
async fn typ_must_be_at_jwt() {
    let (h, token) = setup().await;
    let p = payload_of(&token);
    for typ in [
        json!("JWT"),
        json!("jwt"),
        json!("application/at+jwt+x"),
        json!(null),
    ] {
        let header = json!({ "alg": "EdDSA", "typ": typ, "kid": h.keys.active().kid() });
        assert_rejected(&h, &forge(&header, &p, |m| h.keys.active().sign(m)), "typ").await;
    }
    let header = json!({ "alg": "EdDSA", "kid": h.keys.active().kid() });
    assert_rejected(
        &h,
        &forge(&header, &p, |m| h.keys.active().sign(m)),
        "no typ",
    )
    .await;
}

#[tokio::test]
async fn expiry_nbf_and_tampering() {
    let (h, token) = setup().await;
    let p = payload_of(&token);

    // Tampered payload with the original signature.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut admin = p.clone();
    admin["roles"] = json!(["finance"]);
    parts[1] = bastion_crypto::b64url_encode(admin.to_string().as_bytes());
    assert_rejected(&h, &parts.join("."), "tampered").await;

    // Not yet valid.
    let mut early = p.clone();
    early["nbf"] = json!(h.now() + 60);
    assert_rejected(
        &h,
        &forge(&our_header(&h), &early, |m| h.keys.active().sign(m)),
        "nbf",
    )
    .await;
    // Issued in the future.
    let mut future = p.clone();
    future["iat"] = json!(h.now() + 60);
    future["exp"] = json!(h.now() + 360);
    assert_rejected(
        &h,
        &forge(&our_header(&h), &future, |m| h.keys.active().sign(m)),
        "iat",
    )
    .await;
    // A lifetime longer than ours, even though signed.
    let mut long = p.clone();
    long["exp"] = json!(p["iat"].as_i64().unwrap() + 86_400);
    assert_rejected(
        &h,
        &forge(&our_header(&h), &long, |m| h.keys.active().sign(m)),
        "long",
    )
    .await;

    // Garbage shapes.
    for junk in [
        "",
        ".",
        "..",
        "a.b.c",
        "a.b",
        "a.b.c.d",
        &"A".repeat(10_000),
    ] {
        assert_rejected(&h, junk, junk).await;
    }

    // The real token expires by the clock (it was issued 30 s ago by the harness).
    h.svc.verify_access_token(&token).await.unwrap();
    h.clock.advance(300 - 30 - 1);
    h.svc.verify_access_token(&token).await.unwrap();
    h.clock.advance(1);
    assert_eq!(
        h.svc.verify_access_token(&token).await,
        Err(AuthError::Expired)
    );
}

#[tokio::test]
async fn rotated_keys_keep_verifying_old_tokens_and_sign_with_the_new_key() {
    let h = Harness::new().await;
    let (secret, _codes, pair) = h.enroll_alice().await;
    let old_kid = h.keys.active().kid().to_owned();
    let rotated = std::sync::Arc::new(
        bastion_crypto::KeyRing::rotate_in_dir(&h.dir.path().join("keys")).unwrap(),
    );
    h.svc.set_key_ring(rotated.clone()).unwrap();
    h.svc.verify_access_token(&pair.access_token).await.unwrap();
    assert_eq!(h.svc.jwks().unwrap()["keys"].as_array().unwrap().len(), 2);
    let fresh = h.mfa_login(&secret).await;
    let kid = header_of(&fresh.access_token)["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(kid, rotated.active().kid());
    assert_ne!(kid, old_kid);
    h.svc
        .verify_access_token(&fresh.access_token)
        .await
        .unwrap();
}
