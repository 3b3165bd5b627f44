//! Real `redis-server` processes for tests: each on its own unix socket (or free loopback
//! port) in a temporary directory, without persistence, stopped when dropped.

use std::{
    collections::BTreeMap,
    io::ErrorKind,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

const INSTALL: &str = "redis-server is not installed. Install it with \
     `apt-get update && apt-get install -y redis-server` (scripts/test does this for you)";

/// Where a test server listens.
#[derive(Clone, Debug)]
enum Listen {
    Unix(PathBuf),
    Tcp(u16),
}

/// A running redis-server owned by one test.
pub struct RedisServer {
    child: Option<Child>,
    listen: Listen,
    dir: tempfile::TempDir,
    /// More redis-server arguments (TLS ports, an ACL file).
    extra: Vec<String>,
}

impl RedisServer {
    /// A server on a unix socket in a fresh temporary directory.
    pub fn start() -> RedisServer {
        RedisServer::start_with(Vec::new())
    }

    /// A server on a unix socket (where [`RedisServer::conn`] connects, as the default user)
    /// with more arguments, e.g. a TLS port or an ACL file.
    pub fn start_with(extra: Vec<String>) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("redis.sock");
        let mut server = RedisServer {
            child: None,
            listen: Listen::Unix(socket),
            dir,
            extra,
        };
        server
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server did not start: {e}"));
        server
    }

    /// A server on a unix socket (for [`RedisServer::conn`]) that also listens on a free
    /// loopback port as `args(port)` says (`--tls-port <port>`, `--port <port>`); returns the
    /// port too.
    pub fn start_on_port_with(args: impl Fn(u16) -> Vec<String>) -> (RedisServer, u16) {
        on_free_port("redis-server", |port| {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut server = RedisServer {
                child: None,
                listen: Listen::Unix(dir.path().join("redis.sock")),
                dir,
                extra: args(port),
            };
            server.spawn().map(|()| (server, port))
        })
    }

    /// A server on a free loopback TCP port.
    pub fn start_tcp() -> RedisServer {
        RedisServer::start_tcp_with(Vec::new())
    }

    /// A server on a free loopback TCP port with more arguments (`--replicaof`).
    pub fn start_tcp_with(extra: Vec<String>) -> RedisServer {
        on_free_port("redis-server", |port| {
            let mut server = RedisServer {
                child: None,
                listen: Listen::Tcp(port),
                dir: tempfile::tempdir().expect("temp dir"),
                extra: extra.clone(),
            };
            server.spawn().map(|()| server)
        })
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path());
        match &self.listen {
            Listen::Unix(path) => {
                cmd.args(["--port", "0", "--unixsocketperm", "700", "--unixsocket"])
                    .arg(path);
            }
            Listen::Tcp(port) => {
                cmd.args(["--port", &port.to_string()]);
            }
        }
        cmd.args(&self.extra);
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                if e.kind() == ErrorKind::NotFound {
                    panic!("{INSTALL}");
                }
                format!("could not run redis-server: {e}")
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("redis-server exited with {status}"));
            }
            if let Ok(mut conn) = self.try_conn() {
                // Up, and answering: PONG, or (started with `--requirepass`) NOAUTH.
                match redis::cmd("PING").query::<String>(&mut conn) {
                    Ok(_) => return Ok(()),
                    Err(e) if e.code() == Some("NOAUTH") => return Ok(()),
                    Err(_) => {}
                }
            }
            if Instant::now() > deadline {
                return Err("redis-server did not answer PING within 10 s".into());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The URL the session middleware should use (database 0).
    pub fn url(&self) -> String {
        match &self.listen {
            Listen::Unix(path) => format!("redis+unix://{}", path.display()),
            Listen::Tcp(port) => format!("redis://127.0.0.1:{port}"),
        }
    }

    /// The TCP address of a server from [`RedisServer::start_tcp`].
    pub fn tcp_addr(&self) -> std::net::SocketAddr {
        match &self.listen {
            Listen::Tcp(port) => std::net::SocketAddr::from(([127, 0, 0, 1], *port)),
            Listen::Unix(_) => panic!("a unix socket server has no TCP address"),
        }
    }

    fn try_conn(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(1))
    }

    /// A direct connection, for inspecting and tampering with what the middleware stored.
    pub fn conn(&self) -> redis::Connection {
        self.try_conn().expect("connect to the test redis-server")
    }

    /// Calls per command since the last [`RedisServer::reset_stats`], leaving out the
    /// commands the test itself sends to read and reset them.
    pub fn command_calls(&self) -> BTreeMap<String, u64> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.conn())
            .expect("INFO commandstats");
        info.lines()
            .filter_map(|line| {
                let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
                Some((name.to_owned(), calls.parse().ok()?))
            })
            .filter(|(name, _)| !matches!(name.as_str(), "info" | "config|resetstat"))
            .collect()
    }

    /// Zeroes the command statistics.
    pub fn reset_stats(&self) {
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query::<()>(&mut self.conn())
            .expect("CONFIG RESETSTAT");
    }

    /// All keys, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query(&mut self.conn())
            .expect("KEYS");
        keys.sort();
        keys
    }

    /// Stops the server (to test an outage); [`RedisServer::restart`] brings it back, empty,
    /// on the same address.
    pub fn stop(&mut self) {
        self.kill();
        if let Listen::Unix(path) = &self.listen {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Starts the server again on the same address and directory: with no data, unless it
    /// was started with persistence (`--appendonly yes`), whose files it then loads.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn()
            .unwrap_or_else(|e| panic!("redis-server did not restart: {e}"));
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `start` on a free loopback port, trying other ports when another process takes the
/// port between the probe and the server's bind.
pub fn on_free_port<T>(what: &str, mut start: impl FnMut(u16) -> Result<T, String>) -> T {
    let mut last_error = String::new();
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        match start(port) {
            Ok(started) => return started,
            Err(e) => last_error = e,
        }
    }
    panic!("{what} did not start on a free port: {last_error}");
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `redis-server` with `args` (listening on `port`) that ends when the test process does:
/// it runs under a small `sh` that kills it (SIGKILL) when its standard input closes, which
/// happens when the returned [`ChildStdin`] is dropped or the test process exits. For
/// deployments shared by a whole test binary (a `static`, never dropped). Returns once the
/// server answers PING.
// The shell is waited for by the caller (or below, if the server never answers).
#[allow(clippy::zombie_processes)]
pub fn spawn_watched(
    args: &[String],
    port: u16,
) -> Result<(Child, std::process::ChildStdin), String> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"redis-server "$@" & server=$!; read _; kill -9 $server 2>/dev/null"#)
        .arg("sh")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh");
    let stdin = child.stdin.take().expect("piped");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answered = redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
            .and_then(|mut conn| redis::cmd("PING").query::<String>(&mut conn));
        if answered.is_ok() {
            return Ok((child, stdin));
        }
        if Instant::now() > deadline {
            drop(stdin);
            let _ = child.wait();
            return Err(format!("redis-server on port {port} did not answer PING"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the replica at `url` is connected to its master and in sync
/// (`master_link_status:up`).
pub fn replica_link_up(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
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
