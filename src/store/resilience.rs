//! Retry and circuit breaker: the layer between the middleware and any server-side store
//! that can fail (Redis, files, a store of your own; not the memory store, which cannot).
//!
//! Every store operation of a request runs through [`Guarded`]:
//!
//! - **Budget.** A request waits for its store operations (load, save, a renewal's delete)
//!   for at most [`store_budget`](crate::RedisSessionBuilder::store_budget) in all, retries
//!   and their delays included. An attempt still running when the budget is spent is given
//!   up ([`StoreErrorKind::Timeout`]); handler time does not count.
//! - **Retry** ([`Retry`]): an operation that failed with [`StoreErrorKind::Unavailable`] or
//!   [`StoreErrorKind::Timeout`] is tried again after an exponential delay with full jitter,
//!   while attempts are left and the delay fits in what is left of the budget. Every
//!   operation is safe to repeat: loads and field-level updates are idempotent, a create
//!   recognises its own record by its creation marker (checked here on a retry that is told
//!   the key is taken, for stores that cannot tell themselves), and a delete or an emptying
//!   that finds nothing on a later attempt says so: the callers take that as "ended
//!   meanwhile", which fails safe. An attempt given up (the budget spent) is not withdrawn:
//!   its commands may still reach the store, as any timed-out command may.
//! - **Circuit breaker** ([`CircuitBreaker`]): after that many operations in a row failed
//!   (after their retries) with `Unavailable` or `Timeout`, the store is not asked at all
//!   for a cool-down: operations fail at once with [`StoreErrorKind::CircuitOpen`], which the
//!   [`OnStoreError`](crate::OnStoreError) policy answers like any store error. Then one
//!   operation goes through as a probe: success closes the breaker, failure opens it for
//!   another cool-down. An error that Redis *answered* (`WRONGTYPE`, out of memory) shows
//!   the store is up: it does not count.
//!
//! The breaker is shared by all workers of one middleware; its state is
//! [`RedisSession::store_health`](crate::RedisSession::store_health) and the
//! `session_store_breaker_state` gauge. On a Redis Cluster each master has a breaker of its
//! own (an operation is judged by the master serving its key, looked up at each attempt):
//! a master that is down does not stop the others' sessions, and its replica, once
//! promoted, starts with a closed breaker.

use std::{
    cell::Cell,
    future::Future,
    sync::{
        atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    time::{Duration, Instant},
};

use backon::BackoffBuilder as _;

use super::{
    commands::{with_ttl, Commands},
    Cache, Fields, Outcome, Store, Write,
};
use crate::{
    error::{StoreError, StoreErrorKind},
    record::CREATED,
    telemetry,
};

/// How failed store operations are retried
/// ([`RedisSessionBuilder::retry`](crate::RedisSessionBuilder::retry)): up to `attempts`
/// tries in all, the n-th retry after a delay drawn uniformly from zero to
/// `min(max_delay, min_delay × 2ⁿ⁻¹)` ("full jitter", so that clients that failed together
/// do not retry together), and never past the request's
/// [store budget](crate::RedisSessionBuilder::store_budget).
///
/// Retried: [`StoreErrorKind::Unavailable`] (connection refused, reset or dropped; Redis
/// loading its data after a restart, busy with a script, a demoted master) and
/// [`StoreErrorKind::Timeout`]. Not retried: errors Redis answered, a full store, an open
/// circuit breaker.
///
/// Defaults: 3 attempts, delays from 10 ms up to 250 ms.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// use actix_redis_session::{Key, RedisSession, Retry};
///
/// let sessions = RedisSession::builder("redis://127.0.0.1:6379", Key::generate())
///     .retry(Retry::new().attempts(4).min_delay(Duration::from_millis(20)))
///     .store_budget(Duration::from_secs(2))
///     .build()?;
/// # drop(sessions);
/// # Ok::<(), actix_redis_session::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    attempts: u32,
    min_delay: Duration,
    max_delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry::new()
    }
}

impl Retry {
    /// The most attempts an operation may get, first one included.
    pub const MAX_ATTEMPTS: u32 = 10;

    /// The default policy: 3 attempts, delays from 10 ms up to 250 ms.
    pub const fn new() -> Retry {
        Retry {
            attempts: 3,
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(250),
        }
    }

    /// No retries: one attempt per operation.
    pub const fn disabled() -> Retry {
        Retry::new().attempts(1)
    }

    /// Tries per operation, the first one included: from 1 (no retry) to
    /// [`MAX_ATTEMPTS`](Self::MAX_ATTEMPTS). Default: 3.
    pub const fn attempts(mut self, attempts: u32) -> Retry {
        self.attempts = attempts;
        self
    }

    /// The cap of the first retry's delay, doubled for each retry after it. Default: 10 ms.
    pub const fn min_delay(mut self, delay: Duration) -> Retry {
        self.min_delay = delay;
        self
    }

    /// The largest cap of a delay. Default: 250 ms. At least `min_delay`, at most
    /// [`MAX_TIMEOUT`](crate::config::MAX_TIMEOUT).
    pub const fn max_delay(mut self, delay: Duration) -> Retry {
        self.max_delay = delay;
        self
    }

