//! A Redis Sentinel deployment on loopback for tests: one master, one replica and three
//! sentinels (quorum 2), each a real `redis-server` process on a free port, with a low
//! `down-after-milliseconds` so that a killed master fails over in about a second.

use std::{
    io::ErrorKind,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use super::redis_server::{on_free_port, replica_link_up, spawn_watched, RedisServer};

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
    /// The data nodes' `requirepass` (and `masterauth`), if any.
    password: Option<String>,
}

impl SentinelSetup {
    /// Starts the deployment and waits until the replica is in sync and every sentinel
    /// knows it.
    pub fn start() -> SentinelSetup {
        SentinelSetup::start_with(None)
    }

    /// As [`SentinelSetup::start`], the data nodes requiring `password` (the replica and
    /// the sentinels are given it).
    pub fn start_with_password(password: &str) -> SentinelSetup {
        SentinelSetup::start_with(Some(password))
    }

    fn start_with(password: Option<&str>) -> SentinelSetup {
        let auth: Vec<String> = password
            .map(|pw| {
                vec![
                    "--requirepass".into(),
                    pw.into(),
                    "--masterauth".into(),
                    pw.into(),
                ]
            })
            .unwrap_or_default();
        let master = RedisServer::start_tcp_with(auth.clone());
        let port = master.tcp_addr().port();
        let mut replica_args = vec!["--replicaof".into(), "127.0.0.1".into(), port.to_string()];
        replica_args.extend(auth);
        let replica = RedisServer::start_tcp_with(replica_args);
        let sentinels = (0..3).map(|_| start_sentinel(port, password)).collect();
        let setup = SentinelSetup {
            nodes: vec![master, replica],
            sentinels,
            password: password.map(str::to_owned),
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

    /// A data node's URL, with the password if there is one.
    pub fn data_url(&self, node: &RedisServer) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@{}", node.tcp_addr()),
            None => node.url(),
        }
    }

    fn role_of(&self, port: u16) -> Option<String> {
        let node = self.nodes.iter().find(|n| n.tcp_addr().port() == port)?;
        let mut conn = redis::Client::open(self.data_url(node))
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
        replica_link_up(&self.data_url(&self.nodes[1]))
    }

    fn sentinels_know_replicas(&self) -> bool {
        sentinels_know_a_replica(self.sentinels.iter().map(|s| s.port))
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

/// Whether every sentinel on `ports` knows a replica of the master.
fn sentinels_know_a_replica(mut ports: impl Iterator<Item = u16>) -> bool {
    ports.all(|port| {
        let Ok(mut conn) = sentinel_conn(port) else {
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

fn sentinel_conn(port: u16) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))?
        .get_connection_with_timeout(Duration::from_millis(500))
}

/// A sentinel's configuration file in `dir`: on `port`, monitoring the master on
/// `master_port` under [`MASTER_NAME`], quorum 2.
fn sentinel_conf(
    dir: &std::path::Path,
    port: u16,
    master_port: u16,
    password: Option<&str>,
) -> std::path::PathBuf {
    let conf = dir.join("sentinel.conf");
    let auth = password
        .map(|pw| format!("sentinel auth-pass {MASTER_NAME} {pw}\n"))
        .unwrap_or_default();
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} {down}\n\
             sentinel failover-timeout {MASTER_NAME} 2000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n{auth}",
            dir = dir.display(),
            down = DOWN_AFTER.as_millis(),
        ),
    )
    .expect("sentinel.conf");
    conf
}

/// A Sentinel deployment (master, replica, three sentinels) for a whole test binary, whose
/// processes end with the test process ([`spawn_watched`]). Nothing fails it over: its
/// master stays where it started.
pub struct SharedSentinel {
    processes: Vec<(
        std::process::Child,
        std::process::ChildStdin,
        tempfile::TempDir,
    )>,
    master_port: u16,
    replica_port: u16,
    sentinel_ports: Vec<u16>,
}

impl SharedSentinel {
    pub fn start() -> SharedSentinel {
        let mut processes = Vec::new();
        let mut watched = |what: &str, args: &dyn Fn(u16, &std::path::Path) -> Vec<String>| {
            on_free_port(what, |port| {
                let dir = tempfile::tempdir().expect("temp dir");
                let (child, stdin) = spawn_watched(&args(port, dir.path()), port)?;
                processes.push((child, stdin, dir));
                Ok(port)
            })
        };
        let data = |port: u16, dir: &std::path::Path| -> Vec<String> {
            let mut args: Vec<String> = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            args.extend(["--port".into(), port.to_string()]);
            args.extend(["--dir".into(), dir.display().to_string()]);
            args
        };
        let master_port = watched("the shared master", &data);
        let replica_port = watched("the shared replica", &|port, dir| {
            let mut args = data(port, dir);
            args.extend([
                "--replicaof".into(),
                "127.0.0.1".into(),
                master_port.to_string(),
            ]);
            args
        });
        let sentinel_ports = (0..3)
            .map(|_| {
                watched("a shared sentinel", &|port, dir| {
                    let conf = sentinel_conf(dir, port, master_port, None);
                    vec![conf.display().to_string(), "--sentinel".into()]
                })
            })
            .collect();
        let shared = SharedSentinel {
            processes,
            master_port,
            replica_port,
            sentinel_ports,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(shared.replica_in_sync() && shared.sentinels_know_the_replica()) {
            assert!(
                Instant::now() < deadline,
                "the shared Sentinel deployment did not come up"
            );
            thread::sleep(Duration::from_millis(50));
        }
        shared
    }

    /// `redis://` URLs of the sentinels.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinel_ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// A connection to the master.
    pub fn master_conn(&self) -> redis::Connection {
        sentinel_conn(self.master_port).expect("the shared master")
    }

    /// The master's keys under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query(&mut self.master_conn())
            .expect("KEYS")
    }

    fn replica_in_sync(&self) -> bool {
        replica_link_up(&format!("redis://127.0.0.1:{}", self.replica_port))
    }

    fn sentinels_know_the_replica(&self) -> bool {
        sentinels_know_a_replica(self.sentinel_ports.iter().copied())
    }
}

impl Drop for SharedSentinel {
    fn drop(&mut self) {
        for (mut child, stdin, _) in self.processes.drain(..) {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

fn start_sentinel(master_port: u16, password: Option<&str>) -> SentinelProcess {
    on_free_port("redis-server --sentinel", |port| {
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = sentinel_conf(dir.path(), port, master_port, password);
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
