//! A small OIDC issuer for tests: OIDC discovery and a JWKS served on 127.0.0.1:0, an ES256
//! key (the dev issuer's) and a fixed test-only RS256 key. Counts JWKS fetches, can rotate
//! keys, fail, and answer slowly.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jit_proto::Secret;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};

use crate::devissuer::DevIssuer;
use crate::identity::IssuerConfig;

/// A 2048-bit RSA key for tests only; never trusted anywhere.
pub(crate) const RSA_PRIVATE_PEM: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEpAIBAAKCAQEAiobCndnazEUygmhvMZVPAa9Y0egdJ0Y6SUtNIlwrwxFKMZx5
vHtv/yrwQBoLo4yrIndKckOsFChzhrJdyZerEqdkZyWSl5lBbr3vHv1dvKLilVYE
z1yy5p9TB/IS5NUoiQt8LiAQ6eU9+syWhQC9pIZZgI3UM3hPei60ERqFd0S1FQnj
Wudlgez6EAOkgxAN0tb4F7IaSe5nwmBejfDpJ0tz9Zk9BZsuPdBlqeO0E4I3KN5O
62Q6agTFKlSHi1xFttsFv9S3Tudzx1XkwRJwZWm/pXl2dWMLflKbOaqaohwYTWcP
KQYSiMa8qfz0F1qmsrJT9UU7S34tOUpmqxxHJQIDAQABAoIBAAS/VZAfVTZG8NIz
Tgw+97QxFDQtZkJgT8MPR5dz3TQUNZy5phpliJMQH6eyvM9gFMVbnTuJQi52rG7j
Uf+EqSI8hl5alUmIwQtQiw9e04WRd35ysjuBC8iHkUrmautYusjnkdvq0WmSp6se
s9HfEqC+0fZr5efVqbOgQh+L7yMFNN4TtdsLFhmWCt6A5yhG4NuHzfpLpXjQxD4K
u588iW/9iYhaSdD0CX8oH8LP1qMqvpnObZGsr/Vz2FxuNu0oHDSu3kT4Duha/5VQ
I2X/HOnmaOq3AgIlHFPbat6ZwgKGbuJjyH6eHbR9GK2cDofSAEB7Yak4pV+rJiWq
QBV5BUkCgYEAwTEAaJIzVi/wPi1cA5l8wQh3OcO43XK7T8MqY3t9twbF2ObGk4uX
sPoRos3BeGlRp5Gc5QtO7FIqDW1HLSWis02pkErwHhOMaC7dA2zeWQn/cb3ZVURw
WtBtQffNxjJU49UI80EJEtxK6/1qcR1zCF5RFvkNYczniwgnVU83Li8CgYEAt5AU
4qXyKa/kD/DQeOKBKWj1kd0/tD1MgTkAcsFHH1/IrjgaraqWBE8vuaKBWwJAxchg
tyRxNw2eVFDu4TGhtW0skCWGdv2Wxyv+nLKFXpfm5+DLlnWqJQ6UkVVlTwwb2IIY
BjRJGdIBfsF2ACQEVVO83LeRJHUutFYFdiYyvusCgYEAp1JCcU9WqSoB4Eg27mMs
Op+Ta3NJlHp/Irj86IaXPkLeblqJ2FZJfh1H0wJzs088Sm6CPZoKtAEBrPldcQus
m7EC0BcnWlVCASW9g+7xsJpJJIDyT7hjuzPTvRPbo/IJtf3Xr58/NZeYSEYGv4tr
Cu9tOgFghrkKPU9Ficx/FT8CgYAEDvp3PGYLR+lJ9PAXDCMA8GIllHe5G3XakZER
+HYDGpIMUA8+8buZYsrSVuZ3Rah69wA0bGjYZ8OtZ5Cwh/FkWoKWuU2sydSQmMdr
XYMXYVJopA68R+O4KAde4z13LvRaqB2x3WwUVxFTZSGfxSwXWt+dHa3m2XRr5k7+
mr+aewKBgQCjRs5nTpmaR7xQIQWuyMtCqfQBPt6X66SrHhIl6ZkBUjzTziAVhO0z
ppAxbxJkiUCTxlCQL423q0t1aGkX/EID7yKQKxQ8TzetIx+0HXLusRaKrj/Nu4Dt
TMYncm1fCKDeo8BzCKBxQdhlqlxLmVNsbkzXl2g+2cMF4MVTek0GWw==
-----END RSA PRIVATE KEY-----
";

/// The same key's public half (SPKI PEM), for the "HS256 keyed with the public key" attack.
pub(crate) const RSA_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAiobCndnazEUygmhvMZVP
Aa9Y0egdJ0Y6SUtNIlwrwxFKMZx5vHtv/yrwQBoLo4yrIndKckOsFChzhrJdyZer
EqdkZyWSl5lBbr3vHv1dvKLilVYEz1yy5p9TB/IS5NUoiQt8LiAQ6eU9+syWhQC9
pIZZgI3UM3hPei60ERqFd0S1FQnjWudlgez6EAOkgxAN0tb4F7IaSe5nwmBejfDp
J0tz9Zk9BZsuPdBlqeO0E4I3KN5O62Q6agTFKlSHi1xFttsFv9S3Tudzx1XkwRJw
ZWm/pXl2dWMLflKbOaqaohwYTWcPKQYSiMa8qfz0F1qmsrJT9UU7S34tOUpmqxxH
JQIDAQAB
-----END PUBLIC KEY-----
";

