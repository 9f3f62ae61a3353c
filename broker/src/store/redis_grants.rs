//! The Redis store's grants: key layout, indexes, listings and tidying (the audit trail's
//! keys are in [`super::redis`]).
//!
//! # Keys (`P` the prefix, `J` a token id, `B` its bucket, `D` a dimension)
//! - `P:{gB}:g:J` the grant (JSON), with a TTL equal to the token's remaining lifetime;
//! - `P:{gB}:t:J` a tombstone with the same TTL, written on revocation of one token (the
//!   record is deleted in the same script), so "revoked" is told apart from "unknown";
//! - `P:{gB}:i:J` an "issued" marker living a day past expiry (so "expired" is told apart
//!   too), holding the grant's four index dimensions for the expiry sweep;
//! - `P:{gB}:rev` the bucket's copy of the revoked-before watermarks (`all`, `sub:…`,
//!   `repo:…`, `role:…`, `idp:…`). Its TTL is the longest token lifetime, unless it holds a
//!   person's or an issuer's watermark, which also guards future exchanges and so is kept;
//! - `P:ix:{all}` every grant, `P:ix:{D}` the grants of one subject, repository, role or
//!   issuer (`D` = `sub:alice`, `repo:acme/api`, …): sorted sets with score 0 whose members
//!   `<issued ms>:<jti>` sort by issue time then jti ([`IndexMember`]); paged by `ZRANGEBYLEX`.
//!   A dimension's index lives a token lifetime past its last grant;
//! - `P:ix:{exp}` every grant's member by expiry, for the sweep that drops expired entries;
//! - `P:{tidy}:jobs` the tidy queue (a list of [`TidyJob`] JSON, oldest first), and beside it
//!   (same slot, so one script reads both) `P:{tidy}:lease` the tidy lease, `<until ms>
//!   <worker>` ([`super::tidy`]: one replica works the queue at a time).
//!
//! # Redis Cluster: one round trip per check, and spreading
//! A check needs the grant's record, its tombstone and marker, and the five watermarks that
//! could apply to it. The bucket `B` (0..[`BUCKETS`], from a hash of the token id) is the
//! hash tag of all of them: each bucket keeps its own *copy* of the watermarks, so a check is
//! one pipeline to one slot — one round trip, on a single node or a cluster. Grants spread
//! over the buckets' slots, hence over the shards. The price is on the rare side: a bulk
//! revocation writes [`BUCKETS`] copies (in parallel, still O(1) in the number of grants), and
//! the watermarks take [`BUCKETS`] times their memory. A revocation answered with an error
//! may have reached only some copies; it must be repeated (raising is idempotent).
//!
//! Dimension indexes are hash-tagged by their own dimension, so they spread too. The global
//! index and the expiry index are one key each (one `ZADD` per exchange on their shard): a
//! listing without a filter pages one sorted set rather than merging [`BUCKETS`] of them.

use std::collections::HashMap;

use futures_util::future::try_join_all;
use redis::{Cmd, FromRedisValue};

pub use super::redis::{BUCKETS, bucket};
use super::redis::{Conn, RedisStore, parse_grant, unavailable};
use super::{ClaimedJob, TidyClaim, tidy::LEASE_MS};
use super::{
    Grant, GrantFilter, GrantListing, GrantStatus, IndexMember, ListCursor,
    MAX_TOKEN_LIFETIME_SECS, StoreError, TidyJob, TidyProgress, bounds, revoked_by,
};

/// The name of the global index among the dimensions.
const ALL: &str = "all";

/// Runs `cmds` concurrently on `conn` (one flight on a multiplexed connection; each to its
/// own slot on a cluster).
async fn each<T: FromRedisValue>(conn: &Conn, cmds: Vec<Cmd>) -> Result<Vec<T>, StoreError> {
    try_join_all(cmds.into_iter().map(|cmd| {
        let mut c = conn.clone();
        async move { cmd.query_async::<T>(&mut c).await }
    }))
    .await
    .map_err(unavailable)
}

fn zrem_grouped(removals: HashMap<String, Vec<String>>) -> Vec<Cmd> {
    removals
        .into_iter()
        .map(|(key, members)| {
            let mut c = redis::cmd("ZREM");
            c.arg(key).arg(members);
            c
        })
        .collect()
}

