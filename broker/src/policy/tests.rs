//! The policy's table test: people (SSO groups), GitHub Actions, GitLab CI and Kubernetes
//! service-account identities against one realistic policy, plus config refusals.

use jit_proto::{RefPattern, Scope};
use serde::Deserialize;
use serde_json::{Value, json};

use super::*;
use crate::identity::VerifiedIdentity;

const POLICY: &str = r#"
[[issuer]]
name = "corp"
issuer = "https://sso.example.com"
audience = "git-jit"

[[issuer]]
name = "github"
issuer = "https://token.actions.githubusercontent.com"
audience = "https://jit.example.com"

[[issuer]]
name = "gitlab"
issuer = "https://gitlab.example.com"
audience = "https://jit.example.com"

[[issuer]]
name = "k8s"
issuer = "https://kubernetes.default.svc"
audience = "git-jit"

[[issuer]]
name = "lonely"
issuer = "https://lonely.example.com"
audience = "git-jit"

[[role]]
name = "dev-read"
issuer = "corp"
claims = { groups = "engineering" }
repositories = ["acme/*"]
actions = ["read"]
max_ttl = 480

[[role]]
name = "dev-write"
issuer = "corp"
claims = { groups = "engineering", email = "*@example.com" }
repositories = ["acme/*"]
actions = ["read", "write"]
refs = ["refs/heads/feature/**", "refs/heads/fix/*"]
reason_required = true

[[role]]
name = "oncall"
issuer = "corp"
claims = { groups = ["oncall", "sre"] }
repositories = ["acme/**"]
actions = ["read", "write"]
max_ttl = 120
reason_required = true

[[role]]
name = "prod-admin"
issuer = "corp"
claims = { groups = "admins" }
repositories = ["acme/prod"]
actions = ["write"]

[role.approval]
approvers = [{ issuer = "corp", claims = { groups = "admins" } }]

[[role]]
name = "gh-read"
issuer = "github"
claims = { repository_owner = "acme", repository_owner_id = 1234 }
repositories = ["{repository}", "acme/shared-*"]
actions = ["read"]
default_ttl = 10
max_ttl = 30

[[role]]
name = "gh-deploy"
issuer = "github"
claims = { repository_owner = "acme", ref = "refs/heads/main", environment = "production", event_name = ["push", "workflow_dispatch"] }
repositories = ["{repository}"]
actions = ["write"]
refs = ["refs/tags/v*", "refs/heads/main"]
default_ttl = 10
max_ttl = 15

[[role]]
name = "gl-ci"
issuer = "gitlab"
claims = { namespace_path = "acme", ref_protected = true }
repositories = ["{project_path}"]
actions = ["read", "write"]
refs = ["refs/heads/**"]
max_ttl = 30

[[role]]
name = "k8s-mirror"
issuer = "k8s"
claims = { sub = "system:serviceaccount:mirror:*" }
repositories = ["mirror/**"]
actions = ["read"]
"#;

#[derive(Deserialize)]
struct Access {
    #[serde(default)]
    issuer: Vec<IssuerConfig>,
    #[serde(default)]
    role: Vec<RoleConfig>,
}

fn compile(text: &str) -> Result<CompiledPolicy, PolicyError> {
    let a: Access = toml::from_str(text).map_err(|e| PolicyError {
        key: "toml".into(),
        problem: e.to_string(),
    })?;
    crate::identity::validate_issuers(&a.issuer)?;
    CompiledPolicy::compile(&a.issuer, &a.role)
}

fn id(issuer: &str, claims: Value) -> VerifiedIdentity {
    let Value::Object(claims) = claims else {
        panic!("claims must be an object")
    };
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_owned();
    VerifiedIdentity {
        issuer: issuer.into(),
        subject,
        claims,
    }
}

