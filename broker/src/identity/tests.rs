//! Verification of presented tokens against a live test issuer: the happy paths (ES256,
//! RS256 with `aud` = client id) and every way a token must be refused.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use super::testissuer::{RSA_KID, RSA_PUBLIC_PEM, TestIssuer, rsa_jwk};
use super::*;
use jit_proto::time::TimeError;

const AUD: &str = "git-jit-test";
const NOW: i64 = 1_700_000_000;
const NOW_MS: i64 = NOW * 1000;

async fn setup() -> (TestIssuer, Verifier) {
    let issuer = TestIssuer::start().await;
    let v = Verifier::new(&[issuer.config("corp", AUD)], CacheTimes::default()).expect("verifier");
    (issuer, v)
}

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn es256_and_rs256_tokens_verify() {
    let (iss, v) = setup().await;
    let t = iss.es256(AUD, NOW, json!({"sub": "alice", "groups": ["eng"]}));
    let id = v.verify(t.expose(), NOW_MS).await.expect("es256 verifies");
    assert_eq!((id.issuer.as_str(), id.subject.as_str()), ("corp", "alice"));
    assert_eq!(id.claims["groups"], json!(["eng"]));
    // An OIDC provider's ID token: RS256, `aud` is the client id (string or array).
    let t = iss.rs256(AUD, NOW, json!({"sub": "bob"}));
    assert_eq!(
        v.verify(t.expose(), NOW_MS).await.expect("rs256").subject,
        "bob"
    );
    let t = iss.rs256(
        "unused",
        NOW,
        json!({"sub": "bob", "aud": ["other", AUD], "azp": AUD}),
    );
    assert!(v.verify(t.expose(), NOW_MS).await.is_ok());
    // No `typ` at all (Kubernetes service-account tokens) is accepted by default.
    let t = iss.rs256_typed(None, AUD, NOW, json!({"sub": "k8s"}));
    assert!(v.verify(t.expose(), NOW_MS).await.is_ok());
    assert_eq!(iss.jwks_hits(), 1, "keys are cached");
}

#[tokio::test]
async fn wrong_audience_and_issuer_are_refused() {
    let (iss, v) = setup().await;
    let t = iss.es256("someone-else", NOW, json!({"sub": "a"}));
    assert_eq!(
        v.verify(t.expose(), NOW_MS).await,
        Err(IdentityError::Audience(AUD.into()))
    );
    let t = iss.es256(AUD, NOW, json!({"sub": "a", "aud": []}));
    assert!(matches!(
        v.verify(t.expose(), NOW_MS).await,
        Err(IdentityError::Audience(_))
    ));
    // `iss` is compared exactly: a trailing slash is another issuer.
    let t = iss.es256(
        AUD,
        NOW,
        json!({"sub": "a", "iss": format!("{}/", iss.url)}),
    );
    assert!(matches!(
        v.verify(t.expose(), NOW_MS).await,
        Err(IdentityError::UnknownIssuer(_))
    ));
    let t = iss.es256(AUD, NOW, json!({"sub": "a", "iss": "https://evil.example"}));
    let err = v
        .verify(t.expose(), NOW_MS)
        .await
        .expect_err("unknown issuer");
    assert_eq!(
        err.to_string(),
        "subject_token issuer \"https://evil.example\" is not trusted by this broker"
    );
    let t = iss.es256(AUD, NOW, json!({"sub": "a", "iss": null}));
    assert!(matches!(
        v.verify(t.expose(), NOW_MS).await,
        Err(IdentityError::Malformed(_))
    ));
}

