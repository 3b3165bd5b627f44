//! The `metrics` feature: every counter and histogram of the README's table is emitted with
//! the right labels and values, seen through metrics-util's debugging recorder.
#![cfg(feature = "metrics")]

mod common;

use std::collections::BTreeMap;

use common::{key, serve, Backend, Client};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// What was emitted, by `name{label=value,...}`.
#[derive(Default)]
struct Seen {
    counters: BTreeMap<String, u64>,
    /// How many values each histogram holds.
    histograms: BTreeMap<String, usize>,
    /// The values of `session_store_batch_size`.
    batch_sizes: Vec<f64>,
    gauges: BTreeMap<String, f64>,
}

fn read(snapshotter: &Snapshotter) -> Seen {
    let mut seen = Seen::default();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        match value {
            DebugValue::Counter(n) => {
                seen.counters.insert(name, n);
            }
            DebugValue::Histogram(values) => {
                if name == "session_store_batch_size{}" {
                    seen.batch_sizes = values.iter().map(|v| v.into_inner()).collect();
                }
                seen.histograms.insert(name, values.len());
            }
            DebugValue::Gauge(value) => {
                seen.gauges.insert(name, value.into_inner());
            }
        }
    }
    seen
}

#[actix_web::test]
async fn loads_saves_errors_and_latencies_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this binary");

    let mut backend = Backend::redis();
    let srv = serve(backend.sessions(key(1)));
    let mut client = Client::new(&srv);
    client.get("/set/a/1").await; // no cookie: a create, no load
    client.get("/set/a/2").await; // hit, update
    client.get("/get/a").await; // hit, keep
    client.get("/renew").await; // hit, renew
    client.get("/purge").await; // hit, delete
    client.send("/get/a", Some("sid=AAAA.BBBB")).await; // invalid
    client.get("/set/a/3").await; // create again
    let cookie = client.cookie_header();
    if let Backend::Redis(server, _) = &mut backend {
        server.stop();
    }
    assert_eq!(client.send("/get/a", cookie.as_deref()).await.status, 503); // error

    let Seen {
        counters,
        histograms,
        batch_sizes,
        gauges,
    } = read(&snapshotter);
    let count = |name: &str| counters.get(name).copied().unwrap_or(0);
    assert_eq!(
        count("session_loads_total{outcome=hit}"),
        4,
        "{counters:#?}"
    );
    assert_eq!(count("session_loads_total{outcome=invalid}"), 1);
    assert_eq!(count("session_loads_total{outcome=error}"), 1);
    assert_eq!(count("session_saves_total{kind=create,outcome=ok}"), 2);
    assert_eq!(
        count("session_saves_total{kind=update,outcome=ok}"),
        1,
        "{counters:#?}"
    );
    // The read, and the invalid cookie's fresh session (nothing to store).
    assert_eq!(count("session_saves_total{kind=keep,outcome=ok}"), 2);
    assert_eq!(count("session_saves_total{kind=renew,outcome=ok}"), 1);
    assert_eq!(count("session_saves_total{kind=delete,outcome=ok}"), 1);
    let errors: u64 = counters
        .iter()
        .filter(|(k, _)| k.starts_with("session_store_errors_total"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(errors, 1, "{counters:#?}");
    assert_eq!(
        histograms.get("session_store_latency_seconds{op=load}"),
        Some(&5)
    );
    assert_eq!(
        histograms.get("session_store_latency_seconds{op=save}"),
        Some(&7)
    );
    // The failed load was tried three times (the default retry policy).
    assert_eq!(count("session_store_retries_total{op=load}"), 2);
    // One request at a time: every batch held one request's commands. One batch per store
    // operation: 10 before the outage, 3 tries of the failed load.
    assert!(batch_sizes.iter().all(|n| *n == 1.0), "{batch_sizes:?}");
    assert_eq!(batch_sizes.len(), 13, "{batch_sizes:?}");
    assert_eq!(
        gauges.get("session_store_breaker_state{}"),
        None,
        "never moved"
    );

    // Four more failed loads make five in a row: the breaker opens (gauge 2), and the
    // next request fails at once.
    for _ in 0..4 {
        assert_eq!(client.send("/get/a", cookie.as_deref()).await.status, 503);
    }
    // (Each snapshot holds what was emitted since the one before.)
    let seen = read(&snapshotter);
    assert_eq!(seen.gauges.get("session_store_breaker_state{}"), Some(&2.0));
    assert_eq!(
        seen.counters.get("session_loads_total{outcome=error}"),
        Some(&4)
    );
    assert_eq!(client.send("/get/a", cookie.as_deref()).await.status, 503);
    let seen = read(&snapshotter);
    assert_eq!(
        seen.counters
            .get("session_store_errors_total{kind=circuit_open}"),
        Some(&1),
        "{:#?}",
        seen.counters
    );
    assert_eq!(
        seen.counters.get("session_loads_total{outcome=error}"),
        Some(&1)
    );
    let retries = seen.counters.get("session_store_retries_total{op=load}");
    assert_eq!(retries.copied().unwrap_or(0), 0, "failed at once: no retry");

    // With touch_after, a load that moves the idle timeout sends a touch.
    let backend = Backend::redis();
    let sessions = backend
        .builder(key(1))
        .touch_after(std::time::Duration::from_millis(1))
        .build()
        .unwrap();
    let srv = serve(sessions);
    let mut client = Client::new(&srv);
    client.get("/set/a/1").await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    client.get("/get/a").await;
    let counters = read(&snapshotter).counters;
    assert_eq!(
        counters.get("session_saves_total{kind=touch,outcome=sent}"),
        Some(&1),
        "{counters:#?}"
    );

    // The local cache: misses, hits, an invalidation, a flush, and the tracking gauge.
    let backend = Backend::cached(actix_redis_session::Transport::Multiplexed);
    let sessions = backend.sessions(key(1));
    let started = std::time::Instant::now();
    while !sessions.cache_stats().unwrap().tracking {
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let srv = serve(sessions.clone());
    let mut client = Client::new(&srv);
    client.get("/set/a/1").await;
    // Once Redis has echoed the create (and it was read again), the reads are hits.
    let started = std::time::Instant::now();
    while sessions.cache_stats().unwrap().refreshes == 0 {
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    client.get("/get/a").await;
    client.get("/get/a").await;
    // A change by hand (another service moving the TTL) evicts the cached copy.
    let server = backend.redis_server().unwrap();
    let [record] = server.keys().try_into().expect("one session record");
    let _: () = redis::cmd("PEXPIRE")
        .arg(&record)
        .arg(600_000)
        .query(&mut server.conn())
        .unwrap();
    let started = std::time::Instant::now();
    while sessions.cache_stats().unwrap().invalidations == 0 {
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let _: () = redis::cmd("FLUSHALL").query(&mut server.conn()).unwrap();
    let started = std::time::Instant::now();
    while sessions.cache_stats().unwrap().flushes == 0 {
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let seen = read(&snapshotter);
    let count = |name: &str| seen.counters.get(name).copied().unwrap_or(0);
    assert_eq!(
        count("session_cache_events_total{event=hit}"),
        2,
        "{:#?}",
        seen.counters
    );
    assert_eq!(count("session_cache_events_total{event=flush}"), 1);
    assert!(count("session_cache_events_total{event=invalidation}") >= 1);
    assert_eq!(seen.gauges.get("session_cache_tracking{}"), Some(&1.0));
    assert_eq!(
        (
            sessions.cache_stats().unwrap().hits,
            sessions.cache_stats().unwrap().flushes
        ),
        (2, 1)
    );
}