    /// Why this policy is out of range, if it is.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if !(1..=Retry::MAX_ATTEMPTS).contains(&self.attempts) {
            return Err("attempts must be from 1 to 10");
        }
        if self.min_delay.is_zero() || self.min_delay > self.max_delay {
            return Err("min_delay must be above zero and at most max_delay");
        }
        if self.max_delay > crate::config::MAX_TIMEOUT {
            return Err("max_delay must be at most 1 hour");
        }
        Ok(())
    }

    /// The caps of the delays before each retry, in order (backon's exponential schedule:
    /// doubling from `min_delay`, capped at `max_delay`, one per retry).
    fn caps(&self) -> backon::ExponentialBackoff {
        backon::ExponentialBuilder::new()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.attempts.saturating_sub(1) as usize)
            .build()
    }
}

/// When the store is given a rest
/// ([`RedisSessionBuilder::circuit_breaker`](crate::RedisSessionBuilder::circuit_breaker)):
/// after `failures` operations in a row failed (each after its retries) because the store
/// was unavailable or did not answer in time, operations fail at once, without asking the
/// store, for `cool_down`; then one goes through as a probe, and its success closes the
/// breaker again.
///
/// While it is open every request that needs the store gets the
/// [`OnStoreError`](crate::OnStoreError) answer (`503` with `Retry-After: 1`, or a degraded
/// session) at once, instead of each waiting out its own timeouts: a Redis outage costs
/// the application neither threads nor time, and a Redis coming back is not met by every
/// request at once.
///
/// Defaults: 5 failures, 1 second of cool-down.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// use actix_redis_session::{CircuitBreaker, Key, RedisSession};
///
/// let sessions = RedisSession::builder("redis://127.0.0.1:6379", Key::generate())
///     .circuit_breaker(CircuitBreaker::new().failures(10).cool_down(Duration::from_secs(2)))
///     .build()?;
/// # drop(sessions);
/// # Ok::<(), actix_redis_session::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CircuitBreaker {
    /// `None`: never opens.
    failures: Option<u32>,
    cool_down: Duration,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker::new()
    }
}

impl CircuitBreaker {
    /// The default breaker: opens after 5 failures in a row, for 1 second.
    pub const fn new() -> CircuitBreaker {
        CircuitBreaker {
            failures: Some(5),
            cool_down: Duration::from_secs(1),
        }
    }

    /// A breaker that never opens: every request asks the store (and waits out its
    /// timeouts) however long it has been failing. Failures are still counted in
    /// [`StoreHealth`].
    pub const fn disabled() -> CircuitBreaker {
        CircuitBreaker {
            failures: None,
            cool_down: Duration::from_secs(1),
        }
    }

    /// Failed operations in a row that open the breaker: from 1 to 1,000,000. Default: 5.
    pub const fn failures(mut self, failures: u32) -> CircuitBreaker {
        self.failures = Some(failures);
        self
    }

    /// How long the breaker stays open before a probe: above zero, at most
    /// [`MAX_TIMEOUT`](crate::config::MAX_TIMEOUT). Default: 1 second.
    pub const fn cool_down(mut self, cool_down: Duration) -> CircuitBreaker {
        self.cool_down = cool_down;
        self
    }

    /// Why this breaker is out of range, if it is.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if self.failures.is_some_and(|n| !(1..=1_000_000).contains(&n)) {
            return Err("failures must be from 1 to 1,000,000");
        }
        if self.cool_down.is_zero() || self.cool_down > crate::config::MAX_TIMEOUT {
            return Err("cool_down must be above zero and at most 1 hour");
        }
        Ok(())
    }
}

/// The state of a [`CircuitBreaker`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BreakerState {
    /// Operations go to the store.
    Closed,
    /// Operations fail at once, without asking the store, until the cool-down is over.
    Open,
    /// The cool-down is over: the next operation goes to the store as the probe (the others
    /// fail at once while it runs); its success closes the breaker, its failure opens it
    /// again.
    HalfOpen,
}

impl BreakerState {
    /// The value of the `session_store_breaker_state` gauge: 0 closed, 1 half-open, 2 open.
    pub const fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }

    fn from_u8(state: u8) -> BreakerState {
        match state {
            OPEN => BreakerState::Open,
            HALF_OPEN => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }
}

/// How the session store is doing, as the middleware sees it
/// ([`RedisSession::store_health`](crate::RedisSession::store_health)): for a readiness
/// probe, a status page or a log line.
///
/// # Examples
///
/// ```
/// use actix_redis_session::{BreakerState, Key, RedisSession};
///
/// let sessions = RedisSession::memory(Key::generate());
/// let health = sessions.store_health();
/// assert_eq!(health.state(), BreakerState::Closed);
/// assert_eq!(health.consecutive_failures(), 0);
/// assert!(health.is_available());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreHealth {
    state: BreakerState,
    consecutive_failures: u32,
}