#[tokio::test]
async fn time_claims_have_sixty_seconds_of_leeway() {
    let (iss, v) = setup().await;
    let at = |claims: serde_json::Value| iss.es256(AUD, NOW, claims);
    let ok = |c: serde_json::Value| {
        let t = at(c);
        let v = &v;
        async move { v.verify(t.expose(), NOW_MS).await }
    };
    assert!(ok(json!({"sub": "a", "exp": NOW - 59})).await.is_ok());
    assert_eq!(
        ok(json!({"sub": "a", "exp": NOW - 60})).await,
        Err(IdentityError::Expired)
    );
    assert_eq!(
        ok(json!({"sub": "a", "exp": NOW - 3600})).await,
        Err(IdentityError::Expired)
    );
    assert!(ok(json!({"sub": "a", "nbf": NOW + 60})).await.is_ok());
    assert_eq!(
        ok(json!({"sub": "a", "nbf": NOW + 61})).await,
        Err(IdentityError::NotYetValid)
    );
    assert_eq!(
        ok(json!({"sub": "a", "iat": NOW + 61})).await,
        Err(IdentityError::IssuedInFuture("iat"))
    );
    let bad = |claim, why| Err(IdentityError::BadTime { claim, why });
    assert_eq!(
        ok(json!({"sub": "a", "exp": null})).await,
        bad("exp", TimeError::NotNumber)
    );
    assert_eq!(
        ok(json!({"sub": "a", "exp": "soon"})).await,
        bad("exp", TimeError::NotNumber)
    );
    // Without `exp` at all.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(RSA_KID.into());
    let key =
        EncodingKey::from_rsa_pem(super::testissuer::RSA_PRIVATE_PEM.as_bytes()).expect("key");
    let no_exp = jsonwebtoken::encode(
        &header,
        &json!({"iss": iss.url, "aud": AUD, "sub": "a", "iat": NOW}),
        &key,
    )
    .expect("sign");
    assert_eq!(
        v.verify(&no_exp, NOW_MS).await,
        Err(IdentityError::MissingTime("exp"))
    );
    // A whole number written as a float is a NumericDate; a fraction is not whole seconds.
    assert!(
        ok(json!({"sub": "a", "exp": (NOW + 10) as f64}))
            .await
            .is_ok()
    );
    assert_eq!(
        ok(json!({"sub": "a", "exp": (NOW + 10) as f64 + 0.5})).await,
        bad("exp", TimeError::NotWhole)
    );
}

