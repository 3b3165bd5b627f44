//! The Redis store over an r2d2 pool of synchronous connections.
//!
//! Redis calls run inside `actix_web::web::block`, so no async worker thread ever waits on
//! Redis, and they are batched: a request queues its pipeline and awaits the reply; a
//! blocking thread (a "runner"; as many at once as the pool has connections, at most
//! [`MAX_SHARED_RUNNERS`] on an application's pool; started by the request that found too few
//! running) takes every queued pipeline, sends them in one write on one pooled connection,
//! reads the replies and hands each request its own. Under load one hop to a blocking thread
//! and one round trip serve many requests, and Redis reads many requests' commands at once; a
//! lone request costs one hop and one round trip.
//!
//! The pool does not PING connections on checkout (that costs two extra round trips per
//! request); a connection that failed is marked broken and replaced. A connection that
//! turns out to be dropped (Redis restarted, or a proxy closed it) also retires every idle
//! connection opened before it, unused: they are most likely dead the same way, and each
//! would otherwise fail one more batch. Retrying the failed operations is the resilience
//! layer's job ([`super::resilience`]), the same for every transport.

use std::{
    mem,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    time::Duration,
};

use actix_web::web;
use redis::{Connection, ConnectionLike, ErrorKind, Pipeline, RedisError, RedisResult, Value};
use tokio::sync::oneshot;

use super::{
    batch::{Batch, Replies, Sender},
    commands::{Commands, RedisOptions},
    RedisTls,
};
use crate::{
    error::{ConfigError, StoreError, StoreErrorKind},
    telemetry,
};

/// Runners at once on an application's pool, which its other work needs too. Two (one batch
/// in flight while the next fills) is also our own pool's default size.
const MAX_SHARED_RUNNERS: usize = 2;

/// The Redis-backed store (pool transport).
#[derive(Clone)]
pub(crate) struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    commands: Commands,
    queue: Mutex<Queue>,
    /// Runners at once, each on its own connection: never more than the pool has, so a
    /// runner never waits for a connection that another runner holds.
    max_runners: usize,
}

/// The requests waiting for a runner, and how many runners there are.
#[derive(Default)]
struct Queue {
    batch: Batch,
    /// Answered and emptied batches, memory included, for the next ones.
    spares: Vec<Batch>,
    runners: usize,
}

enum Pool {
    /// Our own pool: connect timeout, command timeouts and broken-connection tracking.
    Own {
        pool: r2d2::Pool<Manager>,
        /// The manager's [`Manager::generation`].
        generation: Arc<AtomicU64>,
    },
    /// The application's pool, shared with its other Redis work.
    Shared {
        pool: r2d2::Pool<redis::Client>,
        command_timeout: Duration,
    },
}

/// A pooled connection that remembers whether it failed, and when it was opened.
pub(crate) struct TrackedConnection {
    conn: Connection,
    broken: bool,
    /// [`Manager::generation`] when it was opened.
    generation: u64,
}

struct Manager {
    target: Target,
    connect_timeout: Duration,
    command_timeout: Duration,
    /// Moved on when a connection turns out to be dropped: connections of an older
    /// generation are not used again.
    generation: Arc<AtomicU64>,
}

impl r2d2::ManageConnection for Manager {
    type Connection = TrackedConnection;
    type Error = redis::RedisError;

    fn connect(&self) -> RedisResult<TrackedConnection> {
        let conn = match &self.target {
            Target::Client(client) => client.get_connection_with_timeout(self.connect_timeout)?,
            // The sentinels are asked for the master on every connect: after a failover
            // (a connection found dropped, or a READONLY reply, retires the old ones) the
            // next connection goes to the new master.
            #[cfg(feature = "sentinel")]
            Target::Sentinel(sentinel) => sentinel
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_client()?
                .get_connection_with_timeout(self.connect_timeout)?,
        };
        conn.set_read_timeout(Some(self.command_timeout))?;
        conn.set_write_timeout(Some(self.command_timeout))?;
        Ok(TrackedConnection {
            conn,
            broken: false,
            generation: self.generation.load(Ordering::Acquire),
        })
    }

    /// Only called if checkout tests are turned on, which this store never does.
    fn is_valid(&self, conn: &mut TrackedConnection) -> RedisResult<()> {
        redis::cmd("PING").query(&mut conn.conn)
    }

