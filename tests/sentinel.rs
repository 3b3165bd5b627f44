//! Redis Sentinel: a real deployment on loopback (master, replica, three sentinels, started
//! by the test), sessions written through the middleware, then a failover, asked for
//! (`SENTINEL FAILOVER`) and forced (the master killed): sessions written and replicated
//! before are read after, and writes work again on the new master within a bound; on both
//! transports.
#![cfg(feature = "sentinel")]

mod common;

use std::time::{Duration, Instant};

use actix_redis_session::{RedisSession, Transport};

use self::common::{
    key,
    sentinel::{SentinelSetup, DOWN_AFTER, MASTER_NAME},
    serve_concurrent, Client,
};

/// How long after the sentinels have promoted the replica every request must succeed: the
/// retries of the requests that met the old master, and a new connection.
const SETTLE: Duration = Duration::from_secs(3);

fn sessions(setup: &SentinelSetup, transport: Transport) -> RedisSession {
    RedisSession::builder_sentinel(setup.sentinel_urls(), MASTER_NAME, key(1))
        .transport(transport)
        .connect_timeout(Duration::from_millis(300))
        .command_timeout(Duration::from_millis(500))
        .checkout_timeout(Duration::from_millis(500))
        .build()
        .expect("valid sentinel configuration")
}

/// The same, answering a write as saved only once the replica has it.
fn waiting_sessions(setup: &SentinelSetup, transport: Transport) -> RedisSession {
    RedisSession::builder_sentinel(setup.sentinel_urls(), MASTER_NAME, key(1))
        .transport(transport)
        .connect_timeout(Duration::from_millis(300))
        .command_timeout(Duration::from_millis(500))
        .wait_for_replicas(1, Duration::from_millis(200))
        .build()
        .expect("valid sentinel configuration")
}

/// Waits until the replica has every write the master acknowledged (what `WAIT` would
/// make sure of per request).
fn replicated(setup: &SentinelSetup) {
    let offset = |url: String, field: &str| -> Option<i64> {
        let mut conn = redis::Client::open(url).ok()?.get_connection().ok()?;
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut conn)
            .ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().parse().ok())
    };
    let master = setup.master().url();
    let replica = setup
        .nodes
        .iter()
        .find(|n| n.url() != master)
        .unwrap()
        .url();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = offset(master.clone(), "master_repl_offset:");
        let r = offset(replica.clone(), "slave_repl_offset:");
        if m.is_some() && m == r {
            return;
        }
        assert!(Instant::now() < deadline, "replica behind: {m:?} vs {r:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn write_sessions(srv: &actix_test::TestServer, n: usize) -> Vec<Client> {
    let mut clients = Vec::new();
    for i in 0..n {
        let mut client = Client::new(srv);
        assert_eq!(client.get(&format!("/set/n/{i}")).await.body, "ok");
        clients.push(client);
    }
    clients
}

