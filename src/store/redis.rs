//! The Redis store over an r2d2 pool of synchronous connections.
//!
//! Redis calls run inside `actix_web::web::block`, so no async worker thread ever waits on
//! Redis, and they are batched: a request queues its pipeline and awaits the reply; a
//! blocking thread (at most [`MAX_RUNNERS`] at once, started by the request that found too
//! few running) takes every queued pipeline, sends them in one write on one pooled
//! connection, reads the replies and hands each request its own. Under load one hop to a
//! blocking thread and one round trip serve many requests, and Redis reads many requests'
//! commands at once; a lone request costs one hop and one round trip, as before.
//!
//! The pool does not PING connections on checkout (that costs two extra round trips per
//! request); a connection that failed is marked broken and replaced, and a batch that met a
//! dropped connection is retried on a fresh one a bounded number of times.

use std::{
    collections::VecDeque,
    mem,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use actix_web::web;
use redis::{Connection, ConnectionLike, Pipeline, RedisResult, Value};
use tokio::sync::oneshot;

use super::{
    commands::{self, Commands, RedisOptions},
    Fields, Write,
};
use crate::error::{ConfigError, StoreError};

/// Attempts per batch when a pooled connection turns out to be dead (e.g. after a Redis
/// restart every idle connection is).
const MAX_ATTEMPTS: usize = 3;

/// Blocking threads sending batches at the same time, each on its own connection. One batch
/// in flight while the next fills keeps Redis busy; more threads only add wake-ups.
const MAX_RUNNERS: usize = 2;

/// Most pipelines in one batch.
const MAX_BATCH: usize = 64;

/// The Redis-backed store (pool transport).
#[derive(Clone)]
pub(crate) struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    commands: Commands,
    queue: Mutex<Queue>,
    /// [`MAX_RUNNERS`], or fewer for a smaller pool: a runner never waits for a connection
    /// that another runner holds.
    max_runners: usize,
}

/// Pipelines waiting for a runner, and how many runners there are.
#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    runners: usize,
}

/// One request's pipeline and where its replies go (every reply, ignored ones included;
/// error replies of Redis turned into an error).
struct Job {
    pipe: Pipeline,
    reply: oneshot::Sender<Result<Vec<Value>, StoreError>>,
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
        let size = match &pool {
            Pool::Own(pool) => pool.max_size(),
            Pool::Shared { pool, .. } => pool.max_size(),
        };
        RedisStore {
            inner: Arc::new(Inner {
                pool,
                commands: Commands::new(),
                queue: Mutex::default(),
                max_runners: MAX_RUNNERS.min(usize::try_from(size).unwrap_or(1).max(1)),
            }),
        }
    }

    pub(crate) async fn load(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<Fields>, StoreError> {
        let replies = self.query(Commands::load(key, ttl)).await;
        commands::loaded(replies)
    }

    pub(crate) async fn write(&self, write: &Write) -> Result<bool, StoreError> {
        let prepared = self.inner.commands.write(write);
        let replies = self.query(prepared.pipe).await?;
        prepared.reply.answer(&replies).map_err(StoreError::Redis)
    }

    /// Queues `pipe` for the next batch, starts a runner if too few run, and awaits the
    /// replies.
    async fn query(&self, pipe: Pipeline) -> Result<Vec<Value>, StoreError> {
        let (reply, replied) = oneshot::channel();
        let start = {
            let mut queue = self.inner.queue();
            queue.jobs.push_back(Job { pipe, reply });
            let start = queue.runners < self.inner.max_runners;
            queue.runners += usize::from(start);
            start
        };
        if start {
            let runner = Runner {
                inner: Arc::clone(&self.inner),
                finished: false,
            };
            // The blocking task starts now; nobody needs to await its end.
            drop(web::block(move || runner.run()));
        }
        replied.await.map_err(|_| StoreError::Blocking)?
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
            let batch: Vec<Job> = {
                let mut queue = self.inner.queue();
                if queue.jobs.is_empty() {
                    // Checked and counted under one lock: a request that queues after this
                    // sees one runner fewer and starts its own.
                    queue.runners -= 1;
                    self.finished = true;
                    return;
                }
                let n = queue.jobs.len().min(MAX_BATCH);
                queue.jobs.drain(..n).collect()
            };
            self.inner.send(batch);
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
                mem::take(&mut queue.jobs)
            } else {
                VecDeque::new()
            }
        };
        drop(orphans);
    }
}

impl Inner {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // The queue stays consistent across a panic (no invariant spans two statements).
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `batch` in one write on one connection and hands out the replies.
    fn send(&self, batch: Vec<Job>) {
        let mut packed = Vec::new();
        let mut total = 0;
        for job in &batch {
            packed.extend_from_slice(&job.pipe.get_packed_pipeline());
            total += job.pipe.len();
        }
        let result = self.with_connection(|conn| {
            let replies = conn.req_packed_commands(&packed, 0, total)?;
            let answers = commands::split_replies(replies, batch.iter().map(|job| &job.pipe));
            Ok(batch
                .iter()
                .zip(answers)
                .map(|(job, answer)| {
                    match answer {
                        // Redis lost our scripts (restart, SCRIPT FLUSH): this pipeline
                        // again, alone, through the path that loads them.
                        Err(e) if commands::is_no_script(&e) => {
                            self.commands.query(conn, &job.pipe)
                        }
                        other => other,
                    }
                    .map_err(StoreError::Redis)
                })
                .collect::<Vec<_>>())
        });
        match result {
            Ok(answers) => {
                for (job, answer) in batch.into_iter().zip(answers) {
                    // A request that went away no longer waits for its answer.
                    let _ = job.reply.send(answer);
                }
            }
            Err(e) => {
                for job in batch {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }

    fn with_connection<T>(
        &self,
        op: impl Fn(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        let mut attempt = 1;
        loop {
            let result = match &self.pool {
                Pool::Own(pool) => {
                    let mut pooled = pool.get().map_err(|e| StoreError::Pool(Arc::new(e)))?;
                    let result = op(&mut pooled.conn);
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
                    let mut conn = pool.get().map_err(|e| StoreError::Pool(Arc::new(e)))?;
                    conn.set_read_timeout(Some(*command_timeout))?;
                    conn.set_write_timeout(Some(*command_timeout))?;
                    let result = op(&mut conn);
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
