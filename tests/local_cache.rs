//! The local cache (`LocalCache`): two instances of the application, each with its own
//! cache and tracking connection, on one real redis-server, over real HTTP with several
//! workers. What one instance (or anyone else) changes in Redis, the other stops serving
//! from its cache as soon as the invalidation has arrived; with tracking gone, the cache is
//! bypassed; nothing stale survives racing writes.

mod common;

use std::time::{Duration, Instant};

use actix_redis_session::Session;
use actix_redis_session::{
    store::{CacheStats, LocalCache},
    ConfigError, Key, RedisSession, RedisSessionBuilder, Transport,
};
use actix_web::{web, App};
use common::{key, redis_server::RedisServer, tracking_clients, Client, WORKERS};

/// An instance of the application on `server`: its own middleware, cache and workers.
struct Instance {
    sessions: RedisSession,
    srv: actix_test::TestServer,
}

impl Instance {
    fn start(builder: RedisSessionBuilder) -> Instance {
        let sessions = builder.build().expect("a valid configuration");
        let middleware = sessions.clone();
        let srv = actix_test::start_with(actix_test::config().workers(WORKERS), move || {
            App::new()
                .wrap(middleware.clone())
                .configure(common::routes)
                .route("/sign-in/{user}", web::get().to(sign_in))
        });
        Instance { sessions, srv }
    }

    fn stats(&self) -> CacheStats {
        self.sessions.cache_stats().expect("a local cache")
    }

