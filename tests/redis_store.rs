//! Behaviour specific to the Redis store, checked against a real redis-server.

mod common;

use std::{collections::BTreeMap, time::Duration};

use actix_redis_session::{
    ConfigError, OnStoreError, RedisSession, RedisSessionBuilder, Session, Transport,
};
use actix_web::{web, App};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use common::{key, serve, Client, RedisServer};
use redis::Commands;
use sha2::{Digest, Sha256};

const TRANSPORTS: [Transport; 2] = [Transport::Pool, Transport::Multiplexed];

fn with(transport: Transport, builder: RedisSessionBuilder) -> RedisSession {
    builder
        .transport(transport)
        .build()
        .expect("valid test configuration")
}

fn calls(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// The secret id inside a cookie value.
fn cookie_id(value: &str) -> Vec<u8> {
    let payload = value.split_once('.').expect("payload.tag").0;
    let mut raw = URL_SAFE_NO_PAD.decode(payload).expect("base64url");
    raw.truncate(32);
    raw
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[actix_web::test]
async fn a_session_is_one_hash_under_the_hashed_id_and_no_key_or_value_holds_the_id() {
    let server = RedisServer::start();
    let srv = serve(RedisSession::new(server.url(), key(1)).unwrap());
    let mut client = Client::new(&srv);
    client.get("/set/user/alice").await;
    client.get("/cart/add/3").await;
    let cookie = client.jar["sid"].clone();
    let id = cookie_id(&cookie);
    let handle = hex(&Sha256::digest(&id));
    assert_eq!(client.get("/handle").await.body, handle);

    let redis_key = format!("session:{handle}");
    assert_eq!(server.keys(), vec![redis_key.clone()]);
    let mut conn = server.conn();
    let kind: String = redis::cmd("TYPE").arg(&redis_key).query(&mut conn).unwrap();
    assert_eq!(kind, "hash");
    let fields: BTreeMap<String, Vec<u8>> = conn.hgetall(&redis_key).unwrap();
    assert_eq!(
        fields.keys().collect::<Vec<_>>(),
        ["d:user", "m:c", "t:cart"]
    );
    assert_eq!(fields["d:user"], b"\x01\"alice\"");
    assert_eq!(fields["t:cart"], b"\x01{\"items\":[3]}");
    // The creation marker: unix milliseconds, a dot, 16 random hex digits.
    let marker = String::from_utf8(fields["m:c"].clone()).unwrap();
    let (created, nonce) = marker.split_once('.').expect("time.nonce");
    assert!(
        created.parse::<u64>().unwrap() > 1_700_000_000_000,
        "unix milliseconds"
    );
    assert!(nonce.len() == 16 && nonce.bytes().all(|b| b.is_ascii_hexdigit()));
    let ttl: i64 = conn.pttl(&redis_key).unwrap();
    assert!((3_590_000..=3_600_000).contains(&ttl), "{ttl}");

    let forms = [
        hex(&id),
        URL_SAFE_NO_PAD.encode(&id),
        base64::engine::general_purpose::STANDARD.encode(&id),
        cookie.clone(),
    ];
    let stored: Vec<u8> = fields.values().flatten().copied().collect();
    for form in &forms {
        assert!(!redis_key.contains(form.as_str()));
        assert!(
            !stored.windows(form.len()).any(|w| w == form.as_bytes()),
            "a stored value holds the id"
        );
    }
}

#[actix_web::test]
async fn each_kind_of_request_costs_the_documented_commands_and_never_a_ping() {
    for transport in TRANSPORTS {
        each_kind_of_request_costs_the_documented_commands_and_never_a_ping_with(transport).await;
    }
}

async fn each_kind_of_request_costs_the_documented_commands_and_never_a_ping_with(
    transport: Transport,
) {
    let server = RedisServer::start();
    let srv = serve(with(transport, RedisSession::builder(server.url(), key(1))));
    let mut client = Client::new(&srv);
    // Warm up: open the pooled connection and load the create script.
    client.get("/count").await;
    client.get("/read").await;

    let measure = |_label: &str| server.reset_stats();
    measure("new session");
    let mut newcomer = Client::new(&srv);
    newcomer.get("/count").await;
    assert_eq!(
        server.command_calls(),
        calls(&[("evalsha", 1), ("exists", 1), ("hset", 1), ("pexpire", 1)]),
        "new: one script call that creates the hash only if absent"
    );

    measure("unchanged");
    client.get("/read").await;
    client.get("/cart/touch").await;
    assert_eq!(
        server.command_calls(),
        calls(&[("hgetall", 2), ("pexpire", 2)]),
        "unchanged: one pipeline each, no write"
    );

    measure("changed");
    client.get("/count").await;
    assert_eq!(
        server.command_calls(),
        calls(&[("hgetall", 1), ("hset", 1), ("pexpire", 3)]),
        "changed: load pipeline + one write pipeline with only the changed field (PEXPIRE first: is the session still there?)"
    );

    client.get("/set/other/1").await;
    measure("removed");
    client.get("/remove/count").await;
    assert_eq!(
        server.command_calls(),
        calls(&[("hdel", 1), ("hgetall", 1), ("pexpire", 3)]),
        "removing one of several fields: a plain HDEL"
    );

    measure("emptied");
    client.get("/remove/other").await;
    assert_eq!(
        server.command_calls(),
        calls(&[
            ("del", 1),
            ("evalsha", 1),
            ("exists", 1),
            ("hdel", 1),
            ("hgetall", 1),
            ("hkeys", 1),
            ("pexpire", 1)
        ]),
        "removing the last field: one script that deletes the record if it is still empty"
    );
    client.get("/count").await;

    measure("no session");
    Client::new(&srv).get("/read").await;
    assert_eq!(
        server.command_calls(),
        calls(&[]),
        "no cookie, no data: no Redis at all"
    );

    measure("a handler that does not use the session");
    for _ in 0..5 {
        // Assets, favicon, health checks: they carry the cookie, but never ask for the
        // session.
        let res = client.get("/plain").await;
        assert_eq!(res.status, 200);
        assert!(res.set_cookies.is_empty(), "no cookie set");
    }
    assert_eq!(server.command_calls(), calls(&[]), "lazy: no Redis at all");

    measure("purge");
    client.get("/purge").await;
    assert_eq!(
        server.command_calls(),
        calls(&[("del", 1), ("hgetall", 1), ("pexpire", 1)])
    );

    // Loaded before routing instead: every request with the cookie pays the load.
    let eager = serve(with(
        transport,
        RedisSession::builder(server.url(), key(1)).lazy_load(false),
    ));
    let mut client = Client::new(&eager);
    client.get("/count").await;
    measure("eager");
    client.get("/plain").await;
    assert_eq!(
        server.command_calls(),
        calls(&[("hgetall", 1), ("pexpire", 1)]),
        "eager: the load, even for a handler that does not use it"
    );
}

/// A handler that deletes its own session's key (as if it expired during the request) and
/// then changes a value.
async fn expire_then_set(session: Session, url: web::Data<String>) -> actix_web::Result<String> {
    let key = format!("session:{}", session.handle());
    let url = url.get_ref().clone();
    web::block(move || {
        let mut conn = redis::Client::open(url)?.get_connection()?;
        conn.del::<_, ()>(key)
    })
    .await?
    .map_err(actix_web::error::ErrorInternalServerError)?;
    session.insert("late", 1)?;
    Ok("ok".into())
}

#[actix_web::test]
async fn a_write_after_the_key_expired_never_resurrects_the_session() {
    let server = RedisServer::start();
    let sessions = RedisSession::new(server.url(), key(1)).unwrap();
    let url = server.url();
    let srv = actix_test::start(move || {
        App::new()
            .wrap(sessions.clone())
            .app_data(web::Data::new(url.clone()))
            .route("/expire-then-set", web::get().to(expire_then_set))
            .configure(common::routes)
    });
    let mut client = Client::new(&srv);
    client.get("/set/user/alice").await;
    let res = client.get("/expire-then-set").await;
    assert_eq!(res.status, 200);
    // The field-level write found no record: it wrote nothing, and left the cookie alone (a
    // removal could clobber the cookie of a concurrent renew); the next request removes it.
    assert!(server.keys().is_empty(), "nothing was left behind");
    assert!(res.set_cookies.is_empty(), "{:?}", res.set_cookies);
    let res = client.get("/get/user").await;
    assert_eq!(res.body, "none");
    assert_eq!(res.set_cookie("sid").map(|c| c.value()), Some(""));
    assert_eq!(client.get("/get/late").await.body, "none");
}

#[actix_web::test]
async fn corrupt_data_in_redis_gives_a_fresh_or_repaired_session_never_a_500() {
    let server = RedisServer::start();
    let srv = serve(RedisSession::new(server.url(), key(1)).unwrap());
    let mut client = Client::new(&srv);
    client.get("/set/keep/yes").await;
    client.get("/set/broken/x").await;
    client.get("/cart/add/1").await;
    let redis_key = format!("session:{}", client.get("/handle").await.body);
    let mut conn = server.conn();

    // Bad JSON, an unknown format byte, an empty value, a non-UTF-8 field name.
    let _: () = conn
        .hset(&redis_key, "d:broken", b"\x01{{{".as_slice())
        .unwrap();
    let _: () = conn
        .hset(&redis_key, "d:future", b"\x07whatever".as_slice())
        .unwrap();
    let _: () = conn.hset(&redis_key, "d:empty", b"".as_slice()).unwrap();
    // Well-formed JSON but for a string that is not UTF-8 (found by fuzzing).
    let _: () = conn
        .hset(&redis_key, "d:latin1", b"\x01[\"caf\xe9\"]".as_slice())
        .unwrap();
    // A number no f64 holds (found by fuzzing too).
    let _: () = conn
        .hset(&redis_key, "d:huge", b"\x01[1e3111]".as_slice())
        .unwrap();
    let _: () = conn
        .hset(&redis_key, "t:cart", b"\x01{\"items\":\"no\"}".as_slice())
        .unwrap();
    let _: () = conn
        .hset(&redis_key, b"\xff\xfe".as_slice(), b"x".as_slice())
        .unwrap();
    let res = client.get("/entries").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body, r#"{"keep":"yes"}"#);
    // A typed value that no longer fits its type starts from the default.
    assert_eq!(client.get("/cart").await.body, "[]");
    for field in ["d:broken", "d:empty", "d:latin1", "d:huge"] {
        let exists: bool = conn.hexists(&redis_key, field).unwrap();
        assert!(!exists, "{field} was deleted on the first load");
    }
    // A format this build does not read (a later release's, a codec not named here) is
    // hidden from the handler but left for the instances that read it.
    let kept: Vec<u8> = conn.hget(&redis_key, "d:future").unwrap();
    assert_eq!(kept, b"\x07whatever");

    // A corrupt creation marker: the record is not a session.
    let _: () = conn.hset(&redis_key, "m:c", "yesterday").unwrap();
    let res = client.get("/get/keep").await;
    assert_eq!((res.status, res.body.as_str()), (200, "none"));
    assert!(server.keys().is_empty());

    // Something that is not a hash under the key.
    client.get("/set/a/1").await;
    let redis_key = format!("session:{}", client.get("/handle").await.body);
    let _: () = conn.del(&redis_key).unwrap();
    let _: () = conn.set(&redis_key, "a string").unwrap();
    let res = client.get("/get/a").await;
    assert_eq!((res.status, res.body.as_str()), (200, "none"));
    assert!(server.keys().is_empty(), "the foreign value is removed");
}

#[actix_web::test]
async fn with_redis_down_requests_get_a_503_by_default_and_recover_when_it_is_back() {
    for transport in TRANSPORTS {
        with_redis_down_requests_get_a_503_by_default_and_recover_when_it_is_back_with(transport)
            .await;
    }
}

async fn with_redis_down_requests_get_a_503_by_default_and_recover_when_it_is_back_with(
    transport: Transport,
) {
    let mut server = RedisServer::start();
    let sessions = with(
        transport,
        RedisSession::builder(server.url(), key(1))
            .checkout_timeout(Duration::from_millis(300))
            .connect_timeout(Duration::from_millis(300)),
    );
    let srv = serve(sessions);
    let mut client = Client::new(&srv);
    client.get("/count").await;
    server.stop();

    let res = client.get("/read").await;
    assert_eq!(res.status, 503);
    assert_eq!(
        res.body, "Service Unavailable",
        "no detail leaks to the client"
    );
    assert_eq!(res.retry_after.as_deref(), Some("1"));
    assert!(res.set_cookies.is_empty());
    assert!(
        client.jar.contains_key("sid"),
        "the cookie is kept for later"
    );

    let res = Client::new(&srv).get("/count").await;
    assert_eq!(
        res.status, 503,
        "a new session that cannot be saved is not acknowledged"
    );
    assert_eq!(Client::new(&srv).get("/plain").await.status, 200);
    let res = client.get("/plain").await;
    assert_eq!(
        (res.status, res.set_cookies.len()),
        (200, 0),
        "with the cookie too: a handler that does not use the session never waits for Redis"
    );

    server.restart();
    let mut fresh = Client::new(&srv);
    assert_eq!(fresh.get("/count").await.body, "1");
    assert_eq!(fresh.get("/count").await.body, "2");
    let res = client.get("/read").await;
    assert_eq!(
        (res.status, res.body.as_str()),
        (200, "0"),
        "data was not persisted"
    );
}

#[actix_web::test]
async fn with_fail_open_requests_run_with_a_degraded_unsaved_session() {
    for transport in TRANSPORTS {
        with_fail_open_requests_run_with_a_degraded_unsaved_session_with(transport).await;
    }
}

async fn with_fail_open_requests_run_with_a_degraded_unsaved_session_with(transport: Transport) {
    let mut server = RedisServer::start();
    let sessions = with(
        transport,
        RedisSession::builder(server.url(), key(1))
            .checkout_timeout(Duration::from_millis(300))
            .on_store_error(OnStoreError::FailOpen),
    );
    let srv = serve(sessions);
    let mut client = Client::new(&srv);
    client.get("/count").await;
    server.stop();

    let res = client.get("/status").await;
    assert_eq!((res.status, res.body.as_str()), (200, "Degraded new=true"));
    let res = client.get("/count").await;
    assert_eq!((res.status, res.body.as_str()), (200, "1"));
    assert!(
        res.set_cookies.is_empty(),
        "a degraded session never touches the cookie"
    );
    let res = Client::new(&srv).get("/count").await;
    assert_eq!(
        res.status, 200,
        "a failed save keeps the handler's response"
    );
    assert!(
        res.set_cookies.is_empty(),
        "but sets no cookie for a session that was not saved"
    );
}

#[actix_web::test]
async fn pooled_connections_broken_by_a_redis_restart_are_replaced_without_an_error() {
    for transport in TRANSPORTS {
        pooled_connections_broken_by_a_redis_restart_are_replaced_without_an_error_with(transport)
            .await;
    }
}

async fn pooled_connections_broken_by_a_redis_restart_are_replaced_without_an_error_with(
    transport: Transport,
) {
    let mut server = RedisServer::start();
    let srv = serve(with(transport, RedisSession::builder(server.url(), key(1))));
    let mut client = Client::new(&srv);
    for _ in 0..3 {
        client.get("/count").await;
    }
    server.restart();
    for round in 0..3 {
        let res = Client::new(&srv).get("/count").await;
        assert_eq!((res.status, res.body.as_str()), (200, "1"), "round {round}");
    }
}

#[actix_web::test]
async fn tcp_and_unix_urls_select_the_database() {
    let tcp = RedisServer::start_tcp();
    let srv = serve(RedisSession::new(format!("{}/3", tcp.url()), key(1)).unwrap());
    Client::new(&srv).get("/count").await;
    let mut conn = tcp.conn();
    let in_db0: Vec<String> = conn.keys("*").unwrap();
    assert!(in_db0.is_empty());
    let _: () = redis::cmd("SELECT").arg(3).query(&mut conn).unwrap();
    let in_db3: Vec<String> = conn.keys("*").unwrap();
    assert_eq!(in_db3.len(), 1);

    let unix = RedisServer::start();
    let srv = serve(RedisSession::new(format!("{}?db=2", unix.url()), key(1)).unwrap());
    Client::new(&srv).get("/count").await;
    let mut conn = unix.conn();
    let _: () = redis::cmd("SELECT").arg(2).query(&mut conn).unwrap();
    let in_db2: Vec<String> = conn.keys("*").unwrap();
    assert_eq!(in_db2.len(), 1);
}

#[actix_web::test]
async fn an_application_pool_can_be_shared_with_the_sessions() {
    let server = RedisServer::start();
    let client = redis::Client::open(server.url()).unwrap();
    let pool = r2d2::Pool::builder()
        .max_size(4)
        .test_on_check_out(false)
        .build(client)
        .unwrap();
    let srv = serve(RedisSession::from_pool(pool.clone(), key(1)));
    let mut http = Client::new(&srv);
    http.get("/count").await;
    server.reset_stats();
    assert_eq!(http.get("/count").await.body, "2");
    assert_eq!(
        server.command_calls(),
        calls(&[("hgetall", 1), ("hset", 1), ("pexpire", 3)])
    );
    // The application keeps using the same pool for its own work.
    let n: u64 = redis::cmd("DBSIZE")
        .query(&mut *pool.get().unwrap())
        .unwrap();
    assert_eq!(n, 1);
}

#[actix_web::test]
async fn the_key_prefix_and_remember_me_lifetime_reach_redis() {
    let server = RedisServer::start();
    let sessions = RedisSession::builder(server.url(), key(1))
        .key_prefix("shop:sess:")
        .build()
        .unwrap();
    let srv = serve(sessions);
    let mut client = Client::new(&srv);
    client.get("/count").await;
    let keys = server.keys();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].starts_with("shop:sess:"), "{keys:?}");

    client.get("/remember/86400").await;
    let mut conn = server.conn();
    let ttl: i64 = conn.pttl(&keys[0]).unwrap();
    assert!(ttl > 86_000_000, "{ttl}");
    client.get("/read").await;
    let ttl: i64 = conn.pttl(&keys[0]).unwrap();
    assert!(
        ttl > 86_000_000,
        "the load refreshes the remembered lifetime: {ttl}"
    );
}

