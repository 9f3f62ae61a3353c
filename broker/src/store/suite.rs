//! The one test suite every [`GrantStore`] implementation must pass. The memory store runs it
//! in its unit tests; the Redis store runs it against a real `redis-server` in the end-to-end
//! harness (single node and cluster).
//!
//! Times are real (the Redis store's TTLs are real), so the suite takes `now` from the clock
//! and moves it forward explicitly where it checks logical expiry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;

use jit_proto::{Claims, RepoPath, Scope};

use super::{Grant, GrantFilter, GrantStatus, GrantStore, RevokeTarget};
use crate::audit::{AuditEvent, AuditQuery};
use crate::clock::{Clock, SystemClock};

fn now_ms() -> i64 {
    SystemClock.now_ms()
}

/// A grant for tests: `sub` on `repo` under `role` from `idp`, living `ttl` seconds.
pub fn grant(jti: &str, sub: &str, repo: &str, role: &str, idp: &str, ttl: i64) -> Grant {
    let now = now_ms();
    Grant {
        jti: jti.to_owned(),
        sub: sub.to_owned(),
        idp: idp.to_owned(),
        role: role.to_owned(),
        scope: Scope::new(RepoPath::parse(repo).unwrap(), jit_proto::Action::Read),
        refs: vec![],
        reason: Some("suite".to_owned()),
        issued_ms: now,
        exp: now / 1000 + ttl,
    }
}

/// The claims of a token for `g`.
pub fn claims_of(g: &Grant) -> Claims {
    Claims {
        iss: "https://broker.test".into(),
        aud: "git-jit".into(),
        sub: g.sub.clone(),
        idp: g.idp.clone(),
        iat: g.issued_ms / 1000,
        nbf: g.issued_ms / 1000,
        exp: g.exp,
        jti: g.jti.clone(),
        scope: g.scope.clone(),
        refs: g.refs.clone(),
        role: g.role.clone(),
        reason: g.reason.clone(),
        req: None,
    }
}

async fn live(store: &dyn GrantStore, g: &Grant) -> bool {
    matches!(
        store.check(&claims_of(g), now_ms()).await.unwrap(),
        GrantStatus::Live(_)
    )
}

/// Runs every case, each on a fresh store from `make(audit_max)`.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Box<dyn GrantStore>>,
{
    put_check_status(&*make(1000).await).await;
    refuses_expired_put(&*make(1000).await).await;
    logical_expiry(&*make(1000).await).await;
    natural_expiry(&*make(1000).await).await;
    revoke_by_jti(&*make(1000).await).await;
    for target in [
        RevokeTarget::Subject("alice".into()),
        RevokeTarget::Repo(RepoPath::parse("acme/api").unwrap()),
        RevokeTarget::Role("dev".into()),
        RevokeTarget::Issuer("corp".into()),
        RevokeTarget::All,
    ] {
        bulk_revoke(&*make(1000).await, target).await;
    }
    revoked_expired_unknown(&*make(1000).await).await;
    mismatched_claims_are_not_live(&*make(1000).await).await;
    listing_filters(&*make(1000).await).await;
    audit_round_trip(&*make(1000).await).await;
    audit_is_bounded(&*make(10).await, 10).await;
    audit_batches_land_whole(&*make(1000).await).await;
}

