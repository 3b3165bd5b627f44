//! Shared test support: backends (memory store, real Redis), a test application served over
//! real HTTP, and a client with a cookie jar.
#![allow(dead_code)] // each test crate uses a different part

pub mod blackhole;
pub mod cluster;
pub mod logs;
pub mod proxy;
pub mod redis_server;
pub mod sentinel;
pub mod tls;
pub mod user_store;

use std::{collections::BTreeMap, time::Duration};

use actix_redis_session::{
    store::{CookieStore, FileStore, MemoryStore},
    ClientIp, Flash, FlashMessage, IncomingFlashMessages, Key, Level, RedisSession,
    RedisSessionBuilder, Session, SessionData, SessionError, Transport, TypedSession,
};
use actix_web::{
    cookie::Cookie,
    http::header::{COOKIE, SET_COOKIE},
    web, App, HttpResponse,
};
use serde::{Deserialize, Serialize};

pub use self::redis_server::RedisServer;

/// Runs each listed test of `suite` once per backend: `memory::name`, `redis::name` (pool
/// transport), `multiplexed::name` (Redis over the multiplexed transport), `file::name`
/// ([`FileStore`] in a temporary directory), `user_store::name` (a store written against the
/// public trait alone, [`user_store::MapStore`]), `hardened::name` (Redis with every value
/// sealed, values over 16 bytes compressed, sessions bound to User-Agent and IP),
/// `cached::name` and `cached_multiplexed::name` (Redis with the local cache, on both
/// transports).
#[allow(unused_macros)]
macro_rules! per_backend {
    ($($name:ident),* $(,)?) => {
        mod cached {
            $(#[actix_web::test]
            async fn $name() {
                super::suite::$name(super::common::Backend::cached(
                    actix_redis_session::Transport::Pool,
                ))
                .await;
            })*
        }
        mod cached_multiplexed {
            $(#[actix_web::test]
            async fn $name() {
                super::suite::$name(super::common::Backend::cached(
                    actix_redis_session::Transport::Multiplexed,
                ))
                .await;
            })*
        }
        mod memory {
            $(#[actix_web::test]
            async fn $name() {
                super::suite::$name(super::common::Backend::memory()).await;
            })*
        }
        mod redis {
            $(#[actix_web::test]
            async fn $name() {
                super::suite::$name(super::common::Backend::redis()).await;
            })*
        }
        mod multiplexed {
            $(#[actix_web::test]
            async fn $name() {
                super::suite::$name(super::common::Backend::multiplexed()).await;
            })*
        }
        mod file {
            $(#[actix_web::test]
            async fn $name() {
                super::suite::$name(super::common::Backend::file()).await;
            })*
        }
        mod user_store {
            $(#[actix_web::test]
            async fn $name() {
                super::suite::$name(super::common::Backend::user_store()).await;
            })*
        }
        mod hardened {
            $(#[actix_web::test]
            async fn $name() {
                super::suite::$name(super::common::Backend::hardened()).await;
            })*
        }
    };
}

/// Runs each listed test of `suite` against a Redis Cluster (3 masters, 3 replicas) on both
/// transports (`cluster::name`, `cluster_multiplexed::name`): one cluster for the whole test
/// binary, each test under a key prefix of its own. Feature `cluster`.
#[allow(unused_macros)]
macro_rules! on_cluster {
    ($($name:ident),* $(,)?) => {
        #[cfg(feature = "cluster")]
        mod cluster {
            $(#[actix_web::test]
            async fn $name() {
                super::suite::$name(super::common::Backend::cluster(
                    actix_redis_session::Transport::Pool,
                ))
                .await;
            })*
        }
        #[cfg(feature = "cluster")]
        mod cluster_multiplexed {
            $(#[actix_web::test]
            async fn $name() {
                super::suite::$name(super::common::Backend::cluster(
                    actix_redis_session::Transport::Multiplexed,
                ))
                .await;
            })*
        }
    };
}