fn alice() -> VerifiedIdentity {
    id(
        "corp",
        json!({"sub": "alice", "email": "alice@example.com", "groups": ["engineering"]}),
    )
}
fn bob() -> VerifiedIdentity {
    id(
        "corp",
        json!({"sub": "bob", "email": "bob@contractor.io", "groups": ["sre"]}),
    )
}
fn carol() -> VerifiedIdentity {
    id(
        "corp",
        json!({"sub": "carol", "email": "carol@example.com", "groups": ["admins", "engineering"]}),
    )
}
fn erin() -> VerifiedIdentity {
    id("corp", json!({"sub": "erin", "groups": ["admins"]}))
}
fn dave() -> VerifiedIdentity {
    id(
        "corp",
        json!({"sub": "dave", "email": "dave@example.com.evil", "groups": ["engineering"]}),
    )
}
fn mallory() -> VerifiedIdentity {
    id("corp", json!({"sub": "mallory", "email": "m@example.com"}))
}
/// A GitHub Actions token of a push to main in acme/api, production environment.
fn gh(overrides: Value) -> VerifiedIdentity {
    let mut c = json!({
        "sub": "repo:acme/api:environment:production",
        "repository": "acme/api", "repository_id": "99", "repository_owner": "acme",
        "repository_owner_id": 1234, "ref": "refs/heads/main", "ref_type": "branch",
        "sha": "0123abcd", "event_name": "push", "environment": "production",
        "job_workflow_ref": "acme/api/.github/workflows/deploy.yml@refs/heads/main",
        "workflow_ref": "acme/api/.github/workflows/deploy.yml@refs/heads/main",
        "actor": "alice", "run_id": "42"
    });
    if let (Value::Object(base), Value::Object(o)) = (&mut c, overrides) {
        for (k, v) in o {
            if v.is_null() {
                base.remove(&k);
            } else {
                base.insert(k, v);
            }
        }
    }
    id("github", c)
}
fn gl(protected: bool) -> VerifiedIdentity {
    id(
        "gitlab",
        json!({"sub": "project_path:acme/web:ref_type:branch:ref:main", "project_path": "acme/web",
               "namespace_path": "acme", "ref": "main", "ref_type": "branch",
               "ref_protected": protected, "pipeline_source": "push"}),
    )
}
fn k8s(sub: &str) -> VerifiedIdentity {
    id(
        "k8s",
        json!({"sub": sub, "kubernetes.io": {"namespace": "mirror"}}),
    )
}

/// Expected outcome: `Ok((role, refs, ttl))` or `Err(substring of the denial)`.
type Expect = Result<(&'static str, &'static [&'static str], u32), &'static str>;

struct Case {
    who: VerifiedIdentity,
    scope: &'static str,
    role: Option<&'static str>,
    ttl: Option<u32>,
    reason: Option<&'static str>,
    refs: &'static [&'static str],
    expect: Expect,
}

fn case(who: VerifiedIdentity, scope: &'static str, expect: Expect) -> Case {
    Case {
        who,
        scope,
        role: None,
        ttl: None,
        reason: None,
        refs: &[],
        expect,
    }
}

impl Case {
    fn role(mut self, r: &'static str) -> Self {
        self.role = Some(r);
        self
    }
    fn ttl(mut self, t: u32) -> Self {
        self.ttl = Some(t);
        self
    }
    fn reason(mut self, r: &'static str) -> Self {
        self.reason = Some(r);
        self
    }
    fn refs(mut self, r: &'static [&'static str]) -> Self {
        self.refs = r;
        self
    }
}

const NOW: i64 = 1_700_000_000;
const DW_REFS: &[&str] = &["refs/heads/feature/**", "refs/heads/fix/*"];
const DEPLOY_REFS: &[&str] = &["refs/tags/v*", "refs/heads/main"];

