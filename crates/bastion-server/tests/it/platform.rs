//! Platform: L1 CORS, security headers on success and errors, L4 body limits, nesting,
//! content types, unknown routes; every error is problem+json.

use axum::body::Body;
use futures::StreamExt;
use http::{Method, Request, StatusCode, header};
use serde_json::json;

use crate::harness::{
    MAX_BODY, Resp, TestApp, assert_problem_shape, options, spawn_app, spawn_app_with,
};

const CSP: &str = "default-src 'self'; base-uri 'none'; frame-ancestors 'none'";

fn assert_security_headers(r: &Resp, tls: bool, what: &str) {
    assert_eq!(r.header("content-security-policy"), Some(CSP), "{what}");
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{what}");
    assert!(r.header("server").is_none(), "{what}");
    assert_eq!(
        r.header("strict-transport-security").is_some(),
        tls,
        "{what}: HSTS only over TLS"
    );
}

async fn with_origin(app: &TestApp, method: Method, path: &str, origin: &str) -> Resp {
    let mut b = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(header::ORIGIN, origin);
    if method == Method::OPTIONS {
        b = b
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "authorization,content-type",
            );
    }
    app.send(b.body(Body::empty()).unwrap()).await
}

#[tokio::test]
async fn l1_cors_never_echoes_an_unlisted_origin() {
    let app = spawn_app_with(options(false, &["https://app.example.com"])).await;
    for method in [Method::GET, Method::OPTIONS] {
        for path in ["/healthz", "/v1/tools", "/v1/tools/create_quote"] {
            let r = with_origin(&app, method.clone(), path, "https://evil.example").await;
            assert!(
                r.header("access-control-allow-origin").is_none(),
                "{method} {path}"
            );
            assert!(r.header("access-control-allow-credentials").is_none());
            let r = with_origin(&app, method.clone(), path, "https://app.example.com").await;
            assert_eq!(
                r.header("access-control-allow-origin"),
                Some("https://app.example.com"),
                "{method} {path}"
            );
            assert_ne!(r.header("access-control-allow-credentials"), Some("true"));
        }
    }
    // Look-alikes and null are not on the list.
    for o in [
        "null",
        "https://app.example.com.evil.example",
        "http://app.example.com",
        "https://APP.example.com:443x",
    ] {
        let r = with_origin(&app, Method::GET, "/healthz", o).await;
        assert!(r.header("access-control-allow-origin").is_none(), "{o}");
    }
    // With no origin configured, nothing is ever allowed, never `*`.
    let plain = spawn_app().await;
    for o in ["https://evil.example", "https://app.example.com"] {
        let r = with_origin(&plain, Method::OPTIONS, "/v1/tools", o).await;
        assert!(r.header("access-control-allow-origin").is_none());
    }
}

#[tokio::test]
async fn security_headers_on_success_and_error_responses() {
    for tls in [false, true] {
        let app = spawn_app_with(options(tls, &[])).await;
        let ok = app.get("/healthz", None).await;
        assert_eq!(ok.status, StatusCode::OK);
        assert_security_headers(&ok, tls, "healthz");
        let token = app.login("acme", "buyer").await;
        let ok = app.get("/v1/tools", Some(&token)).await;
        assert_security_headers(&ok, tls, "tools");
        for r in [
            app.get("/nope", None).await,
            app.get("/v1/tools", None).await,
            app.post_json("/v1/tools/create_quote", Some(&token), &json!({}))
                .await,
            app.post_json("/v1/tools/no_such_tool", Some(&token), &json!({}))
                .await,
        ] {
            assert!(r.status.is_client_error());
            assert_problem_shape(&r);
            assert_security_headers(&r, tls, &format!("error {}", r.status));
        }
        if tls {
            assert!(
                app.get("/healthz", None)
                    .await
                    .header("strict-transport-security")
                    .unwrap()
                    .contains("max-age=")
            );
        }
    }
}