#[actix_web::test]
async fn large_values_round_trip() {
    let server = RedisServer::start();
    let sessions = RedisSession::builder(server.url(), key(1))
        .max_value_size(256 * 1024)
        .build()
        .unwrap();
    let srv = serve(sessions);
    let mut client = Client::new(&srv);
    assert_eq!(client.get("/big/200000").await.body, "stored");
    let body = client.get("/get/big").await.body;
    assert_eq!(body.len(), 200_002);
}

#[test]
fn bad_configuration_is_a_typed_error() {
    assert!(matches!(
        RedisSession::new("not a url", key(1)),
        Err(ConfigError::InvalidUrl(_))
    ));
    assert!(matches!(
        RedisSession::builder("redis://127.0.0.1", key(1))
            .idle_timeout(Duration::ZERO)
            .build(),
        Err(ConfigError::InvalidOption {
            option: "idle_timeout",
            ..
        })
    ));
    assert!(matches!(
        RedisSession::builder("redis://127.0.0.1", key(1))
            .idle_timeout(Duration::from_secs(60))
            .touch_after(Duration::from_secs(60))
            .build(),
        Err(ConfigError::InvalidOption {
            option: "touch_after",
            ..
        })
    ));
    assert!(matches!(
        RedisSession::builder("redis://127.0.0.1", key(1))
            .cookie_name("bad name;")
            .build(),
        Err(ConfigError::InvalidOption {
            option: "cookie_name",
            ..
        })
    ));
    assert!(matches!(
        RedisSession::builder("redis://127.0.0.1", key(1))
            .flash_max_messages(0)
            .build(),
        Err(ConfigError::InvalidOption { .. })
    ));
    if !cfg!(feature = "tls") {
        assert!(matches!(
            RedisSession::new("rediss://127.0.0.1", key(1)),
            Err(ConfigError::TlsNotEnabled)
        ));
    }
    let pool =
        r2d2::Pool::builder().build_unchecked(redis::Client::open("redis://127.0.0.1:1").unwrap());
    assert!(matches!(
        RedisSession::builder_from_pool(pool, key(1))
            .transport(Transport::Multiplexed)
            .build(),
        Err(ConfigError::InvalidOption {
            option: "transport",
            ..
        })
    ));
    // A server that is not there yet does not stop the application from starting.
    assert!(RedisSession::new("redis://127.0.0.1:1", key(1)).is_ok());
}

