//! The one test suite every [`RequestStore`] must pass; [`super::suite::run_all`] runs it on
//! each store it is given (memory in unit tests, single Redis and Redis Cluster end to end).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;

use jit_proto::Scope;
use jit_proto::approval::{RequestId, RequestState};

use super::requests::{ApprovalRequest, Party, RequestStore, Vote, new_request_id};
use super::suite_time::SuiteTime;

/// A request by `sub` filed now, pending for `wait_ms`, with a fresh random id.
pub fn request(t: &SuiteTime, sub: &str, wait_ms: i64) -> ApprovalRequest {
    let now = t.now_ms();
    ApprovalRequest {
        id: new_request_id().unwrap(),
        version: 1,
        state: RequestState::Pending,
        requester: Party {
            sub: sub.into(),
            idp: "corp".into(),
            email: Some(format!("{sub}@acme.test")),
        },
        role: "prod-push".into(),
        scope: Scope::parse("repo:acme/api:write").unwrap(),
        refs: Vec::new(),
        ttl_minutes: 30,
        reason: Some("hotfix INC-42".into()),
        created_ms: now,
        expires_ms: now + wait_ms,
        required: 1,
        approvals: Vec::new(),
        decision: None,
        approved_ms: None,
        jti: None,
        break_glass: false,
    }
}

/// Runs every case on `store`.
pub async fn run_all(store: &dyn RequestStore, t: &SuiteTime) {
    filing_is_compare_and_set_on_the_latest_ask(store, t).await;
    replacing_is_compare_and_set_on_the_version(store, t).await;
    paging_is_newest_first_and_sees_each_once(store, t).await;
    due_lists_pending_past_deadline_only(store, t).await;
    polls_are_spaced(store, t).await;
}

async fn filing_is_compare_and_set_on_the_latest_ask(store: &dyn RequestStore, t: &SuiteTime) {
    let ask = format!("ask-{}", new_request_id().unwrap());
    let first = request(t, "alice", 60_000);
    assert_eq!(store.latest(&ask, t.now_ms()).await.unwrap(), None);
    assert!(store.file(&first, &ask, None, t.now_ms()).await.unwrap());
    assert_eq!(
        store.get(&first.id, t.now_ms()).await.unwrap().as_ref(),
        Some(&first)
    );
    assert_eq!(
        store.latest(&ask, t.now_ms()).await.unwrap().as_ref(),
        Some(&first.id)
    );
    // A second filing that did not see the first loses, and changes nothing.
    let racing = request(t, "alice", 60_000);
    assert!(!store.file(&racing, &ask, None, t.now_ms()).await.unwrap());
    assert_eq!(store.get(&racing.id, t.now_ms()).await.unwrap(), None);
    // One that saw it wins and becomes the latest.
    assert!(
        store
            .file(&racing, &ask, Some(&first.id), t.now_ms())
            .await
            .unwrap()
    );
    assert_eq!(
        store.latest(&ask, t.now_ms()).await.unwrap().as_ref(),
        Some(&racing.id)
    );
    // The same id is never filed twice.
    let other_ask = format!("{ask}-2");
    assert!(
        store
            .file(&first, &other_ask, None, t.now_ms())
            .await
            .is_err()
    );
}

