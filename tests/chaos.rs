//! The chaos test: a real multi-worker `HttpServer` under a steady load of ~50 requests in
//! flight over 300 sessions, while its redis-server (AOF, `appendfsync always`) is killed
//! with SIGKILL and started again on the same socket and directory, and later paused for
//! longer than the command timeout. Asserted, on both transports: no 500 ever (503 only);
//! no request waits past the store budget (plus the HTTP round trip); the breaker opens
//! during each outage and closes after it; the application serves again without a restart;
//! every write answered 2xx before the kill is in Redis after it.

mod common;

use std::{
    cell::RefCell,
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use actix_redis_session::{BreakerState, CircuitBreaker, RedisSession, Retry, Transport};
use common::{key, serve_concurrent, Client, RedisServer};

/// One chaos run at a time: each loads both cores on its own.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SESSIONS: usize = 300;
const IN_FLIGHT: usize = 50;
const BUDGET: Duration = Duration::from_millis(1000);
/// What a request may take beyond its store budget: the HTTP round trip and the handler,
/// on a loaded two-core machine.
const SLACK: Duration = Duration::from_millis(750);

/// When things happen, from the start of the load.
const KILL_AT: Duration = Duration::from_millis(1500);
/// Longer than the budget: retries alone cannot hide it, the breaker must open.
const DOWN_FOR: Duration = Duration::from_millis(1500);
const PAUSE_AT: Duration = Duration::from_millis(5000);
const PAUSE_MS: u64 = 1500;
/// From here on (the pause over, the breaker's cool-down long past) every request succeeds.
const CALM_FROM: Duration = Duration::from_millis(7500);
const END_AT: Duration = Duration::from_millis(9500);

/// One answered request.
struct Answer {
    at: Duration,
    status: u16,
    took: Duration,
}

/// What the breaker did, sampled every few milliseconds by a watcher thread.
#[derive(Default)]
struct Watched {
    /// Open (or half-open) during the kill phase / the pause phase.
    open_after_kill: bool,
    open_during_pause: bool,
}

#[actix_web::test]
async fn pool_transport_survives_a_kill_and_a_pause_under_load() {
    chaos(Transport::Pool).await;
}

#[actix_web::test]
async fn multiplexed_transport_survives_a_kill_and_a_pause_under_load() {
    chaos(Transport::Multiplexed).await;
}

async fn chaos(transport: Transport) {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = RedisServer::start_with(
        ["--appendonly", "yes", "--appendfsync", "always"]
            .map(String::from)
            .to_vec(),
    );
    let sessions = RedisSession::builder(server.url(), key(1))
        .transport(transport)
        .capacity(4)
        .connect_timeout(Duration::from_millis(300))
        .checkout_timeout(Duration::from_millis(300))
        .command_timeout(Duration::from_millis(300))
        .store_budget(BUDGET)
        .retry(Retry::new())
        .circuit_breaker(
            CircuitBreaker::new()
                .failures(5)
                .cool_down(Duration::from_millis(250)),
        )
        .build()
        .unwrap();
    let srv = serve_concurrent(sessions.clone());
    let client = Client::new(&srv);

    // 300 sessions, each with a counter at 0.
    let mut cookies = Vec::with_capacity(SESSIONS);
    for _ in 0..SESSIONS {
        let mut owner = Client::new(&srv);
        assert_eq!(owner.get("/set/v/0").await.status, 200);
        cookies.push(owner.cookie_header().unwrap());
    }

    let started = Instant::now();
    let (chaos, watcher) = unleash(server, sessions.clone(), started);

    // Each of the 50 loops owns 6 sessions and alternates writes (the next counter value)
    // and reads on them, one request at a time: ~50 in flight, each session written in order.
    let answers = RefCell::new(Vec::new());
    let acked = RefCell::new(vec![0u64; SESSIONS]);
    let acked_before_kill = RefCell::new(vec![0u64; SESSIONS]);
    let loops = (0..IN_FLIGHT).map(|worker| {
        let (client, cookies, answers) = (&client, &cookies, &answers);
        let (acked, acked_before_kill) = (&acked, &acked_before_kill);
        async move {
            let mine: Vec<usize> = (worker..SESSIONS).step_by(IN_FLIGHT).collect();
            let mut next = vec![1u64; SESSIONS];
            let mut turn = 0usize;
            while started.elapsed() < END_AT {
                // A write of one session, then a read of it, then the next session.
                let session = mine[(turn / 2) % mine.len()];
                let write = turn.is_multiple_of(2);
                turn += 1;
                let path = if write {
                    format!("/set/v/{}", next[session])
                } else {
                    "/get/v".to_owned()
                };
                let sent = Instant::now();
                let at = started.elapsed();
                let res = client.send(&path, Some(&cookies[session])).await;
                let took = sent.elapsed();
                if write && res.status == 200 {
                    acked.borrow_mut()[session] = next[session];
                    if started.elapsed() < KILL_AT {
                        acked_before_kill.borrow_mut()[session] = next[session];
                    }
                }
                if write {
                    next[session] += 1;
                }
                answers.borrow_mut().push(Answer {
                    at,
                    status: res.status,
                    took,
                });
            }
        }
    });
    futures_util::future::join_all(loops).await;
    let server = chaos.join().expect("the chaos thread");
    let watched = watcher.join().expect("the watcher thread");

    let answers = answers.into_inner();
    let by_status = answers.iter().fold(BTreeMap::new(), |mut counts, a| {
        *counts.entry(a.status).or_insert(0usize) += 1;
        counts
    });
    let what = format!(
        "{transport:?}: {} requests, by status {by_status:?}",
        answers.len()
    );
    assert!(
        by_status.keys().all(|status| [200, 503].contains(status)),
        "{what}: only 200 and 503"
    );
    assert!(
        by_status.contains_key(&503),
        "{what}: the outages were felt"
    );
    assert!(by_status.get(&200).copied().unwrap_or(0) > 1000, "{what}");
    let slowest = answers.iter().map(|a| a.took).max().unwrap();
    assert!(
        slowest <= BUDGET + SLACK,
        "{what}: the slowest request took {slowest:?}"
    );
    let calm: Vec<&Answer> = answers.iter().filter(|a| a.at >= CALM_FROM).collect();
    assert!(
        calm.len() > 100,
        "{what}: {} requests after the outages",
        calm.len()
    );
    assert!(
        calm.iter().all(|a| a.status == 200),
        "{what}: served again after the outages, without a restart"
    );
    assert!(
        watched.open_after_kill,
        "{what}: the breaker opened after the kill"
    );
    assert!(
        watched.open_during_pause,
        "{what}: the breaker opened during the pause"
    );
    assert_eq!(
        sessions.store_health().state(),
        BreakerState::Closed,
        "{what}"
    );

    // Every acknowledged write is there: the counter of each session is at least the last
    // value a 2xx answered (the writes before the kill among them), read back over HTTP and
    // straight from Redis.
    let acked = acked.into_inner();
    let acked_before_kill = acked_before_kill.into_inner();
    assert!(
        acked_before_kill.iter().filter(|n| **n > 0).count() > SESSIONS / 2,
        "{what}"
    );
    for (session, cookie) in cookies.iter().enumerate() {
        let res = client.send("/get/v", Some(cookie)).await;
        assert_eq!(res.status, 200, "{what}");
        let stored: u64 = res
            .body
            .trim_matches('"')
            .parse()
            .unwrap_or_else(|_| panic!("{what}: session {session} reads {:?}", res.body));
        assert!(
            stored >= acked[session] && acked[session] >= acked_before_kill[session],
            "{what}: session {session} holds {stored}, {} was acknowledged ({} before the kill)",
            acked[session],
            acked_before_kill[session],
        );
    }
    assert_eq!(
        server.keys().len(),
        SESSIONS,
        "{what}: no session lost, none added"
    );
}

/// Starts the chaos (a thread that kills, restarts and pauses Redis on schedule) and a
/// watcher of the breaker; both end by `END_AT`.
fn unleash(
    mut server: RedisServer,
    sessions: RedisSession,
    started: Instant,
) -> (thread::JoinHandle<RedisServer>, thread::JoinHandle<Watched>) {
    let done = Arc::new(AtomicBool::new(false));
    let until = move |at: Duration| {
        if let Some(wait) = at.checked_sub(started.elapsed()) {
            thread::sleep(wait);
        }
    };
    let chaos_done = Arc::clone(&done);
    let chaos = thread::spawn(move || {
        until(KILL_AT);
        // SIGKILL: no shutdown, no final fsync; only what AOF already has survives.
        server.stop();
        until(KILL_AT + DOWN_FOR);
        server.restart();
        until(PAUSE_AT);
        redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(PAUSE_MS)
            .arg("ALL")
            .query::<()>(&mut server.conn())
            .expect("CLIENT PAUSE");
        until(END_AT);
        chaos_done.store(true, Ordering::SeqCst);
        server
    });
    let watcher = thread::spawn(move || {
        let mut watched = Watched::default();
        let pause = PAUSE_AT..PAUSE_AT + Duration::from_millis(PAUSE_MS) + BUDGET;
        while !done.load(Ordering::SeqCst) {
            let open = sessions.store_health().state() != BreakerState::Closed;
            let at = started.elapsed();
            if open && (KILL_AT..PAUSE_AT).contains(&at) {
                watched.open_after_kill = true;
            }
            if open && pause.contains(&at) {
                watched.open_during_pause = true;
            }
            thread::sleep(Duration::from_millis(2));
        }
        watched
    });
    (chaos, watcher)
}
