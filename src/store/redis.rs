//! The Redis store over an r2d2 pool of synchronous connections.
//!
//! Every operation is one round trip (one pipeline, or one script call) run inside
//! `actix_web::web::block`, so no async worker thread ever waits on Redis. The pool does not
//! PING connections on checkout (that costs two extra round trips per request); a connection
//! that failed is marked broken and replaced, and an operation that met a dropped connection
//! is retried on a fresh one a bounded number of times.

use std::{sync::Arc, time::Duration};

use actix_web::web;
use redis::{Connection, ConnectionLike, ErrorKind, Pipeline, RedisResult, ServerErrorKind, Value};

use super::{Fields, Write};
use crate::error::{ConfigError, StoreError};

/// Attempts per operation when a pooled connection turns out to be dead (e.g. after a Redis
/// restart every idle connection is).
const MAX_ATTEMPTS: usize = 3;

/// Creates the record only if the key is free (`0` when taken, `1` when created).
/// KEYS[1]: session key; ARGV[1]: TTL in ms; ARGV[2..]: field, value pairs.
/// HSET is called in chunks so that huge sessions stay below Lua's unpack limit.
const CREATE_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 2, #ARGV, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
";

/// Removes fields, then deletes the record if no data field (one not starting with `m:`)
/// is left, which a concurrent request may have added; `1` when deleted (or already gone).
/// KEYS[1]: session key; ARGV[1]: TTL in ms; ARGV[2..]: fields to remove.
const EMPTY_SCRIPT: &str = r"
for i = 2, #ARGV, 1000 do
  redis.call('HDEL', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(name, 1, 2) ~= 'm:' then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
    return 0
  end
end
redis.call('DEL', KEYS[1])
return 1
";

/// Connection settings of the store's own pool.
#[derive(Clone, Debug)]
pub(crate) struct RedisOptions {
    pub(crate) capacity: u32,
    pub(crate) checkout_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            capacity: 20,
            checkout_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
        }
    }
}

/// The Redis-backed store (pool transport).
#[derive(Clone)]
pub(crate) struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    create: redis::Script,
    empty: redis::Script,
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

impl RedisStore {
    pub(crate) fn open(url: &str, options: &RedisOptions) -> Result<RedisStore, ConfigError> {
        if !cfg!(feature = "tls") && (url.starts_with("rediss:") || url.starts_with("valkeys:")) {
            return Err(ConfigError::TlsNotEnabled);
        }
        let client = redis::Client::open(url).map_err(ConfigError::InvalidUrl)?;
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
                create: redis::Script::new(CREATE_SCRIPT),
                empty: redis::Script::new(EMPTY_SCRIPT),
            }),
        }
    }

    pub(crate) async fn load(
        &self,
        key: String,
        ttl: Duration,
    ) -> Result<Option<Fields>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(&key);
        pipe.cmd("PEXPIRE").arg(&key).arg(millis(ttl)).ignore();
        let loaded = self.run(move |inner, conn| {
            match inner.query::<(Value,)>(conn, &pipe) {
                Ok((record,)) => {
                    let fields = to_fields(record);
                    Ok((!fields.is_empty()).then_some(fields))
                }
                // Something that is not a hash sits under the key: not a session, but no
                // reason to fail the request either. The caller discards (deletes) a record
                // without a creation marker, as this empty one is.
                Err(e) if has_server_code(&e, "WRONGTYPE") => Ok(Some(Fields::new())),
                Err(e) => Err(e),
            }
        });
        loaded.await
    }

    pub(crate) async fn write(&self, write: &Write) -> Result<bool, StoreError> {
        let (pipe, scripted) = self.inner.pipeline(write);
        self.run(move |inner, conn| {
            if scripted {
                // The script's answer comes first; the other commands' replies are ignored.
                inner.query::<(bool,)>(conn, &pipe).map(|(answer,)| answer)
            } else {
                inner.query::<()>(conn, &pipe).map(|()| true)
            }
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
    /// The pipeline for `write`, and whether it starts with a script whose answer counts.
    fn pipeline(&self, write: &Write) -> (Pipeline, bool) {
        let mut pipe = redis::pipe();
        match write {
            Write::Update { key, set, del, ttl } => {
                if !set.is_empty() {
                    pipe.cmd("HSET").arg(key).arg(set).ignore();
                }
                if !del.is_empty() {
                    pipe.cmd("HDEL").arg(key).arg(del).ignore();
                }
                pipe.cmd("PEXPIRE").arg(key).arg(millis(*ttl)).ignore();
                (pipe, false)
            }
            Write::Create {
                key,
                fields,
                ttl,
                retire,
            } => {
                let mut invocation = self.create.key(key);
                invocation.arg(millis(*ttl)).arg(fields);
                pipe.invoke_script(&invocation);
                if let Some(old) = retire {
                    pipe.cmd("DEL").arg(old).ignore();
                }
                (pipe, true)
            }
            Write::Empty { key, del, ttl } => {
                let mut invocation = self.empty.key(key);
                invocation.arg(millis(*ttl)).arg(del);
                pipe.invoke_script(&invocation);
                (pipe, true)
            }
            Write::Delete { key } => {
                pipe.cmd("DEL").arg(key).ignore();
                (pipe, false)
            }
        }
    }

    /// Runs a pipeline; if Redis lost our scripts (restart, SCRIPT FLUSH), loads them and
    /// runs the pipeline again. Every command in these pipelines is safe to repeat.
    fn query<T: redis::FromRedisValue>(
        &self,
        conn: &mut Connection,
        pipe: &Pipeline,
    ) -> RedisResult<T> {
        match pipe.query(conn) {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.create.load(conn)?;
                self.empty.load(conn)?;
                pipe.query(conn)
            }
            other => other,
        }
    }

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
                Err(e)
                    if attempt < MAX_ATTEMPTS
                        && e.is_connection_dropped()
                        && !e.is_connection_refusal() =>
                {
                    tracing::debug!(attempt, error = %e, "redis connection dropped; retrying");
                    attempt += 1;
                }
                other => return other.map_err(StoreError::Redis),
            }
        }
    }
}

/// Whether Redis answered `code` to the command, or to one of the pipeline's commands.
fn has_server_code(e: &redis::RedisError, code: &str) -> bool {
    e.code() == Some(code)
        || e.clone()
            .into_server_errors()
            .is_some_and(|errors| errors.iter().any(|(_, error)| error.code() == code))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The fields of an HGETALL reply (RESP2 flat array or RESP3 map). Field names that are not
/// UTF-8 cannot be ours and are skipped.
fn to_fields(value: Value) -> Fields {
    let pairs: Vec<(Value, Value)> = match value {
        Value::Map(pairs) => pairs,
        Value::Array(items) => {
            let mut items = items.into_iter();
            let mut pairs = Vec::with_capacity(items.len() / 2);
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        _ => Vec::new(),
    };
    pairs
        .into_iter()
        .filter_map(|pair| match pair {
            (Value::BulkString(name), Value::BulkString(value)) => {
                String::from_utf8(name).ok().map(|name| (name, value))
            }
            _ => None,
        })
        .collect()
}
