//! The Redis store over an r2d2 pool of synchronous connections.
//!
//! Every operation is one round trip (one pipeline, or one script call) run inside
//! `actix_web::web::block`, so no async worker thread ever waits on Redis. The pool does not
//! PING connections on checkout (that costs two extra round trips per request); a connection
//! that failed is marked broken and replaced, and an operation that met a dropped connection
//! is retried on a fresh one a bounded number of times.

use std::{sync::Arc, time::Duration};

use actix_web::web;
use redis::{Connection, ConnectionLike, RedisResult};

use super::{
    commands::{self, Commands, RedisOptions},
    Fields, Write,
};
use crate::error::{ConfigError, StoreError};

/// Attempts per operation when a pooled connection turns out to be dead (e.g. after a Redis
/// restart every idle connection is).
const MAX_ATTEMPTS: usize = 3;

/// The Redis-backed store (pool transport).
#[derive(Clone)]
pub(crate) struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    commands: Commands,
}

enum Pool {
    /// Our own pool: connect timeout, command timeouts and broken-connection tracking.
    Own(r2d2::Pool<Manager>),
    /// The application's pool, shared with its other Redis work.
    Shared {
        pool: r2d2::Pool<redis::Client>,
        command_timeout: Duration,
    },
}

/// A pooled connection that remembers whether it failed.
pub(crate) struct TrackedConnection {
    conn: Connection,
    broken: bool,
}

struct Manager {
    client: redis::Client,
    connect_timeout: Duration,
    command_timeout: Duration,
}

impl r2d2::ManageConnection for Manager {
    type Connection = TrackedConnection;
    type Error = redis::RedisError;

    fn connect(&self) -> RedisResult<TrackedConnection> {
        let conn = self
            .client
            .get_connection_with_timeout(self.connect_timeout)?;
        conn.set_read_timeout(Some(self.command_timeout))?;
        conn.set_write_timeout(Some(self.command_timeout))?;
        Ok(TrackedConnection {
            conn,
            broken: false,
        })
    }

    /// Only called if checkout tests are turned on, which this store never does.
    fn is_valid(&self, conn: &mut TrackedConnection) -> RedisResult<()> {
        redis::cmd("PING").query(&mut conn.conn)
    }

    fn has_broken(&self, conn: &mut TrackedConnection) -> bool {
        conn.broken || !conn.conn.is_open()
    }
}

/// A client for `url`, refusing TLS URLs when TLS support is not compiled in.
pub(crate) fn client(url: &str) -> Result<redis::Client, ConfigError> {
    if !cfg!(feature = "tls") && (url.starts_with("rediss:") || url.starts_with("valkeys:")) {
        return Err(ConfigError::TlsNotEnabled);
    }
    redis::Client::open(url).map_err(ConfigError::InvalidUrl)
}

impl RedisStore {
    pub(crate) fn open(url: &str, options: &RedisOptions) -> Result<RedisStore, ConfigError> {
        let client = client(url)?;
        let manager = Manager {
            client,
            connect_timeout: options.connect_timeout,
            command_timeout: options.command_timeout,
        };
        let pool = r2d2::Pool::builder()
            .max_size(options.capacity)
            .min_idle(Some(0))
            .connection_timeout(options.checkout_timeout)
            .test_on_check_out(false)
            .build_unchecked(manager);
        Ok(RedisStore::with_pool(Pool::Own(pool)))
    }

    pub(crate) fn shared(pool: r2d2::Pool<redis::Client>, options: &RedisOptions) -> RedisStore {
        RedisStore::with_pool(Pool::Shared {
            pool,
            command_timeout: options.command_timeout,
        })
    }

    fn with_pool(pool: Pool) -> RedisStore {
        RedisStore {
            inner: Arc::new(Inner {
                pool,
                commands: Commands::new(),
            }),
        }
    }

    pub(crate) async fn load(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<Fields>, StoreError> {
        let pipe = Commands::load(key, ttl);
        self.run(move |inner, conn| commands::loaded(inner.commands.query(conn, &pipe)))
            .await
    }

    pub(crate) async fn write(&self, write: &Write) -> Result<bool, StoreError> {
        let prepared = self.inner.commands.write(write);
        self.run(move |inner, conn| {
            let replies = inner.commands.query(conn, &prepared.pipe)?;
            prepared.answer(&replies)
        })
        .await
    }

    /// Runs `op` on a pooled connection inside `web::block`.
    async fn run<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Inner, &mut Connection) -> RedisResult<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        web::block(move || inner.with_connection(op))
            .await
            .map_err(|_| StoreError::Blocking)?
    }
}

impl Inner {
    fn with_connection<T>(
        &self,
        op: impl Fn(&Inner, &mut Connection) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        let mut attempt = 1;
        loop {
            let result = match &self.pool {
                Pool::Own(pool) => {
                    let mut pooled = pool.get().map_err(StoreError::Pool)?;
                    let result = op(self, &mut pooled.conn);
                    if let Err(e) = &result {
                        // After an I/O error the connection's state is unknown: replace it.
                        pooled.broken |= e.is_io_error();
                    }
                    result
                }
                Pool::Shared {
                    pool,
                    command_timeout,
                } => {
                    let mut conn = pool.get().map_err(StoreError::Pool)?;
                    conn.set_read_timeout(Some(*command_timeout))?;
                    conn.set_write_timeout(Some(*command_timeout))?;
                    let result = op(self, &mut conn);
                    // The application's own commands on this connection (say a BLPOP) must
                    // not inherit our timeout: back to redis-rs's default, none.
                    let _ = conn.set_read_timeout(None);
                    let _ = conn.set_write_timeout(None);
                    result
                }
            };
            match result {
                Err(e) if attempt < MAX_ATTEMPTS && commands::worth_retrying(&e) => {
                    tracing::debug!(attempt, error = %e, "redis connection dropped; retrying");
                    attempt += 1;
                }
                other => return other.map_err(StoreError::Redis),
            }
        }
    }
}
