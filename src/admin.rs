//! Session administration ([`SessionAdmin`], from
//! [`RedisSession::admin`](crate::RedisSession::admin)): count, list, read and end the
//! sessions of a store, other users' included, from a handler or a background task.
//!
//! Listing is a capability of the stores that can do it: Redis (both transports, with
//! `SCAN`), the memory store and the file store. A store of your own
//! ([`SessionStore`](crate::store::SessionStore)) or the cookie store cannot list: their
//! administration answers [`StoreErrorKind::Unsupported`], except for
//! [`destroy`](SessionAdmin::destroy) on a server-side store of your own.

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
    codec,
    config::SessionConfig,
    cookie::Handle,
    error::{SessionError, StoreError, StoreErrorKind},
    record::{self, CREATED, DATA_PREFIX, TOUCHED},
    store::{batch::Sender as _, Fields, MemoryStore, Outcome, Store, Write},
    store::{FileStore, MultiplexedStore, RedisStore},
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
}

/// The store as the administration sees it.
pub(crate) enum Lister {
    Redis(RedisStore),
    Multiplexed(MultiplexedStore),
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

    /// When it expires unless it is used before: the store's time to live.
    pub fn expires(&self) -> Option<SystemTime> {
        self.expires
    }
}

/// One session read in full ([`SessionAdmin::get`]): its metadata and its values, decoded as
/// [`Session::get`](crate::Session::get) decodes them. Reading it does not move its expiry.
#[derive(Clone, Debug)]
pub struct SessionView {
    info: SessionInfo,
    fields: Fields,
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
        codec::decode(raw)
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
    Memory(std::vec::IntoIter<String>),
    File(fs::ReadDir),
    Done,
}

impl SessionAdmin {
    pub(crate) fn new(store: Lister, config: Arc<SessionConfig>) -> SessionAdmin {
        SessionAdmin {
            inner: Arc::new(Inner {
                store,
                config,
                scan_count: DEFAULT_SCAN_COUNT,
            }),
        }
    }