#[actix_web::test]
async fn a_slow_redis_times_out_into_a_503_and_the_timed_out_connection_is_replaced() {
    for transport in TRANSPORTS {
        a_slow_redis_times_out_into_a_503_and_the_timed_out_connection_is_replaced_with(transport)
            .await;
    }
}

async fn a_slow_redis_times_out_into_a_503_and_the_timed_out_connection_is_replaced_with(
    transport: Transport,
) {
    let server = RedisServer::start();
    let sessions = with(
        transport,
        // One timeout per batch is what this is about: no retry.
        RedisSession::builder(server.url(), key(1))
            .command_timeout(Duration::from_millis(200))
            .retry(actix_redis_session::Retry::disabled()),
    );
    let srv = serve(sessions);
    let mut clients: Vec<Client> = (0..20).map(|_| Client::new(&srv)).collect();
    for client in &mut clients {
        client.get("/count").await;
    }

    // Every command now waits 1.5 s for an answer.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("ALL")
        .query(&mut server.conn())
        .unwrap();
    let started = std::time::Instant::now();
    // Concurrent requests share batches: one timeout ends a batch, not one per reply in it.
    let responses =
        futures_util::future::join_all(clients.iter_mut().map(|c| c.get("/count"))).await;
    assert!(responses.iter().all(|r| r.status == 503), "{responses:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "{transport:?}: the requests gave up before Redis answered ({:?})",
        started.elapsed()
    );

    actix_rt::time::sleep(Duration::from_millis(1600)).await;
    // The late answer of the timed-out command must not be read as the answer to a new one.
    for client in &mut clients {
        for expected in ["2", "3"] {
            assert_eq!(client.get("/count").await.body, expected);
        }
    }
}

