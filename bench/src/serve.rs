//! The servers under test. Each runs in a child process of the bench (`<bench> serve
//! <variant> <redis-url> <workers>`), so that its CPU time can be read from /proc and a crash
//! or leak in one cannot skew the next.
//!
//! Every session variant stores the same thing: a u64 counter under the key `n`. `/init`
//! creates a session holding 1,000,000 (the load generator's sessions are made that way);
//! `/` is the measured handler.

use std::{
    io::{self, Write as _},
    time::Duration,
};

use actix_redis_session::{
    store::{CookieStore, FileStore, LocalCache},
    ClientIp, Key, RedisSession, Session, Transport,
};
use actix_session::{
    config::{PersistentSession, TtlExtensionPolicy},
    storage::RedisSessionStore,
    Session as ActixSession, SessionMiddleware,
};
use actix_web::{cookie::Key as CookieKey, web, App, HttpServer, Result};

/// The counter a pre-created session starts at; a handler that answers less than this did
/// not find its session.
pub const INITIAL: u64 = 1_000_000;

/// One server configuration under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// No session middleware; the handler returns a small body.
    Plain,
    /// actix-session's RedisSessionStore: read the counter, write counter + 1.
    ActixRw,
    /// actix-session, read only, TTL refreshed on every request (what ours always does).
    ActixRoTtl,
    /// actix-session, read only, default lifecycle: no TTL refresh, a single GET.
    ActixRo,
    /// Ours, pool transport (`RedisSession::new`): read + write.
    PoolRw,
    /// Ours, pool transport: read only.
    PoolRo,
    /// Ours, pool transport: no cookie, every request creates a session.
    PoolNew,
    /// Ours, memory store: read + write.
    MemoryRw,
    /// Ours, multiplexed transport: read + write.
    MuxRw,
    /// Ours, multiplexed transport: read only.
    MuxRo,
    /// Ours, multiplexed transport, read only, `touch_after(60 s)`: the idle timeout moves
    /// at most once a minute per session, so a read is a lone HGETALL.
    MuxRoTouch,
    /// Ours, file store (a temporary directory): read + write.
    FileRw,
    /// Ours, cookie store (no server state): read + write.
    CookieRw,
    /// actix-session, page views: one request in ten reads and writes the session, nine
    /// are assets that carry the cookie and do not use the session.
    ActixPage,
    /// Ours, multiplexed transport, the same page views: the assets never load the session.
    MuxPage,
    /// `mux-rw` with every value sealed at rest and the session bound to the User-Agent and
    /// the client address: what the hardening costs.
    MuxRwHardened,
    /// `pool-rw` on a Redis Cluster of three masters (`builder_cluster`).
    ClusterPoolRw,
    /// `mux-rw` on the cluster.
    ClusterMuxRw,
    /// `mux-ro` on the cluster.
    ClusterMuxRo,
    /// `pool-rw` with the local cache (`touch_after(60 s)`, which it needs).
    PoolRwCache,
    /// `pool-ro` with the local cache: a read is served from memory.
    PoolRoCache,
    /// `mux-rw` with the local cache.
    MuxRwCache,
    /// `mux-ro` with the local cache.
    MuxRoCache,
}

