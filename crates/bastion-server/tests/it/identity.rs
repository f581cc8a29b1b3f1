//! Identity at the HTTP level: forged tokens (I1, I5, I6), MFA bypass (I10), refresh
//! rotation and reuse (I8), logout, disabled users, throttling without enumeration (I12),
//! and U2 (a password never reaches a response, the audit log or the logs).

use http::StatusCode;
use serde_json::{Value, json};

use crate::harness::{PASSWORD, TestApp, captured_logs, contains, slug, spawn_app};

fn b64(v: &[u8]) -> String {
    bastion_crypto::b64url_encode(v)
}

fn decode(part: &str) -> Value {
    serde_json::from_slice(&bastion_crypto::b64url_decode(part).unwrap()).unwrap()
}

/// A token with `header` and `payload`, signed by Bastion's own active key.
fn resign(app: &TestApp, header: &Value, payload: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    );
    let sig = app.keys.active().sign(input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

fn parts(token: &str) -> (Value, Value) {
    let mut it = token.split('.');
    (decode(it.next().unwrap()), decode(it.next().unwrap()))
}

/// The token is refused with 401 problem+json and a Bearer challenge, on a tool call and on
/// the tool list.
async fn assert_refused(app: &TestApp, token: &str, what: &str) {
    let before = app.snapshot("acme").await;
    let r = app
        .post_json(
            "/v1/tools/create_quote",
            Some(token),
            &crate::records::quote_args(&app.user("acme", "seller").id.to_string()),
        )
        .await;
    r.assert_problem(401);
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer"), "{what}: {challenge:?}");
    let r = app.get("/v1/tools", Some(token)).await;
    r.assert_problem(401);
    assert!(r.header("www-authenticate").is_some(), "{what}");
    assert_eq!(
        app.snapshot("acme").await,
        before,
        "{what}: nothing executed"
    );
}

#[tokio::test]
async fn forged_tokens_are_refused_i1_i5_i6() {
    let app = spawn_app().await;
    let token = app.login("acme", "buyer").await;
    let (header, payload) = parts(&token);
    // Control: re-signing the genuine header and payload gives a working token, so the
    // refusals below are about the changed part only.
    let same = resign(&app, &header, &payload);
    assert_eq!(
        app.get("/v1/tools", Some(&same)).await.status,
        StatusCode::OK
    );

    // I1: alg none, no signature, elevated claims.
    let mut admin = payload.clone();
    admin["roles"] = json!(["finance", "buyer", "seller"]);
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "at+jwt"})
            .to_string()
            .as_bytes()),
        b64(admin.to_string().as_bytes())
    );
    assert_refused(&app, &none, "alg none").await;
    let mut h = header.clone();
    h["alg"] = json!("none");
    let none_kid = format!(
        "{}.{}.",
        b64(h.to_string().as_bytes()),
        b64(admin.to_string().as_bytes())
    );
    assert_refused(&app, &none_kid, "alg none with kid").await;

    // I5: exp / nbf as strings.
    for (claim, value) in [
        ("exp", "never"),
        ("exp", "99999999999"),
        ("nbf", "99999999999"),
        ("nbf", "0"),
    ] {
        let mut p = payload.clone();
        p[claim] = json!(value);
        assert_refused(
            &app,
            &resign(&app, &header, &p),
            &format!("{claim}={value:?}"),
        )
        .await;
    }

    // I6: another audience, an audience list, or none.
    let mut p = payload.clone();
    p["aud"] = json!("https://other-service.example");
    assert_refused(&app, &resign(&app, &header, &p), "aud other").await;
    let mut p = payload.clone();
    p["aud"] = json!(["https://other-service.example"]);
    assert_refused(&app, &resign(&app, &header, &p), "aud list").await;
    let mut p = payload.clone();
    p.as_object_mut().unwrap().remove("aud");
    assert_refused(&app, &resign(&app, &header, &p), "no aud").await;

    // Other tenant's id under our signature: still refused or still our tenant only.
    let mut p = payload.clone();
    p["tid"] = json!(app.tenant_id("globex").to_string());
    p["tenant"] = json!("globex");
    assert_refused(&app, &resign(&app, &header, &p), "swapped tenant").await;

    // Garbage and missing credentials.
    for t in ["", "abc", "a.b.c", &format!("{token}x")] {
        let r = app.get("/v1/tools", Some(t)).await;
        r.assert_problem(401);
        assert!(r.header("www-authenticate").is_some());
    }
    let r = app.get("/v1/tools", None).await;
    r.assert_problem(401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
}

