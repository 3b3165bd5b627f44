//! Where sessions live: Redis (default), memory, files, the cookie itself, or a store of
//! your own.
//!
//! Server-side stores keep one *record* per session, a map of field name to bytes, under a
//! storage key that the middleware derives from the session id (a hash: never the id
//! itself). They implement [`SessionStore`]: load (moving the expiry), a field-level update
//! of an existing record, create only if absent, delete. The session logic on top (ids,
//! cookies, what to write when) is the same for every store, so an application behaves alike
//! on all of them.
//!
//! - Redis (the default, [`RedisSession::new`](crate::RedisSession::new)): batched, one round
//!   trip per operation, two transports.
//! - [`MemoryStore`]: this process's memory, for development and tests.
//! - [`FileStore`]: one file per session in a directory, for single-machine deployments
//!   without Redis.
//! - [`CookieStore`]: no server state at all; the whole session sealed in the cookie.
//! - Your own: implement [`SessionStore`] and pass it to
//!   [`RedisSession::builder_with`](crate::RedisSession::builder_with).

pub(crate) mod batch;
mod cache;
mod cache_map;
// Compiled without the `cluster` feature too (it needs no dependency of its own), so that
// the store's code has one shape; only `builder_cluster` is behind the feature.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) mod cluster;
pub(crate) mod commands;
pub(crate) mod cookie;
pub(crate) mod file;
pub(crate) mod memory;
pub(crate) mod multiplexed;
pub(crate) mod redis;
mod resilience;
mod tls;

use std::{any::Any, collections::HashMap, future::Future, pin::Pin, sync::Arc, time::Duration};

use self::batch::Sender as _;
pub(crate) use self::{
    cache::{Cache, Source},
    cluster::ClusterStore,
    multiplexed::MultiplexedStore,
    redis::RedisStore,
    resilience::{Budget, Guarded},
};
pub use self::{
    cache::{CacheStats, LocalCache},
    cookie::CookieStore,
    file::FileStore,
    memory::MemoryStore,
    resilience::{BreakerState, CircuitBreaker, Retry, StoreHealth},
    tls::RedisTls,
};
pub use crate::error::{StoreError, StoreErrorKind};

/// A session record as stored: field name to value bytes.
///
/// Field names are short ASCII strings (values: `d:<key>`, `t:<type key>`; flash messages
/// `f:<order>`; metadata `m:<name>`); values are opaque bytes. A store keeps them as it got
/// them.
pub type Record = HashMap<String, Vec<u8>>;

/// Internal name of [`Record`].
pub(crate) type Fields = Record;

/// Whether a field holds metadata (its name starts with `m:`: the creation time, the last
/// touch) rather than data. A record with nothing but metadata holds no session data, which
/// is what [`SessionStore::empty`] checks.
pub fn is_metadata(field: &str) -> bool {
    !crate::record::is_data(field)
}

/// What [`SessionStore::empty`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emptied {
    /// No data field was left: the record was deleted.
    Deleted,
    /// A data field was left (a concurrent request added one): the record was kept, its
    /// expiry moved.
    Kept,
    /// There was no record.
    Missing,
}

