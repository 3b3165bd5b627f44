//! A Redis Cluster on loopback for tests: three masters and three replicas, each a real
//! `redis-server --cluster-enabled yes` process on a free port, joined by
//! `redis-cli --cluster create ... --cluster-replicas 1`, with a low `cluster-node-timeout`
//! so that a killed master fails over in about two seconds.
//!
//! Each node runs under a small `sh` that kills it when its standard input closes, which it
//! does when the test process ends: a cluster shared by a whole test binary (a `static`,
//! never dropped) does not outlive it.
//!
//! With [`ClusterSetup::start_proxied`] every master announces the port of a counting
//! [`Proxy`] in front of it instead of its own, so the cluster sends clients (and `MOVED`
//! replies) there: the round trips each master serves can be counted.

use std::{
    io::ErrorKind,
    net::{SocketAddr, TcpListener},
    process::{Child, ChildStdin, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use super::{proxy::Proxy, redis_server::spawn_watched};

const INSTALL: &str = "redis-server and redis-cli are not installed. Install them with \
     `apt-get update && apt-get install -y redis-server redis-tools` (scripts/test does this \
     for you)";

/// How long a node waits for an unanswering master before its replica takes over.
pub const NODE_TIMEOUT: Duration = Duration::from_millis(1000);

/// One cluster node.
pub struct ClusterNode {
    pub port: u16,
    child: Child,
    /// Closing it ends the node (see the module's documentation).
    stdin: Option<ChildStdin>,
    _dir: tempfile::TempDir,
    proxy: Option<Proxy>,
}

impl ClusterNode {
    pub fn conn(&self) -> redis::Connection {
        node_conn(self.port).expect("connect to the cluster node")
    }

    /// Where clients reach the node: its proxy's port, or its own.
    pub fn client_port(&self) -> u16 {
        self.proxy.as_ref().map_or(self.port, Proxy::port)
    }

    pub fn proxy(&self) -> Option<&Proxy> {
        self.proxy.as_ref()
    }

    /// This node's id in the cluster.
    pub fn id(&self) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.conn())
            .expect("CLUSTER MYID")
    }

    pub fn role(&self) -> Option<String> {
        let mut conn = node_conn(self.port).ok()?;
        let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn).ok()?;
        match role.first() {
            Some(redis::Value::BulkString(role)) => String::from_utf8(role.clone()).ok(),
            _ => None,
        }
    }

    /// Starts a killed node again on its port with its cluster state: it rejoins (a master
    /// that was failed over comes back as a replica of the one that took over).
    pub fn restart(&mut self) {
        let (child, stdin) = spawn_node(self.port, self._dir.path()).expect("the node restarted");
        self.child = child;
        self.stdin = Some(stdin);
    }

    /// Kills the node at once (SIGKILL): no shutdown, no goodbye to the cluster.
    pub fn kill(&mut self) {
        if let Ok(mut conn) = node_conn(self.port) {
            let info: String = redis::cmd("INFO").arg("server").query(&mut conn).unwrap();
            let pid = info
                .lines()
                .find_map(|line| line.strip_prefix("process_id:"))
                .map(|pid| pid.trim().to_owned())
                .expect("INFO server names the process id");
            let _ = Command::new("kill").args(["-9", &pid]).status();
        }
        self.stdin.take();
        let _ = self.child.wait();
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        // The node's shell kills it as its input closes.
        self.stdin.take();
        let _ = self.child.wait();
    }
}

/// Three masters (`nodes[0..3]` at the start) and three replicas.
pub struct ClusterSetup {
    pub nodes: Vec<ClusterNode>,
}

impl ClusterSetup {
    /// Starts the nodes, joins them into a cluster and waits until every node sees it whole.
    pub fn start() -> ClusterSetup {
        ClusterSetup::start_with(false)
    }

    /// As [`ClusterSetup::start`], with a counting proxy in front of each master.
    pub fn start_proxied() -> ClusterSetup {
        ClusterSetup::start_with(true)
    }

