//! The routing cache of reference §3.3: one [`Outcome`] per normalized identifier, each
//! with its own lifetime; concurrent misses for one key share a single lookup; at most
//! `cache_max_entries` entries.
//!
//! A miss starts the lookup as a task of its own, so a client that goes away mid-lookup
//! neither cancels it for the others waiting on it nor leaves the key stuck. Time is
//! `tokio::time`, so tests run it paused.
//!
//! Eviction, when an insert finds the cache full: expired entries go first; if that is
//! not enough, the oldest inserted go, down to 1/16 below the bound, so the scan is paid
//! once per many inserts.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// What a lookup concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The store named a declared destination.
    Mapped(Arc<str>),
    /// No row, an empty value or an undeclared destination: the default destination.
    Default,
    /// The store failed or timed out: the default destination, briefly.
    Transient,
}

/// How a key was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// From a live entry.
    Hit,
    /// This call started the lookup.
    Miss,
    /// Another call's lookup was in flight; this one shared it.
    Coalesced,
}

/// Counters for `/stats` and `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub coalesced: u64,
    pub entries: usize,
}

/// Lifetimes per outcome, and the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    pub positive_ttl: Duration,
    pub negative_ttl: Duration,
    pub transient_ttl: Duration,
    pub max_entries: usize,
}

impl CacheSettings {
    /// The longest a transient entry lives, whatever `negative_ttl` says.
    pub const TRANSIENT_MAX: Duration = Duration::from_secs(5);

    pub fn new(positive_ttl: Duration, negative_ttl: Duration, max_entries: u64) -> CacheSettings {
        CacheSettings {
            positive_ttl,
            negative_ttl,
            transient_ttl: negative_ttl.min(Self::TRANSIENT_MAX),
            max_entries: usize::try_from(max_entries).unwrap_or(usize::MAX),
        }
    }

    fn ttl(&self, outcome: &Outcome) -> Duration {
        match outcome {
            Outcome::Mapped(_) => self.positive_ttl,
            Outcome::Default => self.negative_ttl,
            Outcome::Transient => self.transient_ttl,
        }
    }
}

pub struct Cache {
    settings: CacheSettings,
    state: Mutex<State>,
    hits: AtomicU64,
    misses: AtomicU64,
    coalesced: AtomicU64,
}

#[derive(Default)]
struct State {
    ready: HashMap<Arc<str>, Entry>,
    /// Keys in insertion order, with the `seq` they were inserted under; a record whose
    /// seq no longer matches its entry is stale and skipped.
    order: VecDeque<(Arc<str>, u64)>,
    /// Lookups in flight: their id and the channel their outcome arrives on.
    pending: HashMap<Arc<str>, (u64, watch::Receiver<Option<Outcome>>)>,
    seq: u64,
}

struct Entry {
    outcome: Outcome,
    expires: Instant,
    seq: u64,
}

impl Cache {
    pub fn new(settings: CacheSettings) -> Cache {
        Cache {
            settings,
            state: Mutex::new(State::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
        }
    }

    pub fn settings(&self) -> &CacheSettings {
        &self.settings
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            coalesced: self.coalesced.load(Ordering::Relaxed),
            entries: self.lock().ready.len(),
        }
    }

    /// The outcome for `key`: a live entry, else the lookup in flight for it, else a new
    /// lookup made by `fetch` (run as a task; needs a tokio runtime).
    pub async fn get_or_fetch<F, Fut>(self: &Arc<Self>, key: &str, fetch: F) -> (Outcome, Source)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let (mut rx, source) = {
            let mut st = self.lock();
            if let Some(e) = st.ready.get(key) {
                if e.expires > Instant::now() {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return (e.outcome.clone(), Source::Hit);
                }
            }
            if let Some((_, rx)) = st.pending.get(key) {
                self.coalesced.fetch_add(1, Ordering::Relaxed);
                (rx.clone(), Source::Coalesced)
            } else {
                self.misses.fetch_add(1, Ordering::Relaxed);
                st.seq += 1;
                let id = st.seq;
                let key: Arc<str> = key.into();
                let (tx, rx) = watch::channel(None);
                st.pending.insert(Arc::clone(&key), (id, rx.clone()));
                drop(st);
                let lookup = fetch();
                let guard = Pending {
                    cache: Arc::clone(self),
                    key,
                    id,
                };
                tokio::spawn(async move {
                    let outcome = lookup.await;
                    guard.complete(outcome.clone());
                    let _ = tx.send(Some(outcome));
                });
                (rx, Source::Miss)
            }
        };
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            // The lookup task died (a panicking store): its guard unblocked the key.
            Err(_) => None,
        };
        (outcome.unwrap_or(Outcome::Transient), source)
    }

    /// Records in the eviction queue, stale ones included.
    #[cfg(test)]
    pub(super) fn queue_len(&self) -> usize {
        self.lock().order.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding the lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A lookup in flight, owned by its task. Completing it stores the outcome; dropping it
/// uncompleted (the task panicked) frees the key for the next caller.
struct Pending {
    cache: Arc<Cache>,
    key: Arc<str>,
    id: u64,
}

impl Pending {
    fn complete(self, outcome: Outcome) {
        let ttl = self.cache.settings.ttl(&outcome);
        let max = self.cache.settings.max_entries;
        let mut st = self.cache.lock();
        st.end_pending(&self.key, self.id);
        if ttl.is_zero() || max == 0 {
            return;
        }
        let now = Instant::now();
        if !st.ready.contains_key(&self.key) && st.ready.len() >= max {
            st.evict(now, max);
        }
        st.seq += 1;
        let seq = st.seq;
        st.ready.insert(
            Arc::clone(&self.key),
            Entry {
                outcome,
                expires: now + ttl,
                seq,
            },
        );
        st.order.push_back((Arc::clone(&self.key), seq));
        if st.order.len() > 2 * st.ready.len() + 1024 {
            st.compact();
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // A no-op after `complete`, which already ended it.
        self.cache.lock().end_pending(&self.key, self.id);
    }
}

impl State {
    fn end_pending(&mut self, key: &str, id: u64) {
        if self.pending.get(key).is_some_and(|(p, _)| *p == id) {
            self.pending.remove(key);
        }
    }

    /// Makes room for one entry: expired entries first, then the oldest.
    fn evict(&mut self, now: Instant, max: usize) {
        self.ready.retain(|_, e| e.expires > now);
        if self.ready.len() < max {
            return;
        }
        let target = max - (max / 16).max(1);
        while self.ready.len() > target {
            let Some((key, seq)) = self.order.pop_front() else {
                break;
            };
            if self.ready.get(&key).is_some_and(|e| e.seq == seq) {
                self.ready.remove(&key);
            }
        }
    }

    /// Drops stale records from `order`.
    fn compact(&mut self) {
        let mut live: Vec<(u64, Arc<str>)> = self
            .ready
            .iter()
            .map(|(k, e)| (e.seq, Arc::clone(k)))
            .collect();
        live.sort_unstable_by_key(|(seq, _)| *seq);
        self.order = live.into_iter().map(|(seq, k)| (k, seq)).collect();
    }
}
