//! `wait_for_replicas`: a master and a replica on loopback; with the option a write is
//! answered as saved only once the replica has it, so that with the replica gone writes
//! fail (reads go on) and without the option they do not; on both transports.

mod common;

use std::time::{Duration, Instant};

use actix_redis_session::{RedisSession, Transport};

use self::common::{key, serve, Client, RedisServer};

fn primary_and_replica() -> (RedisServer, RedisServer) {
    let primary = RedisServer::start_tcp();
    let port = primary.tcp_addr().port().to_string();
    let replica = RedisServer::start_tcp_with(vec!["--replicaof".into(), "127.0.0.1".into(), port]);
    wait_for_sync(&replica);
    (primary, replica)
}

fn wait_for_sync(replica: &RedisServer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut replica.conn())
            .unwrap_or_default();
        if info.contains("master_link_status:up") {
            return;
        }
        assert!(Instant::now() < deadline, "the replica did not sync");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[actix_web::test]
async fn writes_wait_for_the_replica_and_fail_without_it() {
    for transport in [Transport::Pool, Transport::Multiplexed] {
        let (primary, mut replica) = primary_and_replica();
        let build = |wait: bool| {
            let builder = RedisSession::builder(primary.url(), key(1))
                .transport(transport)
                .command_timeout(Duration::from_secs(1));
            let builder = if wait {
                builder.wait_for_replicas(1, Duration::from_millis(300))
            } else {
                builder
            };
            serve(builder.build().unwrap())
        };
        let waiting = build(true);
        let plain = build(false);
        let mut client = Client::new(&waiting);
        assert_eq!(client.get("/set/a/1").await.body, "ok", "{transport:?}");
        // Answered as saved: the replica has it.
        let key: String = format!("session:{}", client.get("/handle").await.body);
        let on_replica: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(&key)
            .arg("d:a")
            .query(&mut replica.conn())
            .unwrap();
        assert!(on_replica.is_some(), "{transport:?}");

        // The replica gone: writes are not answered as saved, reads go on.
        replica.stop();
        let started = Instant::now();
        let res = client.get("/set/a/2").await;
        assert_eq!(res.status, 503, "{transport:?}: {res:?}");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "not retried: {:?}",
            started.elapsed()
        );
        assert_eq!(client.get("/get/b").await.status, 200, "a read goes on");
        // Without the option the same write is answered at once.
        let mut other = Client::with_jar(&plain, client.jar.clone());
        assert_eq!(other.get("/set/a/3").await.body, "ok");

        // The replica back: writes wait and succeed again.
        replica.restart();
        wait_for_sync(&replica);
        assert_eq!(client.get("/set/a/4").await.body, "ok", "{transport:?}");
        assert_eq!(client.get("/get/a").await.body, "\"4\"");
    }
}

#[test]
fn out_of_range_settings_are_refused() {
    let zero = RedisSession::builder("redis://127.0.0.1:1", key(1))
        .wait_for_replicas(0, Duration::from_millis(100))
        .build();
    assert!(zero.is_err());
    let long = RedisSession::builder("redis://127.0.0.1:1", key(1))
        .wait_for_replicas(1, Duration::from_secs(5))
        .build()
        .unwrap_err();
    assert!(long.to_string().contains("wait_for_replicas"), "{long}");
    let memory = RedisSession::builder_with_memory(Default::default(), key(1))
        .wait_for_replicas(1, Duration::from_millis(100))
        .build();
    assert!(memory.is_err(), "Redis only");
}