/// A server-side session store, at the record level: implement it to keep sessions in a
/// database of your own, then pass it to
/// [`RedisSession::builder_with`](crate::RedisSession::builder_with).
///
/// Every method gets the storage key (`key_prefix` + the hex SHA-256 of the session id: safe
/// to log, never the id itself) and works on one record. The contract:
///
/// - **Expiry.** Every record has a time to live. A record past it is gone: `load` does not
///   return it, `update` does not revive it. Sweeping expired records out is up to the store
///   (a TTL index, a periodic job); the middleware never relies on it for correctness.
/// - **Field-level changes.** `update` sets and removes the named fields and leaves the
///   others alone, so that two concurrent requests of one client that change different
///   values both keep their change. An `update` of a record that does not exist does nothing
///   and answers `false`; it never creates one.
/// - **Create only if absent.** `create` stores a new record only if the key is free, and
///   says which happened. The middleware draws a fresh id when a key is taken.
/// - **Errors** are [`StoreError`]s: a [kind](StoreErrorKind) plus your own error as source.
///   The middleware answers them with `503` (or a degraded session, by the
///   [`OnStoreError`](crate::OnStoreError) policy) and logs them. Say `Unavailable` or
///   `Timeout` when trying again may help: those are retried
///   ([`Retry`]) and counted by the [`CircuitBreaker`]; `Full` and `Backend` are not. Every
///   method may be called again after a failure whose effect is unknown (the retry), so keep
///   them idempotent, as the contract above makes them.
///
/// The futures need not be `Send`: they run on the actix worker that serves the request.
/// Blocking work (a synchronous client, file I/O) belongs in
/// [`actix_web::web::block`]. [`MemoryStore`] and [`FileStore`] implement this trait the way
/// yours would; the Redis store does too.
///
/// # Examples
///
/// A store over a map in memory (a real one would talk to a database):
///
/// ```
/// use std::{collections::HashMap, sync::Mutex, time::{Duration, Instant}};
///
/// use actix_redis_session::{
///     store::{Record, SessionStore},
///     Key, RedisSession, StoreError,
/// };
///
/// #[derive(Default)]
/// struct MapStore {
///     records: Mutex<HashMap<String, (Record, Instant)>>,
/// }
///
/// impl MapStore {
///     /// The live record under `key`; an expired one is removed.
///     fn live<'a>(
///         map: &'a mut HashMap<String, (Record, Instant)>,
///         key: &str,
///     ) -> Option<&'a mut (Record, Instant)> {
///         if map.get(key).is_some_and(|(_, expires)| *expires <= Instant::now()) {
///             map.remove(key);
///         }
///         map.get_mut(key)
///     }
/// }
///
/// impl SessionStore for MapStore {
///     async fn load(&self, key: &str, ttl: Option<Duration>) -> Result<Option<Record>, StoreError> {
///         let mut map = self.records.lock().unwrap();
///         Ok(Self::live(&mut map, key).map(|(record, expires)| {
///             if let Some(ttl) = ttl {
///                 *expires = Instant::now() + ttl;
///             }
///             record.clone()
///         }))
///     }
///
///     async fn update(
///         &self,
///         key: &str,
///         set: &[(String, Vec<u8>)],
///         remove: &[String],
///         ttl: Duration,
///     ) -> Result<bool, StoreError> {
///         let mut map = self.records.lock().unwrap();
///         let Some((record, expires)) = Self::live(&mut map, key) else {
///             return Ok(false);
///         };
///         record.extend(set.iter().cloned());
///         for name in remove {
///             record.remove(name);
///         }
///         *expires = Instant::now() + ttl;
///         Ok(true)
///     }
///
///     async fn create(
///         &self,
///         key: &str,
///         fields: &[(String, Vec<u8>)],
///         ttl: Duration,
///     ) -> Result<bool, StoreError> {
///         let mut map = self.records.lock().unwrap();
///         if Self::live(&mut map, key).is_some() {
///             return Ok(false);
///         }
///         let record = fields.iter().cloned().collect();
///         map.insert(key.to_owned(), (record, Instant::now() + ttl));
///         Ok(true)
///     }
///
///     async fn delete(&self, key: &str) -> Result<bool, StoreError> {
///         let mut map = self.records.lock().unwrap();
///         Ok(Self::live(&mut map, key).is_some() && map.remove(key).is_some())
///     }
/// }
///
/// let sessions = RedisSession::builder_with(MapStore::default(), Key::generate()).build()?;
/// # drop(sessions);
/// # Ok::<(), actix_redis_session::ConfigError>(())
/// ```
pub trait SessionStore: Send + Sync + 'static {
    /// The record under `key`, or `None` if there is none (or it expired). With `ttl`, the
    /// record's expiry moves to now + `ttl` in the same operation (the sliding idle timeout);
    /// with `None` it stays.
    fn load(
        &self,
        key: &str,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>>;

    /// Sets the fields in `set` (name, value), removes those in `remove`, leaves the others,
    /// and moves the expiry to now + `ttl`, all only if the record exists: `true` when it
    /// did, `false` (and nothing written) when it did not.
    fn update(
        &self,
        key: &str,
        set: &[(String, Vec<u8>)],
        remove: &[String],
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>>;

    /// Stores a new record of `fields` that expires after `ttl`, only if `key` is free:
    /// `true` when created, `false` when the key was taken (nothing written).
    fn create(
        &self,
        key: &str,
        fields: &[(String, Vec<u8>)],
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>>;

    /// Deletes the record: `true` if there was one.
    fn delete(&self, key: &str) -> impl Future<Output = Result<bool, StoreError>>;

    /// Moves the expiry of the record to now + `ttl`, changing nothing else: `true` if there
    /// was one. The default calls [`update`](SessionStore::update) with nothing to set.
    fn touch(&self, key: &str, ttl: Duration) -> impl Future<Output = Result<bool, StoreError>> {
        self.update(key, &[], &[], ttl)
    }

    /// Removes the fields in `remove`, then deletes the record if no data field is left
    /// (only [metadata](is_metadata)); otherwise moves its expiry to now + `ttl`. A request
    /// that emptied its session calls it: a concurrent request of the same client may have
    /// added a value meanwhile, which must not be lost with the record.
    ///
    /// The default does it in three steps ([`update`](SessionStore::update),
    /// [`load`](SessionStore::load), [`delete`](SessionStore::delete)), which leaves a
    /// window in which a value added between the load and the delete is lost. A store that
    /// can do it in one step (a transaction, a lock, a script) should override it, as
    /// [`MemoryStore`], [`FileStore`] and the Redis store do.
    fn empty(
        &self,
        key: &str,
        remove: &[String],
        ttl: Duration,
    ) -> impl Future<Output = Result<Emptied, StoreError>> {
        async move {
            if !self.update(key, &[], remove, ttl).await? {
                return Ok(Emptied::Missing);
            }
            match self.load(key, None).await? {
                None => Ok(Emptied::Missing),
                Some(record) if record.keys().any(|name| !is_metadata(name)) => Ok(Emptied::Kept),
                Some(_) => Ok(if self.delete(key).await? {
                    Emptied::Deleted
                } else {
                    Emptied::Missing
                }),
            }
        }
    }
}

/// What [`RedisSession::builder_with`](crate::RedisSession::builder_with) accepts: every
/// [`SessionStore`] (yours, [`MemoryStore`], [`FileStore`]) and the [`CookieStore`].
pub trait IntoStore: Sized {
    /// The store, ready for the middleware.
    #[doc(hidden)]
    fn into_store(self) -> StoreChoice;
}

/// A store ready for the middleware; what [`IntoStore`] makes. Opaque.
#[doc(hidden)]
pub struct StoreChoice(pub(crate) Choice);

pub(crate) enum Choice {
    Server(Store),
    Cookie(CookieStore),
}

impl<S: SessionStore> IntoStore for S {
    fn into_store(self) -> StoreChoice {
        // The memory and file stores are ours: called directly rather than through the
        // trait object, and known to the session administration.
        let any: Box<dyn Any> = Box::new(self);
        let store = match any.downcast::<MemoryStore>() {
            Ok(memory) => Store::Memory(*memory),
            Err(any) => match any.downcast::<FileStore>() {
                Ok(file) => Store::File(*file),
                Err(any) => {
                    let store = any.downcast::<S>().expect("the type it was made from");
                    Store::Dyn(Arc::new(*store))
                }
            },
        };
        StoreChoice(Choice::Server(store))
    }
}

impl IntoStore for CookieStore {
    fn into_store(self) -> StoreChoice {
        StoreChoice(Choice::Cookie(self))
    }
}

type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// [`SessionStore`] as a trait object: boxed futures.
pub(crate) trait DynStore: Send + Sync {
    fn load<'a>(
        &'a self,
        key: &'a str,
        ttl: Option<Duration>,
    ) -> LocalBoxFuture<'a, Result<Option<Fields>, StoreError>>;

    fn write<'a>(&'a self, write: &'a Write) -> LocalBoxFuture<'a, Result<Outcome, StoreError>>;
}

impl<S: SessionStore> DynStore for S {
    fn load<'a>(
        &'a self,
        key: &'a str,
        ttl: Option<Duration>,
    ) -> LocalBoxFuture<'a, Result<Option<Fields>, StoreError>> {
        Box::pin(SessionStore::load(self, key, ttl))
    }

    fn write<'a>(&'a self, write: &'a Write) -> LocalBoxFuture<'a, Result<Outcome, StoreError>> {
        Box::pin(write_through(self, write))
    }
}