#[allow(clippy::too_many_lines)]
fn cases() -> Vec<Case> {
    let r = "fix the build";
    vec![
        // People: SSO groups.
        case(alice(), "repo:acme/api:read", Ok(("dev-read", &[], 15))),
        case(alice(), "repo:acme/api:read", Ok(("dev-read", &[], 480))).ttl(480),
        case(alice(), "repo:acme/api:read", Err("exceeds its maximum of 480 minutes")).ttl(481),
        case(alice(), "repo:acme/a/b:read", Err("repository 'acme/a/b' does not match any of role 'dev-read' patterns: acme/*")),
        case(alice(), "repo:acme/api:write", Err("role 'dev-write' requires a reason")),
        case(alice(), "repo:acme/api:write", Ok(("dev-write", DW_REFS, 15))).reason(r),
        case(alice(), "repo:acme/api:write", Err("role 'dev-write' requires a reason")).reason("   "),
        case(alice(), "repo:acme/api:write", Ok(("dev-write", &["refs/heads/feature/x"], 15)))
            .reason(r).refs(&["refs/heads/feature/x"]),
        case(alice(), "repo:acme/api:write", Ok(("dev-write", &["refs/heads/feature/a/*"], 15)))
            .reason(r).refs(&["refs/heads/feature/a/*"]),
        case(alice(), "repo:acme/api:write", Err("ref pattern 'refs/heads/main' is not within the role's refs: refs/heads/feature/**, refs/heads/fix/*"))
            .reason(r).refs(&["refs/heads/main"]),
        case(alice(), "repo:acme/api:write", Err("ref pattern 'refs/heads/fix/a/b' is not within"))
            .reason(r).refs(&["refs/heads/fix/a/b"]),
        case(alice(), "repo:acme/api:write", Err("ref pattern 'refs/heads/**' is not within"))
            .reason(r).refs(&["refs/heads/feature/x", "refs/heads/**"]),
        case(alice(), "repo:acme/api:read", Err("refs limit a write")).refs(&["refs/heads/feature/x"]),
        case(alice(), "repo:acme/api:read", Ok(("dev-write", &[], 15))).role("dev-write").reason(r),
        case(alice(), "repo:acme/api:read,write", Ok(("dev-write", DW_REFS, 15))).reason(r),
        case(alice(), "repo:acme/api:read", Ok(("dev-read", &[], 15))).reason(r),
        case(alice(), "repo:acme/api:read", Err("role 'oncall': claim 'groups' = [\"engineering\"] does not match any of 'oncall', 'sre'")).role("oncall"),
        case(alice(), "repo:acme/api:read", Err("no role is named 'nope'")).role("nope"),
        case(alice(), "repo:acme/api:read", Err("a lifetime must be at least one minute")).ttl(0),
        case(alice(), "repo:acme/api:write", Err("role 'dev-write' requires a reason")).role("dev-write").ttl(60),
        case(alice(), "repo:acme/api:write", Err("exceeds its maximum of 60 minutes")).role("dev-write").ttl(61).reason(r),
        case(dave(), "repo:acme/api:write", Err("role 'dev-write': claim 'email' = 'dave@example.com.evil' does not match '*@example.com'")).reason(r),
        case(bob(), "repo:acme/deep/repo:write", Ok(("oncall", &[], 15))).reason(r),
        case(bob(), "repo:acme/api:read", Err("role 'oncall' requires a reason")),
        case(bob(), "repo:acme/api:read", Ok(("oncall", &[], 15))).reason(r),
        case(bob(), "repo:acme/api:write", Ok(("oncall", &[], 120))).reason(r).ttl(120),
        case(bob(), "repo:acme/api:write", Err("role 'oncall': a lifetime of 121 minutes exceeds its maximum of 120 minutes")).reason(r).ttl(121),
        case(bob(), "repo:other/api:write", Err("repository 'other/api' does not match any of role 'oncall' patterns: acme/**")).reason(r),
        case(carol(), "repo:acme/prod:write", Ok(("dev-write", DW_REFS, 15))).reason(r),
        // Granted under a role that needs approval: the gate says so (see the approval tests).
        case(carol(), "repo:acme/prod:write", Ok(("prod-admin", &[], 15))).role("prod-admin").reason(r),
        case(erin(), "repo:acme/prod:write", Ok(("prod-admin", &[], 15))).reason(r),
        case(mallory(), "repo:acme/api:read", Err("role 'dev-read': claim 'groups' is missing from the identity")),
        // GitHub Actions.
        case(gh(json!({})), "repo:acme/api:read", Ok(("gh-read", &[], 10))),
        case(gh(json!({})), "repo:acme/shared-lib:read", Ok(("gh-read", &[], 10))),
        case(gh(json!({})), "repo:acme/other:read", Err("{repository} (= acme/api), acme/shared-*")),
        case(gh(json!({})), "repo:acme/api:write", Ok(("gh-deploy", DEPLOY_REFS, 10))),
        case(gh(json!({})), "repo:acme/api:write", Ok(("gh-deploy", DEPLOY_REFS, 15))).ttl(15),
        case(gh(json!({})), "repo:acme/api:write", Err("exceeds its maximum of 15 minutes")).ttl(16),
        case(gh(json!({})), "repo:acme/api:write", Ok(("gh-deploy", &["refs/tags/v1.2"], 10))).refs(&["refs/tags/v1.2"]),
        case(gh(json!({})), "repo:acme/api:write", Err("ref pattern 'refs/heads/dev' is not within")).refs(&["refs/heads/dev"]),
        case(gh(json!({"environment": null})), "repo:acme/api:write", Err("role 'gh-deploy': claim 'environment' is missing from the identity")).role("gh-deploy"),
        case(gh(json!({"ref": "refs/heads/dev"})), "repo:acme/api:write", Err("role 'gh-deploy': claim 'ref' = 'refs/heads/dev' does not match 'refs/heads/main'")).role("gh-deploy"),
        case(gh(json!({"event_name": "pull_request"})), "repo:acme/api:write", Err("claim 'event_name' = 'pull_request' does not match any of 'push', 'workflow_dispatch'")).role("gh-deploy"),
        case(gh(json!({"repository": "evil/api", "repository_owner": "evil"})), "repo:evil/api:read", Err("claim 'repository_owner' = 'evil' does not match 'acme'")),
        case(gh(json!({"repository": "acme/*"})), "repo:acme/api:read", Err("claim 'repository' = 'acme/*' is not a repository path")).role("gh-read"),
        case(gh(json!({"repository": "acme/../x"})), "repo:acme/x:read", Err("is not a repository path")).role("gh-read"),
        case(gh(json!({"repository": null})), "repo:acme/api:read", Err("{repository} (claim 'repository' is missing from the identity)")).role("gh-read"),
        case(gh(json!({})), "repo:acme/api:read,write", Err("role 'gh-read' grants read on 'acme/api', not read,write")),
        case(gh(json!({})), "repo:acme/api:write", Err("role 'gh-read' grants read on 'acme/api', not write")).role("gh-read"),
        case(gh(json!({"repository_owner_id": "1234"})), "repo:acme/api:read", Ok(("gh-read", &[], 10))),
        case(gh(json!({"repository_owner_id": 12345})), "repo:acme/api:read", Err("claim 'repository_owner_id' = 12345 does not match '1234'")).role("gh-read"),
        case(gh(json!({})), "repo:acme/api:read", Err("role 'dev-read' accepts identities from issuer 'corp', not 'github'")).role("dev-read"),
        // GitLab CI.
        case(gl(true), "repo:acme/web:read,write", Ok(("gl-ci", &["refs/heads/**"], 15))),
        case(gl(false), "repo:acme/web:write", Err("role 'gl-ci': claim 'ref_protected' = false does not match 'true'")),
        case(gl(true), "repo:acme/other:write", Err("does not match any of role 'gl-ci' patterns: {project_path} (= acme/web)")),
        case(gl(true), "repo:acme/web:write", Err("ref pattern 'refs/tags/v1' is not within")).refs(&["refs/tags/v1"]),
        // Kubernetes service accounts.
        case(k8s("system:serviceaccount:mirror:sync"), "repo:mirror/a/b:read", Ok(("k8s-mirror", &[], 15))),
        case(k8s("system:serviceaccount:default:sync"), "repo:mirror/a:read", Err("claim 'sub' = 'system:serviceaccount:default:sync' does not match 'system:serviceaccount:mirror:*'")),
        case(k8s("system:serviceaccount:mirror:a/b"), "repo:mirror/a:read", Err("claim 'sub'")),
        case(id("lonely", json!({"sub": "x"})), "repo:acme/api:read", Err("no role accepts identities from issuer 'lonely'")),
    ]
}