impl Variant {
    /// Every variant, in the order they run within a round and appear in the report.
    pub const ALL: [Variant; 23] = [
        Variant::Plain,
        Variant::ActixRw,
        Variant::ActixRoTtl,
        Variant::ActixRo,
        Variant::PoolRw,
        Variant::PoolRo,
        Variant::PoolNew,
        Variant::MemoryRw,
        Variant::MuxRw,
        Variant::MuxRo,
        Variant::MuxRoTouch,
        Variant::FileRw,
        Variant::CookieRw,
        Variant::ActixPage,
        Variant::MuxPage,
        Variant::MuxRwHardened,
        Variant::ClusterPoolRw,
        Variant::ClusterMuxRw,
        Variant::ClusterMuxRo,
        Variant::PoolRwCache,
        Variant::PoolRoCache,
        Variant::MuxRwCache,
        Variant::MuxRoCache,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::ActixRw => "actix-session-rw",
            Variant::ActixRoTtl => "actix-session-ro-ttl",
            Variant::ActixRo => "actix-session-ro",
            Variant::PoolRw => "pool-rw",
            Variant::PoolRo => "pool-ro",
            Variant::PoolNew => "pool-new",
            Variant::MemoryRw => "memory-rw",
            Variant::MuxRw => "mux-rw",
            Variant::MuxRo => "mux-ro",
            Variant::MuxRoTouch => "mux-ro-touch",
            Variant::FileRw => "file-rw",
            Variant::CookieRw => "cookie-rw",
            Variant::ActixPage => "actix-session-page",
            Variant::MuxPage => "mux-page",
            Variant::MuxRwHardened => "mux-rw-hardened",
            Variant::ClusterPoolRw => "cluster-pool-rw",
            Variant::ClusterMuxRw => "cluster-mux-rw",
            Variant::ClusterMuxRo => "cluster-mux-ro",
            Variant::PoolRwCache => "pool-rw-cache",
            Variant::PoolRoCache => "pool-ro-cache",
            Variant::MuxRwCache => "mux-rw-cache",
            Variant::MuxRoCache => "mux-ro-cache",
        }
    }

    pub fn parse(name: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == name)
    }

    /// Whether the load generator sends a pre-created session's cookie.
    pub fn sends_cookie(self) -> bool {
        !matches!(self, Variant::Plain | Variant::PoolNew)
    }

    pub fn read_only(self) -> bool {
        matches!(
            self,
            Variant::ActixRoTtl
                | Variant::ActixRo
                | Variant::PoolRo
                | Variant::MuxRo
                | Variant::MuxRoTouch
                | Variant::ClusterMuxRo
                | Variant::PoolRoCache
                | Variant::MuxRoCache
        )
    }

    /// On the bench's Redis Cluster rather than its single Redis.
    pub fn on_cluster(self) -> bool {
        matches!(
            self,
            Variant::ClusterPoolRw | Variant::ClusterMuxRw | Variant::ClusterMuxRo
        )
    }

    /// Page views: one request in ten uses the session, nine are assets.
    pub fn page_view(self) -> bool {
        matches!(self, Variant::ActixPage | Variant::MuxPage)
    }

    /// Ours and talking to Redis: the variants the command-count targets apply to.
    pub fn ours_on_redis(self) -> bool {
        matches!(
            self,
            Variant::PoolRw
                | Variant::PoolRo
                | Variant::PoolNew
                | Variant::MuxRw
                | Variant::MuxRo
                | Variant::MuxRoTouch
                | Variant::MuxPage
                | Variant::MuxRwHardened
                | Variant::ClusterPoolRw
                | Variant::ClusterMuxRw
                | Variant::ClusterMuxRo
                | Variant::PoolRwCache
                | Variant::PoolRoCache
                | Variant::MuxRwCache
                | Variant::MuxRoCache
        )
    }
}

async fn plain() -> &'static str {
    "0"
}

async fn ours_rw(session: Session) -> Result<String> {
    let n: u64 = session.get("n")?.unwrap_or(0);
    session.insert("n", n + 1)?;
    Ok(n.to_string())
}

async fn ours_ro(session: Session) -> Result<String> {
    let n: u64 = session.get("n")?.unwrap_or(0);
    Ok(n.to_string())
}

async fn ours_init(session: Session) -> Result<String> {
    session.insert("n", INITIAL)?;
    Ok(INITIAL.to_string())
}

async fn actix_rw(session: ActixSession) -> Result<String> {
    let n: u64 = session.get("n")?.unwrap_or(0);
    session.insert("n", n + 1)?;
    Ok(n.to_string())
}

async fn actix_ro(session: ActixSession) -> Result<String> {
    let n: u64 = session.get("n")?.unwrap_or(0);
    Ok(n.to_string())
}

async fn actix_init(session: ActixSession) -> Result<String> {
    session.insert("n", INITIAL)?;
    Ok(INITIAL.to_string())
}

/// Binds an `HttpServer` with `$workers` workers to a free loopback port, tells the parent
/// where (`listening <addr>` on stdout), and serves until killed.
macro_rules! run {
    ($workers:expr, $app:expr) => {{
        let server = HttpServer::new($app)
            .workers($workers)
            .bind(("127.0.0.1", 0))?;
        for addr in server.addrs() {
            println!("listening {addr}");
        }
        io::stdout().flush()?;
        server.run().await
    }};
}