/// Carries out `write` with the operations of the [`SessionStore`] trait.
async fn write_through<S: SessionStore + ?Sized>(
    store: &S,
    write: &Write,
) -> Result<Outcome, StoreError> {
    let applied = |done: bool| {
        if done {
            Outcome::Applied
        } else {
            Outcome::Gone
        }
    };
    Ok(match write {
        Write::Update { key, set, del, ttl } if set.is_empty() && del.is_empty() => {
            applied(store.touch(key, *ttl).await?)
        }
        Write::Update { key, set, del, ttl } => applied(store.update(key, set, del, *ttl).await?),
        Write::Create { key, fields, ttl } => {
            if store.create(key, fields, *ttl).await? {
                Outcome::Applied
            } else {
                Outcome::Refused
            }
        }
        Write::Empty { key, del, ttl } => match store.empty(key, del, *ttl).await? {
            Emptied::Deleted => Outcome::Applied,
            Emptied::Kept => Outcome::Refused,
            Emptied::Missing => Outcome::Gone,
        },
        Write::Delete { key } => applied(store.delete(key).await?),
    })
}

/// Our stores as the middleware calls them: a load, and any [`Write`] in one call. The
/// public trait's operations for them are written once on top of it.
trait Apply {
    async fn fetch(&self, key: &str, ttl: Option<Duration>) -> Result<Option<Fields>, StoreError>;
    async fn apply(&self, write: &Write) -> Result<Outcome, StoreError>;
}

