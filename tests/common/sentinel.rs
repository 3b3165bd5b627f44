//! A Redis Sentinel deployment on loopback for tests: one master, one replica and three
//! sentinels (quorum 2), each a real `redis-server` process on a free port, with a low
//! `down-after-milliseconds` so that a killed master fails over in about a second.

use std::{
    io::ErrorKind,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use super::redis_server::{on_free_port, RedisServer};

/// The name the sentinels monitor the master under.
pub const MASTER_NAME: &str = "sessions";

/// How long a sentinel waits before it calls an unanswering master down.
pub const DOWN_AFTER: Duration = Duration::from_millis(500);

/// One sentinel process.
struct SentinelProcess {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Master, replica and three sentinels; all stopped when dropped.
pub struct SentinelSetup {
    /// The two data nodes: `[0]` starts as master, `[1]` as its replica.
    pub nodes: Vec<RedisServer>,
    sentinels: Vec<SentinelProcess>,
}

impl SentinelSetup {
    /// Starts the deployment and waits until the replica is in sync and every sentinel
    /// knows it.
    pub fn start() -> SentinelSetup {
        let master = RedisServer::start_tcp();
        let port = master.tcp_addr().port();
        let replica = RedisServer::start_tcp_with(vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            port.to_string(),
        ]);
        let sentinels = (0..3).map(|_| start_sentinel(port)).collect();
        let setup = SentinelSetup {
            nodes: vec![master, replica],
            sentinels,
        };
        setup.wait_until(
            Duration::from_secs(20),
            "the replica in sync, known to every sentinel",
            |s| s.replica_in_sync() && s.sentinels_know_replicas(),
        );
        setup
    }

    /// `redis://` URLs of the sentinels.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("redis://127.0.0.1:{}", s.port))
            .collect()
    }

    /// The master's port, as the first sentinel that answers says.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let mut conn = sentinel_conn(s.port).ok()?;
            let addr: Vec<String> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(MASTER_NAME)
                .query(&mut conn)
                .ok()?;
            addr.get(1)?.parse().ok()
        })
    }

    /// The data node that is master now.
    pub fn master(&self) -> &RedisServer {
        let port = self.master_port().expect("a sentinel that answers");
        self.nodes
            .iter()
            .find(|n| n.tcp_addr().port() == port)
            .expect("the master is one of our nodes")
    }

    /// Asks the sentinels for a failover and waits until the other node is master and
    /// sentinels say so.
    pub fn failover(&self) {
        let before = self.master_port();
        let mut conn = sentinel_conn(self.sentinels[0].port).expect("a sentinel");
        let _: () = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(MASTER_NAME)
            .query(&mut conn)
            .expect("SENTINEL FAILOVER");
        self.wait_for_new_master(before);
    }

    /// Kills the master (SIGKILL) and waits until the sentinels have promoted the replica.
    /// Returns the index of the killed node.
    pub fn kill_master(&mut self) -> usize {
        let before = self.master_port();
        let index = self
            .nodes
            .iter()
            .position(|n| Some(n.tcp_addr().port()) == before)
            .expect("the master is one of our nodes");
        self.nodes[index].stop();
        self.wait_for_new_master(before);
        index
    }

    fn wait_for_new_master(&self, before: Option<u16>) {
        self.wait_until(Duration::from_secs(30), "a new master", |s| {
            let now = s.master_port();
            now.is_some() && now != before && s.role_of(now.unwrap()).as_deref() == Some("master")
        });
    }

    fn role_of(&self, port: u16) -> Option<String> {
        let node = self.nodes.iter().find(|n| n.tcp_addr().port() == port)?;
        let mut conn = redis::Client::open(node.url())
            .ok()?
            .get_connection_with_timeout(Duration::from_millis(500))
            .ok()?;
        let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn).ok()?;
        match role.first()? {
            redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
            redis::Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
    }

    fn replica_in_sync(&self) -> bool {
        let Ok(client) = redis::Client::open(self.nodes[1].url()) else {
            return false;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(500)) else {
            return false;
        };
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut conn)
            .unwrap_or_default();
        info.contains("master_link_status:up")
    }

    fn sentinels_know_replicas(&self) -> bool {
        self.sentinels.iter().all(|s| {
            let Ok(mut conn) = sentinel_conn(s.port) else {
                return false;
            };
            let replicas: Vec<redis::Value> = redis::cmd("SENTINEL")
                .arg("replicas")
                .arg(MASTER_NAME)
                .query(&mut conn)
                .unwrap_or_default();
            !replicas.is_empty()
        })
    }

    fn wait_until(&self, limit: Duration, what: &str, done: impl Fn(&SentinelSetup) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "sentinel setup: no {what} within {limit:?}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn sentinel_conn(port: u16) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))?
        .get_connection_with_timeout(Duration::from_millis(500))
}

fn start_sentinel(master_port: u16) -> SentinelProcess {
    on_free_port("redis-server --sentinel", |port| {
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} {down}\n\
                 sentinel failover-timeout {MASTER_NAME} 2000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                dir = dir.path().display(),
                down = DOWN_AFTER.as_millis(),
            ),
        )
        .expect("sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                if e.kind() == ErrorKind::NotFound {
                    panic!(
                        "redis-server is not installed. Install it with \
                         `apt-get update && apt-get install -y redis-server` \
                         (scripts/test does this for you)"
                    );
                }
                format!("could not run redis-server --sentinel: {e}")
            })?;
        let mut process = SentinelProcess {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = process.child.try_wait() {
                return Err(format!("sentinel exited with {status}"));
            }
            if let Ok(mut conn) = sentinel_conn(port) {
                if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                    return Ok(process);
                }
            }
            if Instant::now() > deadline {
                let _ = process.child.kill();
                return Err("sentinel did not answer PING within 10 s".into());
            }
            thread::sleep(Duration::from_millis(10));
        }
    })
}
