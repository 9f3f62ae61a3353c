//! Micro-benchmarks of git-jit's hot paths, pure CPU, no I/O:
//! scope parsing, token signing and verification, a policy decision over the example
//! policies (12 roles), gateway routing, pkt-line and receive-pack command parsing, the ref
//! pattern matcher (typical and worst cases at the input bounds), and the credential-protocol
//! parsing of the helper.
//!
//! `cargo bench -p jit-bench --bench micro` (a few minutes on 2 cores). Sample sizes are kept
//! modest; the figures are per operation, single thread.

#![allow(clippy::unwrap_used)] // a benchmark with broken fixtures should stop loudly

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jit_broker::config::Config;
use jit_broker::gateway::receive_pack::{self, CommandParser};
use jit_broker::gateway::{classify, pktline};
use jit_broker::identity::VerifiedIdentity;
use jit_broker::keys::KeyRing;
use jit_broker::policy::{self, CompiledPolicy, Request};
use jit_broker::token::TokenSigner;
use jit_proto::{Claims, RefPattern, Scope};
use serde_json::{Map, Value, json};

/// The documented example policy plus the CI-platform policies: 12 roles over 4 issuers.
const POLICY: [&str; 4] = [
    include_str!("../../deploy/broker.example.toml"),
    include_str!("../../deploy/policies/github-actions.toml"),
    include_str!("../../deploy/policies/gitlab-ci.toml"),
    include_str!("../../deploy/policies/kubernetes.toml"),
];

const NOW: i64 = 1_750_000_000;

fn group_settings(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
}

fn scope(c: &mut Criterion) {
    let mut g = c.benchmark_group("scope");
    group_settings(&mut g);
    g.bench_function("parse repo:acme/api:read", |b| {
        b.iter(|| Scope::parse(black_box("repo:acme/api:read")).unwrap())
    });
    g.bench_function("parse repo:group/sub/project-x:read,write", |b| {
        b.iter(|| Scope::parse(black_box("repo:group/sub/project-x:read,write")).unwrap())
    });
    g.bench_function("parse rejected repo:acme/../secret:read", |b| {
        b.iter(|| Scope::parse(black_box("repo:acme/../secret:read")).unwrap_err())
    });
    g.finish();
}

fn claims() -> Claims {
    Claims {
        iss: "https://jit.example.com".into(),
        aud: "git-jit".into(),
        sub: "alice@example.com".into(),
        idp: "corp".into(),
        iat: NOW,
        nbf: NOW,
        exp: NOW + 3600,
        jti: "b2Kx0t8m3X7s1bq9JmZ4dA".into(),
        scope: Scope::parse("repo:acme/api:read,write").unwrap(),
        refs: vec![RefPattern::parse("refs/heads/feature/**").unwrap()],
        role: "dev-write".into(),
        reason: Some("JIRA-1234 fix the flaky release job".into()),
        req: None,
    }
}

