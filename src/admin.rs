//! Session administration ([`SessionAdmin`], from
//! [`RedisSession::admin`](crate::RedisSession::admin)): count, list, read and end the
//! sessions of a store, other users' included, from a handler or a background task.
//!
//! Listing (`count`, `iter`, `all`, `destroy_all`) is a capability of the stores that can do
//! it: Redis (both transports, with `SCAN`), the memory store and the file store; a store of
//! your own ([`SessionStore`](crate::store::SessionStore)) answers
//! [`StoreErrorKind::Unsupported`] there. Everything that names a session or a user (`get`,
//! `destroy`, `sessions_of`, `sign_out_user`) works on every server-side store: the per-user
//! index is a record of the store itself. The cookie store has no server state: all
//! answer `Unsupported`.
//!
//! The per-user index: [`Session::set_user`](crate::Session::set_user) puts the session's
//! handle into `{key_prefix}user:{hex SHA-256 of the user}`, a record whose fields are
//! `h:<handle>`, no later than the session is stored under that user (a new session's
//! entry goes in the same batch as the session, whose cookie is set only if both were
//! stored), so that "sign out everywhere" never misses a session. A renew moves it to the
//! new handle, a logout takes it out, and entries of sessions that ended otherwise (expiry,
//! an admin) are pruned when the index is read. The index lives as long as the longest
//! session can (the idle timeout, or `remember_max`), from its last change. A login from a
//! new device usually costs no round trip more (at most one); a user's first login two, a renew or a logout of a
//! signed-in session one; no other request pays anything.

use std::{
    collections::VecDeque,
    fs,
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures_util::stream::{self, Stream};
use redis::Value;
use serde::de::DeserializeOwned;

use crate::{
    config::SessionConfig,
    cookie::Handle,
    error::{SessionError, StoreError, StoreErrorKind},
    record::{self, AGENT, CREATED, DATA_PREFIX, NETWORK, TOUCHED, USER},
    store::{ClusterStore, FileStore, MultiplexedStore, RedisStore},
    store::{Fields, MemoryStore, Outcome, Store, Write},
};

/// Keys per `SCAN` step, hence per batch of metadata reads and of `UNLINK`s, by default.
pub const DEFAULT_SCAN_COUNT: usize = 1000;

/// Administration of the sessions of one [`RedisSession`](crate::RedisSession): from
/// [`RedisSession::admin`](crate::RedisSession::admin). Cheap to clone.
///
/// Every method is async and works on the store directly, outside any request: the pool
/// transport runs its calls on actix's blocking thread pool, the multiplexed transport on a
/// connection of its own. Nothing here is retried or held back by the circuit breaker;
/// errors come back as they are.
///
/// Sessions are named by their [`Handle`] (the hex SHA-256 of the secret id): safe to show
/// in an admin page or a device list, useless as a cookie.
///
/// # Examples
///
/// An operator endpoint that counts the sessions and ends one:
///
/// ```
/// use actix_redis_session::{Key, RedisSession, SessionAdmin};
/// use actix_web::{web, App, HttpResponse};
///
/// async fn count(admin: web::Data<SessionAdmin>) -> actix_web::Result<HttpResponse> {
///     let sessions = admin.count().await.map_err(actix_web::error::ErrorServiceUnavailable)?;
///     Ok(HttpResponse::Ok().body(format!("{sessions} sessions")))
/// }
///
/// let sessions = RedisSession::memory(Key::generate());
/// let admin = sessions.admin();
/// let app = App::new()
///     .wrap(sessions)
///     .app_data(web::Data::new(admin))
///     .route("/admin/count", web::get().to(count));
/// # drop(app);
/// ```
#[derive(Clone)]
pub struct SessionAdmin {
    inner: Arc<Inner>,
}

struct Inner {
    store: Lister,
    config: Arc<SessionConfig>,
    scan_count: usize,
    /// The middleware's local cache: what this administration deletes leaves it at once
    /// (the other processes' caches hear it from Redis).
    cache: Option<crate::store::Cache>,
}

/// The store as the administration sees it.
#[derive(Clone)]
pub(crate) enum Lister {
    Redis(RedisStore),
    Multiplexed(MultiplexedStore),
    /// A Redis Cluster: listings go through every master in turn.
    Cluster(ClusterStore),
    Memory(MemoryStore),
    File(FileStore),
    /// A store of the application's: it can delete, not list.
    Other(Store),
    /// The cookie store: no server state at all.
    None,
}

impl Lister {
    /// The administration's view of a middleware's store (the multiplexed transport gets a
    /// connection of its own).
    pub(crate) fn of(store: Option<&Store>) -> Lister {
        match store {
            Some(Store::Redis(s)) => Lister::Redis(s.clone()),
            Some(Store::Multiplexed(s)) => Lister::Multiplexed(s.for_worker()),
            Some(Store::Cluster(s)) => Lister::Cluster(s.for_worker()),
            Some(Store::Memory(s)) => Lister::Memory(s.clone()),
            Some(Store::File(s)) => Lister::File(s.clone()),
            Some(store) => Lister::Other(store.clone()),
            None => Lister::None,
        }
    }
}

/// One session as a listing shows it: its handle and metadata, no values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    handle: Handle,
    created: Option<SystemTime>,
    touched: Option<SystemTime>,
    expires: Option<SystemTime>,
    user: Option<String>,
    user_agent: Option<String>,
    network: Option<String>,
}

