//! What must hold when Redis misbehaves: no reply ever reaches the wrong request, a retried
//! create or renew neither doubles nor loses a session, a failed logout never looks like one
//! that worked, and timeouts bound every wait. Real redis-server processes, real HTTP.

mod common;

use std::time::{Duration, Instant};

use actix_redis_session::{OnStoreError, RedisSession, RedisSessionBuilder, Retry, Transport};
use actix_web::{web, App, HttpResponse};
use common::{
    blackhole::Blackhole, key, logs::capture_logs, proxy::Proxy, serve, Client, RedisServer,
};

const TRANSPORTS: [Transport; 2] = [Transport::Pool, Transport::Multiplexed];

/// Every command of every client waits `ms` for an answer.
fn pause(server: &RedisServer, ms: u64) {
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(ms)
        .arg("ALL")
        .query::<()>(&mut server.conn())
        .unwrap();
}

async fn sleep_ms(ms: u64) {
    actix_rt::time::sleep(Duration::from_millis(ms)).await;
}

/// One request whose batch times out: Redis paused for 600 ms, a 200 ms command timeout,
/// no retry, a 503; then the pause ends and its late replies arrive.
async fn time_out_one_batch(server: &RedisServer, client: &mut Client) {
    pause(server, 600);
    assert_eq!(client.get("/get/user").await.status, 503);
    sleep_ms(800).await;
}

/// Two users, each signed in: their clients.
async fn alice_and_bob(srv: &actix_test::TestServer) -> (Client, Client) {
    let mut alice = Client::new(srv);
    alice.get("/set/user/alice").await;
    let mut bob = Client::new(srv);
    bob.get("/set/user/bob").await;
    (alice, bob)
}

/// Each user reads their own session, several times, in turn.
async fn each_sees_their_own(alice: &mut Client, bob: &mut Client) {
    for _ in 0..3 {
        assert_eq!(bob.get("/get/user").await.body, "\"bob\"");
        assert_eq!(alice.get("/get/user").await.body, "\"alice\"");
    }
}

#[actix_web::test]
async fn a_timed_out_batch_never_hands_its_late_replies_to_the_next_user_of_the_applications_pool()
{
    let server = RedisServer::start();
    let pool = r2d2::Pool::builder()
        .max_size(1)
        .test_on_check_out(false)
        .build(redis::Client::open(server.url()).unwrap())
        .unwrap();
    let sessions = RedisSession::builder_from_pool(pool.clone(), key(1))
        .command_timeout(Duration::from_millis(200))
        .retry(Retry::disabled())
        .build()
        .unwrap();
    let srv = serve(sessions);
    let (mut alice, mut bob) = alice_and_bob(&srv).await;
    time_out_one_batch(&server, &mut alice).await;

    // The application's own commands on its pool get their own replies.
    let app_pool = pool.clone();
    let probe = web::block(move || {
        let mut conn = app_pool.get().expect("the pool's connection is back");
        redis::cmd("SET")
            .arg("probe")
            .arg("v")
            .query::<()>(&mut *conn)?;
        redis::cmd("GET").arg("probe").query::<String>(&mut *conn)
    })
    .await
    .unwrap();
    assert_eq!(probe.unwrap(), "v");
    // And every session request its own session, a renew included.
    each_sees_their_own(&mut alice, &mut bob).await;
    alice.get("/renew").await;
    each_sees_their_own(&mut alice, &mut bob).await;
}

#[actix_web::test]
async fn a_timed_out_batch_never_hands_its_late_replies_to_a_later_request_on_our_own_pool() {
    let server = RedisServer::start();
    let sessions = RedisSession::builder(server.url(), key(1))
        .capacity(1)
        .command_timeout(Duration::from_millis(200))
        .retry(Retry::disabled())
        .build()
        .unwrap();
    let srv = serve(sessions);
    let (mut alice, mut bob) = alice_and_bob(&srv).await;
    time_out_one_batch(&server, &mut alice).await;
    each_sees_their_own(&mut alice, &mut bob).await;
}

/// The middleware over a proxy in front of a TCP redis-server.
fn through_proxy(
    transport: Transport,
    configure: impl FnOnce(RedisSessionBuilder) -> RedisSessionBuilder,
) -> (RedisServer, Proxy, actix_test::TestServer) {
    let server = RedisServer::start_tcp();
    let proxy = Proxy::start(server.tcp_addr());
    let builder = RedisSession::builder(proxy.url(), key(1)).transport(transport);
    let srv = serve(configure(builder).build().unwrap());
    (server, proxy, srv)
}