#[test]
fn decision_table() {
    let policy = compile(POLICY).expect("policy compiles");
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    for (i, c) in cases.into_iter().enumerate() {
        let scope = Scope::parse(c.scope).expect("scope");
        let request = Request {
            scope: scope.clone(),
            role: c.role.map(str::to_owned),
            ttl: c.ttl,
            reason: c.reason.map(str::to_owned),
            refs: c
                .refs
                .iter()
                .map(|r| RefPattern::parse(r).expect("ref"))
                .collect(),
        };
        let got = decide(&policy, &c.who, &request, NOW);
        match (&got, c.expect) {
            (Ok(d), Ok((role, refs, ttl))) => {
                assert_eq!(d.role, role, "case {i} ({}): role", c.scope);
                let got_refs: Vec<&str> = d.refs.iter().map(RefPattern::as_str).collect();
                assert_eq!(got_refs, refs, "case {i}: refs");
                assert_eq!(d.ttl_minutes, ttl, "case {i}: ttl");
                // Never more than asked: exactly the requested scope, and the window.
                assert_eq!(d.scope, scope, "case {i}: scope");
                assert_eq!((d.iat, d.exp), (NOW, NOW + i64::from(ttl) * 60), "case {i}");
            }
            (Err(d), Err(needle)) => {
                assert!(
                    d.message.contains(needle),
                    "case {i}: {:?} lacks {needle:?}",
                    d.message
                );
            }
            (got, want) => panic!("case {i} ({}): got {got:?}, want {want:?}", c.scope),
        }
    }
}

fn write_request(scope: &str) -> Request {
    Request {
        scope: Scope::parse(scope).expect("scope"),
        role: None,
        ttl: None,
        reason: None,
        refs: vec![],
    }
}