impl SessionInfo {
    /// The session's public name.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// When the session was created.
    pub fn created(&self) -> Option<SystemTime> {
        self.created
    }

    /// When its idle timeout last moved, if the middleware records it (with
    /// [`touch_after`](crate::RedisSessionBuilder::touch_after)).
    pub fn touched(&self) -> Option<SystemTime> {
        self.touched
    }

    /// When it expires unless it is used before: the store's time to live (`None` for a
    /// store of your own, which does not say).
    pub fn expires(&self) -> Option<SystemTime> {
        self.expires
    }

    /// Whose session it is ([`Session::set_user`](crate::Session::set_user)).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The User-Agent of the device it was signed in from (its first 256 bytes), recorded
    /// by [`Session::set_user`](crate::Session::set_user). Sent by the client: show it,
    /// never trust it.
    pub fn user_agent(&self) -> Option<&str> {
        self.user_agent.as_deref()
    }

    /// The network it was signed in from, `203.0.113.0/24` or `2001:db8::/64`, recorded by
    /// [`Session::set_user`](crate::Session::set_user) (through the trusted proxies of
    /// [`bind_to_ip`](crate::RedisSessionBuilder::bind_to_ip), if set).
    pub fn network(&self) -> Option<&str> {
        self.network.as_deref()
    }
}

/// One session read in full ([`SessionAdmin::get`]): its metadata and its values, decoded as
/// [`Session::get`](crate::Session::get) decodes them. Reading it does not move its expiry.
#[derive(Clone, Debug)]
pub struct SessionView {
    info: SessionInfo,
    fields: Fields,
    codecs: crate::codec::Codecs,
}

impl SessionView {
    /// Its handle and metadata.
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// The value under `key`, as [`Session::get`](crate::Session::get) reads it.
    ///
    /// # Errors
    ///
    /// [`SessionError::Deserialize`] when the stored value is not a `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let Some(raw) = self.fields.get(&format!("{DATA_PREFIX}{key}")) else {
            return Ok(None);
        };
        self.codecs
            .decode(raw)
            .map(Some)
            .map_err(|e| crate::session::decode_error(key, e))
    }

    /// The keys of its values, sorted.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self
            .fields
            .keys()
            .filter_map(|name| name.strip_prefix(DATA_PREFIX))
            .collect();
        keys.sort_unstable();
        keys
    }
}

/// Where a listing stands.
enum Cursor {
    Start,
    Redis(u64),
    /// The masters of a cluster (node indices), the one being scanned, its `SCAN` cursor.
    Cluster(Vec<usize>, usize, u64),
    Memory(std::vec::IntoIter<String>),
    File(fs::ReadDir),
    Done,
}

impl Cursor {
    /// The `SCAN` cursor to go on from (0 to start).
    fn scan_at(&self) -> u64 {
        match self {
            Cursor::Redis(at) => *at,
            _ => 0,
        }
    }
}

