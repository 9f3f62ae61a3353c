//! The one test suite every [`SessionStore`] must pass; [`super::suite::run_all`] runs it on
//! each store it is given (memory in unit tests, single Redis and Redis Cluster end to end).
//! Liveness is judged from stored timestamps and the `now_ms` handed in, so the cases move
//! that time forward by hand on both stores and never wait.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::sessions::{ABSOLUTE_MS, IDLE_MS, LOGIN_MS, MAX_LOGINS, SessionStore};
use super::suite_time::SuiteTime;

/// A fresh random key (as the console makes: hex SHA-256), so runs on one Redis never meet.
fn key(name: &str) -> String {
    let mut b = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
    format!("{name}-{}", hex::encode(b))
}

/// Runs every case on `store`.
pub async fn run_all(store: &dyn SessionStore, t: &SuiteTime) {
    a_session_is_kept_once_and_read_back(store, t).await;
    use_restarts_the_idle_clock_and_watching_does_not(store, t).await;
    busy_sessions_end_at_the_absolute_limit(store, t).await;
    ending_a_session_ends_it_for_every_reader(store, t).await;
    a_login_is_taken_once_and_only_while_fresh(store, t).await;
    a_flood_of_logins_keeps_the_newest(store, t).await;
}

async fn a_session_is_kept_once_and_read_back(store: &dyn SessionStore, t: &SuiteTime) {
    let now = t.now_ms();
    let k = key("s");
    assert!(store.create_session(&k, "{\"who\":1}", now).await.unwrap());
    assert!(
        !store.create_session(&k, "other", now).await.unwrap(),
        "a taken key was overwritten"
    );
    let s = store.session(&k, false, now).await.unwrap().expect("live");
    assert_eq!(s.body, "{\"who\":1}");
    assert_eq!((s.created_ms, s.last_ms), (now, now));
    assert!(
        store
            .session(&key("none"), true, now)
            .await
            .unwrap()
            .is_none()
    );
}

async fn use_restarts_the_idle_clock_and_watching_does_not(
    store: &dyn SessionStore,
    t: &SuiteTime,
) {
    let t0 = t.now_ms();
    let k = key("idle");
    assert!(store.create_session(&k, "b", t0).await.unwrap());
    let used = t0 + IDLE_MS - 1;
    let s = store
        .session(&k, true, used)
        .await
        .unwrap()
        .expect("just in time");
    assert_eq!(s.last_ms, used, "the use was not recorded");
    // Watching (no touch) at the same distance from the last use leaves it as it was.
    let watched = used + IDLE_MS - 1;
    let s = store
        .session(&k, false, watched)
        .await
        .unwrap()
        .expect("live");
    assert_eq!(s.last_ms, used, "watching counted as use");
    assert!(
        store
            .session(&k, false, used + IDLE_MS)
            .await
            .unwrap()
            .is_none(),
        "idle too long"
    );
    assert!(
        store.session(&k, true, used + 1).await.unwrap().is_none(),
        "an ended session came back"
    );
}

async fn busy_sessions_end_at_the_absolute_limit(store: &dyn SessionStore, t: &SuiteTime) {
    let t0 = t.now_ms();
    let k = key("abs");
    assert!(store.create_session(&k, "b", t0).await.unwrap());
    let mut at = t0;
    while at + IDLE_MS / 2 < t0 + ABSOLUTE_MS {
        at += IDLE_MS / 2;
        assert!(
            store.session(&k, true, at).await.unwrap().is_some(),
            "ended early, {} ms in",
            at - t0
        );
    }
    assert!(
        store
            .session(&k, true, t0 + ABSOLUTE_MS)
            .await
            .unwrap()
            .is_none(),
        "lived past 8 hours"
    );
}

async fn ending_a_session_ends_it_for_every_reader(store: &dyn SessionStore, t: &SuiteTime) {
    let now = t.now_ms();
    let k = key("end");
    assert!(store.create_session(&k, "who", now).await.unwrap());
    let ended = store.end_session(&k, now + 1).await.unwrap();
    assert_eq!(ended.map(|s| s.body).as_deref(), Some("who"));
    assert!(store.session(&k, true, now + 2).await.unwrap().is_none());
    assert!(store.end_session(&k, now + 3).await.unwrap().is_none());
    // Ending one already idle says it was not live.
    let idle = key("end-idle");
    assert!(store.create_session(&idle, "who", now).await.unwrap());
    assert!(
        store
            .end_session(&idle, now + IDLE_MS)
            .await
            .unwrap()
            .is_none()
    );
}

async fn a_login_is_taken_once_and_only_while_fresh(store: &dyn SessionStore, t: &SuiteTime) {
    let now = t.now_ms();
    let (a, b) = (key("login-a"), key("login-b"));
    store.begin_login(&a, "nonce-a", now).await.unwrap();
    store.begin_login(&b, "nonce-b", now).await.unwrap();
    assert_eq!(
        store
            .take_login(&a, now + LOGIN_MS - 1)
            .await
            .unwrap()
            .as_deref(),
        Some("nonce-a")
    );
    assert!(
        store.take_login(&a, now + 1).await.unwrap().is_none(),
        "replayed"
    );
    assert!(
        store
            .take_login(&b, now + LOGIN_MS)
            .await
            .unwrap()
            .is_none(),
        "too late"
    );
    assert!(
        store.take_login(&b, now).await.unwrap().is_none(),
        "a late try left it behind"
    );
}

async fn a_flood_of_logins_keeps_the_newest(store: &dyn SessionStore, t: &SuiteTime) {
    let now = t.now_ms();
    let first = key("flood-first");
    store.begin_login(&first, "first", now).await.unwrap();
    for i in 0..MAX_LOGINS + 20 {
        let at = now + 1 + i64::try_from(i).unwrap();
        store.begin_login(&key("flood"), "x", at).await.unwrap();
    }
    let admin = key("the-admin");
    let at = now + 10_000;
    store.begin_login(&admin, "admin", at).await.unwrap();
    assert_eq!(
        store.take_login(&admin, at + 1).await.unwrap().as_deref(),
        Some("admin"),
        "the newest login was dropped"
    );
    assert!(
        store.take_login(&first, at + 1).await.unwrap().is_none(),
        "the book grew past its bound"
    );
}