#[actix_web::test]
async fn other_middleware_reach_the_session_through_service_request() {
    use actix_redis_session::SessionExt;
    use actix_web::{
        body::MessageBody,
        dev::{ServiceRequest, ServiceResponse},
        middleware::{from_fn, Next},
        HttpMessage as _,
    };

    /// Runs inside the session middleware: tags every request of a signed-in user. The
    /// session is loaded here (the handler's extractors then share the load).
    async fn tag_user(
        req: ServiceRequest,
        next: Next<impl MessageBody>,
    ) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
        let session = req.load_session().await?;
        let user: Option<String> = session.get("user")?;
        req.extensions_mut()
            .insert(user.unwrap_or_else(|| "anonymous".into()));
        next.call(req).await
    }

    let server = RedisServer::start();
    let sessions = RedisSession::new(server.url(), key(1)).unwrap();
    let srv = actix_test::start(move || {
        App::new()
            .wrap(from_fn(tag_user))
            .wrap(sessions.clone())
            .route(
                "/who",
                web::get().to(|req: actix_web::HttpRequest| async move {
                    req.extensions()
                        .get::<String>()
                        .cloned()
                        .unwrap_or_default()
                }),
            )
            .configure(common::routes)
    });
    let mut client = Client::new(&srv);
    assert_eq!(client.get("/who").await.body, "anonymous");
    client.get("/set/user/carol").await;
    assert_eq!(client.get("/who").await.body, "carol");
}

