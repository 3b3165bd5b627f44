//! The resilience layer against real redis-server processes over real HTTP: retries that
//! hide a Redis restart, a circuit breaker that opens during an outage, fails fast, probes
//! once and closes after it, a store budget that bounds every request, and a full Redis
//! that refuses writes with a clear error while reads go on. Both transports.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_redis_session::{
    BreakerState, CircuitBreaker, RedisSession, RedisSessionBuilder, Retry, StoreErrorKind,
    Transport,
};
use common::{
    all_at_once, blackhole::Blackhole, key, logs::capture_logs, serve, serve_concurrent, Client,
    RedisServer,
};

const TRANSPORTS: [Transport; 2] = [Transport::Pool, Transport::Multiplexed];

/// The kinds of the store errors `on_store_failure` was told of.
type Seen = Arc<Mutex<Vec<StoreErrorKind>>>;

/// A builder for `url` over `transport` with short timeouts, which tells `seen` of every
/// store failure.
fn builder(url: String, transport: Transport, seen: &Seen) -> RedisSessionBuilder {
    let seen = Arc::clone(seen);
    RedisSession::builder(url, key(1))
        .transport(transport)
        .checkout_timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_millis(300))
        .command_timeout(Duration::from_millis(300))
        .on_store_failure(move |_, e| seen.lock().unwrap().push(e.kind()))
}

fn taken(seen: &Seen) -> Vec<StoreErrorKind> {
    std::mem::take(&mut *seen.lock().unwrap())
}

fn redis_cmd(server: &RedisServer, args: &[&str]) {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query::<redis::Value>(&mut server.conn()).unwrap();
}

async fn sleep_ms(ms: u64) {
    actix_rt::time::sleep(Duration::from_millis(ms)).await;
}

#[actix_web::test]
async fn a_redis_restart_costs_no_request_on_either_transport() {
    for transport in TRANSPORTS {
        let mut server = RedisServer::start_tcp();
        let seen = Seen::default();
        let sessions = builder(server.url(), transport, &seen)
            .capacity(8)
            .build()
            .unwrap();
        let srv = serve_concurrent(sessions);
        let client = Client::new(&srv);
        // Several connections open and idle (the pool's), or one per worker (multiplexed).
        let paths: Vec<String> = (0..32).map(|i| format!("/set/k/{i}")).collect();
        for res in all_at_once(&client, &paths, "x=y").await {
            assert_eq!(res.status, 200);
        }
        // Every one of them is dead after this.
        server.restart();
        for i in 0..20 {
            let res = Client::new(&srv).get("/count").await;
            assert_eq!(
                res.status, 200,
                "{transport:?}: request {i} after the restart"
            );
        }
        assert_eq!(taken(&seen), [], "{transport:?}");
    }

    // Without retries the pool's first batch meets a dead connection and fails; the ones
    // after it do not: the connections opened before it are retired unused.
    let mut server = RedisServer::start_tcp();
    let seen = Seen::default();
    let sessions = builder(server.url(), Transport::Pool, &seen)
        .capacity(8)
        .retry(Retry::disabled())
        .build()
        .unwrap();
    let srv = serve_concurrent(sessions);
    let client = Client::new(&srv);
    let paths: Vec<String> = (0..32).map(|i| format!("/set/k/{i}")).collect();
    all_at_once(&client, &paths, "x=y").await;
    server.restart();
    assert_eq!(Client::new(&srv).get("/count").await.status, 503);
    assert_eq!(taken(&seen), [StoreErrorKind::Unavailable]);
    for i in 0..10 {
        let res = Client::new(&srv).get("/count").await;
        assert_eq!(res.status, 200, "request {i} after the failed one");
    }
}