impl Apply for RedisStore {
    async fn fetch(&self, key: &str, ttl: Option<Duration>) -> Result<Option<Fields>, StoreError> {
        batch::Sender::load(self, key, ttl).await
    }

    async fn apply(&self, write: &Write) -> Result<Outcome, StoreError> {
        batch::Sender::write(self, write).await
    }
}

impl Apply for MultiplexedStore {
    async fn fetch(&self, key: &str, ttl: Option<Duration>) -> Result<Option<Fields>, StoreError> {
        batch::Sender::load(self, key, ttl).await
    }

    async fn apply(&self, write: &Write) -> Result<Outcome, StoreError> {
        batch::Sender::write(self, write).await
    }
}

impl Apply for MemoryStore {
    async fn fetch(&self, key: &str, ttl: Option<Duration>) -> Result<Option<Fields>, StoreError> {
        Ok(self.load_now(key, ttl))
    }

    async fn apply(&self, write: &Write) -> Result<Outcome, StoreError> {
        Ok(self.write_now(write))
    }
}

/// [`SessionStore`] for our own stores, through [`Apply`].
macro_rules! session_store_through_apply {
    ($($store:ty),*) => {$(
        impl SessionStore for $store {
            async fn load(
                &self,
                key: &str,
                ttl: Option<Duration>,
            ) -> Result<Option<Record>, StoreError> {
                self.fetch(key, ttl).await
            }

            async fn update(
                &self,
                key: &str,
                set: &[(String, Vec<u8>)],
                remove: &[String],
                ttl: Duration,
            ) -> Result<bool, StoreError> {
                applied(self.apply(&Write::update(key, set, remove, ttl)).await?)
            }

            async fn create(
                &self,
                key: &str,
                fields: &[(String, Vec<u8>)],
                ttl: Duration,
            ) -> Result<bool, StoreError> {
                applied(self.apply(&Write::create(key, fields, ttl)).await?)
            }

            async fn delete(&self, key: &str) -> Result<bool, StoreError> {
                applied(self.apply(&Write::delete(key)).await?)
            }

            async fn empty(
                &self,
                key: &str,
                remove: &[String],
                ttl: Duration,
            ) -> Result<Emptied, StoreError> {
                Ok(emptied(self.apply(&Write::empty(key, remove, ttl)).await?))
            }
        }
    )*};
}