#[actix_web::test]
async fn both_transports_read_each_others_sessions() {
    let server = RedisServer::start();
    let pool = serve(with(
        Transport::Pool,
        RedisSession::builder(server.url(), key(1)),
    ));
    let multiplexed = serve(with(
        Transport::Multiplexed,
        RedisSession::builder(server.url(), key(1)),
    ));
    let mut client = Client::new(&pool);
    client.get("/count").await;
    client.get("/cart/add/5").await;
    let mut client = Client::with_jar(&multiplexed, client.jar);
    assert_eq!(client.get("/count").await.body, "2");
    assert_eq!(client.get("/cart").await.body, "[5]");
    let mut client = Client::with_jar(&pool, client.jar);
    assert_eq!(client.get("/read").await.body, "2");
}

#[actix_web::test]
async fn concurrent_requests_are_batched_and_each_gets_its_own_answer() {
    for transport in TRANSPORTS {
        concurrent_requests_are_batched_and_each_gets_its_own_answer_with(transport).await;
    }
}

async fn concurrent_requests_are_batched_and_each_gets_its_own_answer_with(transport: Transport) {
    let server = RedisServer::start();
    let srv = serve(with(transport, RedisSession::builder(server.url(), key(1))));
    let mut readers = Vec::new();
    for i in 0..40 {
        let mut client = Client::new(&srv);
        client.get(&format!("/set/v/{i}")).await;
        readers.push(client);
    }
    // A record replaced by a string: its WRONGTYPE error lands amid the others' replies.
    let mut foreign = Client::new(&srv);
    foreign.get("/set/v/foreign").await;
    let redis_key = format!("session:{}", foreign.get("/handle").await.body);
    let mut conn = server.conn();
    let _: () = conn.set(&redis_key, "not a session").unwrap();
    // Redis forgets the scripts: the new sessions of the burst meet NOSCRIPT inside a batch.
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut conn).unwrap();
    let mut writers: Vec<Client> = (0..10).map(|_| Client::new(&srv)).collect();
    let paths: Vec<String> = (0..10).map(|i| format!("/set/w/{i}")).collect();

    let (reads, foreign_read, writes) = futures_util::future::join3(
        futures_util::future::join_all(readers.iter_mut().map(|c| c.get("/get/v"))),
        foreign.get("/get/v"),
        futures_util::future::join_all(writers.iter_mut().zip(&paths).map(|(c, p)| c.get(p))),
    )
    .await;

    for (i, res) in reads.iter().enumerate() {
        assert_eq!((res.status, res.body.clone()), (200, format!("\"{i}\"")));
    }
    assert_eq!(
        (foreign_read.status, foreign_read.body.as_str()),
        (200, "none")
    );
    for res in &writes {
        assert_eq!(res.status, 200, "{transport:?}: a new session in the burst");
    }
    for (i, writer) in writers.iter_mut().enumerate() {
        assert_eq!(writer.get("/get/w").await.body, format!("\"{i}\""));
    }
    if transport == Transport::Pool {
        // 51 requests at once went through at most 2 pooled connections (the pool may
        // open 20), besides the test's own.
        let clients = connected_clients(&mut conn);
        assert!(clients <= 2 + 1, "{clients} connections");
    }
}