/// Runs each listed test of `suite` against Redis Sentinel (master, replica, three
/// sentinels) on both transports (`sentinel::name`, `sentinel_multiplexed::name`): one
/// deployment for the whole test binary, each test under a key prefix of its own. Feature
/// `sentinel`.
#[allow(unused_macros)]
macro_rules! on_sentinel {
    ($($name:ident),* $(,)?) => {
        #[cfg(feature = "sentinel")]
        mod sentinel {
            $(#[actix_web::test]
            async fn $name() {
                super::suite::$name(super::common::Backend::sentinel(
                    actix_redis_session::Transport::Pool,
                ))
                .await;
            })*
        }
        #[cfg(feature = "sentinel")]
        mod sentinel_multiplexed {
            $(#[actix_web::test]
            async fn $name() {
                super::suite::$name(super::common::Backend::sentinel(
                    actix_redis_session::Transport::Multiplexed,
                ))
                .await;
            })*
        }
    };
}

/// [`per_backend!`], [`on_cluster!`] and [`on_sentinel!`] for one list of tests.
#[allow(unused_macros)]
macro_rules! per_backend_and_cluster {
    ($($name:ident),* $(,)?) => {
        per_backend!($($name),*);
        on_cluster!($($name),*);
        on_sentinel!($($name),*);
    };
}

/// Runs each listed test of `suite` against the cookie store too (`cookie_store::name`):
/// the cases that hold without server state.
#[allow(unused_macros)]
macro_rules! on_cookie_store {
    ($($name:ident),* $(,)?) => {
        mod cookie_store {
            $(#[actix_web::test]
            async fn $name() {
                super::suite::$name(super::common::Backend::cookie()).await;
            })*
        }
    };
}

/// Where the sessions of a test live.
pub enum Backend {
    Memory(MemoryStore),
    Redis(RedisServer, Transport),
    /// Redis with encryption at rest, compression and client binding on.
    Hardened(RedisServer),
    /// Redis with the local cache (`touch_after` at the cache's default).
    Cached(RedisServer, Transport),
    File(FileStore, tempfile::TempDir),
    User(user_store::MapStore),
    /// No server state: the session is sealed in the cookie.
    Cookie,
    /// The test binary's shared Redis Cluster, under a key prefix of this test's own.
    Cluster(&'static cluster::ClusterSetup, Transport, String),
    /// The test binary's shared Sentinel deployment, under a key prefix of this test's own.
    Sentinel(&'static sentinel::SharedSentinel, Transport, String),
}

/// The Sentinel deployment of this test binary, started by its first Sentinel test; its
/// processes end with the process.
pub fn shared_sentinel() -> &'static sentinel::SharedSentinel {
    static SENTINEL: std::sync::OnceLock<sentinel::SharedSentinel> = std::sync::OnceLock::new();
    SENTINEL.get_or_init(sentinel::SharedSentinel::start)
}

/// The cluster of this test binary, started by its first cluster test; its nodes end with
/// the process.
pub fn shared_cluster() -> &'static cluster::ClusterSetup {
    static CLUSTER: std::sync::OnceLock<cluster::ClusterSetup> = std::sync::OnceLock::new();
    CLUSTER.get_or_init(cluster::ClusterSetup::start)
}

impl Backend {
    pub fn memory() -> Backend {
        Backend::Memory(MemoryStore::new())
    }

    pub fn redis() -> Backend {
        Backend::Redis(RedisServer::start(), Transport::Pool)
    }

    pub fn multiplexed() -> Backend {
        Backend::Redis(RedisServer::start(), Transport::Multiplexed)
    }

    /// The shared cluster ([`shared_cluster`]) over `transport`.
    pub fn cluster(transport: Transport) -> Backend {
        static TESTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = TESTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Backend::Cluster(shared_cluster(), transport, format!("test{n}:"))
    }

