//! The limits kept in this process: one GCRA state per (limiter, key) in a bounded table.
//! Used with the memory store (`jit-broker dev`, tests); each replica would count alone.
//!
//! Memory is bounded: the table tracks at most [`MAX_KEYS`] keys (about 100 bytes each).
//! When it is full, a sweep (at most one per [`SWEEP_EVERY_MS`], so a flood of new keys
//! cannot make every request scan it) drops the keys that are full again (their TAT is
//! behind `now`) — dropping one changes nothing: a new key starts full (refusals not yet
//! summarised are then only in the metric). If the sweep frees nothing, a new key is refused
//! (fail closed; counted under the limiter's label) until keys fall idle.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Backend, LimitError, Limited, Rule, SUMMARY_WINDOW_MS, fit, retry_secs};

/// Most keys tracked by one table.
pub const MAX_KEYS: usize = 100_000;

/// Least time between two sweeps of a full table.
pub const SWEEP_EVERY_MS: i64 = 1_000;

#[derive(Debug, Clone, Copy)]
struct State {
    /// Theoretical arrival time, in µs since the epoch.
    tat_us: i64,
    /// Refusals since the last summary.
    over: u64,
    /// When the last summary was due (`i64::MIN`: never).
    summarised_ms: i64,
}

#[derive(Debug, Default)]
struct Table {
    states: HashMap<(&'static str, String), State>,
    last_sweep_ms: Option<i64>,
}

/// GCRA states in a bounded in-process table.
#[derive(Debug)]
pub struct MemoryGcra {
    max_keys: usize,
    table: Mutex<Table>,
}

impl Default for MemoryGcra {
    fn default() -> Self {
        Self::with_max_keys(MAX_KEYS)
    }
}

impl MemoryGcra {
    /// A table tracking at most `max_keys` keys.
    pub fn with_max_keys(max_keys: usize) -> Self {
        Self {
            max_keys: max_keys.max(1),
            table: Mutex::new(Table::default()),
        }
    }

    /// How many keys are tracked.
    pub fn len(&self) -> usize {
        match self.table.lock() {
            Ok(g) => g.states.len(),
            Err(p) => p.into_inner().states.len(),
        }
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take_now(&self, rule: &Rule, key: &str, now_ms: i64, want: u32) -> Result<u32, Limited> {
        let now_us = now_ms.saturating_mul(1000);
        let mut table = match self.table.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let id = (rule.name, key.to_owned());
        if !table.states.contains_key(&id) && table.states.len() >= self.max_keys {
            let due = table
                .last_sweep_ms
                .is_none_or(|t| now_ms.saturating_sub(t) >= SWEEP_EVERY_MS);
            if due {
                table.last_sweep_ms = Some(now_ms);
                table.states.retain(|_, s| s.tat_us > now_us);
            }
            if table.states.len() >= self.max_keys {
                let wait_ms =
                    SWEEP_EVERY_MS - now_ms.saturating_sub(table.last_sweep_ms.unwrap_or(now_ms));
                return Err(Limited {
                    retry_after: retry_secs(wait_ms.max(1).saturating_mul(1000)),
                    summary: None,
                });
            }
        }
        let state = table.states.entry(id).or_insert(State {
            tat_us: now_us,
            over: 0,
            summarised_ms: i64::MIN,
        });
        let wait_us = match fit(rule, state.tat_us, now_us, want) {
            Ok((n, tat_us)) => {
                state.tat_us = tat_us;
                return Ok(n);
            }
            Err(wait_us) => wait_us,
        };
        state.over += 1;
        let summary = if now_ms.saturating_sub(state.summarised_ms) >= SUMMARY_WINDOW_MS {
            state.summarised_ms = now_ms;
            Some(std::mem::take(&mut state.over))
        } else {
            None
        };
        Err(Limited {
            retry_after: retry_secs(wait_us),
            summary,
        })
    }
}

#[async_trait]
impl Backend for MemoryGcra {
    async fn take_up_to(
        &self,
        rule: &Rule,
        key: &str,
        now_ms: i64,
        want: u32,
    ) -> Result<Result<u32, Limited>, LimitError> {
        Ok(self.take_now(rule, key, now_ms, want))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::suite;

    #[tokio::test]
    async fn shared_suite() {
        suite::run_all(|| async { Box::new(MemoryGcra::default()) as Box<dyn Backend> }).await;
    }

    /// The table never holds more than its bound: idle keys are swept (at most once per
    /// sweep interval), and while none is idle a new key is refused, not added.
    #[test]
    fn the_table_is_bounded_and_sweeps_idle_keys() {
        let b = MemoryGcra::with_max_keys(100);
        let rule = Rule::new("t", 60, 1);
        for i in 0..100 {
            assert_eq!(b.take_now(&rule, &format!("k{i}"), 0, 1), Ok(1));
        }
        assert_eq!(b.len(), 100);
        // Full and nothing idle yet: a new key is refused, the table does not grow.
        assert!(b.take_now(&rule, "new", 10, 1).is_err());
        assert_eq!(b.len(), 100);
        // A second later every key is full again (idle): the sweep drops them.
        assert_eq!(b.take_now(&rule, "new", 1_010, 1), Ok(1));
        assert_eq!(b.len(), 1);
        // Thousands of times more distinct keys than the bound, over time: never more held.
        for i in 0..200_000i64 {
            let _ = b.take_now(&rule, &format!("m{i}"), 2_000 + i / 50, 1);
            if i % 10_000 == 0 {
                assert!(b.len() <= 100);
            }
        }
        assert!(b.len() <= 100);
    }
}
