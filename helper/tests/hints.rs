//! Every "run this next" the broker and the helper can print is a command `git jit` accepts:
//! a table of refusals, one per denial kind the policy has (and the approval and gateway
//! answers), each hint split like a POSIX shell would and parsed with the CLI's own parser.
//! A denial kind that only a policy change can cure must carry no hint at all.

use clap::Parser as _;
use jit_broker::config::{IssuerConfig, RoleConfig};
use jit_broker::exchange::hint::{self, RequestLine};
use jit_broker::gatekeeper::forbidden_message;
use jit_broker::identity::VerifiedIdentity;
use jit_broker::policy::{self, CompiledPolicy, DenialKind, Request};
use jit_helper::broker::BrokerError;
use jit_helper::cli::{Cli, Command};
use jit_helper::credential::{approval_line, old_git_note, reason_line};
use jit_proto::approval::{PendingDetails, RequestId};
use jit_proto::{RefPattern, RepoPath, Scope};
use serde::Deserialize;
use serde_json::json;

const POLICY: &str = r#"
[[issuer]]
name = "corp"
issuer = "https://sso.example.com"
audience = "git-jit"

[[issuer]]
name = "ci"
issuer = "https://ci.example.com"
audience = "git-jit"

[[role]]
name = "dev-read"
issuer = "corp"
repositories = ["acme/*"]
actions = ["read"]
max_ttl = 60

[[role]]
name = "dev-write"
issuer = "corp"
claims = { groups = "engineering" }
repositories = ["acme/*"]
actions = ["read", "write"]
refs = ["refs/heads/feature/**", "refs/heads/o'brien/*"]
reason_required = true
max_ttl = 60

[[role]]
name = "prod"
issuer = "corp"
repositories = ["acme/prod"]
actions = ["write"]

[role.approval]
approvers = [{ issuer = "corp", subjects = ["bob"] }]
min_reason = 5

[[role]]
name = "glass"
issuer = "corp"
repositories = ["vault/**"]
actions = ["read", "write"]
max_ttl = 30
break_glass = true

[[role]]
name = "ci-read"
issuer = "ci"
repositories = ["ci/*"]
actions = ["read"]
"#;

#[derive(Deserialize)]
struct Access {
    issuer: Vec<IssuerConfig>,
    role: Vec<RoleConfig>,
}

fn compiled() -> CompiledPolicy {
    let a: Access = toml::from_str(POLICY).expect("policy toml");
    CompiledPolicy::compile(&a.issuer, &a.role).expect("policy compiles")
}

fn person(sub: &str, group: &str) -> VerifiedIdentity {
    let serde_json::Value::Object(claims) = json!({"sub": sub, "groups": [group]}) else {
        unreachable!("an object literal")
    };
    VerifiedIdentity {
        issuer: "corp".into(),
        subject: sub.into(),
        claims,
    }
}

fn alice() -> VerifiedIdentity {
    person("alice", "engineering")
}

struct Ask {
    scope: &'static str,
    role: Option<&'static str>,
    ttl: Option<u32>,
    refs: &'static [&'static str],
    reason: Option<&'static str>,
    /// Asked by someone outside engineering, not alice.
    stranger: bool,
}

const fn ask(scope: &'static str) -> Ask {
    Ask {
        scope,
        role: None,
        ttl: None,
        refs: &[],
        reason: None,
        stranger: false,
    }
}

impl Ask {
    fn request(&self) -> Request {
        Request {
            scope: Scope::parse(self.scope).expect("scope"),
            role: self.role.map(str::to_owned),
            ttl: self.ttl,
            reason: self.reason.map(str::to_owned),
            refs: self
                .refs
                .iter()
                .map(|r| RefPattern::parse(r).expect("ref"))
                .collect(),
        }
    }
}

/// The `git jit …` command lines in `text`: from each `git jit ` to a closing backtick or
/// the end.
fn commands_in(text: &str) -> Vec<String> {
    text.match_indices("git jit ")
        .map(|(at, _)| {
            let rest = &text[at..];
            rest.split('`').next().unwrap_or(rest).trim().to_owned()
        })
        .collect()
}