impl StoreHealth {
    /// The circuit breaker's state ([`BreakerState::Closed`] when there is none). On a
    /// Redis Cluster, whose masters have a breaker each: `Open` only when every master's
    /// breaker is open (no session can be served), `HalfOpen` while some are open or
    /// probing (the other masters' sessions are served), `Closed` when none is.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Store operations that failed in a row, each after its retries, with the store
    /// unavailable or out of time; zero after any success. On a cluster, the most of any
    /// master.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Whether requests are served by the store: the breaker is closed, or half-open (its
    /// cool-down is over and the next request probes the store). For a readiness check: it
    /// is `false` only during a cool-down, so a replica taken out of rotation for it comes
    /// back when the cool-down ends, and its next request is the probe.
    pub fn is_available(&self) -> bool {
        self.state != BreakerState::Open
    }
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// The breaker's shared state. The hot path (closed, no failures) only reads two atomics;
/// changes of state (rare) are made under a lock.
struct Breaker {
    config: CircuitBreaker,
    state: AtomicU8,
    failures: AtomicU32,
    /// While open: when a probe may go.
    probe_at: Mutex<Instant>,
    /// One of a cluster's breakers: its changes of state are counted here, and the gauge
    /// shows the cluster's state as a whole ([`Guarded::publish`]), not this one's.
    changes: Option<Arc<AtomicU64>>,
}

/// Leave to ask the store, from [`Breaker::admit`].
struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    recorded: bool,
}

/// What an operation's result says about the store's health.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Health {
    /// It answered (with data, or with an error of its own).
    Up,
    /// Unavailable, or out of time.
    Down,
}

impl Breaker {
    fn new(config: CircuitBreaker) -> Breaker {
        Breaker {
            config,
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            probe_at: Mutex::new(Instant::now()),
            changes: None,
        }
    }

    /// A change of state, for the gauge (or the cluster's count of changes).
    fn changed(&self, to: BreakerState) {
        match &self.changes {
            Some(changes) => {
                changes.fetch_add(1, Ordering::Relaxed);
            }
            None => telemetry::breaker(to),
        }
    }

    /// The state as the application sees it: an open breaker whose cool-down is over is
    /// half-open already (the next operation probes), so that a readiness check that
    /// stopped traffic on an open breaker lets it come back, and with it the probe.
    fn health(&self) -> StoreHealth {
        let mut state = BreakerState::from_u8(self.state.load(Ordering::Acquire));
        if state == BreakerState::Open && Instant::now() >= *self.probe_at() {
            state = BreakerState::HalfOpen;
        }
        StoreHealth {
            state,
            consecutive_failures: self.failures.load(Ordering::Relaxed),
        }
    }

    fn probe_at(&self) -> MutexGuard<'_, Instant> {
        self.probe_at.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Leave to ask the store, or the error to fail with at once.
    fn admit(&self) -> Result<Permit<'_>, StoreError> {
        let permit = |probe| Permit {
            breaker: self,
            probe,
            recorded: false,
        };
        if self.state.load(Ordering::Acquire) == CLOSED {
            return Ok(permit(false));
        }
        let probe_at = self.probe_at();
        match self.state.load(Ordering::Acquire) {
            CLOSED => Ok(permit(false)),
            OPEN if Instant::now() >= *probe_at => {
                self.state.store(HALF_OPEN, Ordering::Release);
                self.changed(BreakerState::HalfOpen);
                drop(probe_at);
                tracing::info!("session store circuit breaker half-open: probing the store");
                Ok(permit(true))
            }
            _ => Err(StoreErrorKind::CircuitOpen.into()),
        }
    }

    /// Opens the breaker for a cool-down, if it is still in state `from` (closed, or
    /// half-open after a failed probe).
    fn open(&self, from: u8) {
        let mut probe_at = self.probe_at();
        if self.state.load(Ordering::Acquire) != from {
            return;
        }
        *probe_at = Instant::now() + self.config.cool_down;
        self.state.store(OPEN, Ordering::Release);
        self.changed(BreakerState::Open);
        drop(probe_at);
        let failures = self.failures.load(Ordering::Relaxed);
        let cool_down_ms = u64::try_from(self.config.cool_down.as_millis()).unwrap_or(u64::MAX);
        if from == HALF_OPEN {
            tracing::warn!(
                cool_down_ms,
                "session store still failing: circuit breaker open again"
            );
        } else {
            tracing::warn!(
                failures,
                cool_down_ms,
                "session store failing: circuit breaker open, requests fail fast"
            );
        }
    }

    /// After a probe: closed if it succeeded, open again (with `probe_at` as given) if not.
    fn end_probe(&self, to: u8, probe_at: Option<Instant>) -> bool {
        let mut at = self.probe_at();
        if self.state.load(Ordering::Acquire) != HALF_OPEN {
            return false;
        }
        if let Some(probe_at) = probe_at {
            *at = probe_at;
        }
        self.state.store(to, Ordering::Release);
        self.changed(BreakerState::from_u8(to));
        true
    }
}

impl Permit<'_> {
    fn record(mut self, health: Health) {
        self.recorded = true;
        let breaker = self.breaker;
        match health {
            Health::Up => {
                // Read first: on the hot path nothing is written, so workers do not fight
                // over the cache line.
                if breaker.failures.load(Ordering::Relaxed) != 0 {
                    breaker.failures.store(0, Ordering::Relaxed);
                }
                if self.probe && breaker.end_probe(CLOSED, None) {
                    tracing::info!("session store answering again: circuit breaker closed");
                }
            }
            Health::Down => {
                let failures = breaker
                    .failures
                    .fetch_add(1, Ordering::Relaxed)
                    .saturating_add(1);
                if self.probe {
                    breaker.open(HALF_OPEN);
                } else if breaker.config.failures.is_some_and(|n| failures >= n) {
                    breaker.open(CLOSED);
                }
            }
        }
    }
}