    /// The shared Sentinel deployment ([`shared_sentinel`]) over `transport`.
    pub fn sentinel(transport: Transport) -> Backend {
        static TESTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = TESTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Backend::Sentinel(shared_sentinel(), transport, format!("test{n}:"))
    }

    pub fn file() -> Backend {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = FileStore::new(dir.path().join("sessions")).expect("a session directory");
        Backend::File(store, dir)
    }

    pub fn hardened() -> Backend {
        Backend::Hardened(RedisServer::start())
    }

    pub fn cached(transport: Transport) -> Backend {
        Backend::Cached(RedisServer::start(), transport)
    }

    pub fn cookie() -> Backend {
        Backend::Cookie
    }

    pub fn user_store() -> Backend {
        Backend::User(user_store::MapStore::default())
    }

    /// A builder over this backend's storage; several builders share it.
    pub fn builder(&self, key: Key) -> RedisSessionBuilder {
        match self {
            Backend::Memory(store) => RedisSession::builder_with_memory(store.clone(), key),
            Backend::File(store, _) => RedisSession::builder_with(store.clone(), key),
            Backend::User(store) => RedisSession::builder_with(store.clone(), key),
            Backend::Cookie => RedisSession::builder_with(CookieStore::new(), key),
            Backend::Redis(server, transport) => RedisSession::builder(server.url(), key)
                .transport(*transport)
                .checkout_timeout(Duration::from_millis(500)),
            Backend::Cached(server, transport) => RedisSession::builder(server.url(), key)
                .transport(*transport)
                .checkout_timeout(Duration::from_millis(500))
                .local_cache(actix_redis_session::store::LocalCache::new()),
            Backend::Hardened(server) => RedisSession::builder(server.url(), key)
                .checkout_timeout(Duration::from_millis(500))
                .encrypt_at_rest(true)
                .compress_above(16)
                .bind_to_user_agent(true)
                .bind_to_ip(ClientIp::peer().network(24, 64)),
            #[cfg(not(feature = "cluster"))]
            Backend::Cluster(..) => unreachable!("cluster tests need the cluster feature"),
            #[cfg(not(feature = "sentinel"))]
            Backend::Sentinel(..) => unreachable!("sentinel tests need the sentinel feature"),
            #[cfg(feature = "sentinel")]
            Backend::Sentinel(sentinel, transport, prefix) => {
                RedisSession::builder_sentinel(sentinel.sentinel_urls(), sentinel::MASTER_NAME, key)
                    .transport(*transport)
                    .key_prefix(prefix.clone())
                    .checkout_timeout(Duration::from_millis(500))
            }
            #[cfg(feature = "cluster")]
            Backend::Cluster(cluster, transport, prefix) => {
                RedisSession::builder_cluster(cluster.urls(), key)
                    .transport(*transport)
                    .key_prefix(prefix.clone())
                    .checkout_timeout(Duration::from_millis(500))
            }
        }
    }

