//! Tokens signed here with test-only keys (`../testdata/*.pem`, generated for these
//! tests and used nowhere else) against verifiers built from a secret or a JWKS.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use serde_json::{Value, json};

use super::*;
use crate::auth::grant::Access;

const SECRET: &[u8] = b"a test secret of at least 32 bytes, for HS256 only";
const RSA: &str = include_str!("../testdata/rsa.pem");
const EC: &str = include_str!("../testdata/ec.pem");
const ED: &str = include_str!("../testdata/ed.pem");

fn now() -> u64 {
    get_current_timestamp()
}

fn claims(extra: Value) -> Value {
    let mut c = json!({
        "sub": "bob",
        "exp": now() + 600,
        "iat": now(),
        "rl": { "read": ["user/{sub}/*"], "write": ["user/{sub}/inbox"] },
    });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            if v.is_null() {
                c.remove(k);
            } else {
                c.insert(k.clone(), v.clone());
            }
        }
    }
    c
}

fn sign(claims: &Value, alg: Algorithm, key: &EncodingKey, kid: Option<&str>) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    encode(&h, claims, key).expect("signs")
}

fn hs(claims: &Value) -> String {
    sign(
        claims,
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET).expect("key"),
        None,
    )
}

fn keys() -> [(Algorithm, EncodingKey, &'static str); 3] {
    [
        (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(RSA.as_bytes()).expect("rsa"),
            "rsa-1",
        ),
        (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(EC.as_bytes()).expect("ec"),
            "ec-1",
        ),
        (
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(ED.as_bytes()).expect("ed"),
            "ed-1",
        ),
    ]
}

/// The public JWKS of the three test keys, each with its `kid`.
fn jwks() -> String {
    let keys = keys()
        .iter()
        .map(|(alg, key, kid)| {
            let mut jwk = Jwk::from_encoding_key(key, *alg).expect("jwk");
            jwk.common.key_id = Some((*kid).to_owned());
            jwk
        })
        .collect();
    serde_json::to_string(&JwkSet { keys }).expect("json")
}

#[test]
fn a_good_token_gives_its_subject_expiry_and_grant() {
    let v = Verifier::with_secret(SECRET).expect("verifier");
    let c = claims(json!({}));
    let id = v.verify(&hs(&c)).expect("verifies");
    assert_eq!(id.subject(), "bob");
    assert_eq!(Some(id.expires), c["exp"].as_u64());
    assert!(id.grant.allows(Access::Read, "user/bob/x"));
    assert!(!id.grant.allows(Access::Read, "user/alice/x"));
    assert!(id.grant.allows(Access::Write, "user/bob/inbox"));
    assert!(!id.grant.allows(Access::Publish, "user/bob/inbox"));
}

#[test]
fn rs256_es256_and_eddsa_from_a_jwks_by_kid() {
    let v = Verifier::with_jwks(&jwks()).expect("verifier");
    let c = claims(json!({}));
    for (alg, key, kid) in keys() {
        let id = v.verify(&sign(&c, alg, &key, Some(kid)));
        assert_eq!(
            id.map(|i| i.subject().to_owned()),
            Ok("bob".to_owned()),
            "{alg:?}"
        );
    }
    // A token naming another key's kid, or none, is not verified by luck.
    let (alg, key, _) = &keys()[1];
    assert_eq!(
        v.verify(&sign(&c, *alg, key, Some("ed-1"))),
        Err(TokenError::Algorithm)
    );
    assert_eq!(
        v.verify(&sign(&c, *alg, key, Some("nope"))),
        Err(TokenError::UnknownKey)
    );
    assert_eq!(
        v.verify(&sign(&c, *alg, key, None)),
        Err(TokenError::UnknownKey)
    );
}

#[test]
fn times_are_checked_with_a_small_skew() {
    let v = Verifier::with_secret(SECRET).expect("verifier");
    let t = now();
    let check = |extra: Value| {
        v.verify(&hs(&claims(extra)))
            .map(|i| i.subject().to_owned())
    };
    assert_eq!(check(json!({"exp": t - 100})), Err(TokenError::Expired));
    assert!(
        check(json!({"exp": t - 10})).is_ok(),
        "within the 30 s skew"
    );
    assert_eq!(check(json!({"nbf": t + 100})), Err(TokenError::NotYetValid));
    assert!(check(json!({"nbf": t + 10})).is_ok());
    assert_eq!(
        check(json!({"iat": t + 100})),
        Err(TokenError::IssuedInFuture)
    );
    assert!(check(json!({"iat": t + 10})).is_ok());
    assert_eq!(
        check(json!({"exp": null})),
        Err(TokenError::Missing("exp".to_owned()))
    );
    let strict = Verifier::with_secret(SECRET).expect("verifier").skew(0);
    assert_eq!(
        strict
            .verify(&hs(&claims(json!({"exp": t - 10}))))
            .map(|i| i.subject().to_owned()),
        Err(TokenError::Expired)
    );
}

#[test]
fn audience_and_issuer_when_configured() {
    let v = Verifier::with_secret(SECRET)
        .expect("verifier")
        .audience(Some("ringline".into()))
        .issuer(Some("https://id.example.com".into()));
    let good = json!({"aud": "ringline", "iss": "https://id.example.com"});
    assert!(v.verify(&hs(&claims(good))).is_ok());
    let check = |extra: Value| {
        v.verify(&hs(&claims(extra)))
            .map(|i| i.subject().to_owned())
    };
    assert_eq!(
        check(json!({"aud": "other", "iss": "https://id.example.com"})),
        Err(TokenError::Audience)
    );
    assert_eq!(
        check(json!({"aud": "ringline", "iss": "https://evil.example.com"})),
        Err(TokenError::Issuer)
    );
    assert_eq!(
        check(json!({"iss": "https://id.example.com"})),
        Err(TokenError::Missing("aud".to_owned()))
    );
}

#[test]
fn forged_tokens_are_refused() {
    let v = Verifier::with_secret(SECRET).expect("verifier");
    let c = claims(json!({}));
    // Another secret.
    let other = sign(
        &c,
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another secret, also 32 bytes or more").expect("key"),
        None,
    );
    assert_eq!(v.verify(&other), Err(TokenError::Signature));
    // `alg: none`, no signature.
    let b64 = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&c)
    );
    assert!(
        matches!(
            v.verify(&none),
            Err(TokenError::Malformed | TokenError::Algorithm)
        ),
        "{:?}",
        v.verify(&none)
    );
    // A changed payload under the original signature.
    let good = hs(&c);
    let mut parts: Vec<&str> = good.split('.').collect();
    let escalated = b64(&claims(json!({"rl": {"read": ["*"]}})));
    parts[1] = &escalated;
    assert_eq!(v.verify(&parts.join(".")), Err(TokenError::Signature));
    // Garbage.
    for t in ["", "a.b", "a.b.c", "...."] {
        assert!(v.verify(t).is_err(), "{t:?}");
    }
    // HS256 "signed" with an RSA key's public JWK against a JWKS verifier: the key is
    // for RS256 only.
    let jv = Verifier::with_jwks(&jwks()).expect("verifier");
    let hs_with_kid = sign(
        &c,
        Algorithm::HS256,
        &EncodingKey::from_secret(RSA.as_bytes()).expect("key"),
        Some("rsa-1"),
    );
    assert_eq!(jv.verify(&hs_with_kid), Err(TokenError::Algorithm));
}

#[test]
fn bad_grants_and_keys_are_refused() {
    let v = Verifier::with_secret(SECRET).expect("verifier");
    let bad = claims(json!({"rl": {"read": ["a*b"]}}));
    assert!(matches!(v.verify(&hs(&bad)), Err(TokenError::Grant(_))));
    let no_sub = claims(json!({"sub": null}));
    assert!(
        matches!(
            v.verify(&hs(&no_sub)),
            Err(TokenError::Grant(PatternError::BadSubject))
        ),
        "{{sub}} without a subject"
    );
    assert!(matches!(
        Verifier::with_secret(b"short"),
        Err(KeyError::ShortSecret)
    ));
    assert!(matches!(
        Verifier::with_jwks(r#"{"keys": []}"#),
        Err(KeyError::NoKeys)
    ));
    assert!(Verifier::with_jwks("not json").is_err());
    let printed = format!("{v:?}");
    assert!(!printed.contains("test secret"), "{printed}");
}

/// An identity is boxed once per authenticated connection: keep it small (its
/// patterns are shared per claim; see `grant::templates`).
#[test]
fn an_identity_stays_small() {
    let size = std::mem::size_of::<Identity>();
    assert!(size <= 32, "{size}");
}