impl SessionAdmin {
    pub(crate) fn new(
        store: Lister,
        config: Arc<SessionConfig>,
        cache: Option<crate::store::Cache>,
    ) -> SessionAdmin {
        SessionAdmin {
            inner: Arc::new(Inner {
                store,
                config,
                scan_count: DEFAULT_SCAN_COUNT,
                cache,
            }),
        }
    }

    /// Drops `key` from this process's local cache, if there is one.
    fn forget(&self, key: &str) {
        if let Some(cache) = &self.inner.cache {
            cache.forget_key(key);
        }
    }

    /// This administration with `count` keys per `SCAN` step (and per batch of metadata
    /// reads and deletes): from 1 to 100,000. Default: [`DEFAULT_SCAN_COUNT`] (1000). Larger
    /// steps take fewer round trips and hold Redis a little longer each.
    pub fn scan_count(self, count: usize) -> SessionAdmin {
        let inner = &self.inner;
        SessionAdmin {
            inner: Arc::new(Inner {
                store: inner.store.clone(),
                config: Arc::clone(&inner.config),
                scan_count: count.clamp(1, 100_000),
                cache: inner.cache.clone(),
            }),
        }
    }

    fn prefix(&self) -> &str {
        &self.inner.config.key_prefix
    }

    /// The handle of a storage key, if it names a session (prefix + 64 lowercase hex).
    fn handle_of(&self, key: &str) -> Option<Handle> {
        Handle::parse(key.strip_prefix(self.prefix())?)
    }

    fn key_of(&self, handle: &Handle) -> String {
        format!("{}{}", self.prefix(), handle.as_str())
    }

    /// How many sessions the store holds (a full listing: `SCAN` on Redis, at constant
    /// memory). An estimate while sessions come and go, as with [`iter`](Self::iter): one
    /// created or ended meanwhile may count or not, and one that Redis moves while it grows
    /// its key table during the scan may count twice (`SCAN` keeps no memory of what it
    /// returned, and neither does this count).
    ///
    /// # Errors
    ///
    /// A [`StoreError`]; [`StoreErrorKind::Unsupported`] for a store that cannot list.
    pub async fn count(&self) -> Result<u64, StoreError> {
        let mut cursor = Cursor::Start;
        let mut count = 0u64;
        while !matches!(cursor, Cursor::Done) {
            let (keys, next) = self.page(cursor).await?;
            count += keys.len() as u64;
            cursor = next;
        }
        Ok(count)
    }