#[actix_web::test]
async fn the_breaker_opens_in_an_outage_probes_once_and_closes_after_it() {
    let logs = capture_logs();
    for transport in TRANSPORTS {
        let mut server = RedisServer::start_tcp();
        let seen = Seen::default();
        let sessions = builder(server.url(), transport, &seen)
            .circuit_breaker(
                CircuitBreaker::new()
                    .failures(3)
                    .cool_down(Duration::from_millis(1500)),
            )
            .build()
            .unwrap();
        let srv = serve_concurrent(sessions.clone());
        let mut client = Client::new(&srv);
        assert_eq!(client.get("/set/a/1").await.status, 200);
        let cookie = client.cookie_header();
        assert_eq!(sessions.store_health().state(), BreakerState::Closed);

        server.stop();
        // Three loads in a row fail (each after its retries): the breaker opens.
        for _ in 0..3 {
            let res = client.send("/get/a", cookie.as_deref()).await;
            assert_eq!(res.status, 503);
        }
        let health = sessions.store_health();
        assert_eq!(health.state(), BreakerState::Open, "{transport:?}");
        assert_eq!(health.consecutive_failures(), 3);
        assert!(!health.is_available());
        assert_eq!(
            taken(&seen),
            [StoreErrorKind::Unavailable; 3],
            "{transport:?}"
        );

        // Open: answered at once, without asking Redis, 503 with Retry-After.
        let res = client.send("/get/a", cookie.as_deref()).await;
        assert_eq!(res.status, 503);
        assert_eq!(res.retry_after.as_deref(), Some("1"));
        assert_eq!(taken(&seen), [StoreErrorKind::CircuitOpen]);
        // A request that needs no session is not touched by any of this.
        assert_eq!(client.send("/plain", cookie.as_deref()).await.status, 200);

        // After the cool-down one request probes (Redis is still down: it fails, after its
        // retries); the others that came meanwhile failed at once.
        sleep_ms(1600).await;
        let paths = vec!["/get/a".to_owned(); 10];
        let answers = all_at_once(&client, &paths, cookie.as_deref().unwrap()).await;
        assert!(answers.iter().all(|res| res.status == 503));
        let mut kinds = taken(&seen);
        kinds.sort_by_key(|kind| *kind == StoreErrorKind::CircuitOpen);
        assert_eq!(kinds[0], StoreErrorKind::Unavailable, "{kinds:?}");
        assert_eq!(kinds[1..], [StoreErrorKind::CircuitOpen; 9], "{kinds:?}");
        assert_eq!(sessions.store_health().state(), BreakerState::Open);

        // Redis back (empty: no persistence); after the cool-down the probe succeeds and
        // the breaker closes; every request after it is served.
        server.restart();
        sleep_ms(1600).await;
        let res = client.get("/count").await;
        assert_eq!(res.status, 200, "{transport:?}");
        let health = sessions.store_health();
        assert_eq!(health.state(), BreakerState::Closed);
        assert_eq!(health.consecutive_failures(), 0);
        for _ in 0..5 {
            assert_eq!(client.get("/count").await.status, 200);
        }
        assert_eq!(taken(&seen), []);
    }
    let logged = logs.lock().unwrap().clone();
    for event in [
        "retrying",
        "circuit breaker open, requests fail fast",
        "circuit breaker half-open",
        "circuit breaker open again",
        "circuit breaker closed",
    ] {
        assert!(logged.contains(event), "{event:?} is not in the log");
    }
}

#[actix_web::test]
async fn an_open_breaker_fails_fast_where_each_attempt_would_wait_out_its_timeout() {
    // A Redis that never accepts: every connect waits out the 300 ms connect timeout.
    let hole = Blackhole::new();
    for transport in TRANSPORTS {
        let seen = Seen::default();
        let sessions = builder(hole.url(), transport, &seen)
            .retry(Retry::disabled())
            .circuit_breaker(
                CircuitBreaker::new()
                    .failures(2)
                    .cool_down(Duration::from_secs(60)),
            )
            .build()
            .unwrap();
        let srv = serve(sessions.clone());
        let mut client = Client::new(&srv);
        for _ in 0..2 {
            let started = Instant::now();
            assert_eq!(client.get("/count").await.status, 503);
            let waited = started.elapsed();
            assert!(
                waited >= Duration::from_millis(250),
                "{transport:?}: {waited:?}"
            );
        }
        assert_eq!(sessions.store_health().state(), BreakerState::Open);
        for _ in 0..20 {
            let started = Instant::now();
            assert_eq!(client.get("/count").await.status, 503);
            let waited = started.elapsed();
            // No connect attempt (which waits 300 ms), whatever the machine's load.
            assert!(
                waited < Duration::from_millis(250),
                "{transport:?}: {waited:?}"
            );
        }
        let kinds = taken(&seen);
        assert_eq!(kinds.len(), 22);
        assert!(kinds[2..].iter().all(|k| *k == StoreErrorKind::CircuitOpen));
    }
}

