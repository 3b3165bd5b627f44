//! The session administration at scale (`admin` subcommand): a million sessions written
//! straight into Redis in the store's layout, then `count()`, a full `iter()`, `sessions_of`
//! a user with 50 sessions among them, and `destroy_all()`. Reports the time of each, the
//! bench process's peak resident memory while iterating 10,000 and then all sessions (flat:
//! the listing holds one `SCAN` step at a time), and Redis's longest stall during
//! `destroy_all` as a pinger on its own connection sees it (one `PING` after another, the
//! slowest round trip).
//!
//! ```text
//! cargo run --release -p actix-redis-session-bench -- admin [--sessions 1000000] [--count 1000]
//! ```

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use actix_redis_session::{Key, RedisSession, SessionAdmin};
use futures_util::TryStreamExt as _;
use sha2::{Digest, Sha256};

use crate::{redis_server::RedisServer, BoxError};

const PREFIX: &str = "session:";
/// Sessions of the one user whose index `sessions_of` reads.
const USER_SESSIONS: usize = 50;
const USER: &str = "user-with-fifty-sessions";

pub fn run(args: &[String]) -> Result<(), BoxError> {
    let mut sessions = 1_000_000usize;
    let mut scan_count = 1000usize;
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--sessions" => sessions = value.parse()?,
            "--count" => scan_count = value.parse()?,
            _ => return Err(format!("unknown option {flag}").into()),
        }
    }
    let redis = RedisServer::start()?;
    println!(
        "redis-server {} on {}; {sessions} sessions, SCAN COUNT {scan_count}",
        redis.version()?,
        redis.url()
    );
    let started = Instant::now();
    fill(&redis, sessions)?;
    println!(
        "filled in {:.1} s (pipelined HSET + PEXPIRE); used_memory {}",
        started.elapsed().as_secs_f64(),
        info_field(&redis, "memory", "used_memory_human")?
    );

    let system = actix_web::rt::System::new();
    system.block_on(async {
        let sessions_mw = RedisSession::new(redis.url(), Key::generate())?;
        let admin = sessions_mw.admin().scan_count(scan_count);

        let t = Instant::now();
        let count = admin.count().await?;
        println!(
            "count()          {count:>9} sessions in {:>7.2} s",
            t.elapsed().as_secs_f64()
        );

        reset_peak_rss();
        let (seen, secs) = iterate(&admin, Some(10_000)).await?;
        let small = peak_rss_kb();
        println!("iter() first     {seen:>9} sessions in {secs:>7.2} s; peak RSS {small} kB");
        reset_peak_rss();
        let (seen, secs) = iterate(&admin, None).await?;
        let large = peak_rss_kb();
        println!("iter() all       {seen:>9} sessions in {secs:>7.2} s; peak RSS {large} kB");

        let t = Instant::now();
        let of_user = admin.sessions_of(USER).await?;
        println!(
            "sessions_of()    {:>9} sessions in {:>7.2} ms",
            of_user.len(),
            t.elapsed().as_secs_f64() * 1000.0
        );

        let stop = Arc::new(AtomicBool::new(false));
        let pinger = pinger(&redis, Arc::clone(&stop))?;
        let t = Instant::now();
        let removed = admin.destroy_all().await?;
        let secs = t.elapsed().as_secs_f64();
        stop.store(true, Ordering::SeqCst);
        let (pings, worst) = pinger.join().map_err(|_| "the pinger panicked")??;
        println!(
            "destroy_all()    {removed:>9} sessions in {secs:>7.2} s; Redis's longest stall \
             {:.2} ms over {pings} PINGs",
            worst.as_secs_f64() * 1000.0
        );
        println!("left in Redis: {} keys (the user's index)", dbsize(&redis)?);
        Ok::<_, BoxError>(())
    })?;
    Ok(())
}

/// Lists the sessions (the first `limit` of them, or all); how many and how long.
async fn iterate(admin: &SessionAdmin, limit: Option<usize>) -> Result<(usize, f64), BoxError> {
    let t = Instant::now();
    let mut stream = std::pin::pin!(admin.iter());
    let mut seen = 0usize;
    while let Some(info) = stream.try_next().await? {
        std::hint::black_box(&info);
        seen += 1;
        if limit.is_some_and(|limit| seen >= limit) {
            break;
        }
    }
    Ok((seen, t.elapsed().as_secs_f64()))
}