#[actix_web::test]
async fn a_create_whose_reply_was_lost_is_recognised_by_its_retry() {
    for transport in TRANSPORTS {
        let (server, proxy, srv) = through_proxy(transport, |b| b);
        // Opens the connection(s) first, so that the next reply is the create's.
        Client::new(&srv).get("/count").await;
        // The create script ran, then the connection dropped before its `1` arrived.
        proxy.cut_replies(1, |reply| reply.starts_with(b":1\r\n"));
        let mut client = Client::new(&srv);
        let res = client.get("/count").await;
        assert_eq!(proxy.cuts_left(), 0, "{transport:?}: the reply was cut");
        assert_eq!((res.status, res.body.as_str()), (200, "1"), "{transport:?}");
        assert_eq!(server.keys().len(), 2, "{transport:?}: no second record");
        assert_eq!(client.get("/count").await.body, "2");
    }
}

#[actix_web::test]
async fn a_renew_survives_lost_scripts_and_a_renew_that_fails_keeps_the_old_session() {
    for transport in TRANSPORTS {
        // No retry: a retry would find the scripts loaded by the try whose reply was lost,
        // and the renew would succeed.
        let (server, proxy, srv) = through_proxy(transport, |b| b.retry(Retry::disabled()));
        let mut client = Client::new(&srv);
        client.get("/set/user/alice").await;
        let flush = || {
            redis::cmd("SCRIPT")
                .arg("FLUSH")
                .query::<()>(&mut server.conn())
                .unwrap()
        };

        flush();
        let old = client.jar["sid"].clone();
        assert_eq!(client.get("/renew").await.status, 200, "{transport:?}");
        assert_ne!(client.jar["sid"], old);
        assert_eq!(client.get("/get/user").await.body, "\"alice\"");
        assert_eq!(
            server.keys().len(),
            1,
            "{transport:?}: the old record is gone"
        );

        // Lost scripts again, and loading them loses its reply: the renew fails.
        flush();
        proxy.cut_replies(1, |reply| reply.starts_with(b"$40\r\n"));
        let before = client.jar["sid"].clone();
        let res = client.get("/renew").await;
        assert_eq!(res.status, 503, "{transport:?}");
        proxy.cut_replies(0, |_| false);
        assert_eq!(client.jar["sid"], before, "the cookie stays");
        assert_eq!(
            client.get("/get/user").await.body,
            "\"alice\"",
            "{transport:?}: the old session survives a renew that failed"
        );
    }
}

/// A handler that pauses Redis, then logs out: the load worked, the delete will not.
async fn pause_then_purge(
    session: actix_redis_session::Session,
    url: web::Data<String>,
) -> HttpResponse {
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(600)
        .arg("ALL")
        .query::<()>(&mut conn)
        .unwrap();
    session.purge();
    HttpResponse::Ok().body("signed out")
}