    /// Waits until `what` holds of this instance's cache (at most 5 s).
    async fn until(&self, what: &str, mut holds: impl FnMut(&CacheStats) -> bool) {
        let started = Instant::now();
        while !holds(&self.stats()) {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{what}: {:?}",
                self.stats()
            );
            actix_web::rt::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// GETs `path` until one answer comes from this instance's cache (at most 5 s; the
    /// invalidations of earlier writes may still be arriving): its body.
    async fn read_cached(&self, client: &mut Client, path: &str) -> String {
        let started = Instant::now();
        loop {
            let hits = self.stats().hits;
            let body = client.get(path).await.body;
            if self.stats().hits > hits {
                return body;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{path} never from the cache: {:?}",
                self.stats()
            );
        }
    }

    /// Waits until this instance's cache holds no copy at all, so that its next read goes to
    /// Redis (at most 5 s). In these tests it holds only the sessions a change just touched,
    /// so this is the wait for their invalidations. (Counting invalidations instead would
    /// race: a late echo of an earlier write can drop a copy before the change, and then the
    /// change's own invalidation drops nothing and counts nothing.)
    async fn until_empty(&self, what: &str) {
        self.until(what, |s| s.entries == 0).await;
    }

    /// GETs `path` `times` times in a row (each answering `body`) until one such run costs
    /// Redis no command at all (at most 5 s): Redis's echoes of earlier writes may still be
    /// on their way, each dropping the copy once more, and how late they arrive depends on
    /// the machine's load.
    async fn free_reads(
        &self,
        server: &RedisServer,
        client: &mut Client,
        (path, body): (&str, &str),
        times: usize,
    ) {
        let started = Instant::now();
        loop {
            server.reset_stats();
            for _ in 0..times {
                assert_eq!(client.get(path).await.body, body);
            }
            if session_commands(server) == 0 {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{path} never {times} times from the cache: {:?} {:?}",
                server.command_calls(),
                self.stats()
            );
        }
    }

    /// Waits until tracking is on (the cache is used).
    async fn tracking(&self) {
        self.until("tracking on", |s| s.tracking).await;
    }
}

/// Signs `user` in (a new id, and the session in the user's index).
async fn sign_in(session: Session, user: web::Path<String>) -> actix_web::Result<String> {
    session.renew();
    session.set_user(user.as_str())?;
    session.insert("user", user.into_inner())?;
    Ok("in".into())
}

fn builder(server: &RedisServer, transport: Transport) -> RedisSessionBuilder {
    RedisSession::builder(server.url(), key(1))
        .transport(transport)
        .touch_after(Duration::from_secs(60))
        .local_cache(LocalCache::new())
}

/// Two instances (A and B) of one application on `server`.
async fn pair(server: &RedisServer, transport: Transport) -> (Instance, Instance) {
    let a = Instance::start(builder(server, transport));
    let b = Instance::start(builder(server, transport));
    a.tracking().await;
    b.tracking().await;
    (a, b)
}

/// Commands that read or write session records, as Redis counted them.
fn session_commands(server: &RedisServer) -> u64 {
    let calls = server.command_calls();
    [
        "hgetall", "pttl", "evalsha", "eval", "hset", "pexpire", "del", "unlink",
    ]
    .iter()
    .map(|c| calls.get(*c).copied().unwrap_or(0))
    .sum()
}

macro_rules! both_transports {
    ($($name:ident),* $(,)?) => {
        mod pool {
            $(#[actix_web::test]
            async fn $name() {
                super::$name(actix_redis_session::Transport::Pool).await;
            })*
        }
        mod multiplexed {
            $(#[actix_web::test]
            async fn $name() {
                super::$name(actix_redis_session::Transport::Multiplexed).await;
            })*
        }
    };
}

both_transports!(
    a_write_on_one_instance_is_seen_by_the_next_request_on_the_other,
    a_logout_or_sign_out_everywhere_on_one_instance_ends_the_session_on_the_other,
    a_change_made_directly_in_redis_evicts_the_cached_copy,
    without_tracking_the_cache_is_bypassed_until_tracking_is_back,
    racing_writes_on_both_instances_leave_no_stale_entry,
    expired_sessions_are_not_served_from_the_cache,
);

async fn a_write_on_one_instance_is_seen_by_the_next_request_on_the_other(transport: Transport) {
    let server = RedisServer::start();
    let (a, b) = pair(&server, transport).await;
    let mut on_a = Client::new(&a.srv);
    assert_eq!(on_a.get("/set/colour/red").await.body, "ok");
    let mut on_b = Client::with_jar(&b.srv, on_a.jar.clone());
    // The first read on B loads from Redis and keeps it; the ones after cost Redis nothing.
    assert_eq!(b.read_cached(&mut on_b, "/get/colour").await, "\"red\"");
    b.free_reads(&server, &mut on_b, ("/get/colour", "\"red\""), 20)
        .await;
    assert!(b.stats().hits >= 20, "{:?}", b.stats());
    // A changes it: once B has heard, B's next request sees it.
    for colour in ["green", "blue", "violet"] {
        assert_eq!(on_a.get(&format!("/set/colour/{colour}")).await.body, "ok");
        b.until_empty("the invalidation").await;
        assert_eq!(on_b.get("/get/colour").await.body, format!("\"{colour}\""));
    }
    // A's own writes are in A's cache: its reads cost Redis nothing either, once Redis's
    // echoes of them have been read again (how many refreshes that takes depends on how
    // late the echoes come: one that arrives while the next request reads, or while the
    // next write is out, is handled by that request).
    a.free_reads(&server, &mut on_a, ("/get/colour", "\"violet\""), 10)
        .await;
}

async fn a_logout_or_sign_out_everywhere_on_one_instance_ends_the_session_on_the_other(
    transport: Transport,
) {
    let server = RedisServer::start();
    let (a, b) = pair(&server, transport).await;
    // A logout on A.
    let mut on_a = Client::new(&a.srv);
    on_a.get("/login/alice").await;
    let mut on_b = Client::with_jar(&b.srv, on_a.jar.clone());
    assert_eq!(on_b.get("/get/user").await.body, "\"alice\"");
    assert_eq!(b.read_cached(&mut on_b, "/get/user").await, "\"alice\"");
    let cookie = on_b.cookie_header().unwrap();
    assert_eq!(on_a.get("/logout").await.body, "out");
    b.until_empty("the logout's invalidation").await;
    let stolen = on_b.send("/get/user", Some(&cookie)).await;
    assert_eq!(stolen.body, "none");

    // "Sign out everywhere" from A's administration, for a user signed in on both.
    let mut phone = Client::new(&a.srv);
    phone.get("/sign-in/bob").await;
    let mut laptop = Client::new(&b.srv);
    laptop.get("/sign-in/bob").await;
    let mut phone_on_b = Client::with_jar(&b.srv, phone.jar.clone());
    for client in [&mut phone_on_b, &mut laptop] {
        assert_eq!(client.get("/get/user").await.body, "\"bob\"");
        assert_eq!(b.read_cached(client, "/get/user").await, "\"bob\"");
    }
    assert_eq!(phone.get("/get/user").await.body, "\"bob\"");
    assert_eq!(phone.get("/get/user").await.body, "\"bob\"");
    let ended = a.sessions.admin().sign_out_user("bob").await.unwrap();
    assert_eq!(ended, 2);
    // On A at once: the administration drops what it deleted from A's own cache.
    assert_eq!(phone.get("/get/user").await.body, "none");
    b.until_empty("both invalidations").await;
    for client in [&mut phone_on_b, &mut laptop] {
        assert_eq!(client.get("/get/user").await.body, "none");
    }
}

async fn a_change_made_directly_in_redis_evicts_the_cached_copy(transport: Transport) {
    let server = RedisServer::start();
    let (a, b) = pair(&server, transport).await;
    let mut on_a = Client::new(&a.srv);
    on_a.get("/set/plan/basic").await;
    on_a.get("/set/seat/12").await;
    let mut on_b = Client::with_jar(&b.srv, on_a.jar.clone());
    assert_eq!(on_b.get("/get/plan").await.body, "\"basic\"");
    assert_eq!(b.read_cached(&mut on_b, "/get/plan").await, "\"basic\"");
    let [record] = server.keys().try_into().expect("one session record");
    let mut redis = server.conn();
    // Another service copies one value over another, as it could without this crate.
    let seat: Vec<u8> = redis::cmd("HGET")
        .arg(&record)
        .arg("d:seat")
        .query(&mut redis)
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&record)
        .arg("d:plan")
        .arg(seat)
        .query(&mut redis)
        .unwrap();
    b.until_empty("the invalidation").await;
    assert_eq!(on_b.get("/get/plan").await.body, "\"12\"");
    // And a deletion by hand.
    let _: () = redis::cmd("DEL").arg(&record).query(&mut redis).unwrap();
    b.until_empty("the invalidation").await;
    assert_eq!(on_b.get("/get/plan").await.body, "none");
    // FLUSHALL: everything goes from both caches.
    let mut again = Client::new(&a.srv);
    again.get("/set/plan/pro").await;
    let mut again_on_b = Client::with_jar(&b.srv, again.jar.clone());
    again_on_b.get("/get/plan").await;
    let flushes = b.stats().flushes;
    let _: () = redis::cmd("FLUSHALL").query(&mut redis).unwrap();
    b.until("the flush", |s| s.flushes > flushes).await;
    assert_eq!(again_on_b.get("/get/plan").await.body, "none");
}

