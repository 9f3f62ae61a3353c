//! One decision, two doors: the same table of requests goes through the Git gateway and
//! through `/authz` (as nginx's `auth_request` would send it), and both must reach the same
//! decision — allowed, challenged (401), forbidden (403), or refused as not a Git request.
//! The decision is read from the audit trail, not guessed from status codes: a request was
//! allowed exactly when an `access.allowed` event was recorded for it.

#[allow(dead_code)] // each test binary uses its own part of the shared support
mod support;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use base64::Engine as _;
use jit_broker::audit::AuditQuery;
use jit_broker::gateway::Gateway;
use jit_broker::store::{GrantStore, RevokeTarget};
use tower::ServiceExt as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// `access.allowed` recorded.
    Allowed,
    /// 401 with a challenge.
    Challenge,
    /// 403 with an `access.denied` event.
    Forbidden,
    /// Not a Git request the broker serves (no event).
    NotGit,
    /// git's credential-less probe, let through without a decision.
    Probe,
}

struct Case {
    method: &'static str,
    uri: String,
    token: Option<String>,
    body: &'static [u8],
    /// The one documented difference: a ref-limited write grant is refused by `/authz`
    /// (a sub-request cannot see the refs a push updates), allowed by the gateway.
    authz_differs: bool,
}

async fn events(store: &dyn GrantStore, kind: &str) -> usize {
    store
        .read_audit(&AuditQuery {
            event: Some(kind.into()),
            limit: usize::MAX,
            ..Default::default()
        })
        .await
        .expect("audit")
        .len()
}

async fn through(broker: &support::Broker, case: &Case, door: &str) -> (Decision, StatusCode) {
    let store = broker.store.as_ref();
    let (allowed0, denied0) = (
        events(store, "access.allowed").await,
        events(store, "access.denied").await,
    );
    let app = jit_broker::app(broker.state.clone());
    let mut req = if door == "gateway" {
        Request::builder()
            .method(case.method)
            .uri(case.uri.as_str())
            .header("content-length", case.body.len().to_string())
    } else {
        Request::builder()
            .method(Method::GET)
            .uri("/authz")
            .header("x-original-uri", case.uri.as_str())
            .header("x-original-method", case.method)
            .header("x-original-content-length", case.body.len().to_string())
    };
    if let Some(t) = &case.token {
        req = req.header("authorization", t.as_str());
    }
    let body = if door == "gateway" {
        Body::from(case.body)
    } else {
        Body::empty()
    };
    let response = app
        .oneshot(req.body(body).expect("request"))
        .await
        .expect("answer");
    let status = response.status();
    let _ = axum::body::to_bytes(response.into_body(), 1 << 20).await;
    let allowed = events(store, "access.allowed").await > allowed0;
    let denied = events(store, "access.denied").await > denied0;
    let decision = if allowed {
        Decision::Allowed
    } else if status == StatusCode::UNAUTHORIZED {
        Decision::Challenge
    } else if status == StatusCode::FORBIDDEN && denied {
        Decision::Forbidden
    } else if (door == "gateway" && status == StatusCode::OK)
        || (door == "authz" && status == StatusCode::NO_CONTENT)
    {
        Decision::Probe
    } else {
        Decision::NotGit
    };
    (decision, status)
}

