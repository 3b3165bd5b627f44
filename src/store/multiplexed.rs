//! The Redis store over redis-rs's multiplexed async connection.
//!
//! Each actix worker has its own connection and its own batch: a request appends its
//! commands to the batch and awaits its replies; [`SENDERS`] tasks on the same worker each
//! take the batch when they are free, send it as one pipeline, and hand every request its
//! replies, so one batch can be on the wire while the next one fills. Under load one pipeline carries the commands of many requests, so redis-rs's
//! per-call work and Redis's per-read work are shared; a lone request costs one round trip,
//! as a direct call would. Nothing crosses threads, and the connection reconnects by itself.
//! Key layout, scripts and commands are the pool transport's ([`super::commands`]).

use std::{
    pin::pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
};

use redis::{
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    Pipeline,
};
use tokio::sync::{oneshot, Notify};

use super::{
    batch::{Batch, Replies, Sender},
    commands::{Commands, RedisOptions},
};
use crate::{
    error::{ConfigError, StoreError, StoreErrorKind},
    telemetry,
};

/// Sender tasks per worker, hence batches in flight on its connection. With one, a
/// read-write request waits for two whole batch cycles (load, then save) behind the batch
/// already out; two cut that wait and measured faster at 1 and 2 workers (BENCHMARKS.md).
const SENDERS: usize = 2;

/// The Redis-backed store (multiplexed transport).
#[derive(Clone)]
pub(crate) struct MultiplexedStore {
    shared: Arc<Shared>,
    /// This worker's connection and batch; `None` in the copy held by the configuration.
    worker: Option<Arc<Worker>>,
}

struct Shared {
    target: Target,
    config: ConnectionManagerConfig,
    commands: Commands,
}

/// Where the workers' connections go.
enum Target {
    Client(redis::Client),
    /// The master that Redis Sentinel names: each worker asks its sentinels when it first
    /// connects, and again after its connection dropped or met a demoted master.
    #[cfg(feature = "sentinel")]
    Sentinel {
        sentinels: Vec<String>,
        master: String,
        options: RedisOptions,
    },
}

/// One worker's connection, the batch being filled, and its sender tasks' state.
struct Worker {
    /// `None` under Sentinel until the sentinels have named the master (again).
    connection: Mutex<Option<ConnectionManager>>,
    /// This worker's own client of the sentinels (it asks them through `&mut`).
    #[cfg(feature = "sentinel")]
    sentinel: Option<tokio::sync::Mutex<redis::sentinel::SentinelClient>>,
    queue: Mutex<Queue>,
    /// Wakes the sender when a request joins an empty batch.
    wake: Arc<Notify>,
}

#[derive(Default)]
struct Queue {
    batch: Batch,
    /// The last batch sent, answered and emptied: the next one, memory included.
    spare: Batch,
    /// Sender tasks running (started by requests, up to [`SENDERS`]).
    senders: usize,
}

impl Drop for Worker {
    /// Lets the sender tasks see that the worker is gone, and end (they register for wake-ups
    /// before they look, so none misses this).
    fn drop(&mut self) {
        self.wake.notify_waiters();
    }
}

impl MultiplexedStore {
    pub(crate) fn open(url: &str, options: &RedisOptions) -> Result<MultiplexedStore, ConfigError> {
        let client = super::redis::client(url, options.tls.as_ref())?;
        Ok(MultiplexedStore::for_client(client, options))
    }

    /// A store on the server `client` names (a cluster's node); connections per worker.
    pub(crate) fn for_client(client: redis::Client, options: &RedisOptions) -> MultiplexedStore {
        MultiplexedStore::with_target(Target::Client(client), options)
    }