impl Drop for Permit<'_> {
    /// A probe given up before its answer (the request went away): the next operation
    /// probes instead, at once.
    fn drop(&mut self) {
        if self.probe && !self.recorded {
            let _ = self.breaker.end_probe(OPEN, Some(Instant::now()));
        }
    }
}

/// The store time a request has left.
#[derive(Debug)]
pub(crate) struct Budget {
    left: Cell<Duration>,
}

impl Budget {
    pub(crate) fn new(total: Duration) -> Budget {
        Budget {
            left: Cell::new(total),
        }
    }
}

/// The resilience settings of one middleware, shared by its workers.
struct Policy {
    retry: Retry,
    /// One breaker; on a cluster one per node ([`CLUSTER_BREAKERS`], by node index), and
    /// one more ([`UNKNOWN_NODE`]) for keys whose node is not known yet.
    breakers: Box<[Breaker]>,
    /// A cluster's: changes of state of its breakers, and how many the gauge has shown.
    changes: Option<(Arc<AtomicU64>, AtomicU64)>,
}

/// Breakers of a cluster's nodes: node `i` has breaker `i % CLUSTER_BREAKERS` (nodes are
/// numbered as they are met; masters and replicas together stay below this in most
/// deployments, and past it two nodes share one).
const CLUSTER_BREAKERS: usize = 64;

/// The breaker of a cluster's keys whose node is not known (no slot map yet, or a slot no
/// master serves): not any node's, so that those failures stop no node's sessions.
const UNKNOWN_NODE: usize = CLUSTER_BREAKERS;

/// A server-side store behind the retry and breaker layer.
#[derive(Clone)]
pub(crate) struct Guarded {
    store: Store,
    /// `None` for the memory store, which cannot fail.
    policy: Option<Arc<Policy>>,
    /// The local cache in front of it ([`LocalCache`](super::LocalCache)), if on.
    cache: Option<Cache>,
}

impl Guarded {
    pub(crate) fn new(store: Store, retry: Retry, breaker: CircuitBreaker) -> Guarded {
        let cluster = matches!(store, Store::Cluster(_));
        let policy = (!matches!(store, Store::Memory(_))).then(|| {
            let changes = cluster.then(|| Arc::new(AtomicU64::new(0)));
            let count = if cluster { CLUSTER_BREAKERS + 1 } else { 1 };
            let breakers = (0..count)
                .map(|_| Breaker {
                    changes: changes.clone(),
                    ..Breaker::new(breaker)
                })
                .collect();
            Arc::new(Policy {
                retry,
                breakers,
                changes: changes.map(|changes| (changes, AtomicU64::new(0))),
            })
        });
        Guarded {
            store,
            policy,
            cache: None,
        }
    }

    /// The same, with the local cache in front of it.
    pub(crate) fn with_cache(mut self, cache: Cache) -> Guarded {
        self.cache = Some(cache);
        self
    }