#[tokio::test]
async fn the_gateway_and_authz_decide_alike() {
    let repos = tempfile::tempdir().expect("dir");
    for repo in ["acme/api.git", "acme/other.git"] {
        let path = repos.path().join(repo);
        std::fs::create_dir_all(&path).expect("dir");
        let ok = std::process::Command::new("git")
            .args(["init", "-q", "--bare"])
            .arg(&path)
            .status()
            .expect("git");
        assert!(ok.success());
    }
    let broker = support::start(Gateway::dir(repos.path())).await;
    let bearer = |t: &str| Some(format!("Bearer {t}"));
    let (read, _) = broker.token("repo:acme/api:read", &[]).await;
    let (write, _) = broker.token("repo:acme/api:write", &[]).await;
    let (both, _) = broker.token("repo:acme/api:read,write", &[]).await;
    let (hotfix, _) = broker
        .token("repo:acme/api:write", &["refs/heads/hotfix/*"])
        .await;
    let (revoked, revoked_claims) = broker.token("repo:acme/api:read,write", &[]).await;
    broker
        .store
        .revoke(
            &RevokeTarget::Jti(revoked_claims.jti),
            jit_broker::clock::Clock::now_ms(&jit_broker::clock::SystemClock),
        )
        .await
        .expect("revoke");
    // Signed by a key the broker does not have.
    let forged = {
        let other = support::start(Gateway::empty()).await;
        other.token("repo:acme/api:read,write", &[]).await.0
    };
    let tokens: Vec<(&str, Option<String>)> = vec![
        ("none", None),
        ("read", bearer(&read)),
        ("write", bearer(&write)),
        ("read+write", bearer(&both)),
        ("revoked", bearer(&revoked)),
        ("forged", bearer(&forged)),
        ("garbage", bearer("not-a-token")),
        (
            "basic read",
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("x:{read}"))
            )),
        ),
        ("lowercase bearer write", Some(format!("bearer {write}"))),
        ("digest", Some("Digest username=x".into())),
    ];
    let requests: Vec<(&str, String, &'static [u8])> = vec![
        (
            "GET",
            "/acme/api.git/info/refs?service=git-upload-pack".into(),
            b"",
        ),
        (
            "GET",
            "/acme/api.git/info/refs?service=git-receive-pack".into(),
            b"",
        ),
        ("POST", "/acme/api.git/git-upload-pack".into(), b"0000"),
        ("POST", "/acme/api.git/git-receive-pack".into(), b"0000"),
        (
            "GET",
            "/acme/other.git/info/refs?service=git-upload-pack".into(),
            b"",
        ),
        ("POST", "/acme/other.git/git-receive-pack".into(), b"0000"),
    ];
    let mut cases = Vec::new();
    for (method, uri, body) in &requests {
        for (_, token) in &tokens {
            cases.push(Case {
                method,
                uri: uri.clone(),
                token: token.clone(),
                body,
                authz_differs: false,
            });
        }
    }
    // The ref-limited write grant: the documented difference at the receive-pack doors.
    for (method, uri, body) in &requests {
        cases.push(Case {
            method,
            uri: uri.clone(),
            token: bearer(&hotfix),
            body,
            authz_differs: uri.starts_with("/acme/api.git") && uri.contains("receive-pack"),
        });
    }
    // Path and method tricks, with a token that would otherwise pass.
    for uri in [
        "/acme/../acme/api.git/info/refs?service=git-upload-pack",
        "/acme/%2e%2e/api.git/info/refs?service=git-upload-pack",
        "/acme//api.git/info/refs?service=git-upload-pack",
        "/acme/api.git/info/refs?service=git-upload-pack&service=git-receive-pack",
        "/acme/api.git/info/refs?service=git-upload-pack&%73ervice=git-receive-pack",
        "/acme/api.git/info/refs",
        "/acme/api.git/HEAD",
        "/acme/api.git/objects/info/packs",
        "/ACME/api.git/info/refs?service=git-upload-pack",
        "/acme%2fapi.git/info/refs?service=git-upload-pack",
    ] {
        cases.push(Case {
            method: "GET",
            uri: uri.into(),
            token: bearer(&both),
            body: b"",
            authz_differs: false,
        });
    }
    for (method, uri) in [
        ("POST", "/acme/api.git/info/refs?service=git-upload-pack"),
        ("GET", "/acme/api.git/git-upload-pack"),
        ("PUT", "/acme/api.git/git-receive-pack"),
    ] {
        cases.push(Case {
            method,
            uri: uri.into(),
            token: bearer(&both),
            body: b"",
            authz_differs: false,
        });
    }
    assert!(cases.len() >= 60, "{} cases", cases.len());

    let mut seen = std::collections::BTreeMap::new();
    for case in &cases {
        let (g, gs) = through(&broker, case, "gateway").await;
        let (a, az) = through(&broker, case, "authz").await;
        *seen.entry(format!("{g:?}")).or_insert(0) += 1;
        let what = format!(
            "{} {} with {:?}: gateway {g:?} ({gs}), authz {a:?} ({az})",
            case.method,
            case.uri,
            case.token.as_deref().map(|t| &t[..t.len().min(12)])
        );
        if case.authz_differs {
            assert_eq!(a, Decision::Forbidden, "{what}");
            assert_ne!(g, Decision::Forbidden, "{what}");
        } else {
            assert_eq!(g, a, "{what}");
        }
    }
    // The table reaches every kind of decision, so agreement is not agreement on one answer.
    for d in ["Allowed", "Challenge", "Forbidden", "NotGit", "Probe"] {
        assert!(seen.get(d).copied().unwrap_or(0) > 0, "no {d} in {seen:?}");
    }
}