/// Every request succeeds within `bound` from now: each client reads its value, then writes.
async fn all_served_within(clients: &mut [Client], bound: Duration) {
    let deadline = Instant::now() + bound;
    for (i, client) in clients.iter_mut().enumerate() {
        loop {
            let res = client.get("/get/n").await;
            if res.status == 200 {
                assert_eq!(res.body, format!("\"{i}\""), "session {i} kept its value");
                break;
            }
            assert_eq!(res.status, 503, "only 200 or 503: {res:?}");
            assert!(
                Instant::now() < deadline,
                "session {i} not served within {bound:?}"
            );
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(client.get(&format!("/set/after/{i}")).await.body, "ok");
        assert_eq!(client.get("/get/after").await.body, format!("\"{i}\""));
    }
}

#[actix_web::test]
async fn sessions_survive_an_asked_for_failover() {
    asked_for_failover(Transport::Pool).await;
}

#[actix_web::test]
async fn sessions_survive_an_asked_for_failover_on_the_multiplexed_transport() {
    asked_for_failover(Transport::Multiplexed).await;
}

async fn asked_for_failover(transport: Transport) {
    let setup = SentinelSetup::start();
    let srv = serve_concurrent(sessions(&setup, transport));
    let mut clients = write_sessions(&srv, 30).await;
    replicated(&setup);
    let before = setup.master_port();
    setup.failover();
    assert_ne!(setup.master_port(), before);
    // The old master is a replica now: connections to it answer READONLY to the first
    // write (or were dropped by it), which retires them; the retry asks the sentinels and
    // goes to the new master.
    all_served_within(&mut clients, SETTLE).await;
    // New sessions work on the new master.
    let mut fresh = write_sessions(&srv, 5).await;
    all_served_within(&mut fresh, SETTLE).await;
}

/// Written with `WAIT`: every acknowledged write is on the replica when the master dies,
/// with no waiting for replication by the test.
#[actix_web::test]
async fn sessions_survive_a_killed_master() {
    killed_master(Transport::Pool).await;
}

#[actix_web::test]
async fn sessions_survive_a_killed_master_on_the_multiplexed_transport() {
    killed_master(Transport::Multiplexed).await;
}

async fn killed_master(transport: Transport) {
    let mut setup = SentinelSetup::start();
    let writer = serve_concurrent(waiting_sessions(&setup, transport));
    let clients = write_sessions(&writer, 30).await;
    // Read (and written again) through a middleware without WAIT: the killed master leaves
    // the new one without a replica.
    let srv = serve_concurrent(sessions(&setup, transport));
    let mut clients: Vec<Client> = clients
        .into_iter()
        .map(|c| Client::with_jar(&srv, c.jar))
        .collect();
    let killed = Instant::now();
    setup.kill_master();
    let promoted = killed.elapsed();
    assert!(
        promoted < DOWN_AFTER + Duration::from_secs(10),
        "the sentinels took {promoted:?} to promote the replica"
    );
    all_served_within(&mut clients, SETTLE).await;
    let mut fresh = write_sessions(&srv, 5).await;
    all_served_within(&mut fresh, SETTLE).await;
}

/// Data nodes that require a password: reached with `sentinel_master_auth`, on both
/// transports, through an asked-for failover; refused (503) without it.
#[actix_web::test]
async fn data_nodes_with_a_password_are_reached_with_the_credentials_given() {
    let setup = SentinelSetup::start_with_password("s3cret-sentinel-data");
    for transport in [Transport::Pool, Transport::Multiplexed] {
        let without = serve_concurrent(sessions(&setup, transport));
        let res = Client::new(&without).get("/set/n/1").await;
        assert_eq!(
            res.status, 503,
            "{transport:?}: NOAUTH without the credentials"
        );
        assert!(!res.body.contains("s3cret"), "{}", res.body);
    }
    let with = |transport: Transport| {
        RedisSession::builder_sentinel(setup.sentinel_urls(), MASTER_NAME, key(1))
            .transport(transport)
            .sentinel_master_auth(None, "s3cret-sentinel-data")
            .connect_timeout(Duration::from_millis(300))
            .command_timeout(Duration::from_millis(500))
            .build()
            .expect("valid sentinel configuration")
    };
    let servers: Vec<_> = [Transport::Pool, Transport::Multiplexed]
        .into_iter()
        .map(|t| serve_concurrent(with(t)))
        .collect();
    let mut clients = Vec::new();
    for srv in &servers {
        clients.push(write_sessions(srv, 10).await);
    }
    setup.failover();
    for clients in &mut clients {
        all_served_within(clients, SETTLE).await;
    }
}

#[test]
fn sentinel_configuration_out_of_range_is_refused() {
    // Nothing is asked at build time: unreachable sentinels build, on both transports.
    for transport in [Transport::Pool, Transport::Multiplexed] {
        assert!(
            RedisSession::builder_sentinel(["redis://127.0.0.1:1"], MASTER_NAME, key(1))
                .transport(transport)
                .build()
                .is_ok()
        );
    }
    // Node credentials belong to Sentinel.
    let e = RedisSession::builder("redis://127.0.0.1:1", key(1))
        .sentinel_master_auth(None, "pw")
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("sentinel_master_auth"), "{e}");
    assert!(!format!("{e} {e:?}").contains("pw\""), "{e:?}");
    let none: [&str; 0] = [];
    assert!(RedisSession::builder_sentinel(none, MASTER_NAME, key(1))
        .build()
        .is_err());
}