#[test]
fn the_most_actionable_reason_alone() {
    let policy = compile(POLICY).expect("policy compiles");
    let request = write_request("repo:acme/api:write");
    let d = decide(&policy, &alice(), &request, NOW).expect_err("refused");
    assert_eq!(d.message, "role 'dev-write' requires a reason");
    assert_eq!(d.kind, DenialKind::Reason);
}

#[test]
fn deciding_claims_are_recorded() {
    let policy = compile(POLICY).expect("policy compiles");
    let request = write_request("repo:acme/api:write");
    let d = decide(&policy, &gh(json!({})), &request, NOW).expect("granted");
    let mut keys: Vec<&str> = d.deciding_claims.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "environment",
            "event_name",
            "ref",
            "repository",
            "repository_owner"
        ]
    );
}

#[test]
fn narrowest_role_wins() {
    let text = r#"
[[issuer]]
name = "corp"
issuer = "https://sso.example.com"
audience = "a"
[[role]]
name = "a-wide"
issuer = "corp"
repositories = ["acme/**"]
actions = ["write"]
max_ttl = 1000
[[role]]
name = "b-refs"
issuer = "corp"
repositories = ["acme/**"]
actions = ["write"]
refs = ["refs/heads/**"]
max_ttl = 600
[[role]]
name = "c-short"
issuer = "corp"
repositories = ["acme/**"]
actions = ["write"]
refs = ["refs/heads/**"]
max_ttl = 30
[[role]]
name = "d-rw"
issuer = "corp"
repositories = ["acme/**"]
actions = ["read", "write"]
"#;
    let policy = compile(text).expect("compiles");
    let who = id("corp", json!({"sub": "x"}));
    let ask = |ttl| Request {
        scope: Scope::parse("repo:acme/api:write").expect("scope"),
        role: None,
        ttl,
        reason: None,
        refs: vec![],
    };
    let role = |ttl| decide(&policy, &who, &ask(ttl), NOW).map(|d| d.role);
    assert_eq!(role(None).as_deref(), Ok("c-short"));
    assert_eq!(role(Some(31)).as_deref(), Ok("b-refs"));
    assert_eq!(role(Some(601)).as_deref(), Ok("a-wide"));
    assert!(role(Some(1001)).is_err());
}