fn token(c: &mut Criterion) {
    let keys = Arc::new(KeyRing::ephemeral().unwrap());
    let signer = TokenSigner::new(keys, "https://jit.example.com", "git-jit");
    let claims = claims();
    let signed = signer.sign(&claims).unwrap();
    let compact = signed.expose().to_owned();
    assert_eq!(signer.verify(&compact, NOW + 10).unwrap(), claims);
    // Flip one character in the middle of the signature: still valid base64url, so the
    // rejection costs the full signature check.
    let sig_at = compact.rfind('.').unwrap() + 20;
    let mut tampered = compact.clone().into_bytes();
    tampered[sig_at] = if tampered[sig_at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();

    let mut g = c.benchmark_group("token (EdDSA)");
    group_settings(&mut g);
    g.bench_function("sign", |b| {
        b.iter(|| signer.sign(black_box(&claims)).unwrap())
    });
    g.bench_function("verify", |b| {
        b.iter(|| signer.verify(black_box(&compact), NOW + 10).unwrap())
    });
    g.bench_function("verify rejected (bad signature)", |b| {
        b.iter(|| signer.verify(black_box(&tampered), NOW + 10).unwrap_err())
    });
    g.finish();
}

fn identity(issuer: &str, subject: &str, claims: Value) -> VerifiedIdentity {
    let Value::Object(claims) = claims else {
        unreachable!("claims are an object")
    };
    VerifiedIdentity {
        issuer: issuer.into(),
        subject: subject.into(),
        claims,
    }
}

fn request(scope: &str, role: Option<&str>, reason: Option<&str>, refs: &[&str]) -> Request {
    Request {
        scope: Scope::parse(scope).unwrap(),
        role: role.map(str::to_owned),
        ttl: None,
        reason: reason.map(str::to_owned),
        refs: refs.iter().map(|r| RefPattern::parse(r).unwrap()).collect(),
    }
}

fn policy_decision(c: &mut Criterion) {
    let text = POLICY.join("\n");
    let config = Config::parse(&text, Path::new("policy.toml")).unwrap();
    let compiled = CompiledPolicy::compile(&config.issuer, &config.role).unwrap();
    assert_eq!(compiled.roles().len(), 12, "the example policies changed");

    let alice = identity(
        "corp",
        "alice@example.com",
        json!({
            "iss": "https://sso.example.com/realms/acme", "sub": "f3b1c2d4",
            "email": "alice@example.com", "groups": ["engineering", "oncall"],
            "aud": "git-jit-cli", "exp": NOW + 300, "iat": NOW,
        }),
    );
    let mut gha: Map<String, Value> = Map::new();
    for (k, v) in [
        ("iss", json!("https://token.actions.githubusercontent.com")),
        ("sub", json!("repo:acme/api:ref:refs/heads/main")),
        ("repository", json!("acme/api")),
        ("repository_owner", json!("acme")),
        ("repository_owner_id", json!(1_234_567)),
        ("ref", json!("refs/heads/main")),
        ("ref_type", json!("branch")),
        ("event_name", json!("push")),
        ("environment", json!("production")),
        (
            "job_workflow_ref",
            json!("acme/api/.github/workflows/ci.yml@refs/heads/main"),
        ),
    ] {
        gha.insert(k.into(), v);
    }
    let gha = identity(
        "github",
        "repo:acme/api:ref:refs/heads/main",
        Value::Object(gha),
    );

    let read = request("repo:acme/api:read", None, None, &[]);
    let write_named = request(
        "repo:acme/api:write",
        Some("dev-write"),
        Some("JIRA-1234"),
        &["refs/heads/feature/x"],
    );
    let gha_read = request("repo:acme/api:read", None, None, &[]);
    let denied = request("repo:other/secret:write", None, None, &[]);
    for (who, req) in [(&alice, &read), (&alice, &write_named), (&gha, &gha_read)] {
        policy::decide(&compiled, who, req, NOW).unwrap();
    }
    policy::decide(&compiled, &alice, &denied, NOW).unwrap_err();

    let mut g = c.benchmark_group("policy decide (12 roles)");
    group_settings(&mut g);
    g.bench_function("person, no role named, read (narrowest of all)", |b| {
        b.iter(|| policy::decide(&compiled, &alice, black_box(&read), NOW).unwrap())
    });
    g.bench_function("person, role named, write with refs + reason", |b| {
        b.iter(|| policy::decide(&compiled, &alice, black_box(&write_named), NOW).unwrap())
    });
    g.bench_function("GitHub Actions job, own repository via {repository}", |b| {
        b.iter(|| policy::decide(&compiled, &gha, black_box(&gha_read), NOW).unwrap())
    });
    g.bench_function("person, denied (every role explains)", |b| {
        b.iter(|| policy::decide(&compiled, &alice, black_box(&denied), NOW).unwrap_err())
    });
    g.finish();
}

fn pkt(out: &mut Vec<u8>, payload: &[u8]) {
    pktline::write_data(out, payload);
}

/// A receive-pack request head: `n` ref updates, capabilities on the first, then a flush.
fn receive_pack_head(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let old = format!("{:040x}", i + 1);
        let new = format!("{:040x}", i + 1_000_000);
        let line = if i == 0 {
            format!(
                "{old} {new} refs/heads/feature/topic-{i}\0report-status side-band-64k atomic quiet object-format=sha1 agent=git/2.47.2\n"
            )
        } else {
            format!("{old} {new} refs/heads/feature/topic-{i}\n")
        };
        pkt(&mut out, line.as_bytes());
    }
    pktline::write_flush(&mut out);
    // The pack follows; the parser must stop before it.
    out.extend_from_slice(b"PACK\0\0\0\x02\0\0\0\x01");
    out
}