    /// This administration with `count` keys per `SCAN` step (and per batch of metadata
    /// reads and deletes): from 1 to 100,000. Default: [`DEFAULT_SCAN_COUNT`] (1000). Larger
    /// steps take fewer round trips and hold Redis a little longer each.
    pub fn scan_count(self, count: usize) -> SessionAdmin {
        let inner = &self.inner;
        SessionAdmin {
            inner: Arc::new(Inner {
                store: match &inner.store {
                    Lister::Redis(s) => Lister::Redis(s.clone()),
                    Lister::Multiplexed(s) => Lister::Multiplexed(s.clone()),
                    Lister::Memory(s) => Lister::Memory(s.clone()),
                    Lister::File(s) => Lister::File(s.clone()),
                    Lister::Other(s) => Lister::Other(s.clone()),
                    Lister::None => Lister::None,
                },
                config: Arc::clone(&inner.config),
                scan_count: count.clamp(1, 100_000),
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
    /// memory).
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
    /// A [`StoreError`]; [`StoreErrorKind::Unsupported`] for a store that cannot read
    /// sessions outside a request (the cookie store, a store of your own).
    pub async fn get(&self, handle: &Handle) -> Result<Option<SessionView>, StoreError> {
        let key = self.key_of(handle);
        let found = match &self.inner.store {
            Lister::Redis(s) => redis_get(s, &key).await?,
            Lister::Multiplexed(s) => redis_get(s, &key).await?,
            Lister::Memory(s) => s.peek(&key).map(|(fields, left)| (fields, Some(left))),
            Lister::File(s) => s
                .peek(&key)
                .await?
                .map(|(fields, left)| (fields, Some(left))),
            Lister::Other(_) | Lister::None => return Err(unsupported()),
        };
        let Some((mut fields, left)) = found else {
            return Ok(None);
        };
        let Some(created) = fields.get(CREATED).and_then(|m| record::created_ms(m)) else {
            // Not a session (a remnant without its creation marker).
            return Ok(None);
        };
        let mut failed = Vec::new();
        self.inner
            .config
            .at_rest
            .open_record(&key, &mut fields, &mut failed);
        let info = SessionInfo {
            handle: handle.clone(),
            created: Some(at_ms(created)),
            touched: fields
                .get(TOUCHED)
                .and_then(|t| record::parse_millis(t))
                .map(at_ms),
            expires: left.map(|left| SystemTime::now() + left),
        };
        Ok(Some(SessionView { info, fields }))
    }

    /// Ends the session named `handle` now: its next request gets a fresh session. `true`
    /// if there was one.
    ///
    /// # Errors
    ///
    /// A [`StoreError`]; [`StoreErrorKind::Unsupported`] for the cookie store.
    pub async fn destroy(&self, handle: &Handle) -> Result<bool, StoreError> {
        let write = Write::Delete {
            key: self.key_of(handle),
        };
        let outcome = match &self.inner.store {
            Lister::Redis(s) => s.write(&write).await?,
            Lister::Multiplexed(s) => s.write(&write).await?,
            Lister::Memory(s) => s.write_now(&write),
            Lister::File(s) => Store::File(s.clone()).write(&write).await?,
            Lister::Other(s) => s.write(&write).await?,
            Lister::None => return Err(unsupported()),
        };
        Ok(outcome == Outcome::Applied)
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
            (Lister::Redis(s), Cursor::Start) => redis_scan(s, 0, self.prefix(), count).await?,
            (Lister::Redis(s), Cursor::Redis(at)) => {
                redis_scan(s, at, self.prefix(), count).await?
            }
            (Lister::Multiplexed(s), Cursor::Start) => {
                redis_scan(s, 0, self.prefix(), count).await?
            }
            (Lister::Multiplexed(s), Cursor::Redis(at)) => {
                redis_scan(s, at, self.prefix(), count).await?
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
        let now = SystemTime::now();
        let mut infos = Vec::with_capacity(keys.len());
        let mut push =
            |key: &str, created: Option<&[u8]>, touched: Option<&[u8]>, left: Option<Duration>| {
                let (Some(handle), Some(created)) =
                    (self.handle_of(key), created.and_then(record::created_ms))
                else {
                    return;
                };
                infos.push(SessionInfo {
                    handle,
                    created: Some(at_ms(created)),
                    touched: touched.and_then(record::parse_millis).map(at_ms),
                    expires: left.map(|left| now + left),
                });
            };
        match &self.inner.store {
            Lister::Redis(s) => {
                for (key, (created, touched, left)) in keys.iter().zip(redis_meta(s, &keys).await?)
                {
                    push(key, created.as_deref(), touched.as_deref(), left);
                }
            }
            Lister::Multiplexed(s) => {
                for (key, (created, touched, left)) in keys.iter().zip(redis_meta(s, &keys).await?)
                {
                    push(key, created.as_deref(), touched.as_deref(), left);
                }
            }
            Lister::Memory(s) => {
                for key in &keys {
                    if let Some((fields, left)) = s.peek(key) {
                        let field = |name: &str| fields.get(name).map(Vec::as_slice);
                        push(key, field(CREATED), field(TOUCHED), Some(left));
                    }
                }
            }
            Lister::File(s) => {
                for key in &keys {
                    if let Some((fields, left)) = s.peek(key).await? {
                        let field = |name: &str| fields.get(name).map(Vec::as_slice);
                        push(key, field(CREATED), field(TOUCHED), Some(left));
                    }
                }
            }
            Lister::Other(_) | Lister::None => return Err(unsupported()),
        }
        Ok(infos)
    }

    /// Deletes sessions by storage key; how many there were.
    async fn remove(&self, keys: Vec<String>) -> Result<u64, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        match &self.inner.store {
            Lister::Redis(s) => redis_unlink(s, &keys).await,
            Lister::Multiplexed(s) => redis_unlink(s, &keys).await,
            Lister::Memory(s) => Ok(keys
                .into_iter()
                .filter(|key| s.write_now(&Write::Delete { key: key.clone() }) == Outcome::Applied)
                .count() as u64),
            Lister::File(s) => {
                let store = Store::File(s.clone());
                let mut removed = 0;
                for key in keys {
                    if store.write(&Write::Delete { key }).await? == Outcome::Applied {
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
        .query(|pipe| {
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

/// Metadata of each key: creation marker, last touch, time left (`HMGET` + `PTTL` per key, one
/// batch).
async fn redis_meta(
    sender: &impl crate::store::batch::Sender,
    keys: &[String],
) -> Result<Vec<(Option<Vec<u8>>, Option<Vec<u8>>, Option<Duration>)>, StoreError> {
    let replies = sender
        .query(|pipe| {
            for key in keys {
                pipe.cmd("HMGET").arg(key).arg(CREATED).arg(TOUCHED);
                pipe.cmd("PTTL").arg(key);
            }
        })
        .await?;
    let mut replies = replies.into_iter();
    let mut meta = Vec::with_capacity(keys.len());
    for _ in keys {
        let (fields, ttl) = (replies.next(), replies.next());
        let (created, touched) = match fields {
            Some(Value::Array(values)) => {
                let mut values = values.into_iter().map(|v| match v {
                    Value::BulkString(bytes) => Some(bytes),
                    _ => None,
                });
                (values.next().flatten(), values.next().flatten())
            }
            _ => (None, None),
        };
        meta.push((created, touched, pttl(ttl)));
    }
    Ok(meta)
}

/// A `PTTL` reply as the time left: `None` for no expiry or no key.
fn pttl(reply: Option<Value>) -> Option<Duration> {
    match reply {
        Some(Value::Int(ms)) if ms > 0 => Some(Duration::from_millis(ms as u64)),
        _ => None,
    }
}

/// The record under `key` and its time left, without moving its expiry (`HGETALL` + `PTTL`).
async fn redis_get(
    sender: &impl crate::store::batch::Sender,
    key: &str,
) -> Result<Option<(Fields, Option<Duration>)>, StoreError> {
    let replies = sender
        .query(|pipe| {
            pipe.cmd("HGETALL").arg(key);
            pipe.cmd("PTTL").arg(key);
        })
        .await;
    match replies {
        Ok(replies) => {
            let mut replies = replies.into_iter();
            let first = replies.next().into_iter().collect();
            let record = crate::store::commands::loaded(Ok(first))?;
            Ok(record.map(|fields| (fields, pttl(replies.next()))))
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
    let replies = sender
        .query(|pipe| {
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