/// Splits `line` as a shell would and parses it with `git jit`'s parser.
fn parses(line: &str) -> Cli {
    let words = shlex::split(line).unwrap_or_else(|| panic!("not shell words: {line}"));
    assert_eq!(
        words.get(..2),
        Some(&["git".to_owned(), "jit".to_owned()][..]),
        "{line}"
    );
    let argv = std::iter::once("git-jit".to_owned()).chain(words.into_iter().skip(2));
    Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("`{line}` does not parse: {e}"))
}

/// Parses a `git jit request` line and returns what it asks for.
fn request_of(line: &str) -> jit_helper::cli::RequestArgs {
    match parses(line).command {
        Command::Request(a) => a,
        other => panic!("`{line}` is not `git jit request`: {other:?}"),
    }
}

#[test]
fn every_denial_kind_says_what_to_run_or_nothing() {
    let policy = compiled();
    let mut why = Ask {
        reason: Some("INC-42"),
        ..ask("repo:acme/api:write")
    };
    why.ttl = Some(61);
    // (what is asked, the denial kind it meets, what the hint must contain; None: no hint)
    let table: Vec<(Ask, DenialKind, Option<&str>)> = vec![
        (
            ask("repo:acme/api:write"),
            DenialKind::Reason,
            Some("--role dev-write --reason \"…\""),
        ),
        (
            why,
            DenialKind::Lifetime,
            Some("--role dev-write --ttl 60 --reason"),
        ),
        (
            Ask {
                role: Some("dev-write"),
                refs: &["refs/heads/main"],
                reason: Some("x"),
                ..ask("repo:acme/api:write")
            },
            DenialKind::Refs,
            Some("--refs 'refs/heads/feature/** refs/heads/o'\\''brien/*'"),
        ),
        (
            Ask {
                reason: Some("the vault is sealed, INC-42"),
                ..ask("repo:vault/keys:write")
            },
            DenialKind::Approval,
            Some("--role glass --reason"),
        ),
        (
            Ask {
                role: Some("nope"),
                ..ask("repo:acme/api:read")
            },
            DenialKind::UnknownRole,
            Some("git jit request --repo acme/api --action read"),
        ),
        (
            Ask {
                refs: &["refs/heads/x"],
                ..ask("repo:acme/api:read")
            },
            DenialKind::InvalidRequest,
            Some("--action read,write --refs refs/heads/x"),
        ),
        (
            Ask {
                ttl: Some(0),
                ..ask("repo:acme/api:read")
            },
            DenialKind::InvalidRequest,
            Some("git jit request --repo acme/api --action read"),
        ),
        // Only the policy can change these.
        (ask("repo:other/api:read"), DenialKind::Scope, None),
        (
            Ask {
                role: Some("ci-read"),
                ..ask("repo:ci/x:read")
            },
            DenialKind::Identity,
            None,
        ),
        (
            Ask {
                stranger: true,
                ..ask("repo:other/api:write")
            },
            DenialKind::NoRole,
            None,
        ),
    ];
    let mut kinds = Vec::new();
    for (a, kind, want) in table {
        let request = a.request();
        let who = if a.stranger {
            person("mallory", "sales")
        } else {
            alice()
        };
        let d = policy::decide(&policy, &who, &request, 1_700_000_000)
            .expect_err(&format!("{} is refused", a.scope));
        assert_eq!(d.kind, kind, "{}: {}", a.scope, d.message);
        kinds.push(kind);
        let line = hint::denial_hint(&policy, &d, &request);
        let said = hint::with_hint(&d.message, line.as_ref());
        let Some(want) = want else {
            assert!(
                line.is_none(),
                "{}: no command helps, yet: {said}",
                d.message
            );
            assert!(commands_in(&said).is_empty(), "{said}");
            continue;
        };
        let line = line.unwrap_or_else(|| panic!("no hint for {kind:?}: {}", d.message));
        let shown = line.to_string();
        assert!(shown.contains(want), "{shown} lacks {want}");
        assert_eq!(commands_in(&said), vec![shown.clone()], "{said}");
        let args = request_of(&shown);
        // The hint asks for the same repository, and following it gets past this denial.
        assert_eq!(args.repo.as_ref(), Some(&request.scope.repo), "{shown}");
        let followed = Request {
            scope: Scope::new(request.scope.repo.clone(), args.action),
            role: args.role.clone(),
            ttl: args.ttl.map(jit_proto::exchange::Ttl::minutes),
            reason: args.reason.clone().map(|r| format!("{r} INC-42")),
            refs: args.refs.iter().flat_map(|l| l.0.clone()).collect(),
        };
        match policy::decide(&policy, &who, &followed, 1_700_000_000) {
            Ok(_) => {}
            Err(again) => assert_ne!(again.kind, kind, "{shown} meets {}", again.message),
        }
    }
    // Every denial kind the policy has is in the table.
    for k in [
        DenialKind::InvalidRequest,
        DenialKind::UnknownRole,
        DenialKind::Identity,
        DenialKind::Scope,
        DenialKind::Refs,
        DenialKind::Lifetime,
        DenialKind::Reason,
        DenialKind::Approval,
        DenialKind::NoRole,
    ] {
        assert!(kinds.contains(&k), "{k:?} is not in the table");
    }
}