/// Writes `n` sessions in the store's layout, the first [`USER_SESSIONS`] of them [`USER`]'s
/// with its index, in pipelines of 10,000 commands.
fn fill(redis: &RedisServer, n: usize) -> Result<(), BoxError> {
    let mut conn = TcpStream::connect(redis.url().trim_start_matches("redis://"))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let user_value = {
        let mut v = vec![0x01];
        v.extend_from_slice(serde_json::to_string(USER)?.as_bytes());
        v
    };
    let marker = b"1700000000000.0123456789abcdef";
    let mut index = vec![b"HSET".to_vec(), index_key(USER).into_bytes()];
    let mut pending = 0usize;
    let mut buf = Vec::with_capacity(4 << 20);
    for i in 0..n {
        let handle = format!("{:064x}", u128::from(i as u64) * 0x9e37_79b9_7f4a_7c15);
        let key = format!("{PREFIX}{handle}");
        let mut hset: Vec<&[u8]> = vec![b"HSET", key.as_bytes(), b"m:c", marker];
        if i < USER_SESSIONS {
            hset.extend([b"x:user".as_slice(), user_value.as_slice()]);
            index.push(format!("h:{handle}").into_bytes());
            index.push(Vec::new());
        }
        resp(&mut buf, &hset);
        resp(&mut buf, &[b"PEXPIRE", key.as_bytes(), b"3600000"]);
        pending += 2;
        if pending >= 10_000 {
            flush(&mut conn, &mut reader, &mut buf, &mut pending)?;
        }
    }
    let index: Vec<&[u8]> = index.iter().map(Vec::as_slice).collect();
    if index.len() > 2 {
        resp(&mut buf, &index);
        pending += 1;
    }
    flush(&mut conn, &mut reader, &mut buf, &mut pending)
}

/// The store's key of a user's index (`{prefix}user:{hex SHA-256 of the user}`).
fn index_key(user: &str) -> String {
    let digest = Sha256::digest(user.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{PREFIX}user:{hex}")
}

fn resp(buf: &mut Vec<u8>, args: &[&[u8]]) {
    buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        buf.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        buf.extend_from_slice(arg);
        buf.extend_from_slice(b"\r\n");
    }
}

/// Sends the buffered commands and reads one reply line each (all integer replies).
fn flush(
    conn: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    buf: &mut Vec<u8>,
    pending: &mut usize,
) -> Result<(), BoxError> {
    conn.write_all(buf)?;
    buf.clear();
    let mut line = String::new();
    for _ in 0..*pending {
        line.clear();
        reader.read_line(&mut line)?;
        if !line.starts_with(':') {
            return Err(format!("redis answered {line:?}").into());
        }
    }
    *pending = 0;
    Ok(())
}

/// The pinger's thread: how many `PING`s it sent, and the slowest round trip.
type Pinger = thread::JoinHandle<Result<(usize, Duration), BoxError>>;

/// `PING` after `PING` on a connection of its own until `stop`: how many, and the slowest.
fn pinger(redis: &RedisServer, stop: Arc<AtomicBool>) -> Result<Pinger, BoxError> {
    let mut conn = TcpStream::connect(redis.url().trim_start_matches("redis://"))?;
    conn.set_nodelay(true)?;
    let mut reader = BufReader::new(conn.try_clone()?);
    Ok(thread::spawn(move || {
        let (mut pings, mut worst) = (0usize, Duration::ZERO);
        let mut line = String::new();
        while !stop.load(Ordering::SeqCst) {
            let t = Instant::now();
            conn.write_all(b"*1\r\n$4\r\nPING\r\n")?;
            line.clear();
            reader.read_line(&mut line)?;
            worst = worst.max(t.elapsed());
            pings += 1;
        }
        Ok((pings, worst))
    }))
}

fn dbsize(redis: &RedisServer) -> Result<String, BoxError> {
    Ok(redis.command(&["DBSIZE"])?)
}

fn info_field(redis: &RedisServer, section: &str, field: &str) -> Result<String, BoxError> {
    let info = redis.command(&["INFO", section])?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or("?")
        .to_owned())
}

/// Resets this process's peak resident set size (Linux: `/proc/self/clear_refs`).
fn reset_peak_rss() {
    let _ = fs::write("/proc/self/clear_refs", "5");
}

/// This process's peak resident set size since the last reset, in kB (`VmHWM`).
fn peak_rss_kb() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|l| {
                l.strip_prefix("VmHWM:")?
                    .trim()
                    .trim_end_matches(" kB")
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}