/// A body whose `Content-Length` is over the limit (what every real client sends) must be
/// refused as problem+json like every other error.
#[tokio::test]
async fn l4_declared_oversize_body_is_problem_json() {
    let app = spawn_app().await;
    let token = app.login("acme", "buyer").await;
    let auth = format!("Bearer {token}");
    let big = format!("{{\"title\":\"{}\"}}", "a".repeat(MAX_BODY + 1));
    // Declared length over the limit.
    let r = app
        .send(
            Request::builder()
                .method(Method::POST)
                .uri("/v1/tools/create_quote")
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, big.len())
                .header(header::AUTHORIZATION, &auth)
                .body(Body::from(big.clone()))
                .unwrap(),
        )
        .await;
    r.assert_problem(413);
    assert_security_headers(&r, false, "413");
}

/// The request time limit answers 408 problem+json.
#[tokio::test]
async fn l4_request_timeout_is_problem_json() {
    let mut opts = options(false, &[]);
    opts.request_timeout_secs = 1;
    let app = spawn_app_with(opts).await;
    let token = app.login("acme", "buyer").await;
    let first: Result<axum::body::Bytes, std::io::Error> =
        Ok(axum::body::Bytes::from_static(b"{\"limit\": "));
    let stalled = futures::stream::iter(vec![first]).chain(futures::stream::pending());
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        app.send(
            Request::builder()
                .method(Method::POST)
                .uri("/v1/tools/list_quotes")
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::from_stream(stalled))
                .unwrap(),
        ),
    )
    .await
    .expect("the request time limit did not fire");
    r.assert_problem(408);
    assert_security_headers(&r, false, "408");
}

#[tokio::test]
async fn l4_limits_and_error_shapes() {
    let app = spawn_app().await;
    let token = app.login("acme", "buyer").await;
    let auth = format!("Bearer {token}");
    let big = format!("{{\"title\":\"{}\"}}", "a".repeat(MAX_BODY + 1));
    // Streamed body without a length.
    let stream = futures_stream(big.clone().into_bytes());
    let r = app
        .send(
            Request::builder()
                .method(Method::POST)
                .uri("/v1/tools/create_quote")
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::AUTHORIZATION, &auth)
                .body(stream)
                .unwrap(),
        )
        .await;
    r.assert_problem(413);
    // Too big on an unauthenticated route too.
    let r = app
        .send(
            Request::builder()
                .method(Method::POST)
                .uri("/v1/auth/login")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(big))
                .unwrap(),
        )
        .await;
    r.assert_problem(413);

    // 1,000 levels of nesting.
    let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
    let deep_obj = format!("{}1{}", "{\"a\":".repeat(1000), "}".repeat(1000));
    for body in [deep, deep_obj] {
        for path in ["/v1/tools/create_quote", "/v1/auth/login"] {
            let r = app
                .send(
                    Request::builder()
                        .method(Method::POST)
                        .uri(path)
                        .header(header::CONTENT_TYPE, "application/json")
                        .header(header::AUTHORIZATION, &auth)
                        .body(Body::from(body.clone()))
                        .unwrap(),
                )
                .await;
            r.assert_problem(400);
        }
    }
    // Wrong or missing content type.
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri("/v1/tools/list_quotes")
            .header(header::AUTHORIZATION, &auth);
        if let Some(ct) = ct {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        let r = app.send(b.body(Body::from("{}")).unwrap()).await;
        r.assert_problem(415);
    }
    // Invalid JSON, unknown route, wrong method.
    let r = app
        .send(
            Request::builder()
                .method(Method::POST)
                .uri("/v1/tools/list_quotes")
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::AUTHORIZATION, &auth)
                .body(Body::from("{\"limit\": "))
                .unwrap(),
        )
        .await;
    r.assert_problem(400);
    app.get("/no/such/route", None).await.assert_problem(404);
    app.get("/v1/tools/list_quotes/extra", Some(&token))
        .await
        .assert_problem(404);
    app.get("/v1/auth/login", None).await.assert_problem(405);
    app.post_json("/v1/tools/no_such_tool", Some(&token), &json!({}))
        .await
        .assert_problem(404);
    // The server keeps serving normal requests.
    let (s, _) = app.call(&token, "list_quotes", &json!({})).await;
    assert_eq!(s, StatusCode::OK);
}

/// A body that arrives as a stream of chunks with no length.
fn futures_stream(bytes: Vec<u8>) -> Body {
    let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> = bytes
        .chunks(8 * 1024)
        .map(|c| Ok(axum::body::Bytes::copy_from_slice(c)))
        .collect();
    Body::from_stream(futures::stream::iter(chunks))
}