    /// Every session, as a stream of [`SessionInfo`]s (handle and metadata), read a step of
    /// [`scan_count`](Self::scan_count) keys at a time: memory stays constant whatever the
    /// number of sessions (on Redis `SCAN`, never `KEYS`). As with `SCAN`, a session created
    /// or ended while the listing runs may be in it or not, and one that lives through it is
    /// in it at least once.
    ///
    /// # Examples
    ///
    /// ```
    /// use actix_redis_session::{Key, RedisSession};
    /// use futures_util::TryStreamExt as _;
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let admin = RedisSession::memory(Key::generate()).admin();
    /// let mut sessions = std::pin::pin!(admin.iter());
    /// while let Some(info) = sessions.try_next().await? {
    ///     println!("{} created {:?}", info.handle(), info.created());
    /// }
    /// # Ok::<(), actix_redis_session::StoreError>(())
    /// # }).unwrap();
    /// ```
    pub fn iter(&self) -> impl Stream<Item = Result<SessionInfo, StoreError>> + '_ {
        let start = (Cursor::Start, VecDeque::new());
        stream::unfold(start, move |(mut cursor, mut ready)| async move {
            loop {
                if let Some(info) = ready.pop_front() {
                    return Some((Ok(info), (cursor, ready)));
                }
                if matches!(cursor, Cursor::Done) {
                    return None;
                }
                let step = async {
                    let (keys, next) = self.page(cursor).await?;
                    Ok::<_, StoreError>((self.infos(keys).await?, next))
                };
                match step.await {
                    Ok((infos, next)) => {
                        ready.extend(infos);
                        cursor = next;
                    }
                    Err(e) => return Some((Err(e), (Cursor::Done, VecDeque::new()))),
                }
            }
        })
    }

    /// Every session in one `Vec`: [`iter`](Self::iter) collected. Holds them all in memory
    /// at once; for large stores use `iter`.
    ///
    /// # Errors
    ///
    /// As [`iter`](Self::iter).
    pub async fn all(&self) -> Result<Vec<SessionInfo>, StoreError> {
        use futures_util::TryStreamExt as _;
        self.iter().try_collect().await
    }

    /// The session named `handle`, read in full without moving its expiry; `None` if there
    /// is none (or it expired).
    ///
    /// # Errors
    ///
    /// A [`StoreError`]; [`StoreErrorKind::Unsupported`] for the cookie store.
    pub async fn get(&self, handle: &Handle) -> Result<Option<SessionView>, StoreError> {
        let key = self.key_of(handle);
        let found = match &self.inner.store {
            Lister::Redis(s) => redis_get(s, &key).await?,
            Lister::Multiplexed(s) => redis_get(s, &key).await?,
            Lister::Cluster(s) => redis_get(s, &key).await?,
            Lister::Memory(s) => s.peek(&key).map(|(fields, left)| (fields, Some(left))),
            Lister::File(s) => s
                .peek(&key)
                .await?
                .map(|(fields, left)| (fields, Some(left))),
            Lister::Other(s) => s.load(&key, None).await?.map(|fields| (fields, None)),
            Lister::None => return Err(unsupported()),
        };
        let Some((mut fields, left)) = found else {
            return Ok(None);
        };
        // Not a session (a remnant without its creation marker): none.
        let Some(info) = self.info(&key, &fields, left.map(|left| SystemTime::now() + left)) else {
            return Ok(None);
        };
        let mut failed = Vec::new();
        self.inner
            .config
            .at_rest
            .open_record(&key, &mut fields, &mut failed);
        Ok(Some(SessionView {
            info,
            fields,
            codecs: self.inner.config.codecs.clone(),
        }))
    }

    /// Ends the session named `handle` now: its next request gets a fresh session. `true`
    /// if there was one.
    ///
    /// # Errors
    ///
    /// A [`StoreError`]; [`StoreErrorKind::Unsupported`] for the cookie store.
    pub async fn destroy(&self, handle: &Handle) -> Result<bool, StoreError> {
        let key = self.key_of(handle);
        let deleted = self
            .store()?
            .write(&Write::Delete { key: key.clone() })
            .await;
        self.forget(&key);
        Ok(deleted? == Outcome::Applied)
    }

    /// Ends every session of this middleware (every key under its prefix that names a
    /// session; nothing else is touched, never `FLUSHDB`): returns how many were removed.
    /// On Redis, in steps of [`scan_count`](Self::scan_count) keys, each one `SCAN` and one
    /// `UNLINK` (which frees the memory in the background), so that Redis is never held for
    /// long.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] (the sessions removed before it stay removed);
    /// [`StoreErrorKind::Unsupported`] for a store that cannot list.
    pub async fn destroy_all(&self) -> Result<u64, StoreError> {
        let mut cursor = Cursor::Start;
        let mut removed = 0u64;
        while !matches!(cursor, Cursor::Done) {
            let (keys, next) = self.page(cursor).await?;
            removed += self.remove(keys).await?;
            cursor = next;
        }
        Ok(removed)
    }

    /// The next step of a listing: storage keys of sessions, and where to go on.
    async fn page(&self, cursor: Cursor) -> Result<(Vec<String>, Cursor), StoreError> {
        let count = self.inner.scan_count;
        let (keys, next) = match (&self.inner.store, cursor) {
            (_, Cursor::Done) => return Ok((Vec::new(), Cursor::Done)),
            (Lister::Redis(s), cursor @ (Cursor::Start | Cursor::Redis(_))) => {
                redis_scan(s, cursor.scan_at(), self.prefix(), count).await?
            }
            (Lister::Multiplexed(s), cursor @ (Cursor::Start | Cursor::Redis(_))) => {
                redis_scan(s, cursor.scan_at(), self.prefix(), count).await?
            }
            (Lister::Cluster(s), Cursor::Start) => {
                let masters = s.masters().await?;
                cluster_scan(s, masters, 0, 0, self.prefix(), count).await?
            }
            (Lister::Cluster(s), Cursor::Cluster(masters, at, scan)) => {
                cluster_scan(s, masters, at, scan, self.prefix(), count).await?
            }
            (Lister::Memory(s), Cursor::Start) => {
                let mut keys = s.keys(self.prefix()).into_iter();
                let page: Vec<String> = keys.by_ref().take(count).collect();
                (page, Cursor::Memory(keys))
            }
            (Lister::Memory(_), Cursor::Memory(mut keys)) => {
                let page: Vec<String> = keys.by_ref().take(count).collect();
                (page, Cursor::Memory(keys))
            }
            (Lister::File(s), cursor) => {
                let dir = match cursor {
                    Cursor::File(dir) => Some(dir),
                    _ => None,
                };
                let (keys, dir) = s.keys_page(dir, self.prefix().to_owned(), count).await?;
                (keys, dir.map_or(Cursor::Done, Cursor::File))
            }
            (Lister::Other(_) | Lister::None, _) => return Err(unsupported()),
            (_, _) => return Err(StoreError::from_kind(StoreErrorKind::Other)),
        };
        let next = match next {
            Cursor::Redis(0) => Cursor::Done,
            Cursor::Memory(keys) if keys.as_slice().is_empty() => Cursor::Done,
            other => other,
        };
        let keys = keys
            .into_iter()
            .filter(|key| self.handle_of(key).is_some())
            .collect();
        Ok((keys, next))
    }

    /// The metadata of sessions by storage key; keys that are gone or not sessions are left
    /// out.
    async fn infos(&self, keys: Vec<String>) -> Result<Vec<SessionInfo>, StoreError> {
        if keys.is_empty() {
            // A SCAN step may find nothing (and an empty pipeline is no command).
            return Ok(Vec::new());
        }
        let metas: Vec<Option<(Fields, Option<Duration>)>> = match &self.inner.store {
            Lister::Redis(s) => redis_meta(s, &keys).await?,
            Lister::Multiplexed(s) => redis_meta(s, &keys).await?,
            // One query per key, all in flight at once: each goes to its node, and those of
            // one node share its batches.
            Lister::Cluster(s) => {
                let metas = futures_util::future::try_join_all(
                    keys.iter()
                        .map(|key| redis_meta(s, std::slice::from_ref(key))),
                )
                .await?;
                metas.into_iter().flatten().collect()
            }
            Lister::Memory(s) => keys
                .iter()
                .map(|key| {
                    s.peek(key)
                        .map(|(fields, left)| (meta_of(fields), Some(left)))
                })
                .collect(),
            Lister::File(s) => {
                let mut metas = Vec::with_capacity(keys.len());
                for key in &keys {
                    let found = s.peek(key).await?;
                    metas.push(found.map(|(fields, left)| (meta_of(fields), Some(left))));
                }
                metas
            }
            Lister::Other(s) => {
                let mut metas = Vec::with_capacity(keys.len());
                for key in &keys {
                    metas.push(
                        s.load(key, None)
                            .await?
                            .map(|fields| (meta_of(fields), None)),
                    );
                }
                metas
            }
            Lister::None => return Err(unsupported()),
        };
        let now = SystemTime::now();
        Ok(keys
            .iter()
            .zip(metas)
            .filter_map(|(key, meta)| {
                let (fields, left) = meta?;
                self.info(key, &fields, left.map(|left| now + left))
            })
            .collect())
    }

    /// A session's listing entry from its metadata fields; `None` if it is no session.
    fn info(&self, key: &str, fields: &Fields, expires: Option<SystemTime>) -> Option<SessionInfo> {
        let handle = self.handle_of(key)?;
        let created = fields.get(CREATED).and_then(|m| record::created_ms(m))?;
        let text = |name: &str| {
            fields
                .get(name)
                .and_then(|v| String::from_utf8(v.clone()).ok())
        };
        let user = fields.get(USER).and_then(|raw| {
            let mut raw = raw.clone();
            self.inner.config.at_rest.open(key, USER, &mut raw).ok()?;
            self.inner.config.codecs.decode::<String>(&raw).ok()
        });
        Some(SessionInfo {
            handle,
            created: Some(at_ms(created)),
            touched: fields
                .get(TOUCHED)
                .and_then(|t| record::parse_millis(t))
                .map(at_ms),
            expires,
            user,
            user_agent: text(AGENT),
            network: text(NETWORK),
        })
    }

    /// A record read as it is (no expiry moved): an index, say.
    async fn record(&self, key: &str) -> Result<Option<Fields>, StoreError> {
        Ok(match &self.inner.store {
            Lister::Redis(s) => redis_get(s, key).await?.map(|(fields, _)| fields),
            Lister::Multiplexed(s) => redis_get(s, key).await?.map(|(fields, _)| fields),
            Lister::Cluster(s) => redis_get(s, key).await?.map(|(fields, _)| fields),
            Lister::Memory(s) => s.peek(key).map(|(fields, _)| fields),
            Lister::File(s) => s.peek(key).await?.map(|(fields, _)| fields),
            Lister::Other(s) => s.load(key, None).await?,
            Lister::None => return Err(unsupported()),
        })
    }

    /// The server-side store, to write through.
    fn store(&self) -> Result<Store, StoreError> {
        Ok(match &self.inner.store {
            Lister::Redis(s) => Store::Redis(s.clone()),
            Lister::Multiplexed(s) => Store::Multiplexed(s.clone()),
            Lister::Cluster(s) => Store::Cluster(s.clone()),
            Lister::Memory(s) => Store::Memory(s.clone()),
            Lister::File(s) => Store::File(s.clone()),
            Lister::Other(s) => s.clone(),
            Lister::None => return Err(unsupported()),
        })
    }

    /// The storage keys in `user`'s index, and the index's key.
    async fn indexed(&self, user: &str) -> Result<(String, Vec<String>), StoreError> {
        let index = record::index_key(self.prefix(), user);
        let members = self.record(&index).await?.unwrap_or_default();
        let keys = members
            .into_keys()
            .filter_map(|member| {
                let handle = Handle::parse(member.strip_prefix(record::INDEX_FIELD)?)?;
                Some(self.key_of(&handle))
            })
            .collect();
        Ok((index, keys))
    }

    /// Takes sessions out of an index (which is left to expire if nothing else is in it).
    async fn unindex(&self, index: &str, keys: &[String]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let del = keys
            .iter()
            .filter_map(|key| self.handle_of(key))
            .map(|handle| format!("{}{}", record::INDEX_FIELD, handle.as_str()))
            .collect();
        let write = Write::Update {
            key: index.to_owned(),
            set: Vec::new(),
            del,
            ttl: crate::lifetime::longest(&self.inner.config),
        };
        self.store()?.write(&write).await.map(drop)
    }

    /// The live sessions of `user` ([`Session::set_user`](crate::Session::set_user)), with
    /// their devices: in O(sessions of that user), from the user's index, never a listing of
    /// the store. Sessions that ended or expired since are pruned from the index as they are
    /// met. Sorted by creation, oldest first.
    ///
    /// # Errors
    ///
    /// A [`StoreError`]; [`StoreErrorKind::Unsupported`] for the cookie store.
    ///
    /// # Examples
    ///
    /// A device list:
    ///
    /// ```
    /// use actix_redis_session::{Session, SessionAdmin};
    /// use actix_web::{web, HttpResponse};
    ///
    /// async fn devices(
    ///     session: Session,
    ///     admin: web::Data<SessionAdmin>,
    /// ) -> actix_web::Result<HttpResponse> {
    ///     let Some(user) = session.user() else {
    ///         return Ok(HttpResponse::Unauthorized().finish());
    ///     };
    ///     let this = session.handle();
    ///     let mut page = String::new();
    ///     for device in admin.sessions_of(&user).await.map_err(actix_web::error::ErrorServiceUnavailable)? {
    ///         let here = if *device.handle() == this { " (this device)" } else { "" };
    ///         page += &format!("{}{here}\n", device.user_agent().unwrap_or("unknown device"));
    ///     }
    ///     Ok(HttpResponse::Ok().body(page))
    /// }
    /// ```
    pub async fn sessions_of(&self, user: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let (index, keys) = self.indexed(user).await?;
        let mut live = self.infos(keys.clone()).await?;
        // Gone, expired, or now another user's: out of the index.
        live.retain(|info| info.user.as_deref() == Some(user));
        let stale: Vec<String> = keys
            .into_iter()
            .filter(|key| !live.iter().any(|info| self.key_of(&info.handle) == *key))
            .collect();
        if let Err(e) = self.unindex(&index, &stale).await {
            tracing::warn!(error = %e, "could not prune a user's session index");
        }
        live.sort_by_key(|info| info.created);
        Ok(live)
    }

    /// Ends every session of `user` now ("sign out everywhere"): each one's next request
    /// gets a fresh session. Returns how many were ended. In O(sessions of that user).
    ///
    /// # Errors
    ///
    /// A [`StoreError`] (the sessions ended before it stay ended);
    /// [`StoreErrorKind::Unsupported`] for the cookie store.
    pub async fn sign_out_user(&self, user: &str) -> Result<u64, StoreError> {
        let (index, keys) = self.indexed(user).await?;
        let live = self.infos(keys.clone()).await?;
        let store = self.store()?;
        let mut ended = 0;
        for info in live
            .iter()
            .filter(|info| info.user.as_deref() == Some(user))
        {
            let key = self.key_of(&info.handle);
            let deleted = store.write(&Write::Delete { key: key.clone() }).await;
            self.forget(&key);
            if deleted? == Outcome::Applied {
                ended += 1;
            }
        }
        self.unindex(&index, &keys).await?;
        tracing::info!(sessions = ended, "signed a user out everywhere");
        Ok(ended)
    }

    /// Deletes sessions by storage key; how many there were.
    async fn remove(&self, keys: Vec<String>) -> Result<u64, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let removed = self.remove_now(&keys).await;
        for key in &keys {
            self.forget(key);
        }
        removed
    }

    async fn remove_now(&self, keys: &[String]) -> Result<u64, StoreError> {
        match &self.inner.store {
            Lister::Redis(s) => redis_unlink(s, keys).await,
            Lister::Multiplexed(s) => redis_unlink(s, keys).await,
            // No multi-key command across slots: one UNLINK per key, all in flight at once.
            Lister::Cluster(s) => Ok(futures_util::future::try_join_all(
                keys.iter()
                    .map(|key| redis_unlink(s, std::slice::from_ref(key))),
            )
            .await?
            .into_iter()
            .sum()),
            Lister::Memory(_) | Lister::File(_) => {
                let store = self.store()?;
                let mut removed = 0;
                for key in keys {
                    if store.write(&Write::Delete { key: key.clone() }).await? == Outcome::Applied {
                        removed += 1;
                    }
                }
                Ok(removed)
            }
            Lister::Other(_) | Lister::None => Err(unsupported()),
        }
    }
}

