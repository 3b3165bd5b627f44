//! A Redis Cluster master killed under load (feature `cluster`): a cluster of its own (3
//! masters, 3 replicas), sessions written with `wait_for_replicas(1, ..)` on both transports
//! side by side, SIGKILL of the master serving the most of them. While its replica takes
//! over, no request waits past the store budget (plus the HTTP round trip) and every answer
//! is 200 or 503; the other masters' sessions are served throughout (each master has a
//! breaker of its own; a middleware without a breaker too); after the promotion every session is read back with its value, within the
//! bound stated below; with the old master back as a replica, new sessions are written (and
//! acknowledged by a replica) on every master.
#![cfg(feature = "cluster")]

mod common;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use actix_redis_session::{CircuitBreaker, RedisSession, Transport};
use common::{cluster::ClusterSetup, key, serve_concurrent, Client};

const TRANSPORTS: [Transport; 2] = [Transport::Pool, Transport::Multiplexed];

/// The store budget of the test's middleware.
const BUDGET: Duration = Duration::from_secs(2);

/// What a request may take beyond its store budget: the HTTP round trip, the handler, a
/// busy 2-core machine.
const SLACK: Duration = Duration::from_millis(1000);

/// From the promotion to every session readable again: the slot map is asked for again by
/// the first request that fails, so this is at most a retry's delays and the circuit
/// breaker's cool-down (1 s) after the failures of the outage.
const RECOVERED_WITHIN: Duration = Duration::from_secs(5);