/// One grant in this many trims its dimension indexes as it is written.
///
/// The expiry sweep removes each expired grant from every index (from its issued marker);
/// the trim is the backstop for entries the sweep cannot place (a marker gone), which are
/// all issued more than a token lifetime ago. Trimming on every grant repeated the same
/// empty range scan four times per exchange; on a sample, a busy index is still trimmed many
/// times a second, and a quiet one lives at most a token lifetime past its last grant.
const TRIM_ONE_IN: u8 = 8;

/// Whether the grant `jti` trims its indexes: a fixed sample of token ids (ids are random).
fn trims_indexes(jti: &str) -> bool {
    use sha2::Digest as _;
    sha2::Sha256::digest(jti.as_bytes())[1] % TRIM_ONE_IN == 0
}

impl RedisStore {
    pub(super) fn grant_key(&self, kind: &str, jti: &str) -> String {
        format!("{}:{{g{}}}:{kind}:{jti}", self.prefix, bucket(jti))
    }

    /// The watermark copy of bucket `b`.
    pub(super) fn rev_key(&self, b: u8) -> String {
        format!("{}:{{g{b}}}:rev", self.prefix)
    }

    /// Every bucket's watermark key (tests and operators).
    pub fn watermark_keys(&self) -> Vec<String> {
        (0..BUCKETS).map(|b| self.rev_key(b)).collect()
    }

    /// The index of `dim` (`all`: the global one).
    pub fn index_key(&self, dim: &str) -> String {
        format!("{}:ix:{{{dim}}}", self.prefix)
    }

    fn exp_key(&self) -> String {
        format!("{}:ix:{{exp}}", self.prefix)
    }

    fn jobs_key(&self) -> String {
        format!("{}:{{tidy}}:jobs", self.prefix)
    }

    /// The tidy lease (same slot as the queue).
    pub fn tidy_lease_key(&self) -> String {
        format!("{}:{{tidy}}:lease", self.prefix)
    }

    /// The index writes of a new grant (made before its record: a record is never
    /// unlisted), one pipeline per index key.
    pub(super) fn index_writes(&self, g: &Grant, now_ms: i64) -> Vec<redis::Pipeline> {
        let member = g.index_member();
        let keep_ms = (MAX_TOKEN_LIFETIME_SECS + 60) * 1000;
        let stale =
            trims_indexes(&g.jti).then(|| format!("({}", IndexMember::after_ms(now_ms - keep_ms)));
        let mut global = redis::pipe();
        global
            .zadd(self.index_key(ALL), member.as_str(), 0)
            .ignore();
        let mut by_exp = redis::pipe();
        by_exp
            .zadd(self.exp_key(), member.as_str(), g.exp.saturating_mul(1000))
            .ignore();
        let mut writes = vec![global, by_exp];
        for dim in g.index_dimensions() {
            // Add, keep the key a token lifetime past its newest grant (one key, one slot),
            // and on a sample of grants trim what was issued too long ago to be live.
            let key = self.index_key(&dim);
            let mut p = redis::pipe();
            p.zadd(&key, member.as_str(), 0).ignore();
            if let Some(stale) = &stale {
                p.cmd("ZREMRANGEBYLEX")
                    .arg(&key)
                    .arg("-")
                    .arg(stale)
                    .ignore();
            }
            p.pexpire(&key, keep_ms).ignore();
            writes.push(p);
        }
        writes
    }

    /// The issued marker's value: the grant's four index dimensions.
    pub(super) fn marker_value(g: &Grant) -> Result<String, StoreError> {
        serde_json::to_string(&g.index_dimensions())
            .map_err(|e| StoreError::Corrupt(format!("grant marker: {e}")))
    }

