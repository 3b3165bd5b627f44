//! Redis Cluster (feature `cluster`): requests batched per node, a slot migrated under load,
//! configuration refused. One cluster (3 masters with a counting proxy each, 3 replicas) for
//! the binary; its tests run one at a time, since the counts see every client's traffic.
//! The acceptance suite and the administration run on a cluster too (tests/acceptance.rs,
//! tests/admin.rs); a master killed: tests/cluster_failover.rs.
#![cfg(feature = "cluster")]

mod common;

use std::{
    collections::BTreeMap,
    sync::OnceLock,
    thread,
    time::{Duration, Instant},
};

use actix_redis_session::{ConfigError, Key, RedisSession, Transport};
use common::{cluster::ClusterSetup, key, serve_concurrent, Client};

const TRANSPORTS: [Transport; 2] = [Transport::Pool, Transport::Multiplexed];

fn cluster() -> &'static ClusterSetup {
    static CLUSTER: OnceLock<ClusterSetup> = OnceLock::new();
    CLUSTER.get_or_init(ClusterSetup::start_proxied)
}

/// One test at a time: the proxies count whatever runs.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn sessions(transport: Transport, prefix: &str) -> RedisSession {
    RedisSession::builder_cluster(cluster().urls(), key(1))
        .transport(transport)
        .key_prefix(prefix)
        .build()
        .expect("a valid configuration")
}

/// Round trips each master served since the last reset, by port.
fn trips() -> BTreeMap<u16, u64> {
    cluster()
        .masters()
        .into_iter()
        .map(|m| (m.port, m.proxy().expect("proxied").round_trips()))
        .collect()
}

fn reset_trips() {
    for master in cluster().masters() {
        master.proxy().expect("proxied").reset_round_trips();
    }
}

/// Sessions under `prefix` per master, by port.
fn spread(prefix: &str) -> BTreeMap<u16, usize> {
    let mut spread = BTreeMap::new();
    for master in cluster().masters() {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query(&mut master.conn())
            .unwrap();
        spread.insert(master.port, keys.len());
    }
    spread
}

#[actix_web::test]
async fn requests_are_batched_per_node_and_a_lone_one_costs_one_round_trip() {
    let _one = ONE_AT_A_TIME.lock().await;
    for transport in TRANSPORTS {
        let prefix = format!("batched-{transport:?}:");
        let srv = serve_concurrent(sessions(transport, &prefix));
        let mut clients = Vec::new();
        for i in 0..90 {
            let mut client = Client::new(&srv);
            assert_eq!(client.get(&format!("/set/n/{i}")).await.status, 200);
            clients.push(client);
        }
        let spread = spread(&prefix);
        assert_eq!(spread.values().sum::<usize>(), 90, "{spread:?}");
        assert!(
            spread.values().all(|&n| n > 0),
            "sessions on every master: {spread:?}"
        );
        // Warm up: every worker's connections to every node open (a handshake is a round
        // trip of its own).
        for _ in 0..3 {
            send_all(clients.iter(), "/get/n").await;
        }

        reset_trips();
        let res = clients[0].get("/get/n").await;
        assert_eq!((res.status, res.body.as_str()), (200, "\"0\""));
        let lone = trips();
        assert_eq!(
            lone.values().sum::<u64>(),
            1,
            "{transport:?}: one round trip, to the session's master: {lone:?}"
        );

        reset_trips();
        let responses = send_all(clients.iter(), "/get/n").await;
        for (i, res) in responses.iter().enumerate() {
            assert_eq!((res.status, res.body.clone()), (200, format!("\"{i}\"")));
        }
        let batched = trips();
        let total: u64 = batched.values().sum();
        assert!(
            batched.values().all(|&n| n > 0),
            "{transport:?}: every master served: {batched:?}"
        );
        for (port, trips) in &batched {
            assert!(
                *trips < spread[port] as u64,
                "{transport:?}: the requests in flight to one master share its round trips: \
                 {batched:?} round trips for sessions {spread:?}"
            );
        }
        eprintln!("{transport:?}: 90 concurrent reads cost {total} round trips {batched:?}");
    }
}