#[actix_web::test]
async fn a_logout_that_could_not_be_carried_out_answers_503_and_removes_the_cookie() {
    for transport in TRANSPORTS {
        for policy in [OnStoreError::FailClosed, OnStoreError::FailOpen] {
            let server = RedisServer::start();
            let sessions = RedisSession::builder(server.url(), key(1))
                .transport(transport)
                .on_store_error(policy)
                .command_timeout(Duration::from_millis(200))
                // One timed-out attempt is the failure under test (retries would outlast
                // the pause).
                .retry(Retry::disabled())
                .build()
                .unwrap();
            let url = server.url();
            let srv = actix_test::start(move || {
                App::new()
                    .wrap(sessions.clone())
                    .app_data(web::Data::new(url.clone()))
                    .route("/pause-then-purge", web::get().to(pause_then_purge))
                    .configure(common::routes)
            });
            let mut client = Client::new(&srv);
            client.get("/set/user/alice").await;
            let header = client.cookie_header().unwrap();

            // The load works, the delete times out.
            let res = client.send("/pause-then-purge", Some(&header)).await;
            let what = format!("{transport:?} {policy:?}");
            assert_eq!(res.status, 503, "{what}");
            assert_eq!(res.body, "Service Unavailable", "{what}");
            let removal = res.set_cookie("sid").expect("the removal cookie");
            assert_eq!(
                (
                    removal.value(),
                    removal.max_age().map(|d| d.whole_seconds())
                ),
                ("", Some(0))
            );
            sleep_ms(700).await;

            // The load times out too. Fail-closed: the handler never runs, a plain 503 (the
            // cookie stays: a blip of Redis must not sign anyone out). Fail-open: the handler
            // runs with a degraded session; its logout still tries the delete, and says
            // that it failed.
            pause(&server, 600);
            let res = client.send("/purge", Some(&header)).await;
            assert_eq!(res.status, 503, "{what}");
            let cookie = res.set_cookie("sid").map(|c| c.value().to_owned());
            match policy {
                OnStoreError::FailOpen => assert_eq!(cookie.as_deref(), Some(""), "{what}"),
                _ => assert_eq!(cookie, None, "{what}"),
            }
            sleep_ms(700).await;

            // A timed-out delete may still have run once Redis resumed (the multiplexed
            // connection outlives the timeout): either way, trying again signs out.
            let res = client.send("/purge", Some(&header)).await;
            assert_eq!(res.status, 200, "{what}");
            assert_eq!(res.set_cookie("sid").map(|c| c.value()), Some(""));
            assert!(server.keys().is_empty(), "{what}: signed out at last");
        }
    }
}

#[actix_web::test]
async fn the_connect_timeout_bounds_a_connect_to_a_redis_that_never_answers() {
    let hole = Blackhole::new();
    // Multiplexed: the request waits for its connect attempts (3, the retry policy's, with
    // short delays) and no longer; with the default 2 s connect timeout it would wait out
    // the whole 3 s store budget.
    let sessions = RedisSession::builder(hole.url(), key(1))
        .transport(Transport::Multiplexed)
        .connect_timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let srv = serve(sessions);
    let started = Instant::now();
    assert_eq!(Client::new(&srv).get("/count").await.status, 503);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_millis(1900),
        "{waited:?}"
    );

    // Pool: each connect attempt gives up after the connect timeout, so that the checkout
    // ends with that error (r2d2 keeps trying until the checkout timeout). Without the
    // connect timeout no attempt would have ended by then, and the error would say none.
    let logs = capture_logs();
    let sessions = RedisSession::builder(hole.url(), key(1))
        .connect_timeout(Duration::from_millis(150))
        .checkout_timeout(Duration::from_millis(1000))
        // One checkout's error is what this is about; retries would wait for more of them.
        .retry(Retry::disabled())
        .build()
        .unwrap();
    let srv = serve(sessions);
    let started = Instant::now();
    assert_eq!(Client::new(&srv).get("/count").await.status, 503);
    let waited = started.elapsed();
    assert!(waited < Duration::from_millis(1900), "{waited:?}");
    let logged = logs.lock().unwrap().clone();
    assert!(
        logged.contains("session save failed") && logged.contains("Error(Some("),
        "the checkout failed with the connect error: {logged}"
    );
}

/// Round trips to Redis while `client` gets `path`.
async fn trips(proxy: &Proxy, client: &mut Client, path: &str) -> u64 {
    proxy.reset_round_trips();
    let res = client.get(path).await;
    assert_eq!(res.status, 200, "{path}");
    proxy.round_trips()
}

#[actix_web::test]
async fn round_trips_per_request_are_counted_on_the_wire() {
    for transport in TRANSPORTS {
        let (_server, proxy, srv) = through_proxy(transport, |b| b);
        let mut client = Client::new(&srv);
        // Warm up: connections opened (their handshake is a round trip of its own).
        client.get("/count").await;
        client.get("/count").await;
        // 0: the warmed-up client, 1: a client without a cookie yet.
        let mut clients = [client, Client::new(&srv)];
        for (who, path, expected, what) in [
            (0, "/read", 1, "one load"),
            (0, "/count", 2, "load, save"),
            (0, "/renew", 3, "load, create, delete"),
            (1, "/count", 1, "one create"),
            (1, "/purge", 2, "load, delete"),
            (1, "/plain", 0, "no cookie, no Redis"),
        ] {
            let trips = trips(&proxy, &mut clients[who], path).await;
            assert_eq!(trips, expected, "{transport:?} {path}: {what}");
        }
    }
}