#[test]
fn approval_and_gateway_answers_name_commands_the_cli_accepts() {
    let policy = compiled();
    let request = Ask {
        role: Some("prod"),
        ..ask("repo:acme/prod:write")
    }
    .request();
    let d = policy::decide(&policy, &alice(), &request, 1_700_000_000).expect("prod is granted");
    let ask_line = RequestLine::for_decision(&d).to_string();
    let a = request_of(&ask_line);
    assert_eq!(a.role.as_deref(), Some("prod"));
    assert!(a.reason.is_some(), "{ask_line}");

    let id = RequestId::parse("rq_abcdefghijklmnopqrstuvwxyz").expect("id");
    let collect = hint::collect_line(&id);
    assert_eq!(request_of(&collect).wait.as_ref(), Some(&id));

    let api = |s: &str| Scope::parse(s).expect("scope");
    for (granted, needed) in [
        ("repo:acme/api:read", "repo:acme/api:write"),
        ("repo:acme/web:read,write", "repo:acme/api:read"),
    ] {
        let said = forbidden_message(&api(granted), &api(needed));
        let lines = commands_in(&said);
        assert_eq!(lines.len(), 1, "{said}");
        let a = request_of(&lines[0]);
        let want = api(needed);
        assert_eq!(a.repo.as_ref(), Some(&want.repo), "{said}");
        assert!(a.action.covers(want.actions), "{said}");
    }
}

#[test]
fn the_helpers_own_lines_parse_too() {
    let scope = Scope::parse("repo:acme/api:write").expect("scope");
    let pending = BrokerError::ApprovalRequired {
        description: "role 'prod' needs approval by a person (bob)".into(),
        details: Box::new(PendingDetails {
            role: Some("prod".into()),
            ..PendingDetails::default()
        }),
    };
    let waiting = BrokerError::ApprovalPending {
        slow_down: false,
        details: Box::new(PendingDetails {
            request_id: Some(RequestId::parse("rq_abcdefghijklmnopqrstuvwxyz").expect("id")),
            ..PendingDetails::default()
        }),
    };
    let repo = RepoPath::parse("acme/api").expect("repo");
    let lines = [
        approval_line(&pending, &scope),
        approval_line(&waiting, &scope),
        reason_line("role 'dev-write' requires a reason", &scope),
        old_git_note(&repo),
    ];
    for said in &lines {
        let found = commands_in(said);
        assert_eq!(found.len(), 1, "{said}");
        parses(&found[0]);
    }
}
