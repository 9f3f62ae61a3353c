//! How time passes in the store suites ([`super::suite`], [`super::requests_suite`],
//! [`super::sessions_suite`]): the memory store knows only the `now_ms` it is handed, so its
//! run drives a [`ManualClock`] and never sleeps; the Redis store expires keys by real TTLs
//! inside `redis-server`, so its run reads the system clock and, where a case needs time to
//! pass, really waits.

use std::time::Duration;

use jit_proto::{RepoPath, Scope};

use super::Grant;
use crate::clock::{Clock, ManualClock, SystemClock};

/// How time passes for the store under test.
pub enum SuiteTime {
    /// The store only knows the `now_ms` it is given: the suite moves this clock.
    Manual(ManualClock),
    /// The store keeps real time of its own (Redis key TTLs): the suite reads the system clock
    /// and waits for real.
    Real,
}

impl SuiteTime {
    /// A manual clock at a fixed instant (2023-11-14T22:13:20Z), so runs are repeatable.
    pub fn manual() -> Self {
        Self::Manual(ManualClock::new(1_700_000_000_000))
    }

    /// Now, in milliseconds since the epoch.
    pub fn now_ms(&self) -> i64 {
        match self {
            Self::Manual(clock) => clock.now_ms(),
            Self::Real => SystemClock.now_ms(),
        }
    }

    /// Lets `ms` milliseconds pass.
    pub async fn pass(&self, ms: i64) {
        match self {
            Self::Manual(clock) => clock.advance_ms(ms),
            // Only the Redis store gets here: its TTLs run in redis-server, on the real clock.
            Self::Real => {
                tokio::time::sleep(Duration::from_millis(u64::try_from(ms).unwrap_or(0))).await;
            }
        }
    }

    /// Lets time pass until just after `g` has expired (its `exp` is in whole seconds).
    pub(super) async fn pass_expiry_of(&self, g: &Grant) {
        self.pass((g.exp * 1000 - self.now_ms()).max(0) + 150).await;
    }

    /// A grant issued now: `sub` on `repo` under `role` from `idp`, living `ttl` seconds.
    pub fn grant(
        &self,
        jti: &str,
        sub: &str,
        repo: &str,
        role: &str,
        idp: &str,
        ttl: i64,
    ) -> Grant {
        grant_at(self.now_ms(), jti, sub, repo, role, idp, ttl)
    }
}

/// A grant for tests issued at `now` (ms): `sub` on `repo` under `role` from `idp`, living
/// `ttl` seconds.
pub fn grant_at(
    now: i64,
    jti: &str,
    sub: &str,
    repo: &str,
    role: &str,
    idp: &str,
    ttl: i64,
) -> Grant {
    Grant {
        jti: jti.to_owned(),
        sub: sub.to_owned(),
        idp: idp.to_owned(),
        role: role.to_owned(),
        scope: Scope::new(
            RepoPath::parse(repo).expect("a repository path"),
            jit_proto::Action::Read,
        ),
        refs: vec![],
        reason: Some("suite".to_owned()),
        issued_ms: now,
        exp: now / 1000 + ttl,
        req: None,
        break_glass: false,
    }
}