#[actix_web::test]
async fn a_killed_master_fails_over_without_losing_a_session_written_with_wait() {
    let mut cluster = ClusterSetup::start();
    let sessions = |transport: Transport, prefix: &str, breaker: CircuitBreaker| {
        RedisSession::builder_cluster(cluster.urls(), key(1))
            .transport(transport)
            .key_prefix(prefix)
            .wait_for_replicas(1, Duration::from_millis(500))
            .store_budget(BUDGET)
            .circuit_breaker(breaker)
            .build()
            .expect("a valid configuration")
    };
    let mut servers: Vec<_> = TRANSPORTS
        .iter()
        .map(|&t| {
            let prefix = format!("{t:?}:");
            (
                t,
                serve_concurrent(sessions(t, &prefix, CircuitBreaker::new())),
            )
        })
        .collect();
    // Without a breaker, the other masters' sessions never see the outage.
    let unbroken = serve_concurrent(sessions(
        Transport::Multiplexed,
        "unbroken:",
        CircuitBreaker::disabled(),
    ));
    let mut clients = Vec::new();
    for (transport, srv) in &servers {
        for i in 0..40 {
            let mut client = Client::new(srv);
            let res = client.get(&format!("/set/v/{i}")).await;
            assert_eq!(res.status, 200, "{transport:?}: acknowledged by a replica");
            clients.push((*transport, client, format!("\"{i}\"")));
        }
    }
    let mut unbroken_clients = Vec::new();
    for i in 0..30 {
        let mut client = Client::new(&unbroken);
        assert_eq!(client.get(&format!("/set/v/{i}")).await.status, 200);
        unbroken_clients.push((client, format!("\"{i}\"")));
    }

    // The master holding the most sessions dies.
    let mut by_master: BTreeMap<u16, Vec<u16>> = BTreeMap::new();
    for key in cluster.keys("") {
        let slot = cluster.keyslot(&key);
        by_master
            .entry(cluster.serving(slot).port)
            .or_default()
            .push(slot);
    }
    let (&killed, slots) = by_master.iter().max_by_key(|(_, s)| s.len()).unwrap();
    let slot = slots[0];
    let index = cluster.nodes.iter().position(|n| n.port == killed).unwrap();
    let on_killed = |prefix: &str| {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query(&mut cluster.nodes[index].conn())
            .unwrap();
        keys.len()
    };
    let unbroken_on_killed = on_killed("unbroken:");
    let killed_sessions: BTreeMap<String, usize> = TRANSPORTS
        .iter()
        .map(|t| (format!("{t:?}"), on_killed(&format!("{t:?}:"))))
        .collect();
    cluster.nodes[index].kill();
    let killed_at = Instant::now();

    let mut promoted: Option<Instant> = None;
    let mut slowest = Duration::ZERO;
    let mut answers: BTreeMap<u16, usize> = BTreeMap::new();
    loop {
        let round = clients.iter().map(|(transport, client, value)| async move {
            let cookie = client.cookie_header();
            let started = Instant::now();
            let res = client.send("/get/v", cookie.as_deref()).await;
            (*transport, res, started.elapsed(), value)
        });
        let unbroken_round = unbroken_clients.iter().map(|(client, value)| async move {
            let cookie = client.cookie_header();
            (client.send("/get/v", cookie.as_deref()).await, value)
        });
        let (round, unbroken_round) = futures_util::future::join(
            futures_util::future::join_all(round),
            futures_util::future::join_all(unbroken_round),
        )
        .await;
        let served = unbroken_round
            .iter()
            .filter(|(res, value)| res.status == 200 && &res.body == *value)
            .count();
        assert!(
            served >= unbroken_clients.len() - unbroken_on_killed,
            "without a breaker every session on a live master is served: {served} of {}, \
             {unbroken_on_killed} on the killed master",
            unbroken_clients.len()
        );
        let mut whole = served == unbroken_clients.len();
        let mut round_failures: BTreeMap<String, usize> = BTreeMap::new();
        for (transport, res, took, value) in round {
            if res.status == 503 {
                let failures = round_failures.entry(format!("{transport:?}")).or_default();
                *failures += 1;
                assert!(
                    *failures <= killed_sessions[&format!("{transport:?}")],
                    "{transport:?}: only the killed master's sessions fail: {killed_sessions:?}"
                );
            }
            *answers.entry(res.status).or_default() += 1;
            slowest = slowest.max(took);
            assert!(
                took <= BUDGET + SLACK,
                "{transport:?}: a request waited {took:?}, past its budget"
            );
            match res.status {
                200 => assert_eq!(&res.body, value, "{transport:?}: the session's own value"),
                503 => whole = false,
                other => panic!("{transport:?}: {other} during the failover: {}", res.body),
            }
        }
        if std::env::var_os("FAILOVER_TRACE").is_some() {
            let failed: Vec<_> = round_failures.iter().collect();
            eprintln!(
                "{:?} after the kill: 503s {failed:?}, unbroken served {served}",
                killed_at.elapsed()
            );
        }
        if promoted.is_none() && cluster.serving(slot).port != killed {
            promoted = Some(Instant::now());
        }
        if let (Some(at), true) = (promoted, whole) {
            eprintln!(
                "promoted {:?} after the kill; every session read again {:?} after that; \
                 slowest request {slowest:?}; answers {answers:?}",
                at - killed_at,
                at.elapsed()
            );
            break;
        }
        if let Some(at) = promoted {
            assert!(
                at.elapsed() < RECOVERED_WITHIN,
                "every session readable within {RECOVERED_WITHIN:?} of the promotion: {answers:?}"
            );
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(30),
            "a replica took over"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        answers.get(&503).is_some_and(|&n| n > 0),
        "the outage was seen: {answers:?}"
    );

    // The old master comes back as a replica of the one that took over; then writes are
    // acknowledged everywhere again, new sessions included.
    cluster.nodes[index].restart();
    cluster.wait_until(
        Duration::from_secs(30),
        "the old master back, as a replica in sync",
        |c| {
            let node = &c.nodes[index];
            node.role().as_deref() == Some("slave")
                && common::redis_server::replica_link_up(&format!(
                    "redis://127.0.0.1:{}",
                    node.port
                ))
        },
    );
    servers.push((Transport::Multiplexed, unbroken));
    for (transport, srv) in &servers {
        let mut new = Vec::new();
        for i in 0..30 {
            let mut client = Client::new(srv);
            let res = client.get(&format!("/set/w/{i}")).await;
            assert_eq!(
                res.status, 200,
                "{transport:?}: a new session after the failover"
            );
            new.push(client);
        }
        for (i, client) in new.iter_mut().enumerate() {
            assert_eq!(client.get("/get/w").await.body, format!("\"{i}\""));
        }
    }
    for (transport, client, value) in &mut clients {
        assert_eq!(&client.get("/get/v").await.body, value, "{transport:?}");
    }
}