async fn audit_batches_land_whole(store: &dyn GrantStore) {
    let t0 = now_ms();
    let batch: Vec<AuditEvent> = (1..=3)
        .map(|i| {
            let mut e = AuditEvent::new("access.allowed", t0 + i);
            e.seq = i as u64;
            e.hash = format!("h{i}");
            e
        })
        .collect();
    assert!(store.append_audit(&batch, 0).await.unwrap());
    assert_eq!(
        store.audit_head().await.unwrap(),
        Some((3, "h3".to_owned()))
    );
    // A stale batch is refused whole: nothing of it lands.
    assert!(!store.append_audit(&batch, 0).await.unwrap());
    let all = store
        .read_audit(&AuditQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
}

async fn put_check_status(store: &dyn GrantStore) {
    let g = grant("j-live", "alice", "acme/api", "dev", "corp", 600);
    store.put(&g, now_ms()).await.unwrap();
    assert_eq!(
        store.check(&claims_of(&g), now_ms()).await.unwrap(),
        GrantStatus::Live(g.clone())
    );
    assert_eq!(
        store.status("j-live", now_ms()).await.unwrap(),
        GrantStatus::Live(g)
    );
    store.ping().await.unwrap();
}

async fn refuses_expired_put(store: &dyn GrantStore) {
    let mut g = grant("j-old", "alice", "acme/api", "dev", "corp", 600);
    g.exp = now_ms() / 1000 - 1;
    assert!(store.put(&g, now_ms()).await.is_err());
    assert_eq!(
        store.status("j-old", now_ms()).await.unwrap(),
        GrantStatus::Unknown
    );
}

async fn logical_expiry(store: &dyn GrantStore) {
    let g = grant("j-logical", "alice", "acme/api", "dev", "corp", 60);
    store.put(&g, now_ms()).await.unwrap();
    let later = g.exp * 1000 + 1;
    let st = store.check(&claims_of(&g), later).await.unwrap();
    assert_eq!(st, GrantStatus::Expired, "a grant past exp is never live");
    assert!(
        store
            .list(&GrantFilter::default(), later)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn natural_expiry(store: &dyn GrantStore) {
    let g = grant("j-short", "alice", "acme/api", "dev", "corp", 1);
    store.put(&g, now_ms()).await.unwrap();
    assert!(live(store, &g).await);
    let wait = (g.exp * 1000 - now_ms()).max(0) as u64 + 150;
    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
    assert_eq!(
        store.check(&claims_of(&g), now_ms()).await.unwrap(),
        GrantStatus::Expired
    );
    assert_eq!(
        store.status("j-short", now_ms()).await.unwrap(),
        GrantStatus::Expired
    );
}

async fn revoke_by_jti(store: &dyn GrantStore) {
    let a = grant("j-a", "alice", "acme/api", "dev", "corp", 600);
    let b = grant("j-b", "alice", "acme/api", "dev", "corp", 600);
    store.put(&a, now_ms()).await.unwrap();
    store.put(&b, now_ms()).await.unwrap();
    assert_eq!(
        store
            .revoke(&RevokeTarget::Jti("j-a".into()), now_ms())
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .revoke(&RevokeTarget::Jti("j-a".into()), now_ms())
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store.check(&claims_of(&a), now_ms()).await.unwrap(),
        GrantStatus::Revoked
    );
    assert!(
        live(store, &b).await,
        "revoking one token leaves the others"
    );
    let listed = store.list(&GrantFilter::default(), now_ms()).await.unwrap();
    assert_eq!(listed, vec![b]);
}

async fn bulk_revoke(store: &dyn GrantStore, target: RevokeTarget) {
    let grants = [
        grant("b1", "alice", "acme/api", "dev", "corp", 600),
        grant("b2", "alice", "acme/web", "ops", "corp", 600),
        grant("b3", "bob", "acme/api", "ops", "github", 600),
        grant("b4", "bob", "acme/web", "dev", "gitlab", 600),
        grant("b5", "carol", "other/x", "ci", "github", 600),
    ];
    for g in &grants {
        store.put(g, now_ms()).await.unwrap();
    }
    let expected: Vec<&Grant> = grants.iter().filter(|g| target.covers(g)).collect();
    let n = store.revoke(&target, now_ms()).await.unwrap();
    assert_eq!(
        n,
        expected.len() as u64,
        "{target:?} ends exactly the grants it covers"
    );
    for g in &grants {
        let st = store.check(&claims_of(g), now_ms()).await.unwrap();
        if target.covers(g) {
            assert_eq!(st, GrantStatus::Revoked, "{target:?} must revoke {}", g.jti);
            assert_eq!(
                store.status(&g.jti, now_ms()).await.unwrap(),
                GrantStatus::Revoked
            );
        } else {
            assert!(
                matches!(st, GrantStatus::Live(_)),
                "{target:?} must spare {}",
                g.jti
            );
        }
    }
    let listed = store.list(&GrantFilter::default(), now_ms()).await.unwrap();
    assert!(
        listed.iter().all(|g| !target.covers(g)),
        "revoked grants are never listed"
    );
    assert_eq!(listed.len(), grants.len() - expected.len());

    // The watermark itself is readable, for refusing identities authenticated before it.
    let dims = [target.dimension(), "sub:nobody".to_owned()];
    let marks = store.revoked_before(&dims).await.unwrap();
    assert!(
        marks[0].is_some() && marks[1].is_none(),
        "{target:?}: {marks:?}"
    );

    // A person's or an issuer's watermark outlives every token: it also guards exchanges of
    // identity tokens authenticated before it, which an IdP may keep alive for days.
    if matches!(target, RevokeTarget::Subject(_) | RevokeTarget::Issuer(_)) {
        let two_days_later = now_ms() + 2 * 24 * 3600 * 1000;
        store
            .revoke(&RevokeTarget::Jti("nothing".into()), two_days_later)
            .await
            .unwrap();
        let marks = store.revoked_before(&[target.dimension()]).await.unwrap();
        assert!(marks[0].is_some(), "{target:?} watermark forgotten");
    }

    // A grant issued after the revocation is live: the watermark only looks back.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let fresh = grant("b-fresh", "alice", "acme/api", "dev", "corp", 600);
    store.put(&fresh, now_ms()).await.unwrap();
    assert!(
        live(store, &fresh).await,
        "{target:?} must not revoke grants issued later"
    );
}

async fn revoked_expired_unknown(store: &dyn GrantStore) {
    let r = grant("s-revoked", "alice", "acme/api", "dev", "corp", 600);
    let e = grant("s-expired", "alice", "acme/api", "dev", "corp", 1);
    store.put(&r, now_ms()).await.unwrap();
    store.put(&e, now_ms()).await.unwrap();
    store
        .revoke(&RevokeTarget::Jti("s-revoked".into()), now_ms())
        .await
        .unwrap();
    let wait = (e.exp * 1000 - now_ms()).max(0) as u64 + 150;
    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
    assert_eq!(
        store.status("s-revoked", now_ms()).await.unwrap(),
        GrantStatus::Revoked
    );
    assert_eq!(
        store.status("s-expired", now_ms()).await.unwrap(),
        GrantStatus::Expired
    );
    assert_eq!(
        store.status("s-never", now_ms()).await.unwrap(),
        GrantStatus::Unknown
    );
}

async fn mismatched_claims_are_not_live(store: &dyn GrantStore) {
    let g = grant("m-1", "alice", "acme/api", "dev", "corp", 600);
    store.put(&g, now_ms()).await.unwrap();
    let mut c = claims_of(&g);
    c.scope = Scope::parse("repo:acme/secret:read").unwrap();
    let st = store.check(&c, now_ms()).await.unwrap();
    assert!(
        !matches!(st, GrantStatus::Live(_)),
        "claims must match the stored grant: {st:?}"
    );
}

async fn listing_filters(store: &dyn GrantStore) {
    let grants = [
        grant("l1", "alice", "acme/api", "dev", "corp", 600),
        grant("l2", "alice", "acme/web", "ops", "corp", 600),
        grant("l3", "bob", "acme/api", "ops", "github", 600),
    ];
    for g in &grants {
        store.put(g, now_ms()).await.unwrap();
    }
    let jtis = |v: Vec<Grant>| v.into_iter().map(|g| g.jti).collect::<Vec<_>>();
    let all = store.list(&GrantFilter::default(), now_ms()).await.unwrap();
    assert_eq!(jtis(all), ["l1", "l2", "l3"]);
    let f = GrantFilter {
        subject: Some("alice".into()),
        ..Default::default()
    };
    assert_eq!(jtis(store.list(&f, now_ms()).await.unwrap()), ["l1", "l2"]);
    let f = GrantFilter {
        repo: Some(RepoPath::parse("acme/api").unwrap()),
        ..Default::default()
    };
    assert_eq!(jtis(store.list(&f, now_ms()).await.unwrap()), ["l1", "l3"]);
    let f = GrantFilter {
        role: Some("ops".into()),
        issuer: Some("corp".into()),
        ..Default::default()
    };
    assert_eq!(jtis(store.list(&f, now_ms()).await.unwrap()), ["l2"]);
}

async fn audit_round_trip(store: &dyn GrantStore) {
    let t0 = now_ms();
    let mut e1 = AuditEvent::new("grant.issued", t0);
    e1.subject = Some("alice".into());
    e1.repo = Some("acme/api".into());
    let mut e2 = AuditEvent::new("grant.denied", t0 + 10);
    e2.subject = Some("bob".into());
    let mut e3 = AuditEvent::new("access.allowed", t0 + 20).with("updates", 2);
    e3.subject = Some("alice".into());
    for (i, e) in [&mut e1, &mut e2, &mut e3].into_iter().enumerate() {
        e.seq = i as u64 + 1;
        e.hash = format!("h{}", e.seq);
        assert!(
            store
                .append_audit(std::slice::from_ref(e), i as u64)
                .await
                .unwrap()
        );
    }
    // Compare-and-set: an append against a stale head is refused and changes nothing.
    let stale = AuditEvent::new("grant.issued", t0 + 30);
    assert!(!store.append_audit(&[stale], 1).await.unwrap());
    assert_eq!(
        store.audit_head().await.unwrap(),
        Some((3, "h3".to_owned()))
    );
    let all = store
        .read_audit(&AuditQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|e| e.id.is_some()));
    let strip = |mut e: AuditEvent| {
        e.id = None;
        e
    };
    assert_eq!(strip(all[2].clone()), e3, "events read back intact");
    let q = AuditQuery {
        subject: Some("alice".into()),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(store.read_audit(&q).await.unwrap().len(), 2);
    let q = AuditQuery {
        event: Some("grant.".into()),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(store.read_audit(&q).await.unwrap().len(), 2);
    let q = AuditQuery {
        from_ms: Some(t0 + 5),
        to_ms: Some(t0 + 15),
        limit: 100,
        ..Default::default()
    };
    let got = store.read_audit(&q).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event, "grant.denied");
    let q = AuditQuery {
        limit: 1,
        ..Default::default()
    };
    assert_eq!(store.read_audit(&q).await.unwrap().len(), 1);
}

async fn audit_is_bounded(store: &dyn GrantStore, max: usize) {
    let t0 = now_ms();
    assert_eq!(store.audit_head().await.unwrap(), None);
    for i in 0..(max as i64 * 30) {
        let mut e = AuditEvent::new("access.allowed", t0 + i);
        e.seq = i as u64 + 1;
        assert!(store.append_audit(&[e], i as u64).await.unwrap());
    }
    let all = store
        .read_audit(&AuditQuery {
            limit: usize::MAX,
            ..Default::default()
        })
        .await
        .unwrap();
    // Redis trims approximately (whole radix-tree nodes of up to 100 entries).
    assert!(
        all.len() <= max + 100,
        "audit log kept {} of {}",
        all.len(),
        max * 30
    );
    assert!(all.len() >= max);
    assert_eq!(
        all.last().unwrap().ts,
        t0 + max as i64 * 30 - 1,
        "the newest are kept"
    );
}