    /// The middleware with default settings (with the local cache: once tracking is on, so
    /// that the suites run on the cache, not around it).
    pub fn sessions(&self, key: Key) -> RedisSession {
        let sessions = self.builder(key).build().expect("valid test configuration");
        if let Backend::Cached(..) = self {
            let started = std::time::Instant::now();
            while !sessions.cache_stats().is_some_and(|s| s.tracking) {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "tracking never came on"
                );
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        sessions
    }

    /// How many session records the backend holds on the server (expired ones included until
    /// swept); none for the cookie store.
    pub fn stored_sessions(&self) -> usize {
        match self {
            Backend::Memory(store) => store.len(),
            Backend::Redis(server, _) | Backend::Hardened(server) | Backend::Cached(server, _) => {
                server.keys().len()
            }
            Backend::File(store, _) => std::fs::read_dir(store.dir())
                .expect("the session directory")
                .filter(|e| {
                    let name = e.as_ref().unwrap().file_name();
                    name.to_string_lossy().ends_with(".session")
                })
                .count(),
            Backend::User(store) => store.len(),
            Backend::Cluster(cluster, _, prefix) => cluster.keys(prefix).len(),
            Backend::Sentinel(sentinel, _, prefix) => sentinel.keys(prefix).len(),
            // Nothing on the server, ever.
            Backend::Cookie => 0,
        }
    }

    pub fn redis_server(&self) -> Option<&RedisServer> {
        match self {
            Backend::Redis(server, _) | Backend::Hardened(server) | Backend::Cached(server, _) => {
                Some(server)
            }
            _ => None,
        }
    }
}

/// A fixed test key.
pub fn key(byte: u8) -> Key {
    Key::from_bytes(&[byte; 32]).expect("32 bytes")
}

#[derive(Serialize, Deserialize, Default, Debug)]
pub struct Cart {
    pub items: Vec<u32>,
}

impl SessionData for Cart {
    const KEY: &'static str = "cart";
}

#[derive(Serialize, Deserialize, Default, Debug)]
pub struct Reading {
    pub value: f64,
}

impl SessionData for Reading {
    const KEY: &'static str = "reading";
}

type Reply = actix_web::Result<String>;

/// The name of a session error's variant, so that tests can tell which error a handler met.
pub fn error_kind(e: &SessionError) -> &'static str {
    match e {
        SessionError::MissingMiddleware => "MissingMiddleware",
        SessionError::Serialize { .. } => "Serialize",
        SessionError::Deserialize { .. } => "Deserialize",
        SessionError::ValueTooLarge { .. } => "ValueTooLarge",
        SessionError::KeyTooLong { .. } => "KeyTooLong",
        SessionError::TooManyFields { .. } => "TooManyFields",
        SessionError::SessionTooLarge { .. } => "SessionTooLarge",
        SessionError::FlashTooLarge { .. } => "FlashTooLarge",
        SessionError::TooManyFlashMessages { .. } => "TooManyFlashMessages",
        _ => "other",
    }
}

/// `ok`, or the error's kind.
fn outcome(result: Result<(), SessionError>) -> String {
    match result {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("error: {}", error_kind(&e)),
    }
}

/// Inserts `key` = `value` and says which error, if any, that met.
async fn try_set(session: Session, path: web::Path<(String, String)>) -> Reply {
    let (key, value) = path.into_inner();
    Ok(outcome(session.insert(key, value)))
}

/// Inserts a string of `bytes` bytes and says which error, if any, that met.
async fn try_big(session: Session, bytes: web::Path<usize>) -> Reply {
    Ok(outcome(session.insert("big", "x".repeat(*bytes))))
}

/// Sends a flash message of `flash` bytes, then inserts `values` strings of `bytes` bytes
/// each (`v0`, `v1`, ...) in the same request: which error, if any, the last met.
async fn try_flash_then_set(session: Session, path: web::Path<(usize, usize, usize)>) -> Reply {
    let (flash, values, bytes) = path.into_inner();
    FlashMessage::info("z".repeat(flash)).send(&session)?;
    let mut last = String::new();
    for i in 0..values {
        last = outcome(session.insert(format!("v{i}"), "x".repeat(bytes)));
    }
    Ok(last)
}

/// Tries to store NaN, plainly and in a typed value.
async fn try_nan(session: Session) -> Reply {
    let plain = outcome(session.insert("nan", f64::NAN));
    let mut reading = TypedSession::<Reading>::from_session(session.clone());
    reading.value = f64::INFINITY;
    let typed = outcome(reading.save());
    Ok(format!("{plain} / {typed}"))
}

async fn reading(reading: TypedSession<Reading>) -> Reply {
    Ok(reading.value.to_string())
}

async fn count(session: Session) -> Reply {
    let n: u64 = session.get("count")?.unwrap_or(0);
    session.insert("count", n + 1)?;
    Ok((n + 1).to_string())
}