#[tokio::test]
async fn absurd_time_claims_are_refused_before_arithmetic() {
    let (iss, v) = setup().await;
    let verify = |claims: &str| {
        let extra: serde_json::Value = serde_json::from_str(claims).expect("json");
        let t = iss.rs256(AUD, NOW, extra);
        let v = &v;
        async move { v.verify(t.expose(), NOW_MS).await }
    };
    let bad = |claim, why| Err(IdentityError::BadTime { claim, why });
    // `exp` of 1e300 saturated to i64::MAX was a token that never expires.
    assert_eq!(
        verify(r#"{"sub": "a", "exp": 1e300}"#).await,
        bad("exp", TimeError::BeyondYear9999)
    );
    assert_eq!(
        verify(r#"{"sub": "a", "exp": 9223372036854775807}"#).await,
        bad("exp", TimeError::BeyondYear9999)
    );
    assert_eq!(
        verify(r#"{"sub": "a", "exp": 18446744073709551615}"#).await,
        bad("exp", TimeError::BeyondYear9999)
    );
    assert_eq!(
        verify(r#"{"sub": "a", "exp": 253402300800}"#).await,
        bad("exp", TimeError::BeyondYear9999)
    );
    assert_eq!(
        verify(r#"{"sub": "a", "nbf": -1e300}"#).await,
        bad("nbf", TimeError::Negative)
    );
    assert_eq!(
        verify(r#"{"sub": "a", "iat": -1}"#).await,
        bad("iat", TimeError::Negative)
    );
    assert_eq!(
        verify(r#"{"sub": "a", "auth_time": 1e300}"#).await,
        bad("auth_time", TimeError::BeyondYear9999)
    );
    // An `auth_time` in the future would outlive every revocation of the person.
    assert_eq!(
        verify(&format!(r#"{{"sub": "a", "auth_time": {}}}"#, NOW + 3600)).await,
        Err(IdentityError::IssuedInFuture("auth_time"))
    );
    assert!(
        verify(&format!(r#"{{"sub": "a", "auth_time": {}}}"#, NOW - 3600))
            .await
            .is_ok()
    );
    let err = verify(r#"{"sub": "a", "exp": 1e300}"#)
        .await
        .expect_err("refused");
    assert_eq!(
        err.to_string(),
        "subject_token 'exp' is beyond the year 9999 (at most 253402300799)"
    );
}

#[tokio::test]
async fn access_tokens_of_a_trusted_issuer_are_not_identity_tokens() {
    let (iss, v) = setup().await;
    // An RFC 9068 access token: signed by the trusted issuer, the client id as audience.
    for typ in [
        "at+jwt",
        "application/at+jwt",
        "AT+JWT",
        "Application/At+Jwt",
    ] {
        let t = iss.rs256_typed(
            Some(typ),
            AUD,
            NOW,
            json!({"sub": "alice", "client_id": AUD}),
        );
        let err = v.verify(t.expose(), NOW_MS).await.expect_err(typ);
        assert_eq!(
            err,
            IdentityError::NotIdentityToken {
                typ: format!("\"{typ}\""),
                what: "an OAuth access token (RFC 9068)",
            },
            "{typ}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "subject_token is an OAuth access token (RFC 9068), not an identity token (typ \"{typ}\")"
            )
        );
        assert!(!err.to_string().contains(t.expose()));
    }
    // Other tokens the issuer signs with the same keys.
    for (typ, what) in [
        ("logout+jwt", "a logout token"),
        ("secevent+jwt", "a security event token"),
        ("jit+jwt", "a git-jit token"),
    ] {
        let t = iss.rs256_typed(Some(typ), AUD, NOW, json!({"sub": "alice"}));
        let err = v.verify(t.expose(), NOW_MS).await.expect_err(typ);
        assert!(err.to_string().contains(what), "{err}");
    }
    // A logout token without its `typ` still carries `events`.
    let t = iss.rs256_typed(
        None,
        AUD,
        NOW,
        json!({"sub": "alice", "events": {"http://schemas.openid.net/event/backchannel-logout": {}}}),
    );
    assert!(matches!(
        v.verify(t.expose(), NOW_MS).await,
        Err(IdentityError::NotIdentityToken { .. })
    ));
    // Any type not configured is refused, naming the accepted ones.
    let t = iss.rs256_typed(Some("JOSE"), AUD, NOW, json!({"sub": "alice"}));
    let err = v.verify(t.expose(), NOW_MS).await.expect_err("JOSE");
    assert_eq!(
        err.to_string(),
        "subject_token type \"JOSE\" is not accepted from issuer 'corp' (accepted: JWT)"
    );
    for typ in ["JWT", "jwt", "application/jwt"] {
        let t = iss.rs256_typed(Some(typ), AUD, NOW, json!({"sub": "alice"}));
        assert!(v.verify(t.expose(), NOW_MS).await.is_ok(), "{typ}");
    }
}

#[tokio::test]
async fn accepted_typ_is_configured_per_issuer() {
    let iss = TestIssuer::start().await;
    let strict = IssuerConfig {
        accepted_typ: vec!["application/id-token+jwt".into()],
        require_typ: true,
        ..iss.config("corp", AUD)
    };
    let v = Verifier::new(&[strict], CacheTimes::default()).expect("verifier");
    let t = iss.rs256_typed(Some("id-token+JWT"), AUD, NOW, json!({"sub": "a"}));
    assert!(v.verify(t.expose(), NOW_MS).await.is_ok());
    let t = iss.rs256_typed(Some("JWT"), AUD, NOW, json!({"sub": "a"}));
    assert!(matches!(
        v.verify(t.expose(), NOW_MS).await,
        Err(IdentityError::TokenType { .. })
    ));
    let t = iss.rs256_typed(None, AUD, NOW, json!({"sub": "a"}));
    let err = v.verify(t.expose(), NOW_MS).await.expect_err("no typ");
    assert_eq!(
        err.to_string(),
        "subject_token type (none) is not accepted from issuer 'corp' (accepted: application/id-token+jwt)"
    );
    // An access-token type cannot be configured as accepted.
    let lax = IssuerConfig {
        accepted_typ: vec!["JWT".into(), "at+jwt".into()],
        ..iss.config("corp", AUD)
    };
    let e = Verifier::new(&[lax], CacheTimes::default())
        .err()
        .expect("refused config");
    assert_eq!(e.key, "issuer[0].accepted_typ");
    assert!(e.problem.contains("OAuth access token"), "{}", e.problem);
    // The defaults, as the config file spells them.
    let parsed: IssuerConfig =
        toml::from_str("name = \"corp\"\nissuer = \"https://sso.example\"\naudience = \"x\"")
            .expect("config");
    assert_eq!(
        (parsed.accepted_typ, parsed.require_typ),
        (vec!["JWT".to_owned()], false)
    );
}

#[tokio::test]
async fn several_audiences_need_azp_naming_the_client() {
    let (iss, v) = setup().await;
    let verify = |extra: serde_json::Value| {
        let t = iss.rs256("unused", NOW, extra);
        let v = &v;
        async move { v.verify(t.expose(), NOW_MS).await }
    };
    assert_eq!(
        verify(json!({"sub": "a", "aud": ["other", AUD]})).await,
        Err(IdentityError::MissingAzp(AUD.into()))
    );
    assert_eq!(
        verify(json!({"sub": "a", "aud": ["other", AUD], "azp": "other"})).await,
        Err(IdentityError::AuthorizedParty {
            azp: "\"other\"".into(),
            expected: AUD.into()
        })
    );
    assert!(
        verify(json!({"sub": "a", "aud": ["other", AUD], "azp": AUD}))
            .await
            .is_ok()
    );
    // A present `azp` must name the client even with one audience.
    let err = verify(json!({"sub": "a", "aud": AUD, "azp": "other"}))
        .await
        .expect_err("other client");
    assert_eq!(
        err.to_string(),
        "subject_token was issued to another client: 'azp' is \"other\", not 'git-jit-test'"
    );
    assert!(matches!(
        verify(json!({"sub": "a", "aud": [AUD], "azp": 7})).await,
        Err(IdentityError::AuthorizedParty { .. })
    ));
    assert!(verify(json!({"sub": "a", "aud": [AUD]})).await.is_ok());
    assert!(
        verify(json!({"sub": "a", "aud": AUD, "azp": AUD}))
            .await
            .is_ok()
    );
    // The issuer's configured client id is the client too.
    let with_client = IssuerConfig {
        client_id: Some("git-jit-cli".into()),
        ..iss.config("corp", AUD)
    };
    let v2 = Verifier::new(&[with_client], CacheTimes::default()).expect("verifier");
    let t = iss.rs256(
        "unused",
        NOW,
        json!({"sub": "a", "aud": ["git-jit-cli", AUD], "azp": "git-jit-cli"}),
    );
    assert!(v2.verify(t.expose(), NOW_MS).await.is_ok());
}

#[tokio::test]
async fn alg_none_hs256_and_mismatched_keys_are_refused() {
    let (iss, v) = setup().await;
    let claims = json!({"iss": iss.url, "aud": AUD, "sub": "a", "exp": NOW + 600});
    for alg in ["none", "None", "NONE"] {
        let forged = format!(
            "{}.{}.",
            b64(&json!({"alg": alg, "kid": RSA_KID})),
            b64(&claims)
        );
        assert!(v.verify(&forged, NOW_MS).await.is_err(), "{alg}");
    }
    // HS256 keyed with the RSA public key (the classic algorithm confusion).
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(RSA_KID.into());
    let key = EncodingKey::from_secret(RSA_PUBLIC_PEM.as_bytes()).expect("hmac key");
    let forged = jsonwebtoken::encode(&header, &claims, &key).expect("sign");
    assert!(matches!(
        v.verify(&forged, NOW_MS).await,
        Err(IdentityError::Algorithm { .. })
    ));
    // An ES256 signature presented under the RSA key's kid.
    let t = iss.es256(AUD, NOW, json!({"sub": "a"}));
    let parts: Vec<&str> = t.expose().split('.').collect();
    let swapped = format!(
        "{}.{}.{}",
        b64(&json!({"alg": "ES256", "kid": RSA_KID})),
        parts[1],
        parts[2]
    );
    assert!(matches!(
        v.verify(&swapped, NOW_MS).await,
        Err(IdentityError::KeyMismatch { .. })
    ));
    // An RS384 token: a valid RSA algorithm, but not one this issuer accepts.
    let forged = format!(
        "{}.{}.AAAA",
        b64(&json!({"alg": "RS384", "kid": RSA_KID})),
        b64(&claims)
    );
    assert!(matches!(
        v.verify(&forged, NOW_MS).await,
        Err(IdentityError::Algorithm { .. })
    ));
}

#[tokio::test]
async fn tampering_size_and_shape_are_refused() {
    let (iss, v) = setup().await;
    let t = iss.es256(AUD, NOW, json!({"sub": "alice"}));
    let parts: Vec<&str> = t.expose().split('.').collect();
    let evil = json!({"iss": iss.url, "aud": AUD, "sub": "admin", "exp": NOW + 600});
    let forged = format!("{}.{}.{}", parts[0], b64(&evil), parts[2]);
    assert_eq!(
        v.verify(&forged, NOW_MS).await,
        Err(IdentityError::Signature)
    );
    let big = "a".repeat(MAX_SUBJECT_TOKEN_LEN + 1);
    assert_eq!(
        v.verify(&big, NOW_MS).await,
        Err(IdentityError::TooLarge(MAX_SUBJECT_TOKEN_LEN + 1))
    );
    for garbage in ["", "a.b", "a.b.c.d", "!!.!!.!!", "e30.e30.e30"] {
        assert!(v.verify(garbage, NOW_MS).await.is_err(), "{garbage:?}");
    }
    let no_kid = format!(
        "{}.{}.{}",
        b64(&json!({"alg": "ES256"})),
        parts[1],
        parts[2]
    );
    assert_eq!(
        v.verify(&no_kid, NOW_MS).await,
        Err(IdentityError::MissingKid)
    );
    let t = iss.es256(AUD, NOW, json!({"sub": ""}));
    assert_eq!(
        v.verify(t.expose(), NOW_MS).await,
        Err(IdentityError::MissingSubject("sub".into()))
    );
    // The error never contains the token.
    let t = iss.es256("nope", NOW, json!({"sub": "a"}));
    let msg = v
        .verify(t.expose(), NOW_MS)
        .await
        .expect_err("refused")
        .to_string();
    assert!(!msg.contains(t.expose()) && !msg.contains(parts[1]));
}

#[tokio::test]
async fn unknown_kid_triggers_one_rate_limited_refresh() {
    let (iss, v) = setup().await;
    let good = iss.es256(AUD, NOW, json!({"sub": "a"}));
    assert!(v.verify(good.expose(), NOW_MS).await.is_ok());
    assert_eq!(iss.jwks_hits(), 1);
    let t = iss.es256(AUD, NOW, json!({"sub": "a"}));
    let parts: Vec<&str> = t.expose().split('.').collect();
    let unknown = format!(
        "{}.{}.{}",
        b64(&json!({"alg": "ES256", "kid": "nope"})),
        parts[1],
        parts[2]
    );
    let err = v
        .verify(&unknown, NOW_MS + 20_000)
        .await
        .expect_err("unknown kid");
    assert!(matches!(err, IdentityError::UnknownKey { .. }), "{err}");
    assert_eq!(iss.jwks_hits(), 2, "one refresh");
    // Within the refresh interval, further misses fetch nothing.
    for i in 0..5 {
        assert!(
            v.verify(&unknown, NOW_MS + 20_000 + i * 1000)
                .await
                .is_err()
        );
    }
    assert_eq!(iss.jwks_hits(), 2);
    assert!(v.verify(&unknown, NOW_MS + 31_000).await.is_err());
    assert_eq!(iss.jwks_hits(), 3, "another refresh after the interval");
    // Known keys keep verifying without fetching.
    assert!(v.verify(good.expose(), NOW_MS + 32_000).await.is_ok());
    assert_eq!(iss.jwks_hits(), 3);
}

#[tokio::test]
async fn concurrent_misses_share_one_fetch() {
    let (iss, v) = setup().await;
    iss.set_delay_ms(200);
    let v = std::sync::Arc::new(v);
    let t = iss.es256(AUD, NOW, json!({"sub": "a"}));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (v, t) = (v.clone(), t.clone());
        tasks.push(tokio::spawn(
            async move { v.verify(t.expose(), NOW_MS).await },
        ));
    }
    for task in tasks {
        assert!(task.await.expect("join").is_ok());
    }
    assert_eq!(iss.jwks_hits(), 1);
}

#[tokio::test]
async fn rotation_and_unpublished_keys() {
    let (iss, v) = setup().await;
    let old = iss.es256(AUD, NOW, json!({"sub": "a"}));
    assert!(v.verify(old.expose(), NOW_MS).await.is_ok());
    // The issuer rotates: a new ES256 key replaces the old one.
    let next = crate::devissuer::DevIssuer::generate(&iss.url).expect("key");
    iss.publish(json!({"keys": [next.jwks()["keys"][0].clone(), rsa_jwk()]}));
    let mut claims = serde_json::Map::new();
    claims.insert("aud".into(), AUD.into());
    claims.insert("sub".into(), "a".into());
    let new = next.mint(claims, NOW, 10).expect("mint");
    let later = NOW_MS + 15_000;
    assert!(
        v.verify(new.expose(), later).await.is_ok(),
        "new kid → refresh → verifies"
    );
    // The old key is no longer published: its tokens are refused.
    assert!(matches!(
        v.verify(old.expose(), later).await,
        Err(IdentityError::UnknownKey { .. })
    ));
}

#[tokio::test]
async fn staleness_is_bounded() {
    let iss = TestIssuer::start().await;
    let times = CacheTimes {
        refresh_after_ms: 60_000,
        min_refresh_interval_ms: 1_000,
        max_stale_ms: 600_000,
    };
    let v = Verifier::new(&[iss.config("corp", AUD)], times).expect("verifier");
    let t = iss.es256(AUD, NOW, json!({"sub": "a", "exp": NOW + 3600}));
    assert!(v.verify(t.expose(), NOW_MS).await.is_ok());
    iss.set_failing(true);
    // Stale and unrefreshable, but within max staleness: cached keys still work.
    assert!(v.verify(t.expose(), NOW_MS + 120_000).await.is_ok());
    assert!(iss.jwks_hits() <= 1, "discovery failed first");
    // Beyond max staleness: fail closed, as unavailable (not as the token's fault).
    let err = v
        .verify(t.expose(), NOW_MS + 601_000)
        .await
        .expect_err("too stale");
    assert!(err.is_unavailable(), "{err}");
    // The issuer recovers: so does verification.
    iss.set_failing(false);
    assert!(v.verify(t.expose(), NOW_MS + 603_000).await.is_ok());
}

#[tokio::test]
async fn unreachable_issuer_is_unavailable() {
    let iss = TestIssuer::start().await;
    iss.set_failing(true);
    let v = Verifier::new(&[iss.config("corp", AUD)], CacheTimes::default()).expect("verifier");
    let t = iss.es256(AUD, NOW, json!({"sub": "a"}));
    let err = v.verify(t.expose(), NOW_MS).await.expect_err("no keys");
    assert!(err.is_unavailable(), "{err}");
    assert!(err.to_string().contains("HTTP 500"), "{err}");
}

#[test]
fn jwks_parsing_skips_unusable_keys() {
    let jwks = json!({"keys": [
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        {"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "tiny"},
        {"kty": "RSA", "n": rsa_jwk()["n"], "e": "AQAB", "kid": "enc", "use": "enc"},
        {"kty": "RSA", "n": rsa_jwk()["n"], "e": "AQAB", "kid": "es-mislabelled", "alg": "ES256"},
        {"kty": "RSA", "n": rsa_jwk()["n"], "e": "AQAB"},
        rsa_jwk(),
    ]});
    let keys = jwks::parse_jwks(&jwks).expect("parses");
    let mut kids: Vec<&str> = keys.keys().map(String::as_str).collect();
    kids.sort_unstable();
    assert_eq!(kids, [RSA_KID]);
    assert_eq!(keys[RSA_KID].algorithms, [Algorithm::RS256]);
    assert!(jwks::parse_jwks(&json!({"nokeys": 1})).is_err());
}

#[test]
fn login_scopes_ask_for_groups_by_default_and_must_include_openid() {
    let parse = |t: &str| toml::from_str::<LoginConfig>(t).expect("login config");
    let default = parse("issuer = \"corp\"");
    assert_eq!(
        default.scope().expect("scope"),
        "openid offline_access email profile groups"
    );
    let custom = parse("issuer = \"corp\"\nscopes = [\"openid\", \"email\"]");
    assert_eq!(custom.scope().expect("scope"), "openid email");
    for bad in ["[\"email\"]", "[\"openid\", \"a b\"]", "[\"openid\", \"\"]"] {
        let e = parse(&format!("issuer = \"corp\"\nscopes = {bad}"))
            .scope()
            .expect_err(bad);
        assert_eq!(e.key, "login.scopes", "{bad}");
    }
}