    fn has_broken(&self, conn: &mut TrackedConnection) -> bool {
        conn.broken
            || !conn.conn.is_open()
            || conn.generation < self.generation.load(Ordering::Acquire)
    }
}

/// [`sentinel_client`], or why the configuration cannot have one.
#[cfg(feature = "sentinel")]
pub(crate) fn checked_sentinel_client(
    sentinels: &[String],
    master: &str,
    options: &RedisOptions,
) -> Result<redis::sentinel::SentinelClient, ConfigError> {
    if options.tls.is_some() {
        return Err(ConfigError::InvalidOption {
            option: "redis_tls",
            reason: "not available with Sentinel yet",
        });
    }
    sentinel_client(sentinels, master, options).map_err(ConfigError::InvalidUrl)
}

/// A client of the sentinels at `sentinels` for the master they call `master`, reaching it
/// (and its replicas) with `options`' node credentials.
#[cfg(feature = "sentinel")]
pub(crate) fn sentinel_client(
    sentinels: &[String],
    master: &str,
    options: &RedisOptions,
) -> RedisResult<redis::sentinel::SentinelClient> {
    let node = options.node_auth.as_ref().map(|auth| {
        let mut info = redis::RedisConnectionInfo::default().set_password(auth.password.as_str());
        if let Some(username) = &auth.username {
            info = info.set_username(username);
        }
        redis::sentinel::SentinelNodeConnectionInfo::default().set_redis_connection_info(info)
    });
    // An owned name: without `tls`, redis-rs takes a `String`.
    let service = master.to_owned();
    redis::sentinel::SentinelClient::build(
        sentinels.to_vec(),
        service,
        node,
        redis::sentinel::SentinelServerType::Master,
    )
}

/// Where our own pool's connections go.
enum Target {
    Client(redis::Client),
    /// The master that Redis Sentinel names, asked for on every connect.
    #[cfg(feature = "sentinel")]
    Sentinel(Mutex<redis::sentinel::SentinelClient>),
}

/// A client for `url`, refusing TLS URLs when TLS support is not compiled in.
pub(crate) fn client(url: &str, tls: Option<&RedisTls>) -> Result<redis::Client, ConfigError> {
    let is_tls = url.starts_with("rediss:") || url.starts_with("valkeys:");
    if !cfg!(feature = "tls") && (is_tls || tls.is_some()) {
        return Err(ConfigError::TlsNotEnabled);
    }
    let info =
        redis::IntoConnectionInfo::into_connection_info(url).map_err(ConfigError::InvalidUrl)?;
    let Some(tls) = tls else {
        return redis::Client::open(info).map_err(ConfigError::InvalidUrl);
    };
    if !is_tls {
        return Err(ConfigError::InvalidOption {
            option: "redis_tls",
            reason: "certificates need a rediss:// URL",
        });
    }
    if !tls.is_pem() {
        return Err(ConfigError::InvalidOption {
            option: "redis_tls",
            reason: "the certificates or the key are not valid PEM",
        });
    }
    #[cfg(feature = "tls")]
    {
        redis::Client::build_with_tls(info, tls.certificates()).map_err(|_| {
            ConfigError::InvalidOption {
                option: "redis_tls",
                reason: "the certificates or the key are not valid PEM",
            }
        })
    }
    #[cfg(not(feature = "tls"))]
    {
        let _ = (info, tls);
        Err(ConfigError::TlsNotEnabled)
    }
}

impl RedisStore {
    pub(crate) fn open(url: &str, options: &RedisOptions) -> Result<RedisStore, ConfigError> {
        let client = client(url, options.tls.as_ref())?;
        Ok(RedisStore::for_client(client, options))
    }

    /// A store with a pool of its own on the server `client` names (a cluster's node).
    pub(crate) fn for_client(client: redis::Client, options: &RedisOptions) -> RedisStore {
        RedisStore::own(Target::Client(client), options)
    }

    /// A store on the master that the sentinels at `sentinels` monitor as `master`.
    #[cfg(feature = "sentinel")]
    pub(crate) fn open_sentinel(
        sentinels: &[String],
        master: &str,
        options: &RedisOptions,
    ) -> Result<RedisStore, ConfigError> {
        let sentinel = checked_sentinel_client(sentinels, master, options)?;
        Ok(RedisStore::own(
            Target::Sentinel(Mutex::new(sentinel)),
            options,
        ))
    }