async fn read(session: Session) -> Reply {
    Ok(session.get::<u64>("count")?.unwrap_or(0).to_string())
}

async fn set(session: Session, path: web::Path<(String, String)>) -> Reply {
    let (key, value) = path.into_inner();
    session.insert(key, value)?;
    Ok("ok".into())
}

async fn get(session: Session, key: web::Path<String>) -> Reply {
    Ok(session
        .get::<serde_json::Value>(&key)?
        .map_or_else(|| "none".into(), |v| v.to_string()))
}

async fn remove(session: Session, key: web::Path<String>) -> Reply {
    Ok(session.remove(&key).to_string())
}

async fn remove_as_u64(session: Session, key: web::Path<String>) -> Reply {
    Ok(format!("{:?}", session.remove_as::<u64>(&key)?))
}

async fn increment(session: Session, key: web::Path<String>) -> Reply {
    Ok(session.update(&key, |n: u64| n + 1)?.to_string())
}

async fn contains(session: Session, key: web::Path<String>) -> Reply {
    Ok(session.contains_key(&key).to_string())
}

async fn entries(session: Session) -> Reply {
    Ok(serde_json::to_string(&session.entries())?)
}

async fn update_or(session: Session, key: web::Path<String>) -> Reply {
    session.update_or(&key, 1u64, |n| n + 1)?;
    Ok(session.get::<u64>(&key)?.unwrap_or(0).to_string())
}

async fn clear_status(session: Session) -> Reply {
    session.clear();
    Ok(format!("{:?}", session.status()))
}

async fn clear(session: Session) -> Reply {
    session.clear();
    Ok("cleared".into())
}

async fn clear_then_set(session: Session, path: web::Path<(String, String)>) -> Reply {
    session.clear();
    let (key, value) = path.into_inner();
    session.insert(key, value)?;
    Ok("ok".into())
}

async fn renew(session: Session) -> Reply {
    session.renew();
    Ok(session.handle().to_string())
}

/// Names the session's user (`Session::set_user`).
async fn set_user(session: Session, user: web::Path<String>) -> Reply {
    session.set_user(user.into_inner())?;
    Ok("ok".into())
}

/// The session's user, or `none`.
async fn user(session: Session) -> Reply {
    Ok(session.user().unwrap_or_else(|| "none".to_owned()))
}

/// Loads the session, waits `ms`, then inserts: a slow handler that races whatever the
/// client does meanwhile.
async fn slow_set(session: Session, path: web::Path<(u64, String, String)>) -> Reply {
    let (ms, key, value) = path.into_inner();
    actix_rt::time::sleep(Duration::from_millis(ms)).await;
    session.insert(key, value)?;
    Ok("ok".into())
}

/// Loads the session, waits, then renews it: a slow login (say a password hash) that races
/// whatever the client does meanwhile.
async fn slow_renew(session: Session, ms: web::Path<u64>) -> Reply {
    actix_rt::time::sleep(Duration::from_millis(*ms)).await;
    session.renew();
    session.insert("renewed", true)?;
    Ok("renewed".into())
}

async fn purge(session: Session) -> Reply {
    session.purge();
    Ok("purged".into())
}

async fn purge_then_set(session: Session, path: web::Path<(String, String)>) -> Reply {
    session.purge();
    let (key, value) = path.into_inner();
    session.insert(key, value)?;
    Ok("ok".into())
}

async fn remember(session: Session, secs: web::Path<u64>) -> Reply {
    session.remember(Duration::from_secs(*secs));
    Ok("remembered".into())
}

async fn forget(session: Session) -> Reply {
    session.forget();
    Ok("forgotten".into())
}

async fn remembered(session: Session) -> Reply {
    Ok(format!("{:?}", session.remembered()))
}

async fn handle(session: Session) -> Reply {
    Ok(session.handle().to_string())
}

async fn status(session: Session) -> Reply {
    Ok(format!("{:?} new={}", session.status(), session.is_new()))
}