async fn without_tracking_the_cache_is_bypassed_until_tracking_is_back(transport: Transport) {
    let server = RedisServer::start();
    let (a, b) = pair(&server, transport).await;
    assert_eq!(tracking_clients(&server).len(), 2);
    let mut on_a = Client::new(&a.srv);
    on_a.get("/set/n/1").await;
    let mut on_b = Client::with_jar(&b.srv, on_a.jar.clone());
    assert_eq!(on_b.get("/get/n").await.body, "\"1\"");
    assert_eq!(on_b.get("/get/n").await.body, "\"1\"");
    // Kill every tracking connection, as an operator's CLIENT KILL (or a network fault)
    // would.
    let flushes = b.stats().flushes;
    for id in tracking_clients(&server) {
        let _: () = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(&id)
            .query(&mut server.conn())
            .unwrap();
    }
    b.until("the flush", |s| !s.tracking || s.flushes > flushes)
        .await;
    // While it is off, B reads Redis: A's writes are seen at once, with no invalidation.
    // (It may come back at any moment; then the invalidations carry it.)
    for n in 2..6 {
        on_a.get(&format!("/set/n/{n}")).await;
        if b.stats().tracking {
            b.until_empty("the invalidation").await;
        }
        assert_eq!(on_b.get("/get/n").await.body, format!("\"{n}\""));
    }
    assert!(b.stats().flushes > flushes);
    // Back by itself, and coherent again.
    b.tracking().await;
    a.tracking().await;
    assert_eq!(tracking_clients(&server).len(), 2);
    assert_eq!(on_b.get("/get/n").await.body, "\"5\"");
    on_a.get("/set/n/6").await;
    b.until_empty("the invalidation").await;
    assert_eq!(on_b.get("/get/n").await.body, "\"6\"");
    let hits = b.stats().hits;
    assert_eq!(on_b.get("/get/n").await.body, "\"6\"");
    assert!(b.stats().hits > hits);
}