    /// Ends a batch of grants: deletes each record (a revoked one leaves a tombstone for its
    /// remaining life) and removes its entries from every index. Returns entries removed.
    ///
    /// One transaction per bucket (one slot) for the records rather than one per grant: a
    /// few short calls instead of four commands per grant. Within it a grant's tombstone is
    /// written before its record is unlinked.
    async fn end_grants(
        &self,
        conn: &Conn,
        grants: &[(Grant, bool)],
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let mut by_bucket: HashMap<u8, redis::Pipeline> = HashMap::new();
        for (g, revoked) in grants {
            let p = by_bucket.entry(bucket(&g.jti)).or_insert_with(|| {
                let mut p = redis::pipe();
                p.atomic();
                p
            });
            let remaining = g.remaining_ms(now_ms);
            if *revoked && remaining > 0 {
                p.cmd("SET")
                    .arg(self.grant_key("t", &g.jti))
                    .arg(1)
                    .arg("PX")
                    .arg(remaining)
                    .ignore();
            }
            p.cmd("UNLINK").arg(self.grant_key("g", &g.jti)).ignore();
        }
        let ends = by_bucket.into_values().map(|p| {
            let mut c = conn.clone();
            async move { p.query_async::<()>(&mut c).await }
        });
        try_join_all(ends).await.map_err(unavailable)?;
        let mut removals: HashMap<String, Vec<String>> = HashMap::new();
        for (g, _) in grants {
            let member = g.index_member().as_str().to_owned();
            let keys = std::iter::once(ALL.to_owned())
                .chain(g.index_dimensions())
                .map(|d| self.index_key(&d))
                .chain(std::iter::once(self.exp_key()));
            for key in keys {
                removals.entry(key).or_default().push(member.clone());
            }
        }
        let removed: Vec<u64> = each(conn, zrem_grouped(removals)).await?;
        Ok(removed.iter().sum())
    }