async fn big(session: Session, bytes: web::Path<usize>) -> Reply {
    session.insert("big", "x".repeat(*bytes))?;
    Ok("stored".into())
}

async fn cart_add(mut cart: TypedSession<Cart>, id: web::Path<u32>) -> Reply {
    cart.items.push(*id);
    Ok(cart.items.len().to_string())
}

async fn cart(cart: TypedSession<Cart>) -> Reply {
    Ok(format!("{:?}", cart.items))
}

async fn cart_add_then_purge(mut cart: TypedSession<Cart>, id: web::Path<u32>) -> Reply {
    cart.items.push(*id);
    cart.session().purge();
    Ok("purged".into())
}

async fn cart_add_then_clear(mut cart: TypedSession<Cart>, id: web::Path<u32>) -> Reply {
    cart.items.push(*id);
    cart.session().clear();
    cart.session().insert("kept", "after the clear")?;
    Ok("cleared".into())
}

async fn cart_add_then_renew(mut cart: TypedSession<Cart>, id: web::Path<u32>) -> Reply {
    cart.items.push(*id);
    cart.session().renew();
    Ok("renewed".into())
}

/// A cart built after the purge is the new session's.
async fn purge_then_cart(session: Session, id: web::Path<u32>) -> Reply {
    session.purge();
    let mut cart = TypedSession::<Cart>::from_session(session);
    cart.items.push(*id);
    Ok("new cart".into())
}

async fn cart_touch(mut cart: TypedSession<Cart>) -> Reply {
    // A mutable borrow that changes nothing must not cause a write.
    let _ = &mut cart.items;
    Ok("touched".into())
}

fn level(name: &str) -> Level {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).expect("a level name")
}

async fn flash_send(session: Session, path: web::Path<(String, String)>) -> Reply {
    let (name, text) = path.into_inner();
    FlashMessage::new(level(&name), text).send(&session)?;
    Ok("sent".into())
}

async fn flash_show(messages: IncomingFlashMessages) -> Reply {
    Ok(serde_json::to_string(&messages)?)
}

async fn flash_now(flash: Flash, text: web::Path<String>) -> Reply {
    flash.now(FlashMessage::warning(text.into_inner()))?;
    Ok(serde_json::to_string(&flash.incoming())?)
}

/// Shows what came in and sends a new message for the next request.
async fn flash_show_and_send(flash: Flash, text: web::Path<String>) -> Reply {
    let shown = flash.incoming();
    flash.info(text.into_inner())?;
    Ok(serde_json::to_string(&shown)?)
}

/// Sends from the blocking thread pool: the session handle is explicit and `Send`.
async fn flash_send_blocking(session: Session, text: web::Path<String>) -> Reply {
    let text = text.into_inner();
    web::block(move || FlashMessage::success(text).send(&session)).await??;
    Ok("sent".into())
}

async fn login(session: Session, flash: Flash, user: web::Path<String>) -> Reply {
    session.renew();
    session.insert("user", user.into_inner())?;
    flash.success("Signed in")?;
    Ok("in".into())
}

async fn logout(session: Session, flash: Flash) -> Reply {
    session.purge();
    flash.info("Signed out")?;
    Ok("out".into())
}