    fn own(target: Target, options: &RedisOptions) -> RedisStore {
        let manager = Manager {
            target,
            connect_timeout: options.connect_timeout,
            command_timeout: options.command_timeout,
            generation: Arc::new(AtomicU64::new(0)),
        };
        let generation = Arc::clone(&manager.generation);
        let pool = r2d2::Pool::builder()
            .max_size(options.capacity)
            .min_idle(Some(0))
            .connection_timeout(options.checkout_timeout)
            .test_on_check_out(false)
            .build_unchecked(manager);
        RedisStore::with_pool(Pool::Own { pool, generation }, options)
    }

    pub(crate) fn shared(pool: r2d2::Pool<redis::Client>, options: &RedisOptions) -> RedisStore {
        RedisStore::with_pool(
            Pool::Shared {
                pool,
                command_timeout: options.command_timeout,
            },
            options,
        )
    }

    fn with_pool(pool: Pool, options: &RedisOptions) -> RedisStore {
        let size = match &pool {
            Pool::Own { pool, .. } => pool.max_size(),
            Pool::Shared { pool, .. } => pool.max_size().min(MAX_SHARED_RUNNERS as u32),
        };
        RedisStore {
            inner: Arc::new(Inner {
                pool,
                commands: Commands::new(options),
                queue: Mutex::default(),
                max_runners: usize::try_from(size).unwrap_or(usize::MAX).max(1),
            }),
        }
    }
}

impl Sender for RedisStore {
    fn commands(&self) -> &Commands {
        &self.inner.commands
    }

    /// Starts a runner if too few run.
    fn enqueue(
        &self,
        _key: &str,
        build: impl Fn(&mut Pipeline),
    ) -> Result<oneshot::Receiver<Replies>, StoreError> {
        let (replied, start) = {
            let mut queue = self.inner.queue();
            let replied = queue.batch.push(build);
            let start = queue.runners < self.inner.max_runners;
            queue.runners += usize::from(start);
            (replied, start)
        };
        if start {
            let runner = Runner {
                inner: Arc::clone(&self.inner),
                finished: false,
            };
            // The blocking task starts now; nobody needs to await its end.
            drop(web::block(move || runner.run()));
        }
        Ok(replied)
    }
}

/// A blocking thread's turn at sending batches; ends when the queue is empty.
struct Runner {
    inner: Arc<Inner>,
    finished: bool,
}

impl Runner {
    fn run(mut self) {
        loop {
            let batch = {
                let mut queue = self.inner.queue();
                if queue.batch.is_empty() {
                    // Checked and counted under one lock: a request that queues after this
                    // sees one runner fewer and starts its own.
                    queue.runners -= 1;
                    self.finished = true;
                    return;
                }
                let spare = queue.spares.pop().unwrap_or_default();
                mem::replace(&mut queue.batch, spare)
            };
            let batch = self.inner.send(batch);
            self.inner.queue().spares.push(batch);
        }
    }
}

impl Drop for Runner {
    /// A runner that never ran (the blocking pool was shutting down) or panicked: give its
    /// place back, and if no runner is left, fail the queued requests rather than strand them.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let orphans = {
            let mut queue = self.inner.queue();
            queue.runners -= 1;
            if queue.runners == 0 {
                mem::take(&mut queue.batch)
            } else {
                Batch::default()
            }
        };
        drop(orphans);
    }
}

impl Inner {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // Consistent across a panic: a request whose commands were half built when it
        // panicked tears its batch, which then fails as a whole (see `Batch::push`).
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `batch` in one write on one connection and hands out the replies; returns the
    /// emptied batch.
    fn send(&self, mut batch: Batch) -> Batch {
        telemetry::batch(batch.len());
        let packed = batch.pipe().get_packed_pipeline();
        let replies = self.exchange(&packed, batch.pipe().len());
        for retry in batch.answer(replies) {
            // The scripts first, then the request's commands, in one write.
            let mut pipe = redis::pipe();
            self.commands.load_scripts(&mut pipe);
            let skip = pipe.len();
            for cmd in retry.pipe.cmd_iter() {
                pipe.add_command(cmd.clone());
            }
            let replies = self
                .exchange(&pipe.get_packed_pipeline(), pipe.len())
                .map(|mut replies| replies.split_off(skip.min(replies.len())));
            retry.answer(replies);
        }
        batch
    }