const RSA_N: &str = "iobCndnazEUygmhvMZVPAa9Y0egdJ0Y6SUtNIlwrwxFKMZx5vHtv_yrwQBoLo4yrIndKckOsFChzhrJdyZerEqdkZyWSl5lBbr3vHv1dvKLilVYEz1yy5p9TB_IS5NUoiQt8LiAQ6eU9-syWhQC9pIZZgI3UM3hPei60ERqFd0S1FQnjWudlgez6EAOkgxAN0tb4F7IaSe5nwmBejfDpJ0tz9Zk9BZsuPdBlqeO0E4I3KN5O62Q6agTFKlSHi1xFttsFv9S3Tudzx1XkwRJwZWm_pXl2dWMLflKbOaqaohwYTWcPKQYSiMa8qfz0F1qmsrJT9UU7S34tOUpmqxxHJQ";

/// The RSA key's id in the JWKS.
pub(crate) const RSA_KID: &str = "test-rsa-1";

#[derive(Clone)]
struct Served {
    url: String,
    jwks: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
}

/// A running test issuer.
pub(crate) struct TestIssuer {
    /// The issuer URL (no trailing slash).
    pub url: String,
    /// The ES256 signer.
    pub es: DevIssuer,
    served: Served,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn discovery(State(s): State<Served>) -> Response {
    if s.failing.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    axum::Json(json!({"issuer": s.url, "jwks_uri": format!("{}/keys", s.url)})).into_response()
}

async fn keys(State(s): State<Served>) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let delay = s.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    if s.failing.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let body = s.jwks.lock().map(|g| g.clone()).unwrap_or(Value::Null);
    axum::Json(body).into_response()
}

impl TestIssuer {
    /// Starts an issuer publishing its ES256 and RS256 keys.
    pub(crate) async fn start() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let es = DevIssuer::generate(&url).expect("key");
        let jwks = json!({"keys": [es.jwks()["keys"][0].clone(), rsa_jwk()]});
        let served = Served {
            url: url.clone(),
            jwks: Arc::new(Mutex::new(jwks)),
            hits: Arc::new(AtomicUsize::new(0)),
            failing: Arc::new(AtomicBool::new(false)),
            delay_ms: Arc::new(AtomicU64::new(0)),
        };
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/keys", get(keys))
            .with_state(served.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            es,
            served,
            task,
        }
    }

    /// How the broker trusts this issuer, as `name` with `audience`.
    pub(crate) fn config(&self, name: &str, audience: &str) -> IssuerConfig {
        IssuerConfig::new(name, &self.url, audience)
    }

    /// Replaces the published key set.
    pub(crate) fn publish(&self, jwks: Value) {
        if let Ok(mut g) = self.served.jwks.lock() {
            *g = jwks;
        }
    }

    /// JWKS requests served so far.
    pub(crate) fn jwks_hits(&self) -> usize {
        self.served.hits.load(Ordering::SeqCst)
    }

    /// Makes every request fail with a 500 (or stop failing).
    pub(crate) fn set_failing(&self, failing: bool) {
        self.served.failing.store(failing, Ordering::SeqCst);
    }

    /// Delays JWKS answers by `ms`.
    pub(crate) fn set_delay_ms(&self, ms: u64) {
        self.served.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// An ES256 token with standard claims for `aud`, plus `extra` (which wins).
    pub(crate) fn es256(&self, aud: &str, now: i64, extra: Value) -> Secret {
        let mut claims = Map::new();
        claims.insert("aud".into(), aud.into());
        if let Value::Object(e) = extra {
            claims.extend(e);
        }
        self.es.mint(claims, now, 10).expect("mint")
    }

    /// An RS256 token signed with the test RSA key.
    pub(crate) fn rs256(&self, aud: &str, now: i64, extra: Value) -> Secret {
        self.rs256_typed(Some("JWT"), aud, now, extra)
    }

    /// An RS256 token whose header carries `typ` (none when `None`).
    pub(crate) fn rs256_typed(
        &self,
        typ: Option<&str>,
        aud: &str,
        now: i64,
        extra: Value,
    ) -> Secret {
        let mut claims =
            json!({"iss": self.url, "aud": aud, "iat": now, "nbf": now, "exp": now + 600});
        if let (Value::Object(c), Value::Object(e)) = (&mut claims, extra) {
            c.extend(e);
        }
        let mut header = Header::new(Algorithm::RS256);
        header.typ = typ.map(str::to_owned);
        header.kid = Some(RSA_KID.into());
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).expect("rsa key");
        Secret::new(jsonwebtoken::encode(&header, &claims, &key).expect("sign"))
    }
}

/// The test RSA key as a JWK.
pub(crate) fn rsa_jwk() -> Value {
    json!({"kty": "RSA", "n": RSA_N, "e": "AQAB", "kid": RSA_KID, "alg": "RS256", "use": "sig"})
}