    /// The local cache, if there is one.
    pub(crate) fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
    }

    /// What the local cache has done, if there is one.
    pub(crate) fn cache_stats(&self) -> Option<super::CacheStats> {
        self.cache.as_ref().map(Cache::stats)
    }

    /// On a cluster, after one of its breakers changed state: the gauge shows the cluster's
    /// state as a whole ([`Guarded::health`]), so that a dead master's breaker, left open
    /// once its replica took over, does not keep it open.
    fn publish(&self) {
        let Some((changes, shown)) = self.policy.as_ref().and_then(|p| p.changes.as_ref()) else {
            return;
        };
        let now = changes.load(Ordering::Relaxed);
        if shown.swap(now, Ordering::Relaxed) != now {
            telemetry::breaker(self.health().state());
        }
    }

    /// Which breaker judges operations on `key` now (on a cluster: the node serving it).
    fn shard(&self, key: &str) -> usize {
        match &self.store {
            Store::Cluster(cluster) => cluster
                .node_of(key)
                .map_or(UNKNOWN_NODE, |node| node % CLUSTER_BREAKERS),
            _ => 0,
        }
    }

    /// The copy one actix worker uses (its own multiplexed connection; the same breaker).
    pub(crate) fn for_worker(&self) -> Guarded {
        Guarded {
            store: self.store.for_worker(),
            policy: self.policy.clone(),
            cache: self.cache.clone(),
        }
    }

    /// The store behind the layer.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn health(&self) -> StoreHealth {
        let Some(policy) = &self.policy else {
            return Guarded::healthy();
        };
        let Store::Cluster(cluster) = &self.store else {
            return policy.breakers[0].health();
        };
        // A cluster: the masters' breakers together. Open only if every master's is (no
        // session can be served); half-open if some are open or probing (the others' are
        // served); closed if none.
        let unknown = policy.breakers[UNKNOWN_NODE].health();
        let mut masters: Vec<StoreHealth> = cluster
            .serving_nodes()
            .into_iter()
            .map(|node| policy.breakers[node % CLUSTER_BREAKERS].health())
            .collect();
        // Before the first map, or with slots no master serves: the breaker of the keys
        // whose node is not known counts too.
        if masters.is_empty() || unknown.state() != BreakerState::Closed {
            masters.push(unknown);
        }
        let failures = masters
            .iter()
            .map(StoreHealth::consecutive_failures)
            .max()
            .unwrap_or(0);
        let open = masters
            .iter()
            .filter(|h| h.state() == BreakerState::Open)
            .count();
        let state = if !masters.is_empty() && open == masters.len() {
            BreakerState::Open
        } else if open > 0 || masters.iter().any(|h| h.state() == BreakerState::HalfOpen) {
            BreakerState::HalfOpen
        } else {
            BreakerState::Closed
        };
        StoreHealth {
            state,
            consecutive_failures: failures,
        }
    }

    /// The health of a store that cannot fail.
    pub(crate) fn healthy() -> StoreHealth {
        StoreHealth {
            state: BreakerState::Closed,
            consecutive_failures: 0,
        }
    }

    /// A session record, as [`Guarded::load`] loads it; with the local cache (and no TTL to
    /// move: `touch_after`), from the cache when the record is there, otherwise from the
    /// store with its time to live, kept in the cache unless an invalidation raced the reply.
    /// Only for session records (the cache follows their writes through [`Guarded::write`]);
    /// other keys (a user's index) load through [`Guarded::load`].
    pub(crate) async fn load_session(
        &self,
        key: &str,
        ttl: Option<Duration>,
        budget: &Budget,
    ) -> Result<Option<Fields>, StoreError> {
        let Some(cache) = self.cache.as_ref().filter(|_| ttl.is_none()) else {
            return self.load(key, ttl, budget).await;
        };
        if let Some(fields) = cache.get(key) {
            return Ok(Some(fields));
        }
        let Some(ticket) = cache.ticket() else {
            return self.load(key, ttl, budget).await;
        };
        let replies = self
            .query("load", budget, key, |pipe| {
                Commands::load_with_ttl(pipe, key)
            })
            .await;
        let mut replies = match replies {
            Ok(replies) => replies.into_iter(),
            // Not a hash: no session (see `commands::loaded`), nothing cached.
            Err(e) if e.is_wrong_type() => return Ok(Some(Fields::new())),
            // Redis refused the command (an ACL without PTTL, say): the plain load.
            Err(e) if e.kind() == StoreErrorKind::Backend => {
                return self.load(key, ttl, budget).await
            }
            Err(e) => return Err(e),
        };
        let (fields, pttl) = with_ttl(replies.next(), replies.next());
        if fields.is_empty() {
            return Ok(None);
        }
        if let Some(pttl) = pttl {
            cache.fill(key, ticket, &fields, pttl);
        }
        Ok(Some(fields))
    }

    /// See [`Store::load`].
    pub(crate) async fn load(
        &self,
        key: &str,
        ttl: Option<Duration>,
        budget: &Budget,
    ) -> Result<Option<Fields>, StoreError> {
        match &self.policy {
            None => self.store.load(key, ttl).await,
            Some(policy) => {
                let loaded = policy
                    .run(
                        "load",
                        budget,
                        || self.shard(key),
                        |_| self.store.load(key, ttl),
                    )
                    .await;
                self.publish();
                loaded
            }
        }
    }

    /// See [`Store::query`]: under the budget, the breaker and the retry policy, as `op`.
    /// Only for commands that are safe to repeat, on `key` alone.
    pub(crate) async fn query(
        &self,
        op: &'static str,
        budget: &Budget,
        key: &str,
        build: impl Fn(&mut redis::Pipeline),
    ) -> Result<Vec<redis::Value>, StoreError> {
        match &self.policy {
            None => self.store.query(key, &build).await,
            Some(policy) => {
                let replies = policy
                    .run(
                        op,
                        budget,
                        || self.shard(key),
                        |_| self.store.query(key, &build),
                    )
                    .await;
                self.publish();
                replies
            }
        }
    }

    /// See [`Store::write`]; the local cache's entry follows what the write did.
    pub(crate) async fn write(
        &self,
        write: &Write,
        budget: &Budget,
    ) -> Result<Outcome, StoreError> {
        let Some(cache) = &self.cache else {
            return self.write_now(write, budget).await;
        };
        // Dropped unfinished if this request is: the entry then goes.
        let writing = cache.begin(write);
        let written = self.write_now(write, budget).await;
        if let Some(writing) = writing {
            writing.finish(write, &written);
        }
        written
    }

    async fn write_now(&self, write: &Write, budget: &Budget) -> Result<Outcome, StoreError> {
        let Some(policy) = &self.policy else {
            return self.store.write(write).await;
        };
        let op = match write {
            Write::Update { .. } => "update",
            Write::Create { .. } => "create",
            Write::Empty { .. } => "empty",
            Write::Delete { .. } => "delete",
        };
        let written = policy
            .run(
                op,
                budget,
                || self.shard(write.key()),
                |attempt| async move {
                    let outcome = self.store.write(write).await?;
                    match write {
                        // The first attempt may have created it and lost its answer: the record
                        // is ours if it carries our creation marker (the Redis and memory stores
                        // tell so themselves; a store of your own may not).
                        Write::Create { key, fields, .. }
                            if attempt > 1 && outcome == Outcome::Refused =>
                        {
                            let ours = fields.iter().find(|(name, _)| name == CREATED);
                            let stored = self.store.load(key, None).await?;
                            let theirs = stored.as_ref().and_then(|record| record.get(CREATED));
                            Ok(match (ours, theirs) {
                                (Some((_, ours)), Some(theirs)) if ours == theirs => {
                                    Outcome::Applied
                                }
                                _ => outcome,
                            })
                        }
                        // A delete or an emptying that finds nothing on a later attempt says
                        // `Gone`, whether the first one did it or someone else: the callers
                        // take `Gone` as "ended meanwhile", which fails safe (a renew discards
                        // its copy; no removal cookie is sent).
                        _ => Ok(outcome),
                    }
                },
            )
            .await;
        self.publish();
        written
    }

    /// See [`Store::write_detached`]; skipped while the breaker is open (a touch not sent
    /// is due again on the next request).
    pub(crate) fn write_detached(&self, write: &Write) {
        let open = self.policy.as_ref().is_some_and(|p| {
            p.breakers[self.shard(write.key())]
                .state
                .load(Ordering::Acquire)
                != CLOSED
        });
        if let Some(cache) = &self.cache {
            cache.forget(write);
        }
        if !open {
            self.store.write_detached(write);
        }
    }
}