#[test]
fn bad_policies_are_refused_naming_the_key() {
    let base = r#"
[[issuer]]
name = "corp"
issuer = "https://sso.example.com"
audience = "a"
[[role]]
name = "r"
issuer = "corp"
repositories = ["acme/*"]
actions = ["read"]
"#;
    let cases: &[(&str, &str, &str)] = &[
        (
            "issuer = \"corp\"\nrepositories",
            "issuer = \"nope\"\nrepositories",
            "role \"r\".issuer: no [[issuer]] is named \"nope\"",
        ),
        (
            "actions = [\"read\"]",
            "actions = [\"read\"]\nmax_ttl = 0",
            "role \"r\".max_ttl",
        ),
        (
            "actions = [\"read\"]",
            "actions = [\"read\"]\nmax_ttl = 1441",
            "role \"r\".max_ttl",
        ),
        (
            "actions = [\"read\"]",
            "actions = [\"read\"]\nmax_ttl = 10\ndefault_ttl = 20",
            "role \"r\".default_ttl",
        ),
        ("actions = [\"read\"]", "actions = []", "role \"r\".actions"),
        (
            "actions = [\"read\"]",
            "actions = [\"read\", \"read\"]",
            "role \"r\".actions",
        ),
        (
            "actions = [\"read\"]",
            "actions = [\"read\"]\nrefs = [\"refs/heads/main\"]",
            "role \"r\".refs",
        ),
        (
            "actions = [\"read\"]",
            "actions = [\"write\"]\nrefs = [\"heads/main\"]",
            "role \"r\".refs[0]",
        ),
        (
            "[\"acme/*\"]",
            "[\"acme/../x\"]",
            "role \"r\".repositories[0]",
        ),
        ("[\"acme/*\"]", "[\"{repo\"]", "role \"r\".repositories[0]"),
        ("[\"acme/*\"]", "[]", "role \"r\".repositories"),
        ("name = \"r\"", "name = \"r s\"", "role[0].name"),
        (
            "actions = [\"read\"]",
            "actions = [\"read\"]\nclaims = { ref = \"\" }",
            "role \"r\".claims.ref",
        ),
        (
            "audience = \"a\"",
            "audience = \"a\"\nalgorithms = [\"HS256\"]",
            "issuer[0].algorithms: HS256 is symmetric",
        ),
        (
            "audience = \"a\"",
            "audience = \"a\"\nalgorithms = [\"none\"]",
            "issuer[0].algorithms",
        ),
        ("audience = \"a\"", "audience = \"\"", "issuer[0].audience"),
        (
            "https://sso.example.com",
            "http://sso.example.com",
            "issuer[0].issuer",
        ),
        // Approval rules nobody can satisfy.
        (
            "actions = [\"read\"]",
            "actions = [\"read\"]\napproval_required = true",
            "role \"r\".approval_required: needs [role.approval]",
        ),
        (
            "actions = [\"read\"]",
            "actions = [\"read\"]\n[role.approval]\nrequired = 1",
            "role \"r\".approval.approvers: names nobody",
        ),
        (
            "actions = [\"read\"]",
            "actions = [\"read\"]\n[role.approval]\nrequired = 3\napprovers = [{ issuer = \"corp\", subjects = [\"bob\", \"carol\", \"bob\"] }]",
            "role \"r\".approval.required: 3 distinct approvals can never be given: the approvers name only 2 person(s)",
        ),
        (
            "actions = [\"read\"]",
            "actions = [\"read\"]\n[role.approval]\nrequired = 6\napprovers = [{ issuer = \"corp\", claims = { groups = \"sre\" } }]",
            "role \"r\".approval.required: 6 is out of bounds (1..=5)",
        ),
        (
            "actions = [\"read\"]",
            "actions = [\"read\"]\n[role.approval]\nrequired = 0\napprovers = [{ issuer = \"corp\", subjects = [\"bob\"] }]",
            "role \"r\".approval.required: 0 is out of bounds",
        ),
        (
            "actions = [\"read\"]",
            "actions = [\"read\"]\n[role.approval]\nwait = 0\napprovers = [{ issuer = \"corp\", subjects = [\"bob\"] }]",
            "role \"r\".approval.wait",
        ),
        (
            "actions = [\"read\"]",
            "actions = [\"read\"]\n[role.approval]\nmin_reason = 2000\napprovers = [{ issuer = \"corp\", subjects = [\"bob\"] }]",
            "role \"r\".approval.min_reason",
        ),
        (
            "actions = [\"read\"]",
            "actions = [\"read\"]\n[role.approval]\napprovers = [{ issuer = \"gone\", subjects = [\"bob\"] }]",
            "role \"r\".approval.approvers[0].issuer: no [[issuer]] is named \"gone\"",
        ),
        (
            "actions = [\"read\"]",
            "actions = [\"read\"]\n[role.approval]\napprovers = [{ issuer = \"corp\" }]",
            "role \"r\".approval.approvers[0].subjects: names neither subjects nor claims",
        ),
        (
            "actions = [\"read\"]",
            "actions = [\"read\"]\nbreak_glass = true\nmax_ttl = 120",
            "role \"r\".max_ttl: a break-glass role may grant at most 60 minutes",
        ),
        (
            "actions = [\"read\"]",
            "actions = [\"read\"]\nmax_ttl = 30\nbreak_glass = true\n[role.approval]\napprovers = [{ issuer = \"corp\", subjects = [\"bob\"] }]",
            "role \"r\".break_glass: a break-glass role is approved by its requester at once",
        ),
    ];
    for (from, to, needle) in cases {
        let text = base.replacen(from, to, 1);
        assert_ne!(text, base, "{from:?} not found");
        let err = compile(&text).expect_err(needle).to_string();
        assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    }
    let dup = format!(
        "{base}\n[[role]]\nname = \"r\"\nissuer = \"corp\"\nrepositories = [\"x\"]\nactions = [\"read\"]\n"
    );
    let err = compile(&dup).expect_err("duplicate").to_string();
    assert!(err.contains("role[1].name: duplicate role name"), "{err}");
    let dup = base.replacen("[[role]]", "[[issuer]]\nname = \"corp\"\nissuer = \"https://b.example.com\"\naudience = \"a\"\n[[role]]", 1);
    let err = compile(&dup).expect_err("duplicate").to_string();
    assert!(
        err.contains("issuer[1].name: duplicate issuer name"),
        "{err}"
    );
    let unknown = base.replacen("actions", "colour = \"red\"\nactions", 1);
    let err = compile(&unknown).expect_err("unknown").to_string();
    assert!(err.contains("unknown field `colour`"), "{err}");
}