session_store_through_apply!(RedisStore, MultiplexedStore, MemoryStore);

/// The answer of the trait's `update`, `create` and `delete` to a write's outcome.
fn applied(outcome: Outcome) -> Result<bool, StoreError> {
    Ok(outcome == Outcome::Applied)
}

fn emptied(outcome: Outcome) -> Emptied {
    match outcome {
        Outcome::Applied => Emptied::Deleted,
        Outcome::Refused => Emptied::Kept,
        Outcome::Gone => Emptied::Missing,
    }
}

/// One write, applied in one round trip.
#[derive(Clone, Debug)]
pub(crate) enum Write {
    /// Field-level change of an existing record. The answer says whether it was there; if
    /// not, the write may have left a remnant without a creation marker (never adopted, with
    /// the TTL), which the caller should delete.
    Update {
        key: String,
        set: Vec<(String, Vec<u8>)>,
        del: Vec<String>,
        ttl: Duration,
    },
    /// A new record, only if the key is free. `fields` holds the creation marker
    /// ([`CREATED`](crate::record::CREATED)): a retried create that finds the record its first
    /// attempt wrote (same marker) counts as created.
    Create {
        key: String,
        fields: Vec<(String, Vec<u8>)>,
        ttl: Duration,
    },
    /// Removal of the fields `del`, then of the whole record if no data field is left (a
    /// concurrent request may have added one); otherwise the TTL moves to `ttl`.
    Empty {
        key: String,
        del: Vec<String>,
        ttl: Duration,
    },
    /// Removal of a record.
    Delete { key: String },
}

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Done: updated, created, emptied and deleted, deleted.
    Applied,
    /// Left undone on purpose: a create whose key is taken, an empty whose record a
    /// concurrent request gave data again (kept, its TTL moved).
    Refused,
    /// The record was not there: ended while the request ran (a logout, a deletion, the
    /// expiry), or by an earlier attempt of this very write.
    Gone,
}

impl Write {
    /// The key the write touches (its only one).
    pub(crate) fn key(&self) -> &str {
        match self {
            Write::Update { key, .. }
            | Write::Create { key, .. }
            | Write::Empty { key, .. }
            | Write::Delete { key } => key,
        }
    }

    fn update(key: &str, set: &[(String, Vec<u8>)], del: &[String], ttl: Duration) -> Write {
        Write::Update {
            key: key.to_owned(),
            set: set.to_vec(),
            del: del.to_vec(),
            ttl,
        }
    }

    fn create(key: &str, fields: &[(String, Vec<u8>)], ttl: Duration) -> Write {
        Write::Create {
            key: key.to_owned(),
            fields: fields.to_vec(),
            ttl,
        }
    }

    fn delete(key: &str) -> Write {
        Write::Delete {
            key: key.to_owned(),
        }
    }