/// The routes every acceptance test uses (GET only, to keep the client small).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/flash/send/{level}/{text}", web::get().to(flash_send))
        .route("/flash/show", web::get().to(flash_show))
        .route("/flash/now/{text}", web::get().to(flash_now))
        .route(
            "/flash/show-and-send/{text}",
            web::get().to(flash_show_and_send),
        )
        .route("/flash/blocking/{text}", web::get().to(flash_send_blocking))
        .route("/login/{user}", web::get().to(login))
        .route("/logout", web::get().to(logout));
    cfg.route("/count", web::get().to(count))
        .route("/read", web::get().to(read))
        .route("/set/{key}/{value}", web::get().to(set))
        .route("/get/{key}", web::get().to(get))
        .route("/remove/{key}", web::get().to(remove))
        .route("/remove-as/{key}", web::get().to(remove_as_u64))
        .route("/increment/{key}", web::get().to(increment))
        .route("/contains/{key}", web::get().to(contains))
        .route("/entries", web::get().to(entries))
        .route("/clear", web::get().to(clear))
        .route("/clear-status", web::get().to(clear_status))
        .route("/update-or/{key}", web::get().to(update_or))
        .route(
            "/clear-then-set/{key}/{value}",
            web::get().to(clear_then_set),
        )
        .route("/renew", web::get().to(renew))
        .route("/slow-renew/{ms}", web::get().to(slow_renew))
        .route("/slow-set/{ms}/{key}/{value}", web::get().to(slow_set))
        .route("/set-user/{user}", web::get().to(set_user))
        .route("/user", web::get().to(user))
        .route("/purge", web::get().to(purge))
        .route(
            "/purge-then-set/{key}/{value}",
            web::get().to(purge_then_set),
        )
        .route("/remember/{secs}", web::get().to(remember))
        .route("/handle", web::get().to(handle))
        .route("/remembered", web::get().to(remembered))
        .route("/forget", web::get().to(forget))
        .route("/status", web::get().to(status))
        .route("/big/{bytes}", web::get().to(big))
        .route("/cart", web::get().to(cart))
        .route("/cart/add/{id}", web::get().to(cart_add))
        .route("/cart/touch", web::get().to(cart_touch))
        .route(
            "/cart/add-then-purge/{id}",
            web::get().to(cart_add_then_purge),
        )
        .route(
            "/cart/add-then-clear/{id}",
            web::get().to(cart_add_then_clear),
        )
        .route(
            "/cart/add-then-renew/{id}",
            web::get().to(cart_add_then_renew),
        )
        .route("/purge-then-cart/{id}", web::get().to(purge_then_cart))
        .route("/try/set/{key}/{value}", web::get().to(try_set))
        .route("/try/big/{bytes}", web::get().to(try_big))
        .route("/try/nan", web::get().to(try_nan))
        .route(
            "/try/flash-then-set/{flash}/{values}/{bytes}",
            web::get().to(try_flash_then_set),
        )
        .route("/reading", web::get().to(reading))
        .route(
            "/plain",
            web::get().to(|| async { HttpResponse::Ok().body("plain") }),
        );
}

/// The ids of `server`'s clients that have tracking on (the local cache's connections), by
/// `CLIENT LIST`.
pub fn tracking_clients(server: &RedisServer) -> Vec<String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut server.conn())
        .unwrap();
    list.lines()
        .filter(|line| {
            line.split(' ')
                .any(|f| f.strip_prefix("flags=").is_some_and(|f| f.contains('t')))
        })
        .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_owned)
        .collect()
}

/// The test application on a real HTTP server on a free loopback port (one worker).
pub fn serve(sessions: RedisSession) -> actix_test::TestServer {
    actix_test::start(move || App::new().wrap(sessions.clone()).configure(routes))
}

/// Worker threads of [`serve_concurrent`].
pub const WORKERS: usize = 4;

/// The test application on a real HTTP server with [`WORKERS`] worker threads, so that
/// concurrent requests run at the same time on different threads, as in production.
pub fn serve_concurrent(sessions: RedisSession) -> actix_test::TestServer {
    actix_test::start_with(actix_test::config().workers(WORKERS), move || {
        App::new().wrap(sessions.clone()).configure(routes)
    })
}

/// Sends every path at once with `header` (each request on its own connection, so that all
/// are in flight together) and returns the responses in order.
pub async fn all_at_once(client: &Client, paths: &[String], header: &str) -> Vec<Response> {
    futures_util::future::join_all(paths.iter().map(|path| client.send(path, Some(header)))).await
}