async fn replacing_is_compare_and_set_on_the_version(store: &dyn RequestStore, t: &SuiteTime) {
    let ask = format!("ask-{}", new_request_id().unwrap());
    let r = request(t, "bob", 60_000);
    assert!(store.file(&r, &ask, None, t.now_ms()).await.unwrap());
    let mut approved = r.clone();
    approved.version = 2;
    approved.state = RequestState::Approved;
    approved.approved_ms = Some(t.now_ms());
    approved.approvals.push(Vote {
        by: Party {
            sub: "carol".into(),
            idp: "corp".into(),
            email: None,
        },
        reason: "ok".into(),
        at_ms: t.now_ms(),
    });
    let mut denied = r.clone();
    denied.version = 2;
    denied.state = RequestState::Denied;
    assert!(store.replace(&approved, t.now_ms()).await.unwrap());
    // The second writer of version 2 loses: one decision only.
    assert!(!store.replace(&denied, t.now_ms()).await.unwrap());
    let mut skipping = approved.clone();
    skipping.version = 9;
    assert!(!store.replace(&skipping, t.now_ms()).await.unwrap());
    assert_eq!(
        store.get(&r.id, t.now_ms()).await.unwrap().as_ref(),
        Some(&approved)
    );
    let mut unknown = request(t, "bob", 60_000);
    unknown.version = 2;
    assert!(!store.replace(&unknown, t.now_ms()).await.unwrap());
    let mut zero = r.clone();
    zero.version = 0;
    assert!(!store.replace(&zero, t.now_ms()).await.unwrap());
}

async fn paging_is_newest_first_and_sees_each_once(store: &dyn RequestStore, t: &SuiteTime) {
    let mut filed = Vec::new();
    for i in 0..7 {
        let r = request(t, &format!("pager{i}"), 60_000);
        assert!(
            store
                .file(&r, &format!("pager-{}", r.id), None, t.now_ms())
                .await
                .unwrap()
        );
        filed.push(r.id.clone());
        t.pass(2).await;
    }
    let mine: HashSet<RequestId> = filed.iter().cloned().collect();
    let mut seen = Vec::new();
    let mut before = None;
    for _ in 0..1000 {
        let slice = store.page(before.as_ref(), 3, t.now_ms()).await.unwrap();
        assert!(slice.requests.len() <= 3);
        seen.extend(
            slice
                .requests
                .iter()
                .map(|r| r.id.clone())
                .filter(|id| mine.contains(id)),
        );
        match slice.next {
            Some(n) => before = Some(n),
            None => break,
        }
    }
    filed.reverse();
    assert_eq!(seen, filed, "newest first, each once");
}

async fn due_lists_pending_past_deadline_only(store: &dyn RequestStore, t: &SuiteTime) {
    let soon = request(t, "dora", 100);
    let later = request(t, "erin", 3_600_000);
    let decided = request(t, "fred", 100);
    for r in [&soon, &later, &decided] {
        assert!(
            store
                .file(r, &format!("due-{}", r.id), None, t.now_ms())
                .await
                .unwrap()
        );
    }
    let mut cancelled = decided.clone();
    cancelled.version = 2;
    cancelled.state = RequestState::Cancelled;
    assert!(store.replace(&cancelled, t.now_ms()).await.unwrap());
    t.pass(250).await;
    let due = store.due(t.now_ms(), 1000).await.unwrap();
    assert!(due.contains(&soon.id), "past its deadline and pending");
    assert!(!due.contains(&later.id), "not yet due");
    assert!(!due.contains(&decided.id), "final already");
    let got = store.get(&soon.id, t.now_ms()).await.unwrap().unwrap();
    assert_eq!(got.state, RequestState::Pending, "as stored");
    assert_eq!(got.state_at(t.now_ms()), RequestState::Expired, "as seen");
    store.drop_due(&soon.id).await.unwrap();
    assert!(
        !store
            .due(t.now_ms(), 1000)
            .await
            .unwrap()
            .contains(&soon.id)
    );
}

async fn polls_are_spaced(store: &dyn RequestStore, t: &SuiteTime) {
    let id = request(t, "gina", 1000).id;
    assert!(store.poll(&id, 300, t.now_ms()).await.unwrap());
    assert!(!store.poll(&id, 300, t.now_ms()).await.unwrap());
    t.pass(350).await;
    assert!(store.poll(&id, 300, t.now_ms()).await.unwrap());
    let other = request(t, "gina", 1000).id;
    assert!(store.poll(&other, 300, t.now_ms()).await.unwrap());
}