fn connected_clients(conn: &mut redis::Connection) -> usize {
    let info: String = redis::cmd("INFO").arg("clients").query(conn).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("connected_clients")
}

#[actix_web::test]
async fn a_pool_of_one_connection_serves_concurrent_requests() {
    let server = RedisServer::start();
    let sessions = RedisSession::builder(server.url(), key(1))
        .capacity(1)
        .checkout_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let srv = serve(sessions);
    let mut clients: Vec<Client> = (0..20).map(|_| Client::new(&srv)).collect();
    for _ in 0..3 {
        let responses =
            futures_util::future::join_all(clients.iter_mut().map(|c| c.get("/count"))).await;
        assert!(responses.iter().all(|r| r.status == 200), "{responses:?}");
    }
    for client in &mut clients {
        assert_eq!(client.get("/count").await.body, "4");
    }
    assert_eq!(connected_clients(&mut server.conn()), 1 + 1);
}

#[actix_web::test]
async fn a_dropped_app_closes_its_multiplexed_connection_and_ends_its_tasks() {
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let server = RedisServer::start();
    let mut conn = server.conn();
    let tasks_before = tasks();
    let sessions = with(
        Transport::Multiplexed,
        RedisSession::builder(server.url(), key(1)),
    );
    let app =
        actix_web::test::init_service(App::new().wrap(sessions.clone()).configure(common::routes))
            .await;
    let req = actix_web::test::TestRequest::get()
        .uri("/count")
        .to_request();
    assert_eq!(actix_web::test::call_service(&app, req).await.status(), 200);
    assert_eq!(
        connected_clients(&mut conn),
        2,
        "the app's connection and ours"
    );
    // Several requests at once, so that every sender task of the worker has started.
    let requests = (0..8).map(|_| {
        let req = actix_web::test::TestRequest::get()
            .uri("/count")
            .to_request();
        actix_web::test::call_service(&app, req)
    });
    futures_util::future::join_all(requests).await;
    assert!(tasks() > tasks_before, "the app runs tasks");
    // The runtime goes on; the app (one worker's middleware) is dropped.
    drop(app);
    for _ in 0..200 {
        if connected_clients(&mut conn) == 1 && tasks() <= tasks_before {
            return;
        }
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "a dropped app left {} connection(s) and {} task(s) behind",
        connected_clients(&mut conn) - 1,
        tasks().saturating_sub(tasks_before)
    );
}

