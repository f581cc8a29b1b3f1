//! RFC 7638 thumbprints against the shared vector file.

use bastion_crypto::jwk_thumbprint_sha256;

#[expect(clippy::unwrap_used, clippy::expect_used, reason = "test helper")]
fn vectors() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/vectors/identity.json"
    );
    let text = std::fs::read_to_string(path).expect("tests/vectors/identity.json in the repo");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn rfc7638_rsa_vector() {
    let v = vectors();
    let case = &v["rfc7638_thumbprint"];
    // Computed over the required members only (RFC 7638 §3.2): extra members must not count.
    let mut jwk = case["jwk"].clone();
    jwk["kid"] = serde_json::json!("ignored");
    jwk["alg"] = serde_json::json!("RS256");
    assert_eq!(
        jwk_thumbprint_sha256(&jwk).unwrap(),
        case["sha256"].as_str().unwrap()
    );
}

#[test]
fn rfc7638_section_3_1_example() {
    // The same example written out in RFC 7638 §3.1.
    let jwk = serde_json::json!({
        "kty": "RSA", "e": "AQAB",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    });
    assert_eq!(
        jwk_thumbprint_sha256(&jwk).unwrap(),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}
