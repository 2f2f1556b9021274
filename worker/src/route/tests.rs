//! The router and its cache with paused tokio time: lifetimes of each outcome,
//! coalesced misses, timeouts, eviction; the file store from a shipped table.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use postern_config::material::Material;
use postern_config::model::{Forwarding, Normalize, Protocol, TlsMode};
use tokio::time::Instant;

use super::*;
use crate::sasl::{decode_login, decode_plain};
use crate::testutil;

/// What the fake store answers for a key.
#[derive(Clone)]
enum Answer {
    Row(&'static str),
    Fail,
    Hang,
    Panic,
}

/// A store that counts its lookups and answers after `delay`.
struct FakeStore {
    calls: AtomicUsize,
    per_key: Mutex<HashMap<String, usize>>,
    delay: Duration,
    answers: Mutex<HashMap<&'static str, Answer>>,
}

impl FakeStore {
    fn new(delay: Duration, answers: &[(&'static str, Answer)]) -> Arc<FakeStore> {
        Arc::new(FakeStore {
            calls: AtomicUsize::new(0),
            per_key: Mutex::new(HashMap::new()),
            delay,
            answers: Mutex::new(answers.iter().cloned().collect()),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn calls_for(&self, key: &str) -> usize {
        self.per_key.lock().unwrap().get(key).copied().unwrap_or(0)
    }

    fn set(&self, key: &'static str, answer: Answer) {
        self.answers.lock().unwrap().insert(key, answer);
    }
}

impl MappingStore for FakeStore {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn lookup<'a>(&'a self, identifier: &'a str) -> Lookup<'a> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        *self
            .per_key
            .lock()
            .unwrap()
            .entry(identifier.to_owned())
            .or_default() += 1;
        let answer = self.answers.lock().unwrap().get(identifier).cloned();
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            match answer {
                None => Ok(None),
                Some(Answer::Row(d)) => Ok(Some(d.to_owned())),
                Some(Answer::Fail) => Err(StoreError::Message {
                    store: "fake",
                    message: "connection refused".into(),
                }),
                Some(Answer::Hang) => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(None)
                }
                Some(Answer::Panic) => panic!("store bug"),
            }
        })
    }
}

const IMAP: (Protocol, u16, TlsMode, Forwarding) =
    (Protocol::Imap, 143, TlsMode::Plain, Forwarding::None);

/// Destinations `old` (the default) and `new`; TTLs 600 s / 30 s; timeout 5 s.
fn config() -> Config {
    let mut c = testutil::config(
        vec![testutil::listener("imap", Protocol::Imap, TlsMode::Plain)],
        vec![
            testutil::destination("old", "old.example.com", &[IMAP]),
            testutil::destination("new", "new.example.com", &[IMAP]),
        ],
    );
    c.routing.master_user_separators = vec!["%".into()];
    c.mapping.normalize = Normalize::Lowercase;
    c.mapping.positive_ttl = Duration::from_secs(600);
    c.mapping.negative_ttl = Duration::from_secs(30);
    c.mapping.lookup_timeout = Duration::from_secs(5);
    c.mapping.cache_max_entries = 1000;
    c
}

fn router(config: &Config, store: &Arc<FakeStore>) -> Router {
    Router::new(config, Arc::clone(store) as Arc<dyn MappingStore>)
}

fn mapped(dest: &str, cached: bool) -> Route {
    Route {
        destination: dest.into(),
        routed_to_default: false,
        cached,
    }
}

fn default(cached: bool) -> Route {
    Route {
        destination: "old".into(),
        routed_to_default: true,
        cached,
    }
}

#[tokio::test(start_paused = true)]
async fn mapped_entries_live_for_positive_ttl() {
    let store = FakeStore::new(Duration::ZERO, &[("alice@x", Answer::Row("new"))]);
    let r = router(&config(), &store);
    assert_eq!(r.resolve("alice@x").await, mapped("new", false));
    assert_eq!(r.resolve("alice@x").await, mapped("new", true));
    tokio::time::advance(Duration::from_secs(599)).await;
    assert_eq!(r.resolve("alice@x").await, mapped("new", true));
    assert_eq!(store.calls(), 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(r.resolve("alice@x").await, mapped("new", false));
    assert_eq!(store.calls(), 2);
    let stats = r.stats();
    assert_eq!((stats.hits, stats.misses, stats.entries), (2, 2, 1));
}

#[tokio::test(start_paused = true)]
async fn no_row_empty_value_and_undeclared_destination_are_default_for_negative_ttl() {
    let store = FakeStore::new(
        Duration::ZERO,
        &[
            ("empty@x", Answer::Row("")),
            ("blank@x", Answer::Row("  ")),
            ("typo@x", Answer::Row("neww")),
        ],
    );
    let r = router(&config(), &store);
    for id in ["nobody@x", "empty@x", "blank@x", "typo@x"] {
        assert_eq!(r.resolve(id).await, default(false), "{id}");
        assert_eq!(r.resolve(id).await, default(true), "{id}");
    }
    assert_eq!(store.calls(), 4);
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(r.resolve("typo@x").await, default(true));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(r.resolve("typo@x").await, default(false));
    assert_eq!(store.calls_for("typo@x"), 2);
    // Once the row is fixed, the next lookup after expiry maps it.
    store.set("typo@x", Answer::Row("new"));
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(r.resolve("typo@x").await, mapped("new", false));
}

#[tokio::test(start_paused = true)]
async fn a_mapped_value_is_trimmed() {
    let store = FakeStore::new(Duration::ZERO, &[("a@x", Answer::Row("new\n"))]);
    let r = router(&config(), &store);
    assert_eq!(r.resolve("a@x").await, mapped("new", false));
}

#[tokio::test(start_paused = true)]
async fn store_error_is_transient_for_at_most_five_seconds() {
    let store = FakeStore::new(Duration::ZERO, &[("a@x", Answer::Fail)]);
    let r = router(&config(), &store);
    assert_eq!(r.resolve("a@x").await, default(false));
    tokio::time::advance(Duration::from_millis(4999)).await;
    assert_eq!(r.resolve("a@x").await, default(true));
    tokio::time::advance(Duration::from_millis(1)).await;
    store.set("a@x", Answer::Row("new"));
    assert_eq!(r.resolve("a@x").await, mapped("new", false));
    assert_eq!(store.calls(), 2);

    // With a shorter negative_ttl, that is the transient lifetime.
    let mut c = config();
    c.mapping.negative_ttl = Duration::from_secs(2);
    let store = FakeStore::new(Duration::ZERO, &[("a@x", Answer::Fail)]);
    let r = router(&c, &store);
    assert_eq!(r.resolve("a@x").await, default(false));
    tokio::time::advance(Duration::from_millis(1999)).await;
    assert_eq!(r.resolve("a@x").await, default(true));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(r.resolve("a@x").await, default(false));
    assert_eq!(store.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn lookup_timeout_is_transient_and_routes_to_default() {
    let store = FakeStore::new(Duration::ZERO, &[("slow@x", Answer::Hang)]);
    let r = router(&config(), &store);
    let start = Instant::now();
    assert_eq!(r.resolve("slow@x").await, default(false));
    assert_eq!(start.elapsed(), Duration::from_secs(5), "lookup_timeout");
    // Cached as transient: 5 s.
    assert_eq!(r.resolve("slow@x").await, default(true));
    tokio::time::advance(Duration::from_secs(5)).await;
    store.set("slow@x", Answer::Row("new"));
    assert_eq!(r.resolve("slow@x").await, mapped("new", false));
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_share_one_lookup() {
    let store = FakeStore::new(
        Duration::from_millis(100),
        &[("alice@x", Answer::Row("new"))],
    );
    let r = Arc::new(router(&config(), &store));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let r = Arc::clone(&r);
        tasks.spawn(async move { r.resolve("alice@x").await });
    }
    // And one for another key, which is not coalesced with them.
    let other = {
        let r = Arc::clone(&r);
        tokio::spawn(async move { r.resolve("bob@x").await })
    };
    let mut routes = Vec::new();
    while let Some(route) = tasks.join_next().await {
        routes.push(route.unwrap());
    }
    assert_eq!(routes.len(), 50);
    assert!(
        routes.iter().all(|rt| *rt == mapped("new", false)),
        "{routes:?}"
    );
    assert_eq!(other.await.unwrap(), default(false));
    assert_eq!(store.calls_for("alice@x"), 1);
    assert_eq!(store.calls(), 2);
    let stats = r.stats();
    assert_eq!((stats.misses, stats.coalesced, stats.hits), (2, 49, 0));
    assert_eq!(r.resolve("alice@x").await, mapped("new", true));
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_goes_away_does_not_cancel_the_shared_lookup() {
    let store = FakeStore::new(
        Duration::from_millis(100),
        &[("alice@x", Answer::Row("new"))],
    );
    let r = router(&config(), &store);
    // The first caller gives up after 10 ms.
    assert!(
        tokio::time::timeout(Duration::from_millis(10), r.resolve("alice@x"))
            .await
            .is_err()
    );
    // A later one joins the same lookup.
    assert_eq!(r.resolve("alice@x").await, mapped("new", false));
    assert_eq!(store.calls(), 1);
    assert_eq!(r.stats().coalesced, 1);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_store_routes_to_default_and_frees_the_key() {
    let store = FakeStore::new(Duration::ZERO, &[("bug@x", Answer::Panic)]);
    let r = router(&config(), &store);
    assert_eq!(r.resolve("bug@x").await, default(false));
    store.set("bug@x", Answer::Row("new"));
    assert_eq!(r.resolve("bug@x").await, mapped("new", false));
    assert_eq!(store.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_cache_is_bounded_and_drops_expired_entries_first() {
    let mut c = config();
    c.mapping.cache_max_entries = 3;
    let store = FakeStore::new(
        Duration::ZERO,
        &[("b@x", Answer::Row("new")), ("c@x", Answer::Row("new"))],
    );
    let r = router(&c, &store);
    r.resolve("a@x").await; // Default: 30 s
    r.resolve("b@x").await; // Mapped: 600 s
    r.resolve("c@x").await;
    assert_eq!(r.stats().entries, 3);
    tokio::time::advance(Duration::from_secs(30)).await;
    r.resolve("d@x").await;
    assert_eq!(r.stats().entries, 3);
    // The expired `a` went; `b` and `c` stayed.
    assert!(r.resolve("b@x").await.cached);
    assert!(r.resolve("c@x").await.cached);
    assert!(r.resolve("d@x").await.cached);

    // Nothing expired: the oldest go.
    r.resolve("e@x").await;
    assert!(r.stats().entries <= 3);
    assert!(r.resolve("e@x").await.cached);
    assert!(!r.resolve("b@x").await.cached, "oldest evicted");
    assert_eq!(store.calls_for("b@x"), 2);

    // Many distinct keys never grow it past the bound.
    let names: Vec<String> = (0..500).map(|i| format!("user{i}@x")).collect();
    for n in &names {
        r.resolve(n).await;
        assert!(r.stats().entries <= 3);
    }
    assert!(r.resolve(&names[499]).await.cached, "newest kept");
}

#[tokio::test(start_paused = true)]
async fn refreshed_keys_do_not_grow_the_eviction_queue() {
    let mut c = config();
    c.mapping.negative_ttl = Duration::from_secs(1);
    let store = FakeStore::new(Duration::ZERO, &[]);
    let r = router(&c, &store);
    for _ in 0..5000 {
        r.resolve("a@x").await;
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert_eq!(store.calls(), 5000);
    assert_eq!(r.stats().entries, 1);
    let queued = r.cache.queue_len();
    assert!(queued <= 2 + 1024 + 1, "{queued}");
}

#[tokio::test(start_paused = true)]
async fn zero_capacity_or_zero_ttl_caches_nothing() {
    let mut c = config();
    c.mapping.cache_max_entries = 0;
    let store = FakeStore::new(Duration::ZERO, &[("a@x", Answer::Row("new"))]);
    let r = router(&c, &store);
    assert_eq!(r.resolve("a@x").await, mapped("new", false));
    assert_eq!(r.resolve("a@x").await, mapped("new", false));
    assert_eq!(store.calls(), 2);

    let mut c = config();
    c.mapping.negative_ttl = Duration::ZERO;
    let store = FakeStore::new(Duration::ZERO, &[("f@x", Answer::Fail)]);
    let r = router(&c, &store);
    r.resolve("f@x").await;
    r.resolve("nobody@x").await;
    r.resolve("f@x").await;
    r.resolve("nobody@x").await;
    assert_eq!(store.calls(), 4);
    assert_eq!(r.stats().entries, 0);
}

#[tokio::test(start_paused = true)]
async fn route_reads_the_identifier_from_credentials() {
    let store = FakeStore::new(Duration::ZERO, &[("alice@x", Answer::Row("new"))]);
    let r = router(&config(), &store);
    // Master user cut, normalized.
    let c = decode_login(b"Alice@X%admin", b"pw").unwrap();
    let (id, route) = r.route(&c).await.unwrap();
    assert_eq!(id.as_deref(), Some("alice@x"));
    assert_eq!(route, mapped("new", false));
    // PLAIN with an authzid routes by it.
    let c = decode_plain(b"alice@x\0admin@x\0pw").unwrap();
    assert_eq!(r.route(&c).await.unwrap().1, mapped("new", true));
    // No identifier: default, without asking the store.
    let c = crate::sasl::decode_xoauth2(b"user=x\x01auth=Bearer opaque\x01\x01").unwrap();
    assert_eq!(r.route(&c).await.unwrap(), (None, default(false)));
    assert_eq!(store.calls(), 1);
    // Unsafe identifier: refused.
    let c = decode_login(b"al ice@x", b"pw").unwrap();
    assert_eq!(r.route(&c).await, Err(IdentityError::Unsafe));
}

fn hello_with_table(text: &str) -> Hello {
    let config = config();
    let table = postern_config::validate::parse_mapping_file(&config, text).unwrap();
    let material = Material {
        mapping: Some(table),
        ..Material::default()
    };
    testutil::hello(config, material, "imap")
}

#[tokio::test(start_paused = true)]
async fn file_store_from_the_shipped_table() {
    let text = "# identifier  destination\n\n  Alice@Example.COM   new   # moved\n\t\n# bob stays\nbob@example.com old\nCAROL@example.com\tnew\n";
    let hello = hello_with_table(text);
    assert_eq!(
        format!("{:?}", hello.material.mapping),
        "Some(MappingTable(3 rows))"
    );
    let r = Router::from_hello(&hello).unwrap();
    let login = |u: &str| decode_login(u.as_bytes(), b"pw").unwrap();
    for (user, want) in [
        ("alice@example.com", mapped("new", false)),
        ("ALICE@example.com", mapped("new", true)),
        ("carol@EXAMPLE.com%admin", mapped("new", false)),
        ("bob@example.com", mapped("old", false)),
        ("dave@example.com", default(false)),
    ] {
        assert_eq!(r.route(&login(user)).await.unwrap().1, want, "{user}");
    }
    let store = FileStore::new(hello.material.mapping.clone().unwrap());
    assert_eq!(store.len(), 3);
    assert_eq!(format!("{store:?}"), "FileStore(3 rows)");
    assert_eq!(
        store.lookup("alice@example.com").await.unwrap().as_deref(),
        Some("new")
    );
    assert_eq!(store.lookup("Alice@Example.COM").await.unwrap(), None);
}

#[test]
fn router_from_hello_needs_a_table_for_the_file_store() {
    let hello = testutil::hello(config(), Material::default(), "imap");
    assert_eq!(Router::from_hello(&hello).err(), Some(RouteError::NoTable));
    let mut config = config();
    config.mapping.source = MappingSource::Redis {
        url: "redis://127.0.0.1".into(),
        key_prefix: "route:".into(),
        pool_size: 1,
    };
    let hello = testutil::hello(config, Material::default(), "imap");
    assert_eq!(
        Router::from_hello(&hello).err(),
        Some(RouteError::Unsupported { kind: "redis" })
    );
}

#[test]
fn transient_lifetime_is_capped() {
    let s = CacheSettings::new(Duration::from_secs(600), Duration::from_secs(30), 10);
    assert_eq!(s.transient_ttl, Duration::from_secs(5));
    let s = CacheSettings::new(Duration::from_secs(600), Duration::from_secs(1), u64::MAX);
    assert_eq!(s.transient_ttl, Duration::from_secs(1));
    assert_eq!(s.max_entries, usize::MAX);
}
