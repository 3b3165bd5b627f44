//! Throughput of actix-redis-session against actix-session, in one run on one Redis.
//!
//! ```text
//! cargo run --release -p actix-redis-session-bench -- [--seconds 6] [--rounds 3] [--warmup 1]
//!     [--workers 1] [--connections 32] [--only plain,mux-rw,...] [--commands]
//! ```
//!
//! Starts its own redis-server, then, round after round, every variant in turn: the server as
//! a child process of this binary (`serve` below), 32 sessions made over HTTP, a warm-up, and
//! a measured `wrk -t1 -c32 --latency` run. Redis's `INFO commandstats` and the CPU time of
//! Redis, the server and wrk are read around the measured run. Rounds interleave the variants
//! so that slow drifts on a shared machine hit all of them alike; ratios are computed within
//! each round and their median reported. See BENCHMARKS.md.
//!
//! `admin [--sessions N] [--count N]` runs the session administration at scale instead
//! (`admin.rs`).

mod admin;
mod cpu;
mod redis_server;
mod report;
mod serve;
mod wrk;

use std::{
    env,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, ExitCode, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{
    redis_server::{Cluster, CommandStats, RedisServer},
    report::Measurement,
    serve::Variant,
};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str = "usage: actix-redis-session-bench [--seconds N] [--rounds N] [--warmup N] \
    [--workers N] [--connections N] [--only VARIANT,...] [--commands]

  --seconds N       length of each measured wrk run (default 6)
  --rounds N        rounds; each runs every variant once (default 3)
  --warmup N        seconds of wrk before each measured run (default 1)
  --workers N       actix-web workers of each server (default 1)
  --connections N   wrk connections, and sessions per variant (default 32)
  --only A,B        run only these variants (ratios need their baselines)
  --commands        print each run's Redis commands by name

variants: plain actix-session-rw actix-session-ro-ttl actix-session-ro pool-rw pool-ro pool-new
          memory-rw mux-rw mux-ro mux-ro-touch file-rw cookie-rw actix-session-page mux-page
          mux-rw-hardened cluster-pool-rw cluster-mux-rw cluster-mux-ro
          pool-rw-cache pool-ro-cache mux-rw-cache mux-ro-cache
          (the cluster variants run on a Redis Cluster of three masters the bench starts)";

#[derive(Clone, Debug)]
pub struct Options {
    pub seconds: u32,
    pub rounds: usize,
    pub warmup: u32,
    pub workers: usize,
    pub connections: u32,
    pub variants: Vec<Variant>,
    pub commands: bool,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, String> {
        let mut options = Options {
            seconds: 6,
            rounds: 3,
            warmup: 1,
            workers: 1,
            connections: 32,
            variants: Variant::ALL.to_vec(),
            commands: false,
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            if flag == "--commands" {
                options.commands = true;
                continue;
            }
            if flag == "-h" || flag == "--help" {
                return Err(USAGE.to_owned());
            }
            let value = args
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n\n{USAGE}"))?;
            let number = || {
                value
                    .parse::<u32>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("{flag}: expected a positive number, got {value:?}"))
            };
            match flag.as_str() {
                "--seconds" => options.seconds = number()?,
                "--rounds" => options.rounds = number()? as usize,
                "--warmup" => options.warmup = number()?,
                "--workers" => options.workers = number()? as usize,
                "--connections" => options.connections = number()?,
                "--only" => {
                    options.variants = value
                        .split(',')
                        .map(|name| {
                            Variant::parse(name).ok_or_else(|| format!("unknown variant {name:?}"))
                        })
                        .collect::<Result<_, _>>()?;
                }
                _ => return Err(format!("unknown option {flag}\n\n{USAGE}")),
            }
        }
        Ok(options)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        return serve_child(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("admin") {
        return match admin::run(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let options = match Options::parse(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    match bench(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `serve <variant> <redis-url> <workers>`: one server under test (a child of the bench).
fn serve_child(args: &[String]) -> ExitCode {
    let [variant, url, workers] = args else {
        eprintln!("usage: actix-redis-session-bench serve <variant> <redis-url> <workers>");
        return ExitCode::FAILURE;
    };
    let (Some(variant), Ok(workers)) = (Variant::parse(variant), workers.parse()) else {
        eprintln!("serve: bad variant or worker count");
        return ExitCode::FAILURE;
    };
    match serve::serve(variant, url.clone(), workers) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serve {}: {e}", variant.name());
            ExitCode::FAILURE
        }
    }
}

/// The bench's Redis, and its cluster of three masters if a cluster variant runs.
struct Stores {
    redis: RedisServer,
    cluster: Option<Cluster>,
}

impl Stores {
    fn url(&self, variant: Variant) -> String {
        match &self.cluster {
            Some(cluster) if variant.on_cluster() => cluster.urls(),
            _ => self.redis.url(),
        }
    }

    fn pids(&self, variant: Variant) -> Vec<u32> {
        match &self.cluster {
            Some(cluster) if variant.on_cluster() => cluster.pids(),
            _ => vec![self.redis.pid()],
        }
    }

    fn commandstats(&self, variant: Variant) -> std::io::Result<CommandStats> {
        match &self.cluster {
            Some(cluster) if variant.on_cluster() => cluster.commandstats(),
            _ => self.redis.commandstats(),
        }
    }

    /// [`RedisServer::batching`] of every node the variant uses.
    fn batching(&self, variant: Variant) -> std::io::Result<Vec<(u64, u64)>> {
        match &self.cluster {
            Some(cluster) if variant.on_cluster() => cluster.per_master(),
            _ => Ok(vec![self.redis.batching()?]),
        }
    }

    fn flush(&self, variant: Variant) -> std::io::Result<()> {
        match &self.cluster {
            Some(cluster) if variant.on_cluster() => cluster.flush(),
            _ => self.redis.command(&["FLUSHALL"]).map(drop),
        }
    }
}

fn bench(options: &Options) -> Result<(), BoxError> {
    wrk::check_installed()?;
    let stores = Stores {
        redis: RedisServer::start()?,
        cluster: if options.variants.iter().any(|v| v.on_cluster()) {
            Some(Cluster::start(3)?)
        } else {
            None
        },
    };
    let redis = &stores.redis;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("sessions.lua");
    std::fs::write(&script, wrk::SCRIPT)?;
    let cookies = dir.path().join("cookies.txt");

    let setup = report::Setup::describe(options, &redis.version()?, &wrk::version());
    println!("{setup}");

    let started = Instant::now();
    let mut measurements: Vec<Measurement> = Vec::new();
    for round in 0..options.rounds {
        for &variant in &options.variants {
            let m = measure(options, &stores, variant, round, &script, &cookies)?;
            println!("{}", m.progress_line(options.rounds));
            measurements.push(m);
            stores.flush(variant)?;
        }
    }
    println!(
        "\n{} runs in {:.0} s\n",
        measurements.len(),
        started.elapsed().as_secs_f64()
    );
    report::print(options, &setup, &measurements);
    Ok(())
}

/// Everything read from the machine at one instant.
struct Snapshot {
    commands: redis_server::CommandStats,
    redis_ticks: u64,
    server_ticks: u64,
    wrk_ticks: u64,
    machine_ticks: u64,
    at: Instant,
}

impl Snapshot {
    fn take(
        stores: &Stores,
        variant: Variant,
        server: &ServerProcess,
    ) -> Result<Snapshot, BoxError> {
        let mut redis_ticks = 0;
        for pid in stores.pids(variant) {
            redis_ticks += cpu::process_ticks(pid)?;
        }
        Ok(Snapshot {
            commands: stores.commandstats(variant)?,
            redis_ticks,
            server_ticks: cpu::process_ticks(server.child.id())?,
            wrk_ticks: cpu::reaped_children_ticks()?,
            machine_ticks: cpu::machine_busy_ticks()?,
            at: Instant::now(),
        })
    }
}

fn measure(
    options: &Options,
    stores: &Stores,
    variant: Variant,
    round: usize,
    script: &std::path::Path,
    cookie_file: &std::path::Path,
) -> Result<Measurement, BoxError> {
    let server = ServerProcess::start(variant, &stores.url(variant), options.workers)?;
    let cookies = if variant.sends_cookie() {
        let cookies = (0..options.connections)
            .map(|_| create_session(server.addr))
            .collect::<Result<Vec<_>, _>>()?;
        check_session(server.addr, &cookies[0], variant)?;
        cookies
    } else {
        Vec::new()
    };
    std::fs::write(cookie_file, cookies.join("\n"))?;

    wrk::run(
        server.addr,
        options.connections,
        options.warmup,
        script,
        cookie_file,
        variant.page_view(),
    )?;
    // Let requests that wrk left in flight finish before counting.
    thread::sleep(Duration::from_millis(200));
    let masters_before = stores.batching(variant)?;
    let before = Snapshot::take(stores, variant, &server)?;
    let wrk = wrk::run(
        server.addr,
        options.connections,
        options.seconds,
        script,
        cookie_file,
        variant.page_view(),
    )?;
    thread::sleep(Duration::from_millis(200));
    let after = Snapshot::take(stores, variant, &server)?;
    drop(server);
    if variant.ours_on_redis() {
        // Batching per node: how the load spread and how many commands each read carried.
        let total = after.commands.since(&before.commands).calls.max(1) as f64;
        for (i, ((calls0, reads0), (calls1, reads1))) in masters_before
            .iter()
            .zip(stores.batching(variant)?)
            .enumerate()
        {
            let (calls, reads) = (calls1 - calls0, reads1.saturating_sub(*reads0).max(1));
            println!(
                "    {:<24} node {i}: {:>5.1}% of commands, {:>5.1} commands per read",
                variant.name(),
                calls as f64 * 100.0 / total,
                calls as f64 / reads as f64
            );
        }
    }
    if options.commands {
        for (name, calls, usec) in after.commands.breakdown(&before.commands) {
            println!(
                "    {:<24} {name:<20} {:>6.3} calls/req {:>6.2} us/call",
                variant.name(),
                calls as f64 / wrk.requests as f64,
                usec as f64 / calls as f64
            );
        }
    }
    let ticks = cpu::ticks_per_second();
    let us = |t0: u64, t1: u64| t1.saturating_sub(t0) as f64 / ticks * 1e6;
    let window_us = (after.at - before.at).as_secs_f64() * 1e6;
    let ours_us = us(before.redis_ticks, after.redis_ticks)
        + us(before.server_ticks, after.server_ticks)
        + us(before.wrk_ticks, after.wrk_ticks);
    let machine_us = us(before.machine_ticks, after.machine_ticks);
    let cores = thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    Ok(Measurement {
        variant,
        round,
        commands: after.commands.since(&before.commands),
        redis_cpu_us: us(before.redis_ticks, after.redis_ticks),
        server_cpu_us: us(before.server_ticks, after.server_ticks),
        wrk_cpu_us: us(before.wrk_ticks, after.wrk_ticks),
        other_load: ((machine_us - ours_us) / (window_us * cores)).max(0.0),
        wrk,
    })
}

/// A server under test, killed on drop.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    fn start(variant: Variant, redis_url: &str, workers: usize) -> Result<ServerProcess, BoxError> {
        let mut child = Command::new(env::current_exe()?)
            .args(["serve", variant.name(), redis_url, &workers.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(addr) = line.trim().strip_prefix("listening ") else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("server {} did not start", variant.name()).into());
        };
        let addr = addr.parse()?;
        Ok(ServerProcess { child, addr })
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 GET on a fresh connection; the status code, Set-Cookie name=value pairs and
/// body.
fn get(
    addr: SocketAddr,
    path: &str,
    cookie: Option<&str>,
) -> Result<(u16, String, String), BoxError> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let cookie = cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{cookie}Connection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("no HTTP status line")?;
    let cookies: Vec<&str> = lines
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("set-cookie")
                .then(|| value.split(';').next().unwrap_or("").trim())
        })
        .collect();
    Ok((status, cookies.join("; "), body.to_owned()))
}

/// A new session holding the counter; its Cookie header value.
fn create_session(addr: SocketAddr) -> Result<String, BoxError> {
    let (status, cookies, _) = get(addr, "/init", None)?;
    if status != 200 || cookies.is_empty() {
        return Err(format!("GET /init answered {status} with cookies {cookies:?}").into());
    }
    Ok(cookies)
}

/// The server finds the session behind `cookie` (the handler answers the stored counter).
fn check_session(addr: SocketAddr, cookie: &str, variant: Variant) -> Result<(), BoxError> {
    let (status, _, body) = get(addr, "/", Some(cookie))?;
    let n: u64 = body.trim().parse().unwrap_or(0);
    if status != 200 || n < serve::INITIAL {
        return Err(format!(
            "{}: a pre-created session was not found (status {status}, body {body:?})",
            variant.name()
        )
        .into());
    }
    Ok(())
}