#[tokio::test]
async fn i10_password_alone_gives_no_access_token_and_the_mfa_token_is_no_bearer() {
    let app = spawn_app().await;
    let r = app
        .post_json(
            "/v1/auth/login",
            None,
            &json!({"tenant": "acme", "username": "finance", "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["methods", "mfa_token"], "{v}");
    let mfa = v["mfa_token"].as_str().unwrap();
    assert_refused(&app, mfa, "mfa token as bearer").await;
    // A wrong code gives no token either, and the challenge still works afterwards.
    let r = app
        .post_json(
            "/v1/auth/mfa/totp",
            None,
            &json!({"mfa_token": mfa, "code": "000000"}),
        )
        .await;
    r.assert_problem(401);
    assert!(!String::from_utf8_lossy(&r.body).contains("access_token"));
    let code = app.fresh_code("acme", "finance");
    let r = app
        .post_json(
            "/v1/auth/mfa/totp",
            None,
            &json!({"mfa_token": mfa, "code": code}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json()["access_token"].is_string());
}

fn refresh_form(rt: &str) -> String {
    format!("grant_type=refresh_token&refresh_token={rt}")
}

#[tokio::test]
async fn i8_refresh_rotation_then_reuse_kills_the_family() {
    let app = spawn_app().await;
    let first = app.login_pair("acme", "buyer").await;
    let r1 = first["refresh_token"].as_str().unwrap().to_owned();
    let access1 = first["access_token"].as_str().unwrap().to_owned();
    let r = app.post_form("/oauth/token", &refresh_form(&r1)).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r2 = r.json()["refresh_token"].as_str().unwrap().to_owned();
    let r = app.post_form("/oauth/token", &refresh_form(&r2)).await;
    assert_eq!(r.status, StatusCode::OK);
    let r3 = r.json()["refresh_token"].as_str().unwrap().to_owned();
    let access3 = r.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        app.get("/v1/tools", Some(&access3)).await.status,
        StatusCode::OK
    );
    assert!(r1 != r2 && r2 != r3);

    // Reuse of R1.
    let r = app.post_form("/oauth/token", &refresh_form(&r1)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "invalid_grant");
    // R3 and the whole family are dead, access tokens included.
    let r = app.post_form("/oauth/token", &refresh_form(&r3)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "invalid_grant");
    assert_refused(&app, &access3, "access token of a revoked family").await;
    assert_refused(&app, &access1, "first access token of a revoked family").await;

    // Malformed token requests.
    let r = app
        .post_form("/oauth/token", "grant_type=password&username=a")
        .await;
    assert_eq!(r.json()["error"], "unsupported_grant_type");
    let r = app
        .post_form("/oauth/token", "grant_type=refresh_token")
        .await;
    assert_eq!(r.json()["error"], "invalid_request");
    let r = app
        .post_json(
            "/oauth/token",
            None,
            &json!({"grant_type": "refresh_token", "refresh_token": r3}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn logout_and_disable_refuse_the_access_token_at_once() {
    let app = spawn_app().await;
    let pair = app.login_pair("acme", "buyer").await;
    let token = pair["access_token"].as_str().unwrap();
    assert_eq!(
        app.get("/v1/tools", Some(token)).await.status,
        StatusCode::OK
    );
    let r = app
        .post_json("/v1/auth/logout", Some(token), &json!({}))
        .await;
    assert_eq!(
        r.status,
        StatusCode::NO_CONTENT,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_refused(&app, token, "after logout").await;
    let rt = pair["refresh_token"].as_str().unwrap();
    let r = app.post_form("/oauth/token", &refresh_form(rt)).await;
    assert_eq!(r.json()["error"], "invalid_grant", "refresh after logout");

    let pair = app.login_pair("acme", "seller").await;
    let token = pair["access_token"].as_str().unwrap().to_owned();
    let seller_rt = pair["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(
        app.get("/v1/tools", Some(&token)).await.status,
        StatusCode::OK
    );
    app.identity
        .disable_user(&slug("acme"), &slug("seller"))
        .await
        .unwrap();
    assert_refused(&app, &token, "disabled user").await;
    let r = app
        .post_form("/oauth/token", &refresh_form(&seller_rt))
        .await;
    assert_eq!(
        r.json()["error"],
        "invalid_grant",
        "refresh of a disabled user"
    );
    let r = app
        .post_json(
            "/v1/auth/login",
            None,
            &json!({"tenant": "acme", "username": "seller", "password": PASSWORD}),
        )
        .await;
    r.assert_problem(401);
}

async fn login_attempt(
    app: &TestApp,
    tenant: &str,
    user: &str,
    password: &str,
) -> crate::harness::Resp {
    app.post_json(
        "/v1/auth/login",
        None,
        &json!({"tenant": tenant, "username": user, "password": password}),
    )
    .await
}

#[tokio::test]
async fn i12_throttled_account_and_identical_failures() {
    let app = spawn_app().await;
    let unknown = login_attempt(&app, "acme", "no-such-user", "wrong password here").await;
    let unknown_tenant = login_attempt(&app, "nowhere", "buyer", "wrong password here").await;
    let wrong = login_attempt(&app, "acme", "finance2", "wrong password here").await;
    unknown.assert_problem(401);
    assert_eq!(unknown.body, wrong.body, "unknown user vs wrong password");
    assert_eq!(
        unknown_tenant.body, wrong.body,
        "unknown tenant vs wrong password"
    );
    assert_eq!(
        unknown.headers.get("www-authenticate"),
        wrong.headers.get("www-authenticate")
    );

    let mut throttled = false;
    for i in 0..20 {
        let r = login_attempt(&app, "acme", "buyer2", &format!("wrong password {i}")).await;
        assert!(r.status == StatusCode::UNAUTHORIZED || r.status == StatusCode::TOO_MANY_REQUESTS);
        if r.status == StatusCode::UNAUTHORIZED {
            assert_eq!(r.body, wrong.body, "attempt {i}");
        } else {
            throttled = true;
        }
    }
    // The right password is refused while the account is throttled, with the same body.
    let r = login_attempt(&app, "acme", "buyer2", PASSWORD).await;
    assert!(r.status.is_client_error());
    assert!(
        r.json().get("mfa_token").is_none(),
        "throttled account logged in"
    );
    if r.status == StatusCode::UNAUTHORIZED {
        assert_eq!(r.body, wrong.body);
        throttled = true;
    }
    assert!(throttled);
    // Other accounts are not locked out by it.
    let _ = app.login("acme", "buyer").await;
    // After the window the real user gets in.
    app.clock.advance(16 * 60);
    let _ = app.login("acme", "buyer2").await;
}

#[tokio::test]
async fn u2_a_failed_password_appears_nowhere() {
    let logs = captured_logs();
    let app = spawn_app().await;
    let secret = "Tr0ub4dor&3";
    for user in ["buyer", "no-such-user"] {
        let r = login_attempt(&app, "acme", user, secret).await;
        r.assert_problem(401);
        assert!(!contains(&r.body, secret) && !contains(&r.body, "Tr0ub4dor"));
        for v in r.headers.values() {
            assert!(!contains(v.as_bytes(), "Tr0ub4dor"));
        }
    }
    // A malformed body carrying it is refused without echoing it.
    let r = app
        .post_json(
            "/v1/auth/login",
            None,
            &json!({"tenant": "acme", "username": "buyer", "password": secret, "x": 1}),
        )
        .await;
    r.assert_problem(400);
    assert!(!contains(&r.body, "Tr0ub4dor"));
    let audit = app.all_audit_bodies().await;
    assert!(
        audit.iter().any(|b| b.contains("auth.login")),
        "failed logins are audited"
    );
    for b in &audit {
        assert!(!b.contains("Tr0ub4dor"), "audit body {b}");
    }
    // The whole database, WAL included.
    assert!(
        !contains(&app.db_bytes(), "Tr0ub4dor"),
        "password in the database file"
    );
    let captured = logs.0.lock().unwrap().clone();
    assert!(!captured.is_empty(), "TRACE subscriber captured nothing");
    assert!(!contains(&captured, "Tr0ub4dor"), "password in the logs");
}

#[tokio::test]
async fn jwks_and_metadata_publish_public_keys_only() {
    let app = spawn_app().await;
    let r = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let keys = r.json()["keys"].as_array().unwrap().clone();
    assert!(!keys.is_empty());
    for k in &keys {
        assert_eq!(k["kty"], "OKP", "{k}");
        assert_eq!(k["crv"], "Ed25519", "{k}");
        assert!(k.get("d").is_none(), "private key material published: {k}");
        assert!(k["kid"].is_string());
    }
    let token = app.login("acme", "buyer").await;
    let (header, payload) = parts(&token);
    assert!(keys.iter().any(|k| k["kid"] == header["kid"]));
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "at+jwt");
    let meta = app
        .get("/.well-known/oauth-authorization-server", None)
        .await
        .json();
    assert_eq!(meta["issuer"], payload["iss"]);
    assert_eq!(meta["issuer"], crate::harness::ISSUER);
    let pr = app
        .get("/.well-known/oauth-protected-resource", None)
        .await
        .json();
    assert_eq!(pr["authorization_servers"][0], meta["issuer"]);
    assert_eq!(app.get("/readyz", None).await.status, StatusCode::OK);
}

/// MFA is mandatory even for a token signed with our own key: an `amr` without a second
/// factor (a leaked key, a bug in issuance) is refused.
#[tokio::test]
async fn a_token_without_a_second_factor_in_amr_is_refused() {
    let app = spawn_app().await;
    let token = app.login("acme", "buyer").await;
    let (header, payload) = parts(&token);
    for amr in [json!(["pwd"]), json!([])] {
        let mut p = payload.clone();
        p["amr"] = amr.clone();
        let forged = resign(&app, &header, &p);
        let r = app.get("/v1/tools", Some(&forged)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "amr {amr} accepted");
    }
}

/// A tool name that is not valid UTF-8 in the path is a problem+json 404, not a text error
/// naming an internal parameter.
#[tokio::test]
async fn undecodable_tool_name_is_a_problem() {
    let app = spawn_app().await;
    let token = app.login("acme", "buyer").await;
    let r = app
        .post_json("/v1/tools/%ff%fe", Some(&token), &json!({}))
        .await;
    r.assert_problem(404);
    assert!(
        !String::from_utf8_lossy(&r.body).contains("name"),
        "leaks a parameter name"
    );
}

/// A session id is bound to its user: a token pairing the buyer's session with the finance
/// user's id is refused, even signed with our own key.
#[tokio::test]
async fn a_session_id_cannot_be_paired_with_another_user() {
    let app = spawn_app().await;
    let token = app.login("acme", "buyer").await;
    let (header, payload) = parts(&token);
    let mut p = payload.clone();
    p["sub"] = json!(app.user("acme", "finance").id.to_string());
    let forged = resign(&app, &header, &p);
    let r = app.get("/v1/tools", Some(&forged)).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "sid of one user accepted for another"
    );
}

/// Behind a trusted proxy the login throttle keys on the address the proxy appended to
/// `X-Forwarded-For`, so one client's failures do not lock out everyone behind the proxy;
/// without a trusted proxy the header is the client's own claim and ignored.
#[tokio::test]
async fn the_address_throttle_follows_the_trusted_proxy_header_only() {
    use axum::body::Body;
    use http::{Method, Request, header};
    for trusted in [true, false] {
        let mut opts = crate::harness::options(false, &[]);
        opts.trusted_proxy = trusted;
        let app =
            crate::harness::spawn_app_on(bastion_store::testing::backend_from_env(), opts).await;
        let login = |xff: &str, user: &str, password: &str| {
            Request::builder()
                .method(Method::POST)
                .uri("/v1/auth/login")
                .header(header::CONTENT_TYPE, "application/json")
                .header("x-forwarded-for", xff)
                .body(Body::from(
                    serde_json::json!({"tenant": "acme", "username": user, "password": password})
                        .to_string(),
                ))
                .unwrap()
        };
        // One client, spoofing a first hop, fails 60 times (users that do not exist).
        for i in 0..60 {
            app.send(login("10.9.9.9, 198.51.100.7", &format!("nobody{i}"), "x"))
                .await;
        }
        let password = crate::harness::PASSWORD;
        let other_client = app.send(login("198.51.100.8", "buyer", password)).await;
        if trusted {
            assert_eq!(
                other_client.status,
                http::StatusCode::OK,
                "another client is not locked out"
            );
            let same = app.send(login("198.51.100.7", "buyer", password)).await;
            assert_eq!(same.status, http::StatusCode::TOO_MANY_REQUESTS);
        } else {
            // Every request came from the same peer: the header changes nothing.
            assert_eq!(other_client.status, http::StatusCode::TOO_MANY_REQUESTS);
        }
    }
}