impl Policy {
    /// Runs `attempt` (given the attempt's number, from 1) under the budget, the breaker and
    /// the retry policy; `shard` says which breaker judges the next attempt.
    async fn run<T, F, Fut>(
        &self,
        op: &'static str,
        budget: &Budget,
        shard: impl Fn() -> usize,
        mut attempt: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let started = Instant::now();
        let deadline = started + budget.left.get();
        let mut caps = self.retry.caps();
        let mut tries = 0;
        // Held across the probe's retries: one probe at a time.
        let mut probe = None;
        let result = loop {
            // Too little budget left for an attempt: given up without asking the store, so
            // without a word about its health (a probe permit held goes back on drop).
            let left = deadline.saturating_duration_since(Instant::now());
            if left < MIN_ATTEMPT {
                break Err(out_of_budget());
            }
            let permit = match probe.take() {
                Some(permit) => permit,
                None => match self.breakers[shard() % self.breakers.len()].admit() {
                    Ok(permit) => permit,
                    Err(e) => break Err(e),
                },
            };
            tries += 1;
            let result = match tokio::time::timeout(left, attempt(tries)).await {
                Ok(result) => result,
                Err(_) => Err(out_of_budget()),
            };
            let e = match result {
                Ok(value) => {
                    permit.record(Health::Up);
                    break Ok(value);
                }
                Err(e) => e,
            };
            let retryable = matches!(
                e.kind(),
                StoreErrorKind::Unavailable | StoreErrorKind::Timeout
            );
            // The delay before the next try, if there is one and it fits the budget.
            let delay = caps
                .next()
                .filter(|_| retryable)
                .map(full_jitter)
                .filter(|delay| Instant::now() + *delay < deadline);
            let Some(delay) = delay else {
                permit.record(if retryable { Health::Down } else { Health::Up });
                break Err(e);
            };
            if permit.probe {
                probe = Some(permit);
            } else {
                drop(permit);
            }
            tracing::debug!(
                op,
                attempt = tries,
                kind = ?e.kind(),
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "session store operation failed; retrying"
            );
            telemetry::retry(op);
            tokio::time::sleep(delay).await;
        };
        budget
            .left
            .set(budget.left.get().saturating_sub(started.elapsed()));
        result
    }
}

/// The least budget worth starting an attempt with.
const MIN_ATTEMPT: Duration = Duration::from_millis(1);