#[actix_web::test]
async fn the_store_budget_bounds_every_request_of_a_stalled_redis() {
    for transport in TRANSPORTS {
        let server = RedisServer::start();
        let seen = Seen::default();
        let sessions = builder(server.url(), transport, &seen)
            // One attempt could wait 2 s; the request may wait 500 ms in all.
            .command_timeout(Duration::from_secs(2))
            .store_budget(Duration::from_millis(500))
            .circuit_breaker(CircuitBreaker::disabled())
            .build()
            .unwrap();
        let srv = serve_concurrent(sessions);
        let mut client = Client::new(&srv);
        assert_eq!(client.get("/set/a/1").await.status, 200);
        redis_cmd(&server, &["CLIENT", "PAUSE", "2500", "ALL"]);
        let paths = vec!["/increment/n".to_owned(); 8];
        let started = Instant::now();
        let answers = all_at_once(&client, &paths, &client.cookie_header().unwrap()).await;
        let waited = started.elapsed();
        assert!(answers.iter().all(|res| res.status == 503), "{transport:?}");
        assert!(
            waited < Duration::from_millis(1200),
            "{transport:?}: {waited:?}"
        );
        let kinds = taken(&seen);
        assert!(!kinds.is_empty(), "{transport:?}");
        assert!(
            kinds.iter().all(|k| *k == StoreErrorKind::Timeout),
            "{kinds:?}"
        );
        // After the pause the same application serves again, without a restart.
        sleep_ms(2700).await;
        let mut served = false;
        for _ in 0..30 {
            if client.get("/get/a").await.status == 200 {
                served = true;
                break;
            }
            sleep_ms(100).await;
        }
        assert!(served, "{transport:?}: served again after the pause");
        assert_eq!(client.get("/get/a").await.body, "\"1\"");
    }
}

#[actix_web::test]
async fn a_full_redis_refuses_writes_with_a_clear_error_and_reads_go_on() {
    for transport in TRANSPORTS {
        let server = RedisServer::start();
        let seen = Seen::default();
        let sessions = builder(server.url(), transport, &seen).build().unwrap();
        let srv = serve(sessions.clone());
        let mut client = Client::new(&srv);
        assert_eq!(client.get("/set/a/1").await.status, 200);
        redis_cmd(
            &server,
            &["CONFIG", "SET", "maxmemory-policy", "noeviction"],
        );
        redis_cmd(&server, &["CONFIG", "SET", "maxmemory", "1"]);

        for _ in 0..8 {
            assert_eq!(client.get("/get/a").await.body, "\"1\"", "{transport:?}");
            assert_eq!(client.get("/set/a/2").await.status, 503, "{transport:?}");
            assert_eq!(Client::new(&srv).get("/set/b/1").await.status, 503);
        }
        let kinds = taken(&seen);
        assert_eq!(kinds, [StoreErrorKind::Full; 16], "{transport:?}");
        // Redis answered every time: no outage, the breaker stays closed.
        assert_eq!(sessions.store_health().state(), BreakerState::Closed);
        assert_eq!(sessions.store_health().consecutive_failures(), 0);
        // Signing out still works (DEL is allowed over maxmemory).
        assert_eq!(client.get("/purge").await.status, 200);
        assert!(server.keys().is_empty());

        redis_cmd(&server, &["CONFIG", "SET", "maxmemory", "0"]);
        assert_eq!(client.get("/set/a/2").await.status, 200);
        assert_eq!(client.get("/get/a").await.body, "\"2\"");
    }
}