    /// Writes `packed` (`count` commands) on a pooled connection and reads the replies.
    ///
    /// A connection whose exchange failed half-way never goes back to anyone as it is: late
    /// replies left on it would answer the next user's commands (another request's session,
    /// or the application's own `GET`). Ours are replaced; the application's are drained on
    /// a thread of their own first ([`drain`]).
    fn exchange(&self, packed: &[u8], count: usize) -> Result<Vec<Value>, StoreError> {
        let result = match &self.pool {
            Pool::Own { pool, generation } => {
                let mut pooled = checkout(pool, generation)?;
                let result = exchange(&mut pooled.conn, packed, count);
                if result.as_deref().is_ok_and(demoted) {
                    // The server is a replica now (a failover: Sentinel, or a cluster's):
                    // this connection and its idle siblings go, and the next ones are opened
                    // where the master is now. The READONLY replies are retried.
                    pooled.broken = true;
                    let _ = generation.compare_exchange(
                        pooled.generation,
                        pooled.generation + 1,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                }
                if let Err(failed) = &result {
                    pooled.broken = true;
                    if failed.left == Left::Dead {
                        // Its idle siblings from before are most likely dead too.
                        let _ = generation.compare_exchange(
                            pooled.generation,
                            pooled.generation + 1,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        );
                    }
                }
                result.map_err(|failed| failed.error)
            }
            Pool::Shared {
                pool,
                command_timeout,
            } => {
                let mut conn = pool
                    .get()
                    .map_err(|e| StoreError::new(StoreErrorKind::Unavailable, e))?;
                conn.set_read_timeout(Some(*command_timeout))
                    .map_err(StoreError::redis)?;
                conn.set_write_timeout(Some(*command_timeout))
                    .map_err(StoreError::redis)?;
                let result = exchange(&mut conn, packed, count);
                // The application's own commands on this connection (say a BLPOP) must
                // not inherit our timeout: back to redis-rs's default, none.
                let _ = conn.set_read_timeout(None);
                let _ = conn.set_write_timeout(None);
                result.map_err(|failed| {
                    if conn.is_open() {
                        // Not closed, so r2d2 would hand it out again as it is.
                        quarantine(conn, failed.left);
                    }
                    failed.error
                })
            }
        };
        result.map_err(StoreError::redis)
    }
}

/// A connection of our own pool that is not known to be dead: one of an older generation
/// than the last dropped connection is closed unused, and the next taken.
fn checkout(
    pool: &r2d2::Pool<Manager>,
    generation: &AtomicU64,
) -> Result<r2d2::PooledConnection<Manager>, StoreError> {
    // Each pass retires one idle connection of an older generation: after at most as many
    // passes as the pool holds connections, one is new (or r2d2 opens one).
    for _ in 0..pool.max_size() {
        let mut pooled = pool
            .get()
            .map_err(|e| StoreError::new(StoreErrorKind::Unavailable, e))?;
        if pooled.generation >= generation.load(Ordering::Acquire) {
            return Ok(pooled);
        }
        // Replaced by r2d2 when it goes back.
        pooled.broken = true;
    }
    // Every connection we saw was old: one more, used as it is.
    pool.get()
        .map_err(|e| StoreError::new(StoreErrorKind::Unavailable, e))
}

/// Whether a reply says the server is no longer the master (`READONLY`).
pub(crate) fn demoted(replies: &[Value]) -> bool {
    replies
        .iter()
        .any(|reply| matches!(reply, Value::ServerError(e) if e.code() == "READONLY"))
}

/// What a failed exchange left on its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Left {
    /// The commands went out whole; some replies were not read (a read timed out). redis-rs
    /// skips the reply of the read that timed out, but only that one.
    LateReplies,
    /// The socket failed (reset, broken pipe, closed): nothing will ever be read from it, so
    /// it cannot hand anyone a foreign reply; the next user gets an error and r2d2 replaces
    /// it, as with any connection that died idle in the pool.
    Dead,
    /// A write timed out part-way (the stream may end in half a command) or a reply could
    /// not be parsed: nothing sent or read on it can be trusted again.
    Unknown,
}

/// Why an exchange failed, and the state of its connection.
struct Failed {
    error: RedisError,
    left: Left,
}

