//! Broker tokens from the network (gateway, `/authz`, introspection, admin API), as they
//! arrive in an `Authorization` header and as bare text.
//!
//! The input is either (first byte even) a whole header value / token, or (first byte odd)
//! an edit of a genuine token: two bytes of offset, then bytes that overwrite the token
//! there — so the fuzzer works on near-valid tokens, not only on noise.
//!
//! Properties: never a panic; nothing verifies unless it decodes to exactly the claims the
//! broker signed (no forged claims, no other key, no other header); an accepted
//! `Authorization` credential is never empty and writes back to a header that parses to the
//! same credential.
#![no_main]

use std::sync::{Arc, OnceLock};

use jit_broker::keys::KeyRing;
use jit_broker::token::TokenSigner;
use jit_proto::{Actions, Claims, Credential, Scope, Secret};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_700_000_000;

struct Fixture {
    signer: TokenSigner,
    claims: Claims,
    token: Secret,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let ring = KeyRing::ephemeral().expect("the system random generator works");
        let signer = TokenSigner::new(Arc::new(ring), "https://broker.test", "git-jit");
        let scope = Scope::parse("repo:acme/api:write").expect("a valid scope");
        let claims = Claims {
            iss: "https://broker.test".into(),
            aud: "git-jit".into(),
            sub: "alice@example.com".into(),
            idp: "corp".into(),
            iat: NOW - 10,
            nbf: NOW - 10,
            exp: NOW + 600,
            jti: "AAAAAAAAAAAAAAAAAAAAAA".into(),
            scope,
            refs: vec![],
            role: "dev".into(),
            reason: None,
            req: None,
        };
        debug_assert!(claims.scope.actions.covers(Actions::WRITE));
        let token = signer.sign(&claims).expect("signing works");
        Fixture {
            signer,
            claims,
            token,
        }
    })
}

fn check(text: &str) {
    let f = fixture();
    match f.signer.verify(text, NOW) {
        Ok(claims) => assert_eq!(claims, f.claims, "verified claims the broker never signed"),
        Err(_) => assert_ne!(text, f.token.expose()),
    }
    if let Ok(credential) = Credential::parse(text) {
        assert!(!credential.token().expose().is_empty());
        let written = credential.to_header_value();
        assert_eq!(
            Credential::parse(written.expose()).as_ref(),
            Ok(&credential)
        );
        if let Ok(claims) = f.signer.verify(credential.token().expose(), NOW) {
            assert_eq!(claims, f.claims);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Ok(text) = std::str::from_utf8(rest) {
            check(text);
        }
        return;
    }
    let [hi, lo, patch @ ..] = rest else {
        return;
    };
    let mut token = fixture().token.expose().as_bytes().to_vec();
    let at = usize::from(u16::from_be_bytes([*hi, *lo])) % (token.len() + 1);
    let end = (at + patch.len()).min(token.len());
    token.splice(at..end, patch.iter().copied());
    if let Ok(text) = std::str::from_utf8(&token) {
        check(text);
        check(&format!("Bearer {text}"));
    }
});