/// A response as the client saw it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
    pub set_cookies: Vec<Cookie<'static>>,
    pub retry_after: Option<String>,
}

impl Response {
    /// The Set-Cookie for `name`, if any.
    pub fn set_cookie(&self, name: &str) -> Option<&Cookie<'static>> {
        self.set_cookies.iter().find(|c| c.name() == name)
    }
}

/// An HTTP client that keeps cookies like a browser: Set-Cookie stores, `Max-Age=0` removes.
/// (It sends Secure cookies over plain http, as browsers do for localhost.)
pub struct Client {
    base: String,
    http: awc::Client,
    pub jar: BTreeMap<String, String>,
    /// Sent with every request (a User-Agent, X-Forwarded-For).
    pub headers: Vec<(String, String)>,
}

impl Client {
    pub fn new(srv: &actix_test::TestServer) -> Client {
        Client {
            base: srv.url(""),
            http: awc::Client::builder()
                .timeout(Duration::from_secs(30))
                .finish(),
            jar: BTreeMap::new(),
            headers: Vec::new(),
        }
    }

    /// A client whose connections come from `local` (any 127.0.0.0/8 address on Linux).
    pub fn from_address(srv: &actix_test::TestServer, local: std::net::IpAddr) -> Client {
        Client {
            http: awc::Client::builder()
                .timeout(Duration::from_secs(30))
                .connector(awc::Connector::new().local_address(local))
                .finish(),
            ..Client::new(srv)
        }
    }

    /// This client, sending `name: value` with every request.
    pub fn with_header(mut self, name: &str, value: &str) -> Client {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// A client for another server that carries over this one's cookies (same site).
    pub fn with_jar(srv: &actix_test::TestServer, jar: BTreeMap<String, String>) -> Client {
        Client {
            jar,
            ..Client::new(srv)
        }
    }

    /// GET `path` with the jar's cookies, then apply the response's Set-Cookies to the jar.
    pub async fn get(&mut self, path: &str) -> Response {
        let header = self.cookie_header();
        let response = self.send(path, header.as_deref()).await;
        for cookie in &response.set_cookies {
            let expired = cookie
                .max_age()
                .is_some_and(|age| age.is_zero() || age.is_negative());
            if expired || cookie.value().is_empty() {
                self.jar.remove(cookie.name());
            } else {
                self.jar
                    .insert(cookie.name().to_owned(), cookie.value().to_owned());
            }
        }
        response
    }

    /// The Cookie header the jar would send.
    pub fn cookie_header(&self) -> Option<String> {
        (!self.jar.is_empty()).then(|| {
            self.jar
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// GET `path` with exactly this Cookie header (or none); the jar is left alone.
    pub async fn send(&self, path: &str, cookie: Option<&str>) -> Response {
        self.send_bytes(path, cookie.map(str::as_bytes)).await
    }

    /// GET `path` with a raw Cookie header, which need not be UTF-8.
    pub async fn send_bytes(&self, path: &str, cookie: Option<&[u8]>) -> Response {
        let mut request = self
            .http
            .get(format!("{}{}", self.base, path.trim_start_matches('/')));
        for (name, value) in &self.headers {
            request = request.insert_header((name.as_str(), value.as_str()));
        }
        if let Some(cookie) = cookie {
            let value = actix_web::http::header::HeaderValue::from_bytes(cookie)
                .expect("a header value without control characters");
            request = request.insert_header((COOKIE, value));
        }
        let mut response = request.send().await.expect("the test server answers");
        let status = response.status().as_u16();
        let set_cookies = response
            .headers()
            .get_all(SET_COOKIE)
            .map(|v| {
                Cookie::parse(v.to_str().expect("ASCII Set-Cookie").to_owned())
                    .expect("a valid Set-Cookie")
            })
            .collect();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        let body = response.body().limit(4 << 20).await.expect("a body");
        Response {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
            set_cookies,
            retry_after,
        }
    }
}
