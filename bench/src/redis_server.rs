//! The bench's own redis-server (free loopback port, no persistence) and the counters it
//! reports: `INFO commandstats` and the process's CPU time.

use std::{
    collections::HashMap,
    io::{self, BufRead, BufReader, ErrorKind, Read, Write},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::BoxError;

pub const INSTALL: &str = "apt-get install -y redis-server wrk";

/// A redis-server child process, killed on drop.
pub struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> Result<RedisServer, BoxError> {
        RedisServer::start_with(&[])
    }

    /// A server with more arguments; with `--cluster-enabled yes` on a port whose cluster bus
    /// port (+10000) is free too.
    pub fn start_with(extra: &[&str]) -> Result<RedisServer, BoxError> {
        let mut last_error = String::new();
        // Another process may take the port between our probe and the server's bind.
        for _ in 0..5 {
            let mut port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            while extra.contains(&"--cluster-enabled")
                && (port >= 55535 || TcpListener::bind(("127.0.0.1", port + 10000)).is_err())
            {
                port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            }
            let dir = tempfile::tempdir()?;
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .args(extra)
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| match e.kind() {
                    ErrorKind::NotFound => {
                        format!("redis-server is not installed; install it with `{INSTALL}`")
                    }
                    _ => format!("could not start redis-server: {e}"),
                })?;
            let mut server = RedisServer {
                child,
                port,
                _dir: dir,
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = server.child.try_wait() {
                    last_error = format!("redis-server exited with {status}");
                    break;
                }
                if server.command(&["PING"]).is_ok() {
                    return Ok(server);
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        Err(format!("redis-server did not start: {last_error}").into())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one command on a fresh connection; the reply as text (bulk and simple strings,
    /// integers), or the server's error.
    pub fn command(&self, args: &[&str]) -> io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes())?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        let (kind, rest) = line.split_at(line.len().min(1));
        match kind {
            "+" | ":" => Ok(rest.to_owned()),
            "$" => {
                let len: usize = rest
                    .parse()
                    .map_err(|_| io::Error::other(format!("bad bulk length {rest:?}")))?;
                let mut body = vec![0; len + 2];
                reader.read_exact(&mut body)?;
                body.truncate(len);
                String::from_utf8(body).map_err(io::Error::other)
            }
            _ => Err(io::Error::other(format!("redis answered {line:?}"))),
        }
    }

    pub fn version(&self) -> io::Result<String> {
        let info = self.command(&["INFO", "server"])?;
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("?")
            .to_owned())
    }

    /// Commands run so far (the bench's own left out) and read events
    /// (`total_reads_processed`: a batch that arrived in one read is one).
    pub fn batching(&self) -> io::Result<(u64, u64)> {
        let calls = self.commandstats()?.since(&CommandStats::default()).calls;
        let stats = self.command(&["INFO", "stats"])?;
        let reads = stats
            .lines()
            .find_map(|l| l.strip_prefix("total_reads_processed:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        Ok((calls, reads))
    }

    pub fn commandstats(&self) -> io::Result<CommandStats> {
        Ok(CommandStats::parse(
            &self.command(&["INFO", "commandstats"])?,
        ))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redis Cluster of masters only (no replicas: the bench measures routing and per-node
/// batching, not failover), each a [`RedisServer`], joined by `redis-cli --cluster create`.
pub struct Cluster {
    pub masters: Vec<RedisServer>,
}

impl Cluster {
    pub fn start(masters: usize) -> Result<Cluster, BoxError> {
        let masters = (0..masters)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for master in &masters {
            create.arg(format!("127.0.0.1:{}", master.port));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => format!(
                    "redis-cli is not installed; install it with `apt-get install -y redis-tools`"
                ),
                _ => format!("could not run redis-cli: {e}"),
            })?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&out.stdout)
            )
            .into());
        }
        let cluster = Cluster { masters };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.masters.iter().all(|m| {
            m.command(&["CLUSTER", "INFO"])
                .is_ok_and(|info| info.contains("cluster_state:ok"))
        }) {
            if Instant::now() > deadline {
                return Err("the bench's cluster did not come up within 20 s".into());
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(cluster)
    }

    /// Every master's URL, comma-separated (as `serve` takes them).
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.masters.iter().map(RedisServer::url).collect();
        urls.join(",")
    }

    pub fn commandstats(&self) -> io::Result<CommandStats> {
        let mut all = CommandStats::default();
        for master in &self.masters {
            for (name, (calls, usec)) in master.commandstats()?.0 {
                let sum = all.0.entry(name).or_default();
                sum.0 += calls;
                sum.1 += usec;
            }
        }
        Ok(all)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.masters.iter().map(RedisServer::pid).collect()
    }

    /// [`RedisServer::batching`] of every master.
    pub fn per_master(&self) -> io::Result<Vec<(u64, u64)>> {
        self.masters.iter().map(RedisServer::batching).collect()
    }

    pub fn flush(&self) -> io::Result<()> {
        for master in &self.masters {
            master.command(&["FLUSHALL"])?;
        }
        Ok(())
    }
}

/// `INFO commandstats`: calls and microseconds per command name.
#[derive(Clone, Debug, Default)]
pub struct CommandStats(HashMap<String, (u64, u64)>);

/// What happened between two [`CommandStats`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CommandDelta {
    /// Calls of every command but the bench's own (`info`, `config|resetstat`), including
    /// those made inside scripts.
    pub calls: u64,
    pub pings: u64,
    /// Time Redis spent executing those commands (not reading or writing sockets).
    pub usec: u64,
}

impl CommandStats {
    fn parse(info: &str) -> CommandStats {
        let mut stats = HashMap::new();
        for line in info.lines() {
            let Some((name, fields)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let field = |key: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            stats.insert(name.to_owned(), (field("calls"), field("usec")));
        }
        CommandStats(stats)
    }

    pub fn since(&self, before: &CommandStats) -> CommandDelta {
        let mut delta = CommandDelta::default();
        for (name, &(calls, usec)) in &self.0 {
            if name == "info" || name == "config|resetstat" || name == "cluster|info" {
                continue;
            }
            let (calls0, usec0) = before.0.get(name).copied().unwrap_or((0, 0));
            delta.calls += calls.saturating_sub(calls0);
            delta.usec += usec.saturating_sub(usec0);
            if name == "ping" {
                delta.pings += calls.saturating_sub(calls0);
            }
        }
        delta
    }

    /// Calls per command name since `before`, largest first (for `--commands`).
    pub fn breakdown(&self, before: &CommandStats) -> Vec<(String, u64, u64)> {
        let mut rows: Vec<_> = self
            .0
            .iter()
            .filter(|(name, _)| name.as_str() != "info")
            .map(|(name, &(calls, usec))| {
                let (calls0, usec0) = before.0.get(name).copied().unwrap_or((0, 0));
                (name.clone(), calls - calls0, usec - usec0)
            })
            .filter(|&(_, calls, _)| calls > 0)
            .collect();
        rows.sort_by_key(|row| std::cmp::Reverse(row.1));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_commandstats_and_leaves_out_the_benchs_own_calls() {
        let before = CommandStats::parse(
            "# Commandstats\r\ncmdstat_get:calls=10,usec=20,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n\
             cmdstat_info:calls=3,usec=30,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n",
        );
        let after = CommandStats::parse(
            "cmdstat_get:calls=15,usec=30,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n\
             cmdstat_info:calls=5,usec=50,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n\
             cmdstat_ping:calls=2,usec=1,usec_per_call=0.50,rejected_calls=0,failed_calls=0\r\n",
        );
        let delta = after.since(&before);
        assert_eq!((delta.calls, delta.pings, delta.usec), (7, 2, 11));
    }
}
