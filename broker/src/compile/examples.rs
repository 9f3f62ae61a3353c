//! The example configuration in deploy/ stays valid: the full broker example and each CI
//! platform's policy, appended to it, load and compile; and each role does what its comment
//! says for a token shaped like the platform's.

use std::path::Path;

use jit_proto::Scope;
use serde_json::{Value, json};

use crate::config::Config;
use crate::policy::explain::identity_from_claims;
use crate::policy::{Request, check_config, decide};

const BASE: &str = include_str!("../../../deploy/broker.example.toml");
const GITHUB: &str = include_str!("../../../deploy/policies/github-actions.toml");
const GITLAB: &str = include_str!("../../../deploy/policies/gitlab-ci.toml");
const KUBERNETES: &str = include_str!("../../../deploy/policies/kubernetes.toml");

fn load(text: &str) -> Config {
    let file = Path::new("broker.example.toml");
    let config = Config::parse(text, file).expect("parses");
    if let Err(e) = super::compile(&config, file) {
        panic!("{e}");
    }
    config
}

/// The role that grants `scope` to `claims`, or the denial.
fn role_for(
    config: &Config,
    claims: Value,
    scope: &str,
    reason: Option<&str>,
) -> Result<String, String> {
    let Value::Object(claims) = claims else {
        return Err("claims must be an object".into());
    };
    let identity = identity_from_claims(config, claims, None)?;
    let policy = check_config(config).map_err(|e| e.to_string())?;
    let request = Request {
        scope: Scope::parse(scope).map_err(|e| e.to_string())?,
        role: None,
        ttl: None,
        reason: reason.map(str::to_owned),
        refs: vec![],
    };
    decide(&policy, &identity, &request, 1_700_000_000)
        .map(|d| d.role)
        .map_err(|d| d.message)
}

#[test]
fn broker_example_is_valid() {
    let c = load(BASE);
    assert_eq!(c.role.len(), 5);
    let person = json!({"iss": "https://sso.example.com/realms/acme", "sub": "u-1",
                        "email": "alice@example.com", "email_verified": true,
                        "groups": ["engineering"]});
    assert_eq!(
        role_for(&c, person.clone(), "repo:acme/a/b:read", None).as_deref(),
        Ok("dev-read")
    );
    assert_eq!(
        role_for(&c, person.clone(), "repo:acme/api:write", Some("fix")).as_deref(),
        Ok("dev-write")
    );
    assert!(
        role_for(&c, person.clone(), "repo:acme/api:write", None)
            .is_err_and(|e| e.contains("requires a reason"))
    );
    // The subject is the email: an address the IdP has not verified gets nothing.
    let mut unverified = person;
    unverified["email_verified"] = json!(false);
    assert!(
        role_for(&c, unverified, "repo:acme/a/b:read", None)
            .is_err_and(|e| e.contains("email_verified"))
    );
}

#[test]
fn github_actions_roles() {
    let c = load(&format!("{BASE}\n{GITHUB}"));
    let job = |extra: Value| {
        let mut j = json!({"iss": "https://token.actions.githubusercontent.com",
            "sub": "repo:acme/api:ref:refs/heads/main", "repository": "acme/api",
            "repository_id": "42", "repository_owner": "acme", "repository_owner_id": "1234567",
            "ref": "refs/heads/main", "ref_type": "branch", "sha": "abc", "event_name": "push",
            "workflow_ref": "acme/api/.github/workflows/ci.yml@refs/heads/main",
            "job_workflow_ref": "acme/api/.github/workflows/ci.yml@refs/heads/main",
            "actor": "alice", "run_id": "7"});
        if let (Value::Object(a), Value::Object(b)) = (&mut j, extra) {
            a.extend(b);
        }
        j
    };
    assert_eq!(
        role_for(&c, job(json!({})), "repo:acme/api:read", None).as_deref(),
        Ok("gha-read-own")
    );
    assert_eq!(
        role_for(&c, job(json!({})), "repo:acme/shared-ui:read", None).as_deref(),
        Ok("gha-read-shared")
    );
    assert!(role_for(&c, job(json!({})), "repo:acme/web:read", None).is_err());
    assert!(
        role_for(&c, job(json!({})), "repo:acme/api:write", None)
            .is_err_and(|e| e.contains("claim 'environment' is missing"))
    );
    let deploy = job(json!({"environment": "production"}));
    assert_eq!(
        role_for(&c, deploy, "repo:acme/api:write", None).as_deref(),
        Ok("gha-deploy")
    );
    let release = job(json!({"ref": "refs/tags/v1.0.0", "ref_type": "tag",
        "job_workflow_ref": "acme/release-workflows/.github/workflows/release.yml@refs/heads/main"}));
    assert_eq!(
        role_for(&c, release, "repo:acme/api:write", None).as_deref(),
        Ok("gha-release")
    );
    let fork = job(json!({"repository_owner_id": "666"}));
    assert!(role_for(&c, fork, "repo:acme/api:read", None).is_err());
}