/// A delay drawn uniformly from zero to `cap`.
fn full_jitter(cap: Duration) -> Duration {
    let mut bytes = [0u8; 8];
    // Not a secret: should the OS refuse, half the cap is as good a delay.
    let unit = match getrandom::fill(&mut bytes) {
        Ok(()) => (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    };
    cap.mul_f64(unit)
}

fn out_of_budget() -> StoreError {
    StoreError::new(
        StoreErrorKind::Timeout,
        "the request's store budget was spent",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caps_double_up_to_the_maximum_one_per_retry() {
        let retry = Retry::new()
            .attempts(6)
            .min_delay(Duration::from_millis(10))
            .max_delay(Duration::from_millis(50));
        // backon doubles in f32: 39.999.. ms is 40.
        let caps: Vec<_> = retry
            .caps()
            .map(|d| (d.as_secs_f64() * 1000.0).round())
            .collect();
        assert_eq!(caps, [10.0, 20.0, 40.0, 50.0, 50.0]);
        assert_eq!(Retry::disabled().caps().count(), 0);
    }

    #[test]
    fn full_jitter_stays_under_the_cap_and_spreads() {
        let cap = Duration::from_millis(100);
        let delays: Vec<_> = (0..200).map(|_| full_jitter(cap)).collect();
        assert!(delays.iter().all(|d| *d <= cap));
        assert!(delays.iter().any(|d| *d < cap / 4), "{delays:?}");
        assert!(delays.iter().any(|d| *d > cap * 3 / 4), "{delays:?}");
    }

    #[test]
    fn out_of_range_policies_are_refused() {
        assert!(Retry::new().check().is_ok());
        assert!(Retry::new().attempts(0).check().is_err());
        assert!(Retry::new().attempts(11).check().is_err());
        assert!(Retry::new().min_delay(Duration::ZERO).check().is_err());
        assert!(Retry::new()
            .min_delay(Duration::from_secs(1))
            .check()
            .is_err());
        assert!(Retry::new()
            .max_delay(Duration::from_secs(7200))
            .check()
            .is_err());
        assert!(CircuitBreaker::new().check().is_ok());
        assert!(CircuitBreaker::disabled().check().is_ok());
        assert!(CircuitBreaker::new().failures(0).check().is_err());
        assert!(CircuitBreaker::new()
            .cool_down(Duration::ZERO)
            .check()
            .is_err());
    }

    fn down(breaker: &Breaker) {
        breaker.admit().expect("admitted").record(Health::Down);
    }

    #[test]
    fn the_breaker_opens_after_failures_in_a_row_and_a_success_resets_the_count() {
        let breaker = Breaker::new(
            CircuitBreaker::new()
                .failures(3)
                .cool_down(Duration::from_secs(60)),
        );
        down(&breaker);
        down(&breaker);
        breaker.admit().unwrap().record(Health::Up);
        assert_eq!(breaker.health().consecutive_failures(), 0);
        down(&breaker);
        down(&breaker);
        assert_eq!(breaker.health().state(), BreakerState::Closed);
        down(&breaker);
        assert_eq!(breaker.health().state(), BreakerState::Open);
        assert_eq!(breaker.health().consecutive_failures(), 3);
        let e = breaker.admit().err().expect("fails fast");
        assert_eq!(e.kind(), StoreErrorKind::CircuitOpen);
    }

    #[test]
    fn after_the_cool_down_one_probe_goes_through_and_decides() {
        let breaker = Breaker::new(
            CircuitBreaker::new()
                .failures(1)
                .cool_down(Duration::from_millis(20)),
        );
        down(&breaker);
        assert!(breaker.admit().is_err());
        std::thread::sleep(Duration::from_millis(25));
        let probe = breaker.admit().expect("the probe");
        assert_eq!(breaker.health().state(), BreakerState::HalfOpen);
        assert!(breaker.admit().is_err(), "one probe at a time");
        probe.record(Health::Down);
        assert_eq!(breaker.health().state(), BreakerState::Open);
        assert!(breaker.admit().is_err(), "a new cool-down");
        std::thread::sleep(Duration::from_millis(25));
        breaker.admit().expect("the next probe").record(Health::Up);
        assert_eq!(breaker.health().state(), BreakerState::Closed);
        assert_eq!(breaker.health().consecutive_failures(), 0);
        assert!(breaker.admit().is_ok());
    }

    #[test]
    fn a_probe_given_up_lets_the_next_operation_probe_at_once() {
        let breaker = Breaker::new(
            CircuitBreaker::new()
                .failures(1)
                .cool_down(Duration::from_millis(10)),
        );
        down(&breaker);
        std::thread::sleep(Duration::from_millis(15));
        drop(breaker.admit().expect("the probe"));
        // Open again, its probe due at once.
        assert_eq!(breaker.state.load(Ordering::Acquire), OPEN);
        assert_eq!(breaker.health().state(), BreakerState::HalfOpen);
        assert!(breaker.admit().expect("probes again").probe);
    }

    fn policy(retry: Retry, breaker: CircuitBreaker) -> Policy {
        Policy {
            retry,
            breakers: Box::new([Breaker::new(breaker)]),
            changes: None,
        }
    }

    impl Policy {
        fn breaker(&self) -> &Breaker {
            &self.breakers[0]
        }
    }

    #[test]
    fn each_shard_has_its_own_breaker() {
        let policy = Policy {
            retry: Retry::disabled(),
            breakers: (0..3)
                .map(|_| Breaker::new(CircuitBreaker::new().failures(2)))
                .collect(),
            changes: None,
        };
        let budget = Budget::new(Duration::from_secs(5));
        for _ in 0..2 {
            let failed: Result<(), _> = run_now(policy.run(
                "load",
                &budget,
                || 1,
                |_| async { Err(StoreError::from_kind(StoreErrorKind::Unavailable)) },
            ));
            assert_eq!(failed.unwrap_err().kind(), StoreErrorKind::Unavailable);
        }
        let shut: Result<(), _> = run_now(policy.run("load", &budget, || 1, |_| async { Ok(()) }));
        assert_eq!(shut.unwrap_err().kind(), StoreErrorKind::CircuitOpen);
        // The other shards' operations go on.
        assert!(run_now(policy.run("load", &budget, || 0, |_| async { Ok(()) })).is_ok());
        assert!(run_now(policy.run("load", &budget, || 2, |_| async { Ok(()) })).is_ok());
        assert_eq!(policy.breakers[1].health().state(), BreakerState::Open);
        assert_eq!(policy.breakers[0].health().state(), BreakerState::Closed);
    }

    fn run_now<T>(future: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn an_attempt_with_no_budget_left_asks_nothing_and_says_nothing_of_health() {
        let policy = policy(Retry::new(), CircuitBreaker::new().failures(1));
        let budget = Budget::new(Duration::ZERO);
        let mut asked = 0;
        let result: Result<(), _> = run_now(policy.run(
            "load",
            &budget,
            || 0,
            |_| {
                asked += 1;
                async { Ok(()) }
            },
        ));
        assert_eq!(result.unwrap_err().kind(), StoreErrorKind::Timeout);
        assert_eq!(asked, 0);
        assert_eq!(policy.breaker().health().consecutive_failures(), 0);
        assert_eq!(policy.breaker().health().state(), BreakerState::Closed);
    }

    #[test]
    fn transient_failures_are_retried_within_the_attempts_and_others_are_not() {
        let policy = policy(Retry::new().attempts(3), CircuitBreaker::new());
        let budget = Budget::new(Duration::from_secs(5));
        let mut asked = 0u32;
        let result = run_now(policy.run(
            "load",
            &budget,
            || 0,
            |attempt| {
                asked += 1;
                async move {
                    if attempt < 3 {
                        Err(StoreError::from_kind(StoreErrorKind::Unavailable))
                    } else {
                        Ok(attempt)
                    }
                }
            },
        ));
        assert_eq!((result.unwrap(), asked), (3, 3));
        assert!(
            budget.left.get() < Duration::from_secs(5),
            "the time was spent"
        );

        let mut asked = 0u32;
        let result: Result<(), _> = run_now(policy.run(
            "update",
            &budget,
            || 0,
            |_| {
                asked += 1;
                async { Err(StoreError::from_kind(StoreErrorKind::Full)) }
            },
        ));
        assert_eq!(
            (result.unwrap_err().kind(), asked),
            (StoreErrorKind::Full, 1)
        );
        // Redis answered: no outage.
        assert_eq!(policy.breaker().health().consecutive_failures(), 0);

        let mut asked = 0u32;
        let result: Result<(), _> = run_now(policy.run(
            "load",
            &budget,
            || 0,
            |_| {
                asked += 1;
                async { Err(StoreError::from_kind(StoreErrorKind::Timeout)) }
            },
        ));
        assert_eq!(
            (result.unwrap_err().kind(), asked),
            (StoreErrorKind::Timeout, 3)
        );
        assert_eq!(
            policy.breaker().health().consecutive_failures(),
            1,
            "one operation failed"
        );
    }

    #[test]
    fn the_health_of_an_open_breaker_whose_cool_down_is_over_says_a_probe_may_go() {
        let breaker = Breaker::new(
            CircuitBreaker::new()
                .failures(1)
                .cool_down(Duration::from_millis(20)),
        );
        down(&breaker);
        assert_eq!(breaker.health().state(), BreakerState::Open);
        assert!(!breaker.health().is_available());
        std::thread::sleep(Duration::from_millis(25));
        // Nobody asked the store yet: a readiness check must let traffic (the probe) in.
        assert_eq!(breaker.health().state(), BreakerState::HalfOpen);
        assert!(breaker.health().is_available());
    }

    /// A store of one's own whose first create stores the record, then loses its answer,
    /// and which answers a later create of the same key with "taken", as the trait allows.
    #[derive(Default)]
    struct LostReply {
        memory: super::super::MemoryStore,
        creates: std::sync::atomic::AtomicUsize,
    }

    impl super::super::SessionStore for LostReply {
        async fn load(
            &self,
            key: &str,
            ttl: Option<Duration>,
        ) -> Result<Option<Fields>, StoreError> {
            super::super::SessionStore::load(&self.memory, key, ttl).await
        }

        async fn update(
            &self,
            key: &str,
            set: &[(String, Vec<u8>)],
            remove: &[String],
            ttl: Duration,
        ) -> Result<bool, StoreError> {
            super::super::SessionStore::update(&self.memory, key, set, remove, ttl).await
        }

        async fn create(
            &self,
            key: &str,
            fields: &[(String, Vec<u8>)],
            ttl: Duration,
        ) -> Result<bool, StoreError> {
            let stored = self.memory.load_now(key, None).is_some();
            if !stored {
                self.memory.write_now(&Write::Create {
                    key: key.to_owned(),
                    fields: fields.to_vec(),
                    ttl,
                });
            }
            if self.creates.fetch_add(1, Ordering::Relaxed) == 0 {
                return Err(StoreErrorKind::Unavailable.into());
            }
            Ok(!stored)
        }

        async fn delete(&self, key: &str) -> Result<bool, StoreError> {
            super::super::SessionStore::delete(&self.memory, key).await
        }
    }

    #[test]
    fn a_retried_create_whose_first_try_stored_the_record_recognises_it_by_its_marker() {
        let store = Guarded::new(
            Store::Dyn(Arc::new(LostReply::default())),
            Retry::new(),
            CircuitBreaker::new(),
        );
        let create = |marker: &str| Write::Create {
            key: "session:k".to_owned(),
            fields: vec![(CREATED.to_owned(), marker.as_bytes().to_vec())],
            ttl: Duration::from_secs(60),
        };
        let budget = Budget::new(Duration::from_secs(5));
        let outcome = run_now(store.write(&create("1700000000000.0123456789abcdef"), &budget));
        assert_eq!(outcome.unwrap(), Outcome::Applied);
        // Another create of the same key (another marker) is refused, as it must be.
        let outcome = run_now(store.write(&create("1700000000000.fedcba9876543210"), &budget));
        assert_eq!(outcome.unwrap(), Outcome::Refused);
    }

    #[test]
    fn a_disabled_breaker_counts_but_never_opens() {
        let breaker = Breaker::new(CircuitBreaker::disabled());
        for _ in 0..100 {
            down(&breaker);
        }
        assert_eq!(breaker.health().state(), BreakerState::Closed);
        assert_eq!(breaker.health().consecutive_failures(), 100);
    }
}