    /// A store on the master that the sentinels at `sentinels` monitor as `master`.
    #[cfg(feature = "sentinel")]
    pub(crate) fn open_sentinel(
        sentinels: &[String],
        master: &str,
        options: &RedisOptions,
    ) -> Result<MultiplexedStore, ConfigError> {
        // Checked once here; each worker builds its own from the same settings.
        super::redis::checked_sentinel_client(sentinels, master, options)?;
        let target = Target::Sentinel {
            sentinels: sentinels.to_vec(),
            master: master.to_owned(),
            options: options.clone(),
        };
        Ok(MultiplexedStore::with_target(target, options))
    }

    fn with_target(target: Target, options: &RedisOptions) -> MultiplexedStore {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.command_timeout))
            // One connect per try: retrying (with its delays, within the request's budget)
            // is the resilience layer's job, as on the pool transport; redis-rs's own
            // retries would multiply it. A request that meets a dropped connection fails,
            // and the manager reconnects for the next one.
            .set_number_of_retries(0);
        MultiplexedStore {
            shared: Arc::new(Shared {
                target,
                config,
                commands: Commands::new(options),
            }),
            worker: None,
        }
    }

    /// A copy for one actix worker with its own connection, opened on first use on that
    /// worker's runtime, so that its I/O never crosses threads.
    pub(crate) fn for_worker(&self) -> MultiplexedStore {
        let worker = match &self.shared.target {
            Target::Client(client) => {
                ConnectionManager::new_lazy_with_config(client.clone(), self.shared.config.clone())
                    .map(|connection| Worker::new(Some(connection)))
            }
            #[cfg(feature = "sentinel")]
            Target::Sentinel {
                sentinels,
                master,
                options,
            } => super::redis::sentinel_client(sentinels, master, options).map(|sentinel| {
                let mut worker = Worker::new(None);
                worker.sentinel = Some(tokio::sync::Mutex::new(sentinel));
                worker
            }),
        };
        if let Err(e) = &worker {
            tracing::error!(error = %e, "could not set up the Redis connection");
        }
        MultiplexedStore {
            shared: Arc::clone(&self.shared),
            worker: worker.ok().map(Arc::new),
        }
    }
}

impl Sender for MultiplexedStore {
    fn commands(&self) -> &Commands {
        &self.shared.commands
    }

    /// Wakes or starts this worker's senders.
    fn enqueue(
        &self,
        _key: &str,
        build: impl Fn(&mut Pipeline),
    ) -> Result<oneshot::Receiver<Replies>, StoreError> {
        let Some(worker) = &self.worker else {
            // Only the per-worker copies serve requests; this one could not be set up.
            let e = redis::RedisError::from((
                redis::ErrorKind::Client,
                "the Redis connection could not be set up",
            ));
            return Err(StoreError::redis(e));
        };
        let (replied, start) = {
            let mut queue = worker.queue();
            let first = queue.batch.is_empty();
            let replied = queue.batch.push(build);
            let start = queue.senders < SENDERS;
            queue.senders += usize::from(start);
            if first && !start {
                worker.wake.notify_one();
            }
            (replied, start)
        };
        if start {
            // On this worker's runtime, like the connection's own tasks.
            tokio::spawn(send(
                Arc::clone(&self.shared),
                Arc::downgrade(worker),
                Arc::clone(&worker.wake),
            ));
        }
        Ok(replied)
    }
}

/// Held by a sender task: should it end while its worker lives on (a panic, or its runtime
/// cancelling it), the next request starts a new one, and if it was the last, the requests
/// already queued get an error instead of waiting for a sender that is gone.
struct Restart(Weak<Worker>);

impl Drop for Restart {
    fn drop(&mut self) {
        let Some(worker) = self.0.upgrade() else {
            return;
        };
        let stranded = {
            let mut queue = worker.queue();
            queue.senders -= 1;
            if queue.senders == 0 {
                std::mem::take(&mut queue.batch)
            } else {
                Batch::default()
            }
        };
        drop(stranded);
    }
}

impl Worker {
    fn new(connection: Option<ConnectionManager>) -> Worker {
        Worker {
            connection: Mutex::new(connection),
            #[cfg(feature = "sentinel")]
            sentinel: None,
            queue: Mutex::default(),
            wake: Arc::new(Notify::new()),
        }
    }