    fn empty(key: &str, del: &[String], ttl: Duration) -> Write {
        Write::Empty {
            key: key.to_owned(),
            del: del.to_vec(),
            ttl,
        }
    }
}

/// The configured server-side store. Ours are called directly (the Redis transports keep
/// their batching); any other [`SessionStore`] through a trait object.
#[derive(Clone)]
pub(crate) enum Store {
    Redis(RedisStore),
    Multiplexed(MultiplexedStore),
    /// Redis Cluster, over either transport.
    Cluster(ClusterStore),
    Memory(MemoryStore),
    File(FileStore),
    Dyn(Arc<dyn DynStore>),
}

impl Store {
    /// The record under `key`, if any, with its TTL moved to `ttl` (if given).
    pub(crate) async fn load(
        &self,
        key: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<Fields>, StoreError> {
        match self {
            Store::Redis(s) => batch::Sender::load(s, key, ttl).await,
            Store::Multiplexed(s) => batch::Sender::load(s, key, ttl).await,
            Store::Cluster(s) => batch::Sender::load(s, key, ttl).await,
            Store::Memory(s) => Ok(s.load_now(key, ttl)),
            Store::File(s) => SessionStore::load(s, key, ttl).await,
            Store::Dyn(s) => s.load(key, ttl).await,
        }
    }

    /// Applies `write` without waiting for the answer (which only a log could use).
    pub(crate) fn write_detached(&self, write: &Write) {
        match self {
            Store::Redis(s) => s.write_detached(write),
            Store::Multiplexed(s) => s.write_detached(write),
            Store::Cluster(s) => s.write_detached(write),
            Store::Memory(s) => {
                s.write_now(write);
            }
            Store::File(s) => {
                let (store, write) = (s.clone(), write.clone());
                actix_web::rt::spawn(async move {
                    if let Err(e) = write_through(&store, &write).await {
                        tracing::warn!(error = %e, "session store write failed");
                    }
                });
            }
            Store::Dyn(s) => {
                let (store, write) = (Arc::clone(s), write.clone());
                actix_web::rt::spawn(async move {
                    if let Err(e) = store.write(&write).await {
                        tracing::warn!(error = %e, "session store write failed");
                    }
                });
            }
        }
    }

    /// The replies to the commands `build` makes (on `key` alone), sent with the next batch:
    /// Redis only (others answer [`StoreErrorKind::Unsupported`]).
    pub(crate) async fn query(
        &self,
        key: &str,
        build: impl Fn(&mut ::redis::Pipeline),
    ) -> Result<Vec<::redis::Value>, StoreError> {
        match self {
            Store::Redis(s) => batch::Sender::query(s, key, build).await,
            Store::Multiplexed(s) => batch::Sender::query(s, key, build).await,
            Store::Cluster(s) => batch::Sender::query(s, key, build).await,
            _ => Err(StoreErrorKind::Unsupported.into()),
        }
    }

    /// Applies `write`; see [`Outcome`] for what each write answers.
    pub(crate) async fn write(&self, write: &Write) -> Result<Outcome, StoreError> {
        match self {
            Store::Redis(s) => batch::Sender::write(s, write).await,
            Store::Multiplexed(s) => batch::Sender::write(s, write).await,
            Store::Cluster(s) => batch::Sender::write(s, write).await,
            Store::Memory(s) => Ok(s.write_now(write)),
            Store::File(s) => write_through(s, write).await,
            Store::Dyn(s) => s.write(write).await,
        }
    }

    /// The store as one actix worker uses it: the multiplexed transport gets a connection
    /// of its own per worker; the others are shared.
    pub(crate) fn for_worker(&self) -> Store {
        match self {
            Store::Multiplexed(s) => Store::Multiplexed(s.for_worker()),
            Store::Cluster(s) => Store::Cluster(s.for_worker()),
            other => other.clone(),
        }
    }
}