    fn start_with(proxied: bool) -> ClusterSetup {
        for tool in ["redis-server", "redis-cli"] {
            let found = Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .status();
            if found.is_err() {
                panic!("{INSTALL}");
            }
        }
        let mut nodes: Vec<ClusterNode> = (0..6).map(|_| start_node()).collect();
        if proxied {
            for node in &mut nodes[..3] {
                let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], node.port)));
                let mut conn = node.conn();
                for (name, value) in [
                    ("cluster-announce-ip", "127.0.0.1".to_owned()),
                    ("cluster-announce-port", proxy.port().to_string()),
                    ("cluster-announce-bus-port", (node.port + 10000).to_string()),
                ] {
                    let _: () = redis::cmd("CONFIG")
                        .arg("SET")
                        .arg(name)
                        .arg(value)
                        .query(&mut conn)
                        .expect("CONFIG SET");
                }
                node.proxy = Some(proxy);
            }
        }
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let out = create.stdin(Stdio::null()).output().unwrap_or_else(|e| {
            if e.kind() == ErrorKind::NotFound {
                panic!("{INSTALL}");
            }
            panic!("could not run redis-cli: {e}")
        });
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let setup = ClusterSetup { nodes };
        setup.wait_until(
            Duration::from_secs(30),
            "the cluster whole on every node",
            |s| s.whole(),
        );
        setup
    }

    /// `redis://` URLs of every node, as clients reach them.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.client_port()))
            .collect()
    }

    /// The nodes that are masters now.
    pub fn masters(&self) -> Vec<&ClusterNode> {
        self.nodes
            .iter()
            .filter(|n| n.role().as_deref() == Some("master"))
            .collect()
    }

    /// The node serving `slot` now (asked of a live node).
    pub fn serving(&self, slot: u16) -> &ClusterNode {
        let port = self.live_conn_do(|conn| {
            let ranges: Vec<Vec<redis::Value>> =
                redis::cmd("CLUSTER").arg("SLOTS").query(conn).ok()?;
            ranges.into_iter().find_map(|range| {
                let int = |v: Option<&redis::Value>| match v {
                    Some(redis::Value::Int(n)) => Some(*n),
                    _ => None,
                };
                let (start, end) = (int(range.first())?, int(range.get(1))?);
                if !(start..=end).contains(&i64::from(slot)) {
                    return None;
                }
                match range.get(2) {
                    Some(redis::Value::Array(master)) => u16::try_from(int(master.get(1))?).ok(),
                    _ => None,
                }
            })
        });
        let port = port.expect("a node serves the slot");
        self.nodes
            .iter()
            .find(|n| n.client_port() == port || n.port == port)
            .expect("a node of ours")
    }

    /// The slot Redis computes for `key`.
    pub fn keyslot(&self, key: &str) -> u16 {
        self.live_conn_do(|conn| {
            redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(key)
                .query(conn)
                .ok()
        })
        .expect("CLUSTER KEYSLOT")
    }

    /// Every key under `prefix` on every master.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        for master in self.masters() {
            let found: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query(&mut master.conn())
                .expect("KEYS");
            keys.extend(found);
        }
        keys.sort();
        keys
    }

    /// Moves `slot` with its keys from the node serving it to `to`, as `redis-cli --cluster
    /// reshard` does: IMPORTING on the target, MIGRATING on the source, MIGRATE of its keys
    /// (`pause` between keys, so that requests meet the slot half-way), then the slot
    /// assigned to the target on every master.
    pub fn migrate_slot(&self, slot: u16, to: &ClusterNode, pause: Duration) {
        let from = self.serving(slot);
        assert_ne!(from.port, to.port, "the slot is on the target already");
        let (from_id, to_id) = (from.id(), to.id());
        let setslot = |node: &ClusterNode, state: &str, id: &str| {
            let _: () = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(state)
                .arg(id)
                .query(&mut node.conn())
                .unwrap_or_else(|e| panic!("CLUSTER SETSLOT {state}: {e}"));
        };
        setslot(to, "IMPORTING", &from_id);
        setslot(from, "MIGRATING", &to_id);
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(1)
                .query(&mut from.conn())
                .expect("GETKEYSINSLOT");
            let Some(key) = keys.first() else { break };
            let _: redis::Value = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to.port)
                .arg(key)
                .arg(0)
                .arg(5000)
                .query(&mut from.conn())
                .expect("MIGRATE");
            thread::sleep(pause);
        }
        for master in self.masters() {
            setslot(master, "NODE", &to_id);
        }
    }

    /// Kills the master serving `slot`; returns its index in `nodes` once a replica has
    /// taken its slots over.
    pub fn kill_master_of(&mut self, slot: u16) -> usize {
        let port = self.serving(slot).port;
        let index = self.nodes.iter().position(|n| n.port == port).unwrap();
        self.nodes[index].kill();
        let killed = port;
        self.wait_until(Duration::from_secs(30), "a replica promoted", |s| {
            let serving = s.serving(slot);
            serving.port != killed
        });
        index
    }

    /// Runs `f` on a connection to the first live node that gives an answer.
    fn live_conn_do<T>(&self, f: impl Fn(&mut redis::Connection) -> Option<T>) -> Option<T> {
        self.nodes
            .iter()
            .filter_map(|n| node_conn(n.port).ok())
            .find_map(|mut conn| f(&mut conn))
    }

    /// Every live node says the cluster is ok, knows every live node and has the slots with
    /// a replica each.
    fn whole(&self) -> bool {
        self.nodes.iter().all(|n| {
            let Ok(mut conn) = node_conn(n.port) else {
                return false;
            };
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut conn)
                .unwrap_or_default();
            let slots: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query(&mut conn)
                .unwrap_or_default();
            info.contains("cluster_state:ok")
                && info.contains("cluster_known_nodes:6")
                && slots.len() == 3
                && slots.iter().all(|range| range.len() == 4)
        })
    }

    pub fn wait_until(&self, limit: Duration, what: &str, done: impl Fn(&ClusterSetup) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(self) {
            assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn node_conn(port: u16) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    client.get_connection_with_timeout(Duration::from_secs(2))
}

/// A port whose cluster bus port (+10000) is free too.
fn free_port_pair() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().unwrap().port();
        if port < 55535 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

fn start_node() -> ClusterNode {
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port_pair();
        let dir = tempfile::tempdir().expect("temp dir");
        match spawn_node(port, dir.path()) {
            Ok((child, stdin)) => {
                return ClusterNode {
                    port,
                    child,
                    stdin: Some(stdin),
                    _dir: dir,
                    proxy: None,
                }
            }
            Err(e) => last = e,
        }
    }
    panic!("no cluster node started: {last}");
}

/// A node on `port` keeping its state (`nodes.conf`) in `dir`, ending with the test process
/// ([`spawn_watched`]).
fn spawn_node(port: u16, dir: &std::path::Path) -> Result<(Child, ChildStdin), String> {
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        &NODE_TIMEOUT.as_millis().to_string(),
        // The masters that are up keep serving their slots while one is down.
        "--cluster-require-full-coverage",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(dir.display().to_string());
    spawn_watched(&args, port)
}