/// Serves `variant` until the process is killed.
pub fn serve(variant: Variant, redis_url: String, workers: usize) -> io::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        match variant {
            Variant::Plain => run!(workers, || App::new().route("/", web::get().to(plain))),
            Variant::ActixRw | Variant::ActixRoTtl | Variant::ActixRo | Variant::ActixPage => {
                // Built once, before `HttpServer::new`, as actix-session's docs do: its
                // ConnectionManager then runs on this (main) thread, not on the worker's.
                let store = RedisSessionStore::new(redis_url.clone())
                    .await
                    .map_err(io::Error::other)?;
                let key = CookieKey::generate();
                run!(workers, move || {
                    let middleware = SessionMiddleware::builder(store.clone(), key.clone());
                    let middleware = if variant == Variant::ActixRoTtl {
                        middleware.session_lifecycle(
                            PersistentSession::default()
                                .session_ttl_extension_policy(TtlExtensionPolicy::OnEveryRequest),
                        )
                    } else {
                        middleware
                    };
                    let handler = if matches!(variant, Variant::ActixRw | Variant::ActixPage) {
                        web::get().to(actix_rw)
                    } else {
                        web::get().to(actix_ro)
                    };
                    App::new()
                        .wrap(middleware.build())
                        .route("/", handler)
                        .route("/asset", web::get().to(plain))
                        .route("/init", web::get().to(actix_init))
                })
            }
            Variant::PoolRw
            | Variant::PoolRo
            | Variant::PoolNew
            | Variant::MemoryRw
            | Variant::MuxRw
            | Variant::MuxRo
            | Variant::MuxRoTouch
            | Variant::FileRw
            | Variant::CookieRw
            | Variant::MuxPage
            | Variant::MuxRwHardened
            | Variant::ClusterPoolRw
            | Variant::ClusterMuxRw
            | Variant::ClusterMuxRo
            | Variant::PoolRwCache
            | Variant::PoolRoCache
            | Variant::MuxRwCache
            | Variant::MuxRoCache => {
                // Lives as long as the server: the file store's directory.
                let dir = tempfile::tempdir()?;
                let sessions = match variant {
                    Variant::PoolRw | Variant::PoolRo | Variant::PoolNew => {
                        RedisSession::new(&redis_url, Key::generate()).map_err(io::Error::other)?
                    }
                    Variant::MemoryRw => RedisSession::memory(Key::generate()),
                    Variant::FileRw => RedisSession::builder_with(
                        FileStore::new(dir.path()).map_err(io::Error::other)?,
                        Key::generate(),
                    )
                    .build()
                    .map_err(io::Error::other)?,
                    Variant::CookieRw => {
                        RedisSession::builder_with(CookieStore::new(), Key::generate())
                            .build()
                            .map_err(io::Error::other)?
                    }
                    Variant::MuxRoTouch => RedisSession::builder(&redis_url, Key::generate())
                        .transport(Transport::Multiplexed)
                        .touch_after(Duration::from_secs(60))
                        .build()
                        .map_err(io::Error::other)?,
                    Variant::PoolRwCache
                    | Variant::PoolRoCache
                    | Variant::MuxRwCache
                    | Variant::MuxRoCache => {
                        let transport = match variant {
                            Variant::PoolRwCache | Variant::PoolRoCache => Transport::Pool,
                            _ => Transport::Multiplexed,
                        };
                        RedisSession::builder(&redis_url, Key::generate())
                            .transport(transport)
                            .touch_after(Duration::from_secs(60))
                            .local_cache(LocalCache::new())
                            .build()
                            .map_err(io::Error::other)?
                    }
                    Variant::MuxRwHardened => RedisSession::builder(&redis_url, Key::generate())
                        .transport(Transport::Multiplexed)
                        .encrypt_at_rest(true)
                        .bind_to_user_agent(true)
                        .bind_to_ip(ClientIp::peer())
                        .build()
                        .map_err(io::Error::other)?,
                    // The cluster's node URLs, comma-separated.
                    Variant::ClusterPoolRw | Variant::ClusterMuxRw | Variant::ClusterMuxRo => {
                        let transport = if variant == Variant::ClusterPoolRw {
                            Transport::Pool
                        } else {
                            Transport::Multiplexed
                        };
                        RedisSession::builder_cluster(redis_url.split(','), Key::generate())
                            .transport(transport)
                            .build()
                            .map_err(io::Error::other)?
                    }
                    _ => RedisSession::builder(&redis_url, Key::generate())
                        .transport(Transport::Multiplexed)
                        .build()
                        .map_err(io::Error::other)?,
                };
                run!(workers, move || {
                    let handler = if variant.read_only() {
                        web::get().to(ours_ro)
                    } else {
                        web::get().to(ours_rw)
                    };
                    App::new()
                        .wrap(sessions.clone())
                        .route("/", handler)
                        .route("/asset", web::get().to(plain))
                        .route("/init", web::get().to(ours_init))
                })
            }
        }
    })
}