#[actix_web::test]
async fn a_slot_migrated_during_load_costs_no_request() {
    let _one = ONE_AT_A_TIME.lock().await;
    for transport in TRANSPORTS {
        let prefix = format!("migrated-{transport:?}:");
        let srv = serve_concurrent(sessions(transport, &prefix));
        let mut clients = Vec::new();
        for _ in 0..60 {
            let mut client = Client::new(&srv);
            assert_eq!(client.get("/count").await.status, 200);
            clients.push((client, 1u64));
        }
        // The slots of up to 12 sessions on one master move to another one.
        let masters = cluster().masters();
        let (from, to) = (masters[0].port, masters[1].port);
        let mut slots: Vec<u16> = cluster()
            .keys(&prefix)
            .iter()
            .map(|k| cluster().keyslot(k))
            .filter(|&slot| cluster().serving(slot).port == from)
            .collect();
        slots.sort_unstable();
        slots.dedup();
        slots.truncate(12);
        assert!(slots.len() >= 5, "sessions on the first master: {slots:?}");
        let asking_before = asking_calls(to);

        let moving = slots.clone();
        let migration = thread::spawn(move || {
            let to = cluster().nodes.iter().find(|n| n.port == to).unwrap();
            for slot in moving {
                cluster().migrate_slot(slot, to, Duration::from_millis(40));
            }
        });
        let started = Instant::now();
        let mut rounds = 0;
        // Every client increments its counter, one request after the other, while the
        // slots move, and for two rounds after.
        let mut after = 0;
        while after < 2 {
            if migration.is_finished() {
                after += 1;
            }
            let round = send_all(clients.iter().map(|(c, _)| c), "/count").await;
            for (res, (_, count)) in round.into_iter().zip(clients.iter_mut()) {
                assert_eq!(res.status, 200, "{transport:?}: {}", res.body);
                *count += 1;
            }
            rounds += 1;
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "migration done"
            );
        }
        migration.join().unwrap();
        assert!(
            rounds >= 3,
            "requests ran during the migration: {rounds} rounds"
        );
        for slot in &slots {
            assert_eq!(cluster().serving(*slot).port, to, "slot {slot} moved");
        }
        assert!(
            asking_calls(to) > asking_before,
            "{transport:?}: some requests met the slots half-way (ASK)"
        );
        // Nothing lost: every counter holds every increment.
        for (client, count) in &mut clients {
            let res = client.get("/read").await;
            assert_eq!(res.body, count.to_string(), "{transport:?}");
        }
        // And back, for the next transport (the cluster is shared).
        let back = slots.clone();
        thread::spawn(move || {
            let from = cluster().nodes.iter().find(|n| n.port == from).unwrap();
            for slot in back {
                cluster().migrate_slot(slot, from, Duration::ZERO);
            }
        })
        .join()
        .unwrap();
    }
}

/// `path` from every client at once, each with its own cookie.
async fn send_all<'a>(
    clients: impl Iterator<Item = &'a Client>,
    path: &str,
) -> Vec<common::Response> {
    let clients: Vec<(&Client, Option<String>)> = clients.map(|c| (c, c.cookie_header())).collect();
    let requests = clients
        .iter()
        .map(|(client, cookie)| client.send(path, cookie.as_deref()));
    futures_util::future::join_all(requests).await
}

/// How often `ASKING` ran on the node at `port`.
fn asking_calls(port: u16) -> u64 {
    let node = cluster().nodes.iter().find(|n| n.port == port).unwrap();
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut node.conn())
        .unwrap();
    stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_asking:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn cluster_configuration_out_of_range_is_refused() {
    let refused = |nodes: Vec<&str>| {
        RedisSession::builder_cluster(nodes, Key::generate())
            .build()
            .err()
    };
    for (nodes, why) in [
        (vec![], "at least one node"),
        (vec!["redis+unix:///tmp/redis.sock"], "TCP addresses"),
        (vec!["redis://127.0.0.1:7000/2"], "database 0"),
        (vec!["not a url"], ""),
    ] {
        let e = refused(nodes.clone()).unwrap_or_else(|| panic!("{nodes:?} refused"));
        assert!(
            matches!(
                e,
                ConfigError::InvalidOption { .. } | ConfigError::InvalidUrl(_)
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains(why), "{nodes:?}: {e}");
    }
    // Nothing is connected at build time: an unreachable cluster builds, and fails per
    // request (503) until it answers.
    assert!(
        RedisSession::builder_cluster(["redis://127.0.0.1:1"], Key::generate())
            .build()
            .is_ok()
    );
}