#[test]
fn gitlab_ci_roles() {
    let c = load(&format!("{BASE}\n{GITLAB}"));
    let job = |protected: &str, source: &str| {
        json!({"iss": "https://gitlab.example.com",
        "sub": "project_path:acme/backend/api:ref_type:branch:ref:main",
        "project_path": "acme/backend/api", "namespace_path": "acme/backend", "ref": "main",
        "ref_type": "branch", "ref_protected": protected, "pipeline_source": source})
    };
    assert_eq!(
        role_for(
            &c,
            job("false", "merge_request_event"),
            "repo:acme/backend/api:read",
            None
        )
        .as_deref(),
        Ok("gl-read-own")
    );
    assert_eq!(
        role_for(&c, job("true", "push"), "repo:acme/backend/api:write", None).as_deref(),
        Ok("gl-push-protected")
    );
    assert!(
        role_for(
            &c,
            job("false", "push"),
            "repo:acme/backend/api:write",
            None
        )
        .is_err_and(|e| e.contains("claim 'ref_protected' = 'false' does not match 'true'"))
    );
    assert!(role_for(&c, job("true", "push"), "repo:acme/backend/web:write", None).is_err());
}

#[test]
fn kubernetes_roles() {
    let c = load(&format!("{BASE}\n{KUBERNETES}"));
    let sa = |sub: &str| {
        json!({"iss": "https://kubernetes.default.svc.cluster.local", "sub": sub,
        "aud": ["git-jit"], "kubernetes.io": {"namespace": "mirror", "serviceaccount": {"name": "git-sync"}}})
    };
    assert_eq!(
        role_for(
            &c,
            sa("system:serviceaccount:mirror:git-sync"),
            "repo:mirror/x/y:read",
            None
        )
        .as_deref(),
        Ok("k8s-mirror")
    );
    assert_eq!(
        role_for(
            &c,
            sa("system:serviceaccount:argocd:argocd-repo-server"),
            "repo:acme/deploy-prod:read",
            None
        )
        .as_deref(),
        Ok("k8s-argocd")
    );
    assert!(
        role_for(
            &c,
            sa("system:serviceaccount:default:default"),
            "repo:mirror/x:read",
            None
        )
        .is_err()
    );
}

#[test]
fn config_refusals_name_the_key() {
    let cases = [
        (
            BASE.replacen(
                "issuer = \"corp\"\nclaims = { groups = \"engineering\", email_verified = true }",
                "issuer = \"nope\"\nclaims = { groups = \"engineering\", email_verified = true }",
                1,
            ),
            "broker.example.toml: role \"dev-read\".issuer: no [[issuer]] is named \"nope\"",
        ),
        (
            BASE.replacen("max_ttl = 600", "max_ttl = 6000", 1),
            "role \"dev-read\".max_ttl",
        ),
        (
            BASE.replacen(
                "[login]\n# The `name` of the [[issuer]] people log in with.\nissuer = \"corp\"",
                "[login]\nissuer = \"x\"",
                1,
            ),
            "login.issuer",
        ),
        (
            BASE.replacen("identity_burst = 10", "identity_burst = 0", 1),
            "exchange.rate_limit.identity_burst",
        ),
        (
            BASE.replacen("trust_forwarded_for = false", "trust_forwarded = false", 1),
            "unknown field `trust_forwarded`",
        ),
        (
            format!("{BASE}\n{GITHUB}\n{GITHUB}"),
            "issuer[2].name: duplicate issuer name \"github\"",
        ),
    ];
    for (text, needle) in cases {
        assert_ne!(text, BASE);
        let file = Path::new("broker.example.toml");
        let err = match Config::parse(&text, file).and_then(|c| super::compile(&c, file)) {
            Ok(_) => panic!("{needle}: compiled"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    }
}