#[actix_web::test]
async fn with_touch_after_reads_write_nothing_until_the_refresh_is_due() {
    for transport in TRANSPORTS {
        with_touch_after_reads_write_nothing_until_the_refresh_is_due_with(transport).await;
    }
}

async fn with_touch_after_reads_write_nothing_until_the_refresh_is_due_with(transport: Transport) {
    let server = RedisServer::start();
    let builder = RedisSession::builder(server.url(), key(1))
        .idle_timeout(Duration::from_secs(60))
        .touch_after(Duration::from_millis(500));
    let srv = serve(with(transport, builder));
    let mut client = Client::new(&srv);
    client.get("/set/a/1").await;
    let redis_key = format!("session:{}", client.get("/handle").await.body);
    let mut conn = server.conn();
    let created_touch: u64 = conn.hget(&redis_key, "m:t").unwrap();
    let _: () = conn.pexpire(&redis_key, 30_000).unwrap();

    server.reset_stats();
    for _ in 0..3 {
        assert_eq!(client.get("/get/a").await.body, "\"1\"");
    }
    assert_eq!(
        server.command_calls(),
        calls(&[("hgetall", 3)]),
        "{transport:?}"
    );
    let ttl: i64 = conn.pttl(&redis_key).unwrap();
    assert!(ttl <= 30_000, "not moved: {ttl}");

    actix_rt::time::sleep(Duration::from_millis(600)).await;
    server.reset_stats();
    assert_eq!(client.get("/get/a").await.body, "\"1\"");
    // The due refresh goes out right after the load, without the request waiting for it.
    let expected = calls(&[("hgetall", 1), ("hset", 1), ("pexpire", 2)]);
    for _ in 0..100 {
        if server.command_calls() == expected {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        server.command_calls(),
        expected,
        "{transport:?}: the due refresh"
    );
    let ttl: i64 = conn.pttl(&redis_key).unwrap();
    assert!(ttl > 50_000, "moved to the idle timeout: {ttl}");
    let touched: u64 = conn.hget(&redis_key, "m:t").unwrap();
    assert!(touched >= created_touch + 500);

    // Refreshed: reads are lone HGETALLs again; a write refreshes as always.
    server.reset_stats();
    client.get("/get/a").await;
    client.get("/set/a/2").await;
    assert_eq!(
        server.command_calls(),
        calls(&[("hgetall", 2), ("hset", 1), ("pexpire", 2)]),
        "{transport:?}"
    );
    assert_eq!(client.get("/get/a").await.body, "\"2\"");
}

/// Every extractor of a request shares one load: `Session`, `TypedSession`, the flash
/// extractors and `load_session` in a middleware cost one round trip together.
#[actix_web::test]
async fn the_extractors_of_one_request_share_one_load() {
    use actix_redis_session::{Flash, IncomingFlashMessages, SessionExt, TypedSession};
    use actix_web::{middleware::from_fn, HttpResponse};

    async fn everything(
        session: Session,
        cart: TypedSession<common::Cart>,
        incoming: IncomingFlashMessages,
        _flash: Flash,
        req: actix_web::HttpRequest,
    ) -> HttpResponse {
        let again = req.get_session().expect("loaded by the extractors");
        let visits: u32 = again.get("count").unwrap().unwrap_or(0);
        let _ = session.get::<String>("user");
        HttpResponse::Ok().body(format!(
            "{visits} {} {}",
            cart.items.len(),
            incoming.iter().count()
        ))
    }

    let server = RedisServer::start();
    let sessions = RedisSession::new(server.url(), key(1)).unwrap();
    let srv = actix_test::start(move || {
        App::new()
            .wrap(from_fn(|req: actix_web::dev::ServiceRequest, next: actix_web::middleware::Next<_>| async move {
                let _ = req.load_session().await?;
                next.call(req).await
            }))
            .wrap(sessions.clone())
            .route("/everything", web::get().to(everything))
            .configure(common::routes)
    });
    let mut client = Client::new(&srv);
    client.get("/count").await;
    client.get("/count").await;
    server.reset_stats();
    assert_eq!(client.get("/everything").await.body, "2 0 0");
    assert_eq!(
        server.command_calls(),
        calls(&[("hgetall", 1), ("pexpire", 1)]),
        "one load for all of them"
    );
}