fn unsupported() -> StoreError {
    StoreError::from_kind(StoreErrorKind::Unsupported)
}

fn at_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// `prefix` as a `SCAN MATCH` pattern that matches it literally, followed by `*`.
fn match_pattern(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 8);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    pattern
}

/// One `SCAN` step: the keys it found and the cursor to go on with (`Redis(0)`: done).
async fn redis_scan(
    sender: &impl crate::store::batch::Sender,
    at: u64,
    prefix: &str,
    count: usize,
) -> Result<(Vec<String>, Cursor), StoreError> {
    let pattern = match_pattern(prefix);
    let replies = sender
        .query("", |pipe| {
            pipe.cmd("SCAN")
                .arg(at)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(count);
        })
        .await?;
    let bad = || StoreError::new(StoreErrorKind::Backend, "unexpected SCAN reply");
    let Some(Value::Array(reply)) = replies.into_iter().next() else {
        return Err(bad());
    };
    let mut reply = reply.into_iter();
    let (Some(next), Some(Value::Array(keys))) = (reply.next(), reply.next()) else {
        return Err(bad());
    };
    let next: u64 = match next {
        Value::BulkString(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    let keys = keys
        .into_iter()
        .filter_map(|key| match key {
            Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
            _ => None,
        })
        .collect();
    Ok((keys, Cursor::Redis(next)))
}

/// One `SCAN` step on a cluster: on master `at` of `masters` from `scan`, then on the next
/// master once that one is done.
async fn cluster_scan(
    cluster: &ClusterStore,
    masters: Vec<usize>,
    at: usize,
    scan: u64,
    prefix: &str,
    count: usize,
) -> Result<(Vec<String>, Cursor), StoreError> {
    let Some(&master) = masters.get(at) else {
        return Ok((Vec::new(), Cursor::Done));
    };
    let (keys, next) = redis_scan(&cluster.node(master), scan, prefix, count).await?;
    let next = match next {
        Cursor::Redis(0) if at + 1 == masters.len() => Cursor::Done,
        Cursor::Redis(0) => Cursor::Cluster(masters, at + 1, 0),
        Cursor::Redis(scan) => Cursor::Cluster(masters, at, scan),
        other => other,
    };
    Ok((keys, next))
}

/// The metadata fields of each key and its time left (`HMGET` + `PTTL` per key, one batch);
/// `None` for a key that is gone.
async fn redis_meta(
    sender: &impl crate::store::batch::Sender,
    keys: &[String],
) -> Result<Vec<Option<(Fields, Option<Duration>)>>, StoreError> {
    let route = keys.first().map_or("", String::as_str);
    let replies = sender
        .query(route, |pipe| {
            for key in keys {
                let hmget = pipe.cmd("HMGET").arg(key);
                for name in META {
                    hmget.arg(name);
                }
                pipe.cmd("PTTL").arg(key);
            }
        })
        .await?;
    let mut replies = replies.into_iter();
    let mut metas = Vec::with_capacity(keys.len());
    for _ in keys {
        let (values, ttl) = (replies.next(), replies.next());
        let Some(Value::Array(values)) = values else {
            metas.push(None);
            continue;
        };
        let fields: Fields = META
            .iter()
            .zip(values)
            .filter_map(|(name, value)| match value {
                Value::BulkString(bytes) => Some(((*name).to_owned(), bytes)),
                _ => None,
            })
            .collect();
        metas.push((!fields.is_empty()).then(|| (fields, crate::store::commands::pttl(ttl))));
    }
    Ok(metas)
}

/// The fields a listing shows.
const META: [&str; 5] = [CREATED, TOUCHED, USER, AGENT, NETWORK];

/// The listing's fields of a record.
fn meta_of(mut fields: Fields) -> Fields {
    fields.retain(|name, _| META.contains(&name.as_str()));
    fields
}

/// The record under `key` and its time left, without moving its expiry (`HGETALL` + `PTTL`).
async fn redis_get(
    sender: &impl crate::store::batch::Sender,
    key: &str,
) -> Result<Option<(Fields, Option<Duration>)>, StoreError> {
    let replies = sender
        .query(key, |pipe| {
            pipe.cmd("HGETALL").arg(key);
            pipe.cmd("PTTL").arg(key);
        })
        .await;
    match replies {
        Ok(replies) => {
            let mut replies = replies.into_iter();
            let first = replies.next().into_iter().collect();
            let record = crate::store::commands::loaded(Ok(first))?;
            Ok(record.map(|fields| (fields, crate::store::commands::pttl(replies.next()))))
        }
        // Another type under the key comes back as an empty record: no session.
        Err(e) => Ok(crate::store::commands::loaded(Err(e))?.map(|fields| (fields, None))),
    }
}

/// `UNLINK` of `keys` in one command: how many there were.
async fn redis_unlink(
    sender: &impl crate::store::batch::Sender,
    keys: &[String],
) -> Result<u64, StoreError> {
    let route = keys.first().map_or("", String::as_str);
    let replies = sender
        .query(route, |pipe| {
            let unlink = pipe.cmd("UNLINK");
            for key in keys {
                unlink.arg(key);
            }
        })
        .await?;
    match replies.first() {
        Some(Value::Int(n)) => Ok(u64::try_from(*n).unwrap_or(0)),
        _ => Err(StoreError::new(
            StoreErrorKind::Backend,
            "unexpected UNLINK reply",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_pattern_matches_the_prefix_literally() {
        assert_eq!(match_pattern("session:"), "session:*");
        assert_eq!(match_pattern("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\*");
    }
}