async fn racing_writes_on_both_instances_leave_no_stale_entry(transport: Transport) {
    const SESSIONS: usize = 6;
    const ROUNDS: usize = 25;
    let server = RedisServer::start();
    let (a, b) = pair(&server, transport).await;
    let mut clients = Vec::new();
    for _ in 0..SESSIONS {
        let mut on_a = Client::new(&a.srv);
        on_a.get("/set/a/0").await;
        on_a.get("/set/b/0").await;
        let on_b = Client::with_jar(&b.srv, on_a.jar.clone());
        clients.push((on_a, on_b));
    }
    // Per session and round: A writes `a`, B writes `b`, and both read both, all at once,
    // over the instances' four workers each.
    for round in 1..=ROUNDS {
        let requests = clients.iter().flat_map(|(on_a, on_b)| {
            let a_cookie = on_a.cookie_header().unwrap();
            let b_cookie = on_b.cookie_header().unwrap();
            [
                (on_a, format!("/set/a/{round}"), a_cookie.clone()),
                (on_b, format!("/set/b/{round}"), b_cookie.clone()),
                (on_a, "/get/b".to_owned(), a_cookie.clone()),
                (on_b, "/get/a".to_owned(), b_cookie.clone()),
                (on_a, "/get/a".to_owned(), a_cookie),
                (on_b, "/get/b".to_owned(), b_cookie),
            ]
        });
        let responses =
            futures_util::future::join_all(requests.map(|(client, path, cookie)| async move {
                client.send(&path, Some(&cookie)).await
            }))
            .await;
        assert!(responses.iter().all(|r| r.status == 200));
    }
    // Once every invalidation has been read, both instances serve the last round's values
    // for every session, and keep doing so (a stale entry would come back from the cache).
    let last = format!("\"{ROUNDS}\"");
    let started = Instant::now();
    for (on_a, on_b) in &clients {
        for client in [on_a, on_b] {
            let cookie = client.cookie_header().unwrap();
            for field in ["a", "b"] {
                loop {
                    let body = client
                        .send(&format!("/get/{field}"), Some(&cookie))
                        .await
                        .body;
                    if body == last {
                        break;
                    }
                    assert!(
                        started.elapsed() < Duration::from_secs(5),
                        "{field} still {body} after 5 s"
                    );
                    actix_web::rt::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
    for (on_a, on_b) in &clients {
        for client in [on_a, on_b] {
            let cookie = client.cookie_header().unwrap();
            for _ in 0..5 {
                for field in ["a", "b"] {
                    let body = client
                        .send(&format!("/get/{field}"), Some(&cookie))
                        .await
                        .body;
                    assert_eq!(body, last);
                }
            }
        }
    }
    assert!(a.stats().hits > 0 && b.stats().hits > 0);
    assert!(a.stats().invalidations > 0 && b.stats().invalidations > 0);
}

async fn expired_sessions_are_not_served_from_the_cache(transport: Transport) {
    let server = RedisServer::start();
    let short = |server: &RedisServer| {
        builder(server, transport)
            .idle_timeout(Duration::from_secs(2))
            .touch_after(Duration::from_millis(900))
    };
    let a = Instance::start(short(&server));
    a.tracking().await;
    let mut client = Client::new(&a.srv);
    client.get("/set/x/1").await;
    assert_eq!(client.get("/get/x").await.body, "\"1\"");
    assert_eq!(client.get("/get/x").await.body, "\"1\"");
    // Idle past the timeout: gone, cache or not.
    actix_web::rt::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(client.get("/get/x").await.body, "none");

    // The absolute timeout ends a session that stays in use (and so in the cache).
    let b = Instance::start(
        short(&server)
            .idle_timeout(Duration::from_secs(30))
            .touch_after(Duration::from_secs(10))
            .absolute_timeout(Duration::from_secs(2)),
    );
    b.tracking().await;
    let mut client = Client::new(&b.srv);
    client.get("/set/x/1").await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1700) {
        assert_eq!(client.get("/get/x").await.body, "\"1\"");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(b.stats().hits > 5, "{:?}", b.stats());
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(client.get("/get/x").await.body, "none");
}

#[test]
fn the_cache_needs_one_redis_server_and_touch_after() {
    let reason = |result: Result<RedisSession, ConfigError>| match result {
        Err(ConfigError::InvalidOption { option, reason }) => {
            assert_eq!(option, "local_cache");
            reason
        }
        other => panic!("not refused: {other:?}"),
    };
    let memory = RedisSession::builder_with_memory(Default::default(), Key::generate())
        .local_cache(LocalCache::new())
        .build();
    reason(memory);
    let url = "redis://127.0.0.1:1";
    let zero = RedisSession::builder(url, Key::generate())
        .touch_after(Duration::ZERO)
        .local_cache(LocalCache::new())
        .build();
    assert!(reason(zero).contains("touch_after"));
    for bad in [
        LocalCache::new().max_bytes(1000),
        LocalCache::new().max_entries(0),
        LocalCache::new().time_to_live(Duration::ZERO),
        LocalCache::new().time_to_live(Duration::from_secs(2 * 86_400)),
    ] {
        let built = RedisSession::builder(url, Key::generate())
            .local_cache(bad)
            .build();
        reason(built);
    }
    // Left at zero, touch_after gets a default, and the cache is there (its tracking
    // connection retries in the background until Redis is up).
    let sessions = RedisSession::builder(url, Key::generate())
        .local_cache(LocalCache::new())
        .build()
        .unwrap();
    let stats = sessions.cache_stats().unwrap();
    assert!(!stats.tracking);
}

/// The README's ACL rule for the store, and what the cache adds to it.
const SESSION_USER: &str = "+hgetall +hset +hdel +pexpire +del +evalsha +script|load +exists \
     +hget +hkeys +hello +ping";

#[actix_web::test]
async fn an_acl_user_needs_client_tracking_and_pttl_and_without_them_the_cache_stays_off() {
    let logs = common::logs::capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("users.acl");
    std::fs::write(
        &acl,
        format!(
            "user default on nopass ~* &* +@all\n\
             user cached on >s3cret-Pa55 ~session:* resetchannels -@all {SESSION_USER} \
             +client|tracking +pttl\n\
             user plain on >s3cret-Pa55 ~session:* resetchannels -@all {SESSION_USER} +pttl\n\
             user nopttl on >s3cret-Pa55 ~session:* resetchannels -@all {SESSION_USER} \
             +client|tracking\n"
        ),
    )
    .unwrap();
    let (_server, port) = RedisServer::start_on_port_with(|port| {
        vec![
            "--port".into(),
            port.to_string(),
            "--aclfile".into(),
            acl.to_string_lossy().into_owned(),
        ]
    });
    for transport in [Transport::Pool, Transport::Multiplexed] {
        let url = format!("redis://cached:s3cret-Pa55@127.0.0.1:{port}");
        let a = Instance::start(
            RedisSession::builder(url, key(1))
                .transport(transport)
                .local_cache(LocalCache::new()),
        );
        a.tracking().await;
        let mut client = Client::new(&a.srv);
        assert_eq!(client.get("/set/user/ann").await.body, "ok");
        client.get("/renew").await;
        for _ in 0..3 {
            assert_eq!(client.get("/get/user").await.body, "\"ann\"");
        }
        client.get("/purge").await;
        assert_eq!(client.get("/get/user").await.body, "none");
        assert!(a.stats().hits > 0, "{:?}", a.stats());

        // Without CLIENT TRACKING, or without PTTL (which every miss sends): sessions work,
        // the cache stays off, the log says why.
        for user in ["plain", "nopttl"] {
            let url = format!("redis://{user}:s3cret-Pa55@127.0.0.1:{port}");
            let b = Instance::start(
                RedisSession::builder(url, key(1))
                    .transport(transport)
                    .local_cache(LocalCache::new()),
            );
            let mut client = Client::new(&b.srv);
            assert_eq!(client.get("/set/user/bob").await.body, "ok");
            for _ in 0..3 {
                assert_eq!(client.get("/get/user").await.body, "\"bob\"");
            }
            let stats = b.stats();
            assert!(!stats.tracking && stats.hits == 0, "{user}: {stats:?}");
            assert!(stats.bypassed >= 3, "{user}: {stats:?}");
        }
    }
    let logged = logs.lock().unwrap().clone();
    assert!(
        logged.contains("could not turn tracking on"),
        "the log says why: {logged}"
    );
    assert!(!logged.contains("s3cret"), "a password in the log");
}