    /// This worker's connection; under Sentinel, asks the sentinels for the master first
    /// if there is none (yet, or since the last one failed).
    async fn connection(&self, shared: &Shared) -> Result<ConnectionManager, StoreError> {
        if let Some(connection) = lock(&self.connection).clone() {
            return Ok(connection);
        }
        #[cfg(feature = "sentinel")]
        if let Some(sentinel) = &self.sentinel {
            let mut sentinel = sentinel.lock().await;
            // The other sender may have asked while this one waited for the lock.
            if let Some(connection) = lock(&self.connection).clone() {
                return Ok(connection);
            }
            let client = sentinel
                .async_get_client()
                .await
                .map_err(StoreError::redis)?;
            let connection = ConnectionManager::new_lazy_with_config(client, shared.config.clone())
                .map_err(StoreError::redis)?;
            *lock(&self.connection) = Some(connection.clone());
            return Ok(connection);
        }
        let _ = shared;
        let e = redis::RedisError::from((
            redis::ErrorKind::Client,
            "the Redis connection could not be set up",
        ));
        Err(StoreError::redis(e))
    }

    /// After a batch: under Sentinel, a connection that dropped or met a demoted master
    /// (`READONLY`) is let go, so that the next batch asks the sentinels where the master
    /// is now. (Without Sentinel the manager reconnects to the same address by itself.)
    fn after(&self, replies: &Result<Vec<redis::Value>, redis::RedisError>) {
        #[cfg(feature = "sentinel")]
        if self.sentinel.is_some() {
            let failed = match replies {
                Ok(replies) => super::redis::demoted(replies),
                Err(e) => e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal(),
            };
            if failed {
                *lock(&self.connection) = None;
            }
        }
        let _ = replies;
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        // Consistent across a panic: a request whose commands were half built when it
        // panicked tears its batch, which then fails as a whole (see `Batch::push`).
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A sender task of one worker: sends the batch, waits for its replies, hands them out,
/// and again; sleeps while no request waits; ends with the worker.
async fn send(shared: Arc<Shared>, worker: Weak<Worker>, wake: Arc<Notify>) {
    let _restart = Restart(worker.clone());
    loop {
        // Registered before looking at the batch, so a request that joins after the look
        // (or the worker's drop) wakes it.
        let mut woken = pin!(wake.notified());
        woken.as_mut().enable();
        let Some(this) = worker.upgrade() else {
            return;
        };
        let batch = {
            let mut queue = this.queue();
            (!queue.batch.is_empty()).then(|| {
                let spare = std::mem::take(&mut queue.spare);
                std::mem::replace(&mut queue.batch, spare)
            })
        };
        let Some(mut batch) = batch else {
            drop(this);
            woken.await;
            continue;
        };
        let connection = this.connection(&shared).await;
        let mut connection = match connection {
            Ok(connection) => connection,
            Err(e) => {
                drop(this);
                for retry in batch.answer(Err(e)) {
                    retry.answer(Err(StoreErrorKind::Unavailable.into()));
                }
                if let Some(this) = worker.upgrade() {
                    this.queue().spare = batch;
                }
                continue;
            }
        };
        drop(this);
        let pipe = batch.pipe();
        telemetry::batch(batch.len());
        // The manager reconnects by itself after a dropped connection; retrying the failed
        // operations is the resilience layer's job.
        let replies = connection.req_packed_commands(pipe, 0, pipe.len()).await;
        if let Some(this) = worker.upgrade() {
            this.after(&replies);
        }
        for retry in batch.answer(replies.map_err(StoreError::redis)) {
            let replies = shared
                .commands
                .query_async(&mut connection, &retry.pipe)
                .await;
            retry.answer(replies.map_err(StoreError::redis));
        }
        if let Some(this) = worker.upgrade() {
            this.queue().spare = batch;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