#[actix_web::test]
async fn the_local_cache_follows_the_master_through_a_failover() {
    cache_through_failover(Transport::Pool).await;
}

#[actix_web::test]
async fn the_local_cache_follows_the_master_through_a_failover_on_the_multiplexed_transport() {
    cache_through_failover(Transport::Multiplexed).await;
}

/// Waits (at most 10 s) until `what` holds of the middleware's cache.
async fn cache_until(
    sessions: &RedisSession,
    what: &str,
    holds: impl Fn(&actix_redis_session::store::CacheStats) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !holds(&sessions.cache_stats().unwrap()) {
        assert!(
            Instant::now() < deadline,
            "{what}: {:?}",
            sessions.cache_stats()
        );
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Two instances with the local cache: after the failover their tracking connections are on
/// the new master, and a write on one is seen by the other once its invalidation arrived.
async fn cache_through_failover(transport: Transport) {
    let setup = SentinelSetup::start();
    let cached = || {
        RedisSession::builder_sentinel(setup.sentinel_urls(), MASTER_NAME, key(1))
            .transport(transport)
            .connect_timeout(Duration::from_millis(300))
            .command_timeout(Duration::from_millis(500))
            .checkout_timeout(Duration::from_millis(500))
            .touch_after(Duration::from_secs(60))
            .local_cache(actix_redis_session::store::LocalCache::new())
            .build()
            .expect("valid sentinel configuration")
    };
    let (a, b) = (cached(), cached());
    let (srv_a, srv_b) = (serve_concurrent(a.clone()), serve_concurrent(b.clone()));
    for sessions in [&a, &b] {
        cache_until(sessions, "tracking on", |s| s.tracking).await;
    }
    assert_eq!(common::tracking_clients(setup.master()).len(), 2);
    let mut on_a = Client::new(&srv_a);
    assert_eq!(on_a.get("/set/n/1").await.body, "ok");
    let mut on_b = Client::with_jar(&srv_b, on_a.jar.clone());
    assert_eq!(on_b.get("/get/n").await.body, "\"1\"");
    assert_eq!(on_b.get("/get/n").await.body, "\"1\"");
    assert!(b.cache_stats().unwrap().hits >= 1);
    replicated(&setup);
    let flushes = b.cache_stats().unwrap().flushes;
    setup.failover();
    // The old master's clients are killed by the sentinels: each cache drops everything,
    // asks the sentinels again and tracks on the new master.
    cache_until(&b, "flushed and back", |s| {
        s.flushes > flushes && s.tracking
    })
    .await;
    cache_until(&a, "back", |s| s.tracking).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while common::tracking_clients(setup.master()).len() < 2 {
        assert!(Instant::now() < deadline, "tracking on the new master");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    // The sentinels demote the old master a little later (until then both say `master`, and
    // a write may land on either): from then on every write goes to the new one.
    let deadline = Instant::now() + Duration::from_secs(15);
    let master = setup.master_port();
    while setup.nodes.iter().any(|node| {
        let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut node.conn()).unwrap();
        Some(node.tcp_addr().port()) != master
            && matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master")
    }) {
        assert!(Instant::now() < deadline, "the old master demoted");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    // B reads what the new master holds.
    assert_eq!(on_b.get("/get/n").await.body, "\"1\"");
    // A write on A (retried onto the new master) reaches B's cache as an invalidation.
    let deadline = Instant::now() + SETTLE;
    loop {
        let res = on_a.get("/set/n/2").await;
        if res.status == 200 {
            break;
        }
        assert_eq!(res.status, 503, "only 200 or 503: {res:?}");
        assert!(Instant::now() < deadline, "A's write within {SETTLE:?}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    // B held only this session: once its copy is gone, the invalidation has arrived (a
    // count of invalidations would race a late echo of an earlier write).
    cache_until(&b, "the invalidation", |s| s.entries == 0).await;
    assert_eq!(on_b.get("/get/n").await.body, "\"2\"");
    assert_eq!(on_b.get("/get/n").await.body, "\"2\"");
}