    /// The end of one tidy batch: ends `ended` and drops the index entries (`(dimension,
    /// member)`, beside their `records`) whose record is gone, counting both into `p`.
    async fn settle<'a>(
        &self,
        conn: &Conn,
        entries: impl Iterator<Item = (&'a str, &'a IndexMember)>,
        records: &[Option<Grant>],
        ended: &[(Grant, bool)],
        now_ms: i64,
        p: &mut TidyProgress,
    ) -> Result<(), StoreError> {
        let mut removals: HashMap<String, Vec<String>> = HashMap::new();
        for ((dim, m), r) in entries.zip(records) {
            if r.is_none() {
                removals
                    .entry(self.index_key(dim))
                    .or_default()
                    .push(m.as_str().to_owned());
            }
        }
        p.dropped += self.end_grants(conn, ended, now_ms).await?;
        p.dropped += each::<u64>(conn, zrem_grouped(removals))
            .await?
            .iter()
            .sum::<u64>();
        p.ended += ended.len() as u64;
        Ok(())
    }

    /// The records of `members` (`None` where gone or not that grant's any more).
    async fn records(
        &self,
        conn: &Conn,
        members: &[IndexMember],
    ) -> Result<Vec<Option<Grant>>, StoreError> {
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = members
            .iter()
            .map(|m| self.grant_key("g", m.jti()))
            .collect();
        let mut c = conn.clone();
        let raws: Vec<Option<String>> = redis::cmd("MGET")
            .arg(keys)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        raws.into_iter()
            .zip(members)
            .map(|(raw, m)| {
                Ok(raw
                    .map(|r| parse_grant(&r))
                    .transpose()?
                    .filter(|g| &g.index_member() == m))
            })
            .collect()
    }

    /// Whether each grant is revoked by a watermark of its own bucket's copy (as a check
    /// would say).
    async fn revoked_flags(&self, conn: &Conn, grants: &[&Grant]) -> Result<Vec<bool>, StoreError> {
        let mut by_bucket: HashMap<u8, Vec<usize>> = HashMap::new();
        for (i, g) in grants.iter().enumerate() {
            by_bucket.entry(bucket(&g.jti)).or_default().push(i);
        }
        let plan: Vec<(u8, Vec<usize>)> = by_bucket.into_iter().collect();
        let cmds = plan
            .iter()
            .map(|(b, idx)| {
                let mut c = redis::cmd("HMGET");
                c.arg(self.rev_key(*b));
                for &i in idx {
                    c.arg(&grants[i].dimensions()[..]);
                }
                c
            })
            .collect();
        let answers: Vec<Vec<Option<i64>>> = each(conn, cmds).await?;
        let mut out = vec![false; grants.len()];
        for ((_, idx), marks) in plan.iter().zip(answers) {
            for (k, &i) in idx.iter().enumerate() {
                let own = marks.get(k * 5..k * 5 + 5).unwrap_or(&[]);
                out[i] = revoked_by(own, grants[i].issued_ms);
            }
        }
        Ok(out)
    }

    async fn queue(&self, conn: &Conn, job: &TidyJob) -> Result<(), StoreError> {
        let json = serde_json::to_string(job)
            .map_err(|e| StoreError::Corrupt(format!("tidy job: {e}")))?;
        let mut c = conn.clone();
        redis::cmd("RPUSH")
            .arg(self.jobs_key())
            .arg(json)
            .query_async::<i64>(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Queues a job; a failure is logged, not returned: what it would tidy is already
    /// refused, and the expiry sweep reclaims it at the latest when it expires.
    pub(super) async fn queue_best_effort(&self, conn: &Conn, job: &TidyJob) -> bool {
        match self.queue(conn, job).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "could not queue a tidy job; expiry will reclaim");
                false
            }
        }
    }

    /// Raises `dim`'s watermark to `now_ms` in every bucket's copy, in parallel.
    pub(super) async fn raise_everywhere(
        &self,
        conn: &Conn,
        dim: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let raises = (0..BUCKETS).map(|b| {
            let mut c = conn.clone();
            let mut inv = self.raise.prepare_invoke();
            inv.key(self.rev_key(b))
                .arg(dim)
                .arg(now_ms)
                .arg((MAX_TOKEN_LIFETIME_SECS + 60) * 1000);
            async move { inv.invoke_async::<i64>(&mut c).await }
        });
        try_join_all(raises).await.map_err(unavailable)?;
        Ok(())
    }

    /// How many members `dim`'s index holds (`all`: the global index).
    pub(super) async fn index_len(&self, conn: &Conn, dim: &str) -> Result<u64, StoreError> {
        let mut c = conn.clone();
        redis::cmd("ZCARD")
            .arg(self.index_key(dim))
            .query_async(&mut c)
            .await
            .map_err(unavailable)
    }

    pub(super) async fn grants_page(
        &self,
        filter: &GrantFilter,
        after: Option<&ListCursor>,
        limit: usize,
        now_ms: i64,
    ) -> Result<GrantListing, StoreError> {
        let conn = self.admin_conn().await?;
        let dims = filter.dimensions();
        let dim = if dims.is_empty() {
            ALL.to_owned()
        } else {
            let sizes: Vec<u64> = each(
                &conn,
                dims.iter().map(|d| Cmd::zcard(self.index_key(d))).collect(),
            )
            .await?;
            match dims.into_iter().zip(sizes).min_by_key(|(_, n)| *n) {
                Some((_, 0)) | None => return Ok(GrantListing::default()),
                Some((d, _)) => d,
            }
        };
        let key = self.index_key(&dim);
        let chunk = limit.max(bounds::LIST_CHUNK);
        let mut from = after.map(|c| c.member().clone());
        let (mut grants, mut dead) = (Vec::new(), Vec::new());
        for _ in 0..bounds::LIST_ROUNDS {
            let lower = from
                .as_ref()
                .map_or_else(|| "-".to_owned(), |m| format!("({}", m.as_str()));
            let mut c = conn.clone();
            let raw: Vec<String> = redis::cmd("ZRANGEBYLEX")
                .arg(&key)
                .arg(lower)
                .arg("+")
                .arg("LIMIT")
                .arg(0)
                .arg(chunk)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            let full = raw.len() == chunk;
            let members: Vec<IndexMember> =
                raw.iter().filter_map(|m| IndexMember::parse(m)).collect();
            let records = self.records(&conn, &members).await?;
            let present: Vec<&Grant> = records.iter().flatten().collect();
            let mut revoked = self.revoked_flags(&conn, &present).await?.into_iter();
            for (m, record) in members.iter().zip(&records) {
                from = Some(m.clone());
                let live = match record {
                    Some(g) => {
                        let r = revoked.next().unwrap_or(true);
                        g.remaining_ms(now_ms) > 0 && !r
                    }
                    None => false,
                };
                match record {
                    Some(g) if live => {
                        if filter.matches(g) {
                            grants.push(g.clone());
                        }
                    }
                    _ => dead.push((dim.clone(), m.as_str().to_owned())),
                }
                if grants.len() >= limit {
                    break;
                }
            }
            let last_examined = from.as_ref().map(IndexMember::as_str);
            let rest_of_chunk = raw
                .last()
                .is_some_and(|l| Some(l.as_str()) != last_examined);
            if grants.len() >= limit || !full {
                let more = full || rest_of_chunk;
                if !dead.is_empty() {
                    self.queue_best_effort(&conn, &TidyJob::Drop { entries: dead })
                        .await;
                }
                return Ok(GrantListing {
                    grants,
                    next: from.filter(|_| more).map(ListCursor::after),
                });
            }
        }
        if !dead.is_empty() {
            self.queue_best_effort(&conn, &TidyJob::Drop { entries: dead })
                .await;
        }
        Ok(GrantListing {
            grants,
            next: from.map(ListCursor::after),
        })
    }

    /// Drops index entries of grants expired by now, learning their dimensions from their
    /// issued markers. One bounded batch.
    async fn sweep_expired(&self, conn: &Conn, now_ms: i64) -> Result<TidyProgress, StoreError> {
        let mut c = conn.clone();
        let raw: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.exp_key())
            .arg("-inf")
            .arg(now_ms)
            .arg("LIMIT")
            .arg(0)
            .arg(bounds::TIDY_BATCH)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        if raw.is_empty() {
            return Ok(TidyProgress::default());
        }
        let markers: Vec<Option<String>> = {
            let keys: Vec<String> = raw
                .iter()
                .map(|m| {
                    let jti =
                        IndexMember::parse(m).map_or_else(String::new, |m| m.jti().to_owned());
                    self.grant_key("i", &jti)
                })
                .collect();
            redis::cmd("MGET")
                .arg(keys)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?
        };
        let mut removals: HashMap<String, Vec<String>> = HashMap::new();
        for (member, marker) in raw.iter().zip(markers) {
            let dims: Vec<String> = marker
                .and_then(|m| serde_json::from_str(&m).ok())
                .unwrap_or_default();
            let keys = [ALL.to_owned()]
                .into_iter()
                .chain(dims)
                .map(|d| self.index_key(&d))
                .chain(std::iter::once(self.exp_key()));
            for key in keys {
                removals.entry(key).or_default().push(member.clone());
            }
        }
        let removed: Vec<u64> = each(conn, zrem_grouped(removals)).await?;
        Ok(TidyProgress {
            ended: 0,
            dropped: removed.iter().sum(),
            more: raw.len() == bounds::TIDY_BATCH,
            fenced: false,
        })
    }

    /// Takes or renews the tidy lease for `worker` and reads the head job's next batch.
    pub(super) async fn claim_batch(
        &self,
        worker: &str,
        now_ms: i64,
    ) -> Result<Option<TidyClaim>, StoreError> {
        let conn = self.admin_conn().await?;
        let mut c = conn.clone();
        let (held, head): (i64, String) = self
            .take_lease
            .key(self.tidy_lease_key())
            .key(self.jobs_key())
            .arg(worker)
            .arg(now_ms)
            .arg(now_ms.saturating_add(LEASE_MS))
            .arg(2 * LEASE_MS)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        if held != 1 {
            return Ok(None);
        }
        let job = if head.is_empty() {
            None
        } else {
            let job = serde_json::from_str::<TidyJob>(&head)
                .inspect_err(|e| {
                    // An unreadable job would block the queue for ever; what it named is
                    // refused anyway and expiry reclaims it.
                    tracing::warn!(error = %e, "dropping an unreadable tidy job");
                })
                .ok();
            let members = match &job {
                Some(TidyJob::Sweep {
                    dim,
                    upto_ms,
                    after,
                }) => {
                    let lower = after
                        .as_deref()
                        .map_or_else(|| "-".to_owned(), |m| format!("({m}"));
                    redis::cmd("ZRANGEBYLEX")
                        .arg(self.index_key(dim))
                        .arg(lower)
                        .arg(format!("({}", IndexMember::after_ms(*upto_ms)))
                        .arg("LIMIT")
                        .arg(0)
                        .arg(bounds::TIDY_BATCH)
                        .query_async(&mut c)
                        .await
                        .map_err(unavailable)?
                }
                _ => Vec::new(),
            };
            Some(ClaimedJob {
                stored: head,
                job,
                members,
            })
        };
        Ok(Some(TidyClaim {
            worker: worker.to_owned(),
            job,
        }))
    }

    /// Works a claimed batch: the expiry sweep, then the head job's batch; then records the
    /// job's progress if the claim's worker still holds the lease (see [`super::tidy`]).
    pub(super) async fn finish_batch(
        &self,
        claim: TidyClaim,
        now_ms: i64,
    ) -> Result<TidyProgress, StoreError> {
        let conn = self.admin_conn().await?;
        let mut p = self.sweep_expired(&conn, now_ms).await?;
        let (stored, next) = match claim.job {
            None => (String::new(), None),
            Some(claimed) => {
                let next = self.work_job(&conn, &claimed, now_ms, &mut p).await?;
                (claimed.stored, next)
            }
        };
        let replacement = match next {
            Some(job) => serde_json::to_string(&job)
                .map_err(|e| StoreError::Corrupt(format!("tidy job: {e}")))?,
            None => String::new(),
        };
        let mut c = conn.clone();
        let left: i64 = self
            .finish_tidy
            .key(self.jobs_key())
            .key(self.tidy_lease_key())
            .arg(&claim.worker)
            .arg(stored)
            .arg(replacement)
            .arg(if p.more { "0" } else { "1" })
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        if left < 0 {
            p.fenced = true;
            p.more = false;
        } else {
            p.more |= left > 0;
        }
        Ok(p)
    }

    /// One batch of a claimed job; returns the job's progress (`None`: it is done, or was
    /// unreadable).
    async fn work_job(
        &self,
        conn: &Conn,
        claimed: &ClaimedJob,
        now_ms: i64,
        p: &mut TidyProgress,
    ) -> Result<Option<TidyJob>, StoreError> {
        match &claimed.job {
            None => Ok(None),
            Some(TidyJob::Sweep { dim, upto_ms, .. }) => {
                let members: Vec<IndexMember> = claimed
                    .members
                    .iter()
                    .filter_map(|m| IndexMember::parse(m))
                    .collect();
                let records = self.records(conn, &members).await?;
                // Everything in range was issued at or before the watermark: revoked.
                let ended: Vec<(Grant, bool)> = records
                    .iter()
                    .flatten()
                    .map(|g| (g.clone(), true))
                    .collect();
                let entries = members.iter().map(|m| (dim.as_str(), m));
                self.settle(conn, entries, &records, &ended, now_ms, p)
                    .await?;
                Ok(
                    (claimed.members.len() == bounds::TIDY_BATCH).then(|| TidyJob::Sweep {
                        dim: dim.clone(),
                        upto_ms: *upto_ms,
                        after: claimed.members.last().cloned(),
                    }),
                )
            }
            Some(TidyJob::Drop { entries }) => {
                let parsed: Vec<(&str, IndexMember)> = entries
                    .iter()
                    .filter_map(|(d, m)| IndexMember::parse(m).map(|m| (d.as_str(), m)))
                    .collect();
                let members: Vec<IndexMember> = parsed.iter().map(|(_, m)| m.clone()).collect();
                let records = self.records(conn, &members).await?;
                let present: Vec<&Grant> = records.iter().flatten().collect();
                let revoked = self.revoked_flags(conn, &present).await?;
                let mut ended = Vec::new();
                for (g, r) in present.iter().zip(revoked) {
                    if r || g.remaining_ms(now_ms) <= 0 {
                        ended.push(((*g).clone(), r));
                    }
                }
                let entries = parsed.iter().map(|(d, m)| (*d, m));
                self.settle(conn, entries, &records, &ended, now_ms, p)
                    .await?;
                Ok(None)
            }
        }
    }

    pub(super) async fn jobs_pending(&self) -> Result<u64, StoreError> {
        let conn = self.admin_conn().await?;
        let mut c = conn.clone();
        redis::cmd("LLEN")
            .arg(self.jobs_key())
            .query_async(&mut c)
            .await
            .map_err(unavailable)
    }

    /// Looks a grant's record, tombstone, marker and watermarks up in one round trip to its
    /// bucket's slot.
    pub(super) async fn lookup(
        &self,
        conn: &Conn,
        jti: &str,
        dims: &[String],
    ) -> Result<(Option<Grant>, bool, bool, Vec<Option<i64>>), StoreError> {
        let mut c = conn.clone();
        let mut p = redis::pipe();
        p.get(self.grant_key("g", jti))
            .exists(self.grant_key("t", jti))
            .exists(self.grant_key("i", jti));
        if !dims.is_empty() {
            p.cmd("HMGET").arg(self.rev_key(bucket(jti))).arg(dims);
        }
        let (raw, tomb, issued, marks): (Option<String>, bool, bool, Vec<Option<i64>>) =
            if dims.is_empty() {
                let (raw, tomb, issued) = p.query_async(&mut c).await.map_err(unavailable)?;
                (raw, tomb, issued, Vec::new())
            } else {
                p.query_async(&mut c).await.map_err(unavailable)?
            };
        let grant = raw.map(|s| parse_grant(&s)).transpose()?;
        Ok((grant, tomb, issued, marks))
    }

    /// The status of a record as the lookup found it, given the claims' expiry when known.
    pub(super) fn judge(
        found: (Option<Grant>, bool, bool, Vec<Option<i64>>),
        now_ms: i64,
    ) -> GrantStatus {
        match found {
            (_, true, _, _) => GrantStatus::Revoked,
            (Some(g), _, _, _) if g.remaining_ms(now_ms) <= 0 => GrantStatus::Expired,
            (Some(g), _, _, marks) if revoked_by(&marks, g.issued_ms) => GrantStatus::Revoked,
            (Some(g), _, _, _) => GrantStatus::Live(Box::new(g)),
            (None, _, true, _) => GrantStatus::Expired,
            (None, _, false, _) => GrantStatus::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis_conn::Topology;

    /// The commands of `writes`, by name.
    fn names(writes: &[redis::Pipeline]) -> Vec<String> {
        writes
            .iter()
            .flat_map(redis::Pipeline::cmd_iter)
            .filter_map(|c| match c.args_iter().next() {
                Some(redis::Arg::Simple(name)) => Some(String::from_utf8_lossy(name).into()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn every_grant_is_indexed_and_kept_alive_and_a_sample_trims_every_dimension() {
        // Nothing is sent: index_writes only builds the commands.
        let store = RedisStore::new(Topology::Single("redis://127.0.0.1:1".into()), "p", 10);
        let now_ms = 1_700_000_000_000;
        let (mut trimmed, n) = (0, 4000);
        for i in 0..n {
            let g = crate::store::suite::grant_at(
                now_ms,
                &format!("j{i}"),
                "alice",
                "acme/api",
                "r",
                "ci",
                60,
            );
            let names = names(&store.index_writes(&g, now_ms));
            let count = |c: &str| names.iter().filter(|n| n.as_str() == c).count();
            // all, expiry and the four dimensions; each dimension kept a token lifetime.
            assert_eq!(count("ZADD"), 6, "{names:?}");
            assert_eq!(count("PEXPIRE"), 4, "{names:?}");
            match count("ZREMRANGEBYLEX") {
                0 => assert!(!trims_indexes(&g.jti)),
                4 => {
                    assert!(trims_indexes(&g.jti));
                    trimmed += 1;
                }
                other => panic!("{other} trims: {names:?}"),
            }
        }
        // One in TRIM_ONE_IN, give or take (4000 fixed ids: the count is fixed too).
        let expected = n / usize::from(TRIM_ONE_IN);
        assert!(
            trimmed > expected * 3 / 4 && trimmed < expected * 5 / 4,
            "{trimmed} of {n}"
        );
    }
}