fn gateway(c: &mut Criterion) {
    let one = receive_pack_head(1);
    let hundred = receive_pack_head(100);
    let allowed = vec![RefPattern::parse("refs/heads/feature/**").unwrap()];
    let parse_head = |buf: &[u8]| {
        let mut p = CommandParser::new();
        let used = p.advance(buf).unwrap().unwrap();
        (used, p.finish().unwrap())
    };
    assert_eq!(parse_head(&hundred).1.commands.len(), 100);
    let get = axum::http::Method::GET;
    let post = axum::http::Method::POST;

    let mut g = c.benchmark_group("gateway");
    group_settings(&mut g);
    g.bench_function("classify GET info/refs?service=git-upload-pack", |b| {
        b.iter(|| {
            classify(
                &get,
                black_box("/acme/api.git/info/refs?service=git-upload-pack"),
            )
            .unwrap()
        })
    });
    g.bench_function("classify POST git-receive-pack", |b| {
        b.iter(|| classify(&post, black_box("/group/sub/proj.git/git-receive-pack")).unwrap())
    });
    g.throughput(Throughput::Bytes(hundred.len() as u64));
    g.bench_function("pktline parse_all, 100 commands", |b| {
        let lines = &hundred[..hundred.len() - 12];
        b.iter(|| pktline::parse_all(black_box(lines)).unwrap())
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("receive-pack head, 1 command", |b| {
        b.iter(|| parse_head(black_box(&one)))
    });
    g.throughput(Throughput::Elements(100));
    g.bench_function("receive-pack head, 100 commands", |b| {
        b.iter(|| parse_head(black_box(&hundred)))
    });
    g.bench_function("receive-pack head + ref decision, 100 commands", |b| {
        b.iter(|| {
            let (_, list) = parse_head(black_box(&hundred));
            receive_pack::decide(&list.commands, &allowed)
        })
    });
    g.finish();
}

/// The worst ref pattern the bounds allow: 128 bytes of `*a` that keep every position of a
/// long segment alive until the last segment fails to match.
fn worst_pattern(i: usize) -> String {
    let head = format!("refs/heads/{i:x}");
    let stars = "*a".repeat((jit_proto::refs::MAX_REF_PATTERN_LEN - head.len() - 4) / 2);
    format!("{head}{stars}*b/c")
}

/// The worst ref for [`worst_pattern`]: 1024 bytes, the name bound.
fn worst_ref(i: usize) -> String {
    let head = format!("refs/heads/{i:x}");
    let fill = jit_proto::refs::MAX_REF_LEN - head.len() - 4;
    format!("{head}{}/b/c", "a".repeat(fill))
}

fn ref_matcher(c: &mut Criterion) {
    use jit_proto::glob::Text;
    let typical = RefPattern::parse("refs/heads/feature/**").unwrap();
    let pattern = worst_pattern(0);
    let text = worst_ref(0);
    assert_eq!(pattern.len(), jit_proto::refs::MAX_REF_PATTERN_LEN);
    assert_eq!(text.len(), jit_proto::refs::MAX_REF_LEN);
    let mut steps = 0;
    assert!(!Text::new(&text).matches(&pattern, &mut steps));
    eprintln!(
        "ref matcher worst case: {steps} word steps for one 128-byte pattern against one 1024-byte ref"
    );

    // A push at every bound: the most commands, each the longest ref, against the most
    // patterns, each the longest and hardest. Every pattern shares the refs' first segment
    // (`refs/heads/0…`) so none fails early.
    let patterns: Vec<RefPattern> = (0..jit_proto::exchange::MAX_REFS)
        .map(|_| RefPattern::parse(&worst_pattern(0)).unwrap())
        .collect();
    let zero = "0".repeat(40);
    let commands: Vec<receive_pack::Command> = (0..receive_pack::MAX_PUSH_COMMANDS)
        .map(|_| receive_pack::Command {
            old: zero.clone(),
            new: "1".repeat(40),
            refname: worst_ref(0),
        })
        .collect();
    let mut steps = 0;
    let refused = receive_pack::decide_counted(&commands, &patterns, &mut steps);
    assert_eq!(refused.len(), commands.len());
    eprintln!(
        "ref decision worst case: {} commands × {} patterns = {steps} word steps",
        commands.len(),
        patterns.len()
    );

    let mut g = c.benchmark_group("ref matcher");
    group_settings(&mut g);
    g.bench_function(
        "refs/heads/feature/** vs refs/heads/feature/topic-42",
        |b| b.iter(|| typical.matches(black_box("refs/heads/feature/topic-42"))),
    );
    g.bench_function("worst: 128-byte pattern vs 1024-byte ref", |b| {
        b.iter(|| Text::new(black_box(&text)).matches(black_box(&pattern), &mut 0))
    });
    g.sample_size(10);
    g.throughput(Throughput::Elements(commands.len() as u64));
    g.bench_function(
        "worst push decision: 1000 refs of 1 KiB × 8 patterns of 128 B",
        |b| b.iter(|| receive_pack::decide(black_box(&commands), black_box(&patterns))),
    );
    g.finish();
}

fn credential_protocol(c: &mut Criterion) {
    use jit_helper::protocol::{Answer, Request as CredRequest};
    // What git 2.47 sends on `get` after the gateway's 401 (credential.useHttpPath=true).
    let get = b"capability[]=authtype\ncapability[]=state\nprotocol=https\nhost=git.example.com\n\
path=acme/api.git\nwwwauth[]=Bearer realm=\"git-jit\", scope=\"repo:acme/api:write\"\n\
wwwauth[]=Basic realm=\"git-jit\"\n\n";
    let parsed = CredRequest::read(&get[..]).unwrap();
    assert_eq!(parsed.wwwauth.len(), 2);
    let token = "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIiwidHlwIjoiaml0K2p3dCJ9.".to_owned()
        + &"x".repeat(600)
        + ".sig";

    let mut g = c.benchmark_group("credential protocol (helper)");
    group_settings(&mut g);
    g.bench_function("read git's get request (7 lines)", |b| {
        b.iter(|| CredRequest::read(black_box(&get[..])).unwrap())
    });
    g.bench_function("scope from the challenge (wwwauth[] + path)", |b| {
        b.iter(|| {
            jit_helper::challenge::needed_scope(black_box(&parsed.wwwauth), parsed.path.as_deref())
                .unwrap()
        })
    });
    g.bench_function("write the Bearer answer", |b| {
        let answer = Answer::for_token(&parsed, jit_proto::Secret::new(token.clone()), NOW);
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            out.clear();
            answer.write(&mut out).unwrap();
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    scope,
    token,
    policy_decision,
    gateway,
    ref_matcher,
    credential_protocol
);
criterion_main!(benches);