/// Writes a batch and reads its `count` replies. The first failure ends the exchange: a read
/// that timed out leaves the rest unread (the caller must not hand the connection out as it
/// is), so a stalled Redis costs a batch one `command_timeout`, not one per reply as
/// redis-rs's `req_packed_commands` would.
fn exchange(conn: &mut Connection, packed: &[u8], count: usize) -> Result<Vec<Value>, Failed> {
    conn.send_packed_command(packed).map_err(|error| {
        let left = if error.is_timeout() || !error.is_io_error() {
            Left::Unknown
        } else {
            Left::Dead
        };
        Failed { error, left }
    })?;
    let mut replies = Vec::with_capacity(count);
    while replies.len() < count {
        match conn.recv_response() {
            // RESP3 push messages are not replies.
            Ok(Value::Push { .. }) => {}
            Ok(reply) => replies.push(reply),
            Err(error) => {
                let left = if error.is_timeout() {
                    Left::LateReplies
                } else if error.is_io_error() {
                    Left::Dead
                } else {
                    Left::Unknown
                };
                return Err(Failed { error, left });
            }
        }
    }
    Ok(replies)
}

/// Takes a connection of the application's pool out of circulation until it is known to be
/// clean again.
///
/// With late replies on it, a thread of its own sends `ECHO <token>` and reads everything up
/// to the token's echo, then hands the connection back to the pool: nothing is left unread.
/// It waits for Redis as long as that takes (Redis is stalled or paused, and the connection
/// is of no use to anyone until it answers); if the socket fails instead, it goes back dead,
/// and r2d2 replaces it on its next use. A connection whose stream cannot be trusted at all
/// (a write that timed out half-way, say a large batch to a Redis that stopped reading) is
/// never returned: it is leaked, and the application's pool has one connection fewer until
/// it restarts, which the error log says with a count.
fn quarantine(conn: r2d2::PooledConnection<redis::Client>, left: Left) {
    let mut conn = Quarantined(Some(conn));
    match left {
        Left::Dead => conn.release(),
        Left::Unknown => drop(conn),
        Left::LateReplies => {
            let drainer = std::thread::Builder::new()
                .name("session-redis-drain".into())
                .spawn(move || match conn.0.as_deref_mut().map(drain) {
                    // Clean, or dead: either way it cannot answer anyone with a foreign reply.
                    Some(Ok(())) => conn.release(),
                    Some(Err(e)) if e.is_io_error() => conn.release(),
                    _ => drop(conn),
                });
            if let Err(e) = drainer {
                // The connection went down with the closure, and was leaked (not returned).
                tracing::error!(error = %e, "could not start a thread to drain a Redis connection");
            }
        }
    }
}

/// A connection of the application's pool that must not go back unless released: dropped
/// otherwise (a drain that failed, a thread that could not start or panicked), it is leaked.
struct Quarantined(Option<r2d2::PooledConnection<redis::Client>>);

impl Quarantined {
    /// Hands the connection back to the pool.
    fn release(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Quarantined {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            static RETIRED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let retired = RETIRED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            tracing::error!(
                retired,
                "a connection of the application's Redis pool was left in an unknown state by \
                 a failed session batch; it is taken out of the pool for good (retired: how \
                 many so far)"
            );
            mem::forget(conn);
        }
    }
}

/// Reads a connection up to the echo of a fresh token: afterwards nothing is left unread.
fn drain(conn: &mut Connection) -> RedisResult<()> {
    let mut token = [0u8; 16];
    getrandom::fill(&mut token).map_err(|e| {
        RedisError::from((
            ErrorKind::Client,
            "no randomness for a token",
            e.to_string(),
        ))
    })?;
    let token = format!("{:032x}", u128::from_be_bytes(token)).into_bytes();
    conn.set_read_timeout(None)?;
    conn.send_packed_command(&redis::cmd("ECHO").arg(&token).get_packed_command())?;
    loop {
        if let Value::BulkString(echo) = conn.recv_response()? {
            if echo == token {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_readonly_reply_marks_a_demoted_master() {
        let readonly =
            redis::parse_redis_value(b"-READONLY You can't write against a read only replica.\r\n")
                .unwrap();
        let other = redis::parse_redis_value(b"-WRONGTYPE Operation against a key\r\n").unwrap();
        assert!(demoted(&[Value::Int(1), readonly]));
        assert!(!demoted(&[Value::Int(1), other, Value::Nil]));
        assert!(!demoted(&[]));
    }
}
