//! The `Session` handle and the per-request state it shares with the middleware.

use std::{
    collections::{BTreeMap, HashSet},
    future::{ready, Ready},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use actix_web::{dev::Payload, dev::ServiceRequest, FromRequest, HttpMessage, HttpRequest};
use serde::{de::DeserializeOwned, Serialize};

use crate::{
    codec,
    config::SessionConfig,
    cookie::{Handle, SessionId},
    error::SessionError,
    flash::FlashMessage,
    store::{Fields, Write, META_PREFIX},
};

/// Field holding the creation time (unix milliseconds). Only the create script writes it, and a
/// record without it is not a session: a field-level update that raced with expiry can leave
/// such a remnant behind, and it is never adopted.
pub(crate) const CREATED: &str = "m:c";
const DATA_PREFIX: &str = "d:";
pub(crate) const TYPED_PREFIX: &str = "t:";
/// Field holding the flash messages waiting to be read.
const FLASH: &str = "f";

/// What happened to the session during this request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionStatus {
    /// Nothing changed; nothing will be written.
    Unchanged,
    /// Values changed; the changed fields will be written.
    Changed,
    /// [`Session::renew`] was called: the data moves to a new id.
    Renewed,
    /// [`Session::purge`] was called: the session is deleted and its cookie removed.
    Purged,
    /// The store failed and [`OnStoreError::FailOpen`](crate::OnStoreError::FailOpen) is in
    /// force: this session is empty and will not be saved.
    Degraded,
}

/// The session of the current request: a key/value map of JSON values.
///
/// Extract it in a handler, or get it from a request with [`SessionExt::get_session`]. It is
/// a cheap handle (`Clone + Send + Sync`) to state shared with the middleware, so it can move
/// into `web::block` or a spawned task; changes made after the response has been sent are
/// not saved.
///
/// Only the fields that change are written back, so two concurrent requests of one client
/// that change different keys both keep their change. Two that change the same key: the
/// last write wins.
///
/// # Examples
///
/// ```
/// use actix_redis_session::Session;
/// use actix_web::{get, Result};
///
/// #[get("/")]
/// async fn index(session: Session) -> Result<String> {
///     let visits: u64 = session.get("visits")?.unwrap_or(0);
///     session.insert("visits", visits + 1)?;
///     Ok(format!("visit number {}", visits + 1))
/// }
/// ```
#[derive(Clone)]
pub struct Session(Arc<Mutex<State>>);

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Session")
            .field("status", &state.status())
            .field("fields", &state.fields.len())
            .finish()
    }
}

pub(crate) struct State {
    config: Arc<SessionConfig>,
    /// `None` until a new session needs one.
    id: Option<SessionId>,
    /// The record exists in the store under `id`.
    stored: bool,
    fields: Fields,
    /// Field names to write: set if present in `fields`, deleted if not.
    dirty: HashSet<String>,
    /// A stored record to delete (purge, renew, expired).
    retire: Option<SessionId>,
    remember: Option<Duration>,
    remember_changed: bool,
    status: SessionStatus,
    flash: FlashState,
}

/// Flash messages in flight during this request.
#[derive(Default)]
struct FlashState {
    /// The stored messages were read: remove them at the end of the request.
    taken: bool,
    /// Sent during this request, for a later one.
    outgoing: Vec<FlashMessage>,
    /// For this request only.
    now: Vec<FlashMessage>,
}

/// What the middleware must do once the handler is done.
pub(crate) enum Plan {
    /// No write. `live`: the stored session that continues.
    Keep { live: Option<Live> },
    /// A field-level write to the stored session.
    Update { write: Write, live: Live },
    /// The stored session holds no data any more: remove the fields and delete the record,
    /// unless a concurrent request added data meanwhile.
    Empty { write: Write, live: Live },
    /// Store a new record (new, renewed or purged-and-refilled session).
    Create {
        id: SessionId,
        fields: Vec<(String, Vec<u8>)>,
        ttl: Duration,
        retire: Option<String>,
        remember: Option<Duration>,
    },
    /// Delete the old record; no new one.
    Delete { key: String },
}

/// A stored session that goes on after this request.
pub(crate) struct Live {
    pub(crate) id: SessionId,
    pub(crate) remember: Option<Duration>,
    pub(crate) remember_changed: bool,
}

impl State {
    fn new(config: Arc<SessionConfig>) -> State {
        State {
            config,
            id: None,
            stored: false,
            fields: Fields::new(),
            dirty: HashSet::new(),
            retire: None,
            remember: None,
            remember_changed: false,
            status: SessionStatus::Unchanged,
            flash: FlashState::default(),
        }
    }

    fn status(&self) -> SessionStatus {
        self.status
    }

    fn mark(&mut self, status: SessionStatus) {
        match (self.status, status) {
            // Degraded sticks; renew and purge stay visible after later changes.
            (SessionStatus::Degraded, _)
            | (SessionStatus::Renewed | SessionStatus::Purged, SessionStatus::Changed) => {}
            _ => self.status = status,
        }
    }

    fn has_data(&self) -> bool {
        self.fields.keys().any(|k| !k.starts_with(META_PREFIX))
    }

    fn set(&mut self, field: String, value: Vec<u8>, key: &str) -> Result<(), SessionError> {
        let limits = self.config.limits;
        if value.len() > limits.max_value_size {
            return Err(SessionError::ValueTooLarge {
                key: key.to_owned(),
                size: value.len(),
                limit: limits.max_value_size,
            });
        }
        if !self.fields.contains_key(&field) {
            let used = self
                .fields
                .keys()
                .filter(|k| !k.starts_with(META_PREFIX))
                .count();
            if used >= limits.max_fields {
                return Err(SessionError::TooManyFields {
                    limit: limits.max_fields,
                });
            }
        }
        if self.fields.get(&field) == Some(&value) {
            return Ok(());
        }
        self.dirty.insert(field.clone());
        self.fields.insert(field, value);
        self.mark(SessionStatus::Changed);
        Ok(())
    }

    fn unset(&mut self, field: &str) -> Option<Vec<u8>> {
        let old = self.fields.remove(field)?;
        self.dirty.insert(field.to_owned());
        self.mark(SessionStatus::Changed);
        Some(old)
    }

    /// Moves a stored record out of the way: it will be deleted, and what is saved next goes
    /// under a new id.
    fn detach(&mut self) {
        if self.stored {
            self.retire = self.id.take();
            self.stored = false;
        } else {
            self.id = None;
        }
        self.dirty.clear();
    }

    fn ttl(&self, now_ms: u64) -> Duration {
        let ttl = self.remember.unwrap_or(self.config.idle_timeout);
        match (self.config.absolute_timeout, self.created_ms()) {
            (Some(absolute), Some(created)) => {
                let end =
                    created.saturating_add(u64::try_from(absolute.as_millis()).unwrap_or(u64::MAX));
                ttl.min(Duration::from_millis(end.saturating_sub(now_ms).max(1)))
            }
            _ => ttl,
        }
    }

    fn created_ms(&self) -> Option<u64> {
        parse_millis(self.fields.get(CREATED)?)
    }

    /// The flash messages stored by earlier requests (an unreadable list counts as none).
    fn stored_flash(&self) -> Vec<FlashMessage> {
        let Some(raw) = self.fields.get(FLASH) else {
            return Vec::new();
        };
        codec::decode(raw).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "dropping unreadable flash messages");
            Vec::new()
        })
    }

    /// Writes the flash changes of this request into the fields: read messages go, sent
    /// ones are appended. Nothing happens when no message was read or sent.
    fn settle_flash(&mut self) {
        let FlashState {
            taken, outgoing, ..
        } = std::mem::take(&mut self.flash);
        if !taken && outgoing.is_empty() {
            return;
        }
        let mut waiting = if taken {
            Vec::new()
        } else {
            self.stored_flash()
        };
        waiting.extend(outgoing);
        if waiting.is_empty() {
            self.unset(FLASH);
            return;
        }
        match codec::encode(&waiting) {
            Ok(raw) => {
                if let Err(e) = self.set(FLASH.to_owned(), raw, FLASH) {
                    tracing::error!(error = %e, "flash messages not saved");
                }
            }
            Err(e) => tracing::error!(error = %e, "flash messages not saved"),
        }
    }

    pub(crate) fn plan(&mut self) -> Plan {
        if self.status == SessionStatus::Degraded {
            return Plan::Keep { live: None };
        }
        self.settle_flash();
        let now = now_ms();
        if self.stored {
            let live = Live {
                id: self.id.clone().expect("a stored session has an id"),
                remember: self.remember,
                remember_changed: self.remember_changed,
            };
            let empty = !self.has_data();
            if self.dirty.is_empty() && !self.remember_changed && !empty {
                return Plan::Keep { live: Some(live) };
            }
            let (mut set, mut del) = (Vec::new(), Vec::new());
            for name in self.dirty.drain() {
                match self.fields.get(&name) {
                    Some(value) => set.push((name, value.clone())),
                    None => del.push(name),
                }
            }
            let key = self.config.storage_key(&live.id.handle());
            let ttl = self.ttl(now);
            if empty {
                let write = Write::Empty { key, del, ttl };
                return Plan::Empty { write, live };
            }
            let write = Write::Update { key, set, del, ttl };
            return Plan::Update { write, live };
        }
        let retire = self
            .retire
            .take()
            .map(|old| self.config.storage_key(&old.handle()));
        if !self.has_data() {
            return match retire {
                Some(key) => Plan::Delete { key },
                None => Plan::Keep { live: None },
            };
        }
        if !self.fields.contains_key(CREATED) {
            self.fields
                .insert(CREATED.to_owned(), now.to_string().into_bytes());
        }
        let id = self.id.get_or_insert_with(SessionId::generate).clone();
        Plan::Create {
            id,
            fields: self
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ttl: self.ttl(now),
            retire,
            remember: self.remember,
        }
    }
}

impl Session {
    /// A new, empty session (no cookie, or one that was rejected).
    pub(crate) fn fresh(config: Arc<SessionConfig>) -> Session {
        Session(Arc::new(Mutex::new(State::new(config))))
    }

    /// A fresh session that replaces a stored record which must go (expired, or a remnant
    /// without a creation marker).
    pub(crate) fn replacing(config: Arc<SessionConfig>, old: SessionId) -> Session {
        let mut state = State::new(config);
        state.retire = Some(old);
        Session(Arc::new(Mutex::new(state)))
    }

    /// An empty session that is never saved (store down, fail-open policy).
    pub(crate) fn degraded(config: Arc<SessionConfig>) -> Session {
        let mut state = State::new(config);
        state.status = SessionStatus::Degraded;
        Session(Arc::new(Mutex::new(state)))
    }

    /// A stored session. Fields that cannot be read are dropped (and deleted on the next
    /// write) rather than failing the request.
    pub(crate) fn loaded(
        config: Arc<SessionConfig>,
        id: SessionId,
        mut fields: Fields,
        remember: Option<Duration>,
    ) -> Session {
        let mut state = State::new(config);
        fields.retain(|name, value| {
            let readable = if name.starts_with(META_PREFIX) {
                name != CREATED || parse_millis(value).is_some()
            } else {
                codec::validate(value).is_ok()
            };
            if !readable {
                tracing::warn!(field = %name, "dropping an unreadable session field");
                state.dirty.insert(name.clone());
            }
            readable
        });
        state.fields = fields;
        state.id = Some(id);
        state.stored = true;
        state.remember = remember;
        Session(Arc::new(Mutex::new(state)))
    }

    /// When the stored session was created, if it was loaded with a creation time.
    pub(crate) fn created_ms(fields: &Fields) -> Option<u64> {
        parse_millis(fields.get(CREATED)?)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // State changes are single assignments; a panic elsewhere cannot leave it torn.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value under `key`, deserialized into `T`; `None` if absent.
    ///
    /// # Errors
    ///
    /// [`SessionError::Deserialize`] when the stored JSON does not fit `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        self.get_field(&data_field(key), key)
    }

    pub(crate) fn get_field<T: DeserializeOwned>(
        &self,
        field: &str,
        key: &str,
    ) -> Result<Option<T>, SessionError> {
        let state = self.lock();
        let Some(raw) = state.fields.get(field) else {
            return Ok(None);
        };
        codec::decode(raw)
            .map(Some)
            .map_err(|e| decode_error(key, e))
    }

    /// Stores `value` under `key`, serialized as JSON. Only this field is written back.
    ///
    /// # Errors
    ///
    /// [`SessionError::Serialize`] when `value` cannot be serialized,
    /// [`SessionError::ValueTooLarge`] and [`SessionError::TooManyFields`] when a limit of
    /// the configuration is exceeded.
    pub fn insert<T: Serialize>(
        &self,
        key: impl Into<String>,
        value: T,
    ) -> Result<(), SessionError> {
        let key = key.into();
        self.set_field(data_field(&key), &value, &key)
    }

    pub(crate) fn set_field<T: Serialize + ?Sized>(
        &self,
        field: String,
        value: &T,
        key: &str,
    ) -> Result<(), SessionError> {
        let raw = codec::encode(value).map_err(|source| SessionError::Serialize {
            key: key.to_owned(),
            source,
        })?;
        self.lock().set(field, raw, key)
    }

    /// Removes `key`; `true` if it was there.
    pub fn remove(&self, key: &str) -> bool {
        self.remove_field(&data_field(key))
    }

    pub(crate) fn remove_field(&self, field: &str) -> bool {
        self.lock().unset(field).is_some()
    }

    /// Removes `key` and returns its value deserialized into `T`.
    ///
    /// # Errors
    ///
    /// [`SessionError::Deserialize`] when the value does not fit `T`; the value then stays.
    pub fn remove_as<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let field = data_field(key);
        let mut state = self.lock();
        let Some(raw) = state.fields.get(&field) else {
            return Ok(None);
        };
        let value = codec::decode(raw).map_err(|e| decode_error(key, e))?;
        state.unset(&field);
        Ok(Some(value))
    }

    /// `true` if `key` holds a value.
    pub fn contains_key(&self, key: &str) -> bool {
        self.contains_field(&data_field(key))
    }

    pub(crate) fn contains_field(&self, field: &str) -> bool {
        self.lock().fields.contains_key(field)
    }

    /// Replaces the value under `key` with `f(value)`; does nothing if `key` is absent.
    /// Returns whether a value was updated.
    ///
    /// # Errors
    ///
    /// As [`Session::get`] and [`Session::insert`].
    pub fn update<T, F>(&self, key: &str, f: F) -> Result<bool, SessionError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(T) -> T,
    {
        match self.get::<T>(key)? {
            Some(value) => self.insert(key, f(value)).map(|()| true),
            None => Ok(false),
        }
    }

    /// Replaces the value under `key` with `f(value)`, starting from `default` if absent.
    ///
    /// # Errors
    ///
    /// As [`Session::get`] and [`Session::insert`].
    pub fn update_or<T, F>(&self, key: &str, default: T, f: F) -> Result<(), SessionError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(T) -> T,
    {
        let value = self.get::<T>(key)?.unwrap_or(default);
        self.insert(key, f(value))
    }

    /// Removes every value (plain, typed and flash). A session left without values at the end
    /// of a request is deleted and its cookie removed, as with [`Session::purge`]; values
    /// inserted after `clear` in the same request keep the session and its id.
    pub fn clear(&self) {
        let mut state = self.lock();
        let names: Vec<String> = state
            .fields
            .keys()
            .filter(|k| !k.starts_with(META_PREFIX))
            .cloned()
            .collect();
        for name in names {
            state.unset(&name);
        }
    }

    /// The plain values (those set with [`Session::insert`]) as JSON, by key.
    pub fn entries(&self) -> BTreeMap<String, serde_json::Value> {
        let state = self.lock();
        state
            .fields
            .iter()
            .filter_map(|(name, raw)| {
                let key = name.strip_prefix(DATA_PREFIX)?;
                Some((key.to_owned(), codec::decode(raw).ok()?))
            })
            .collect()
    }

    /// Moves the session to a new id, keeping its data, and deletes the old record.
    ///
    /// Call it when privileges change, above all on login: an attacker who planted or learned
    /// the old id (session fixation) is left with a dead cookie.
    pub fn renew(&self) {
        let mut state = self.lock();
        if state.status == SessionStatus::Degraded {
            return;
        }
        state.detach();
        state.mark(SessionStatus::Renewed);
    }

    /// Ends the session: its record is deleted and the browser is told to drop the cookie.
    /// Call it on logout. Values inserted afterwards start a new session with a new id.
    pub fn purge(&self) {
        let mut state = self.lock();
        if state.status == SessionStatus::Degraded {
            return;
        }
        state.detach();
        state.fields.clear();
        state.flash = FlashState::default();
        state.remember = None;
        state.remember_changed = false;
        state.mark(SessionStatus::Purged);
    }

    pub(crate) fn flash_send(&self, message: FlashMessage, now: bool) -> Result<(), SessionError> {
        let mut state = self.lock();
        let limits = state.config.flash;
        if message.level() < limits.min_level {
            return Ok(());
        }
        if message.content().len() > limits.max_message_size {
            return Err(SessionError::FlashTooLarge {
                size: message.content().len(),
                limit: limits.max_message_size,
            });
        }
        let queued = if now {
            state.flash.now.len()
        } else {
            let stored = if state.flash.taken {
                0
            } else {
                state.stored_flash().len()
            };
            stored + state.flash.outgoing.len()
        };
        if queued >= limits.max_messages {
            return Err(SessionError::TooManyFlashMessages {
                limit: limits.max_messages,
            });
        }
        if now {
            state.flash.now.push(message);
        } else {
            state.flash.outgoing.push(message);
        }
        Ok(())
    }

    /// The stored flash messages (marked read) followed by this request's `now` messages.
    pub(crate) fn flash_take(&self) -> Vec<FlashMessage> {
        let mut state = self.lock();
        let mut messages = if state.flash.taken {
            Vec::new()
        } else {
            state.flash.taken = true;
            state.stored_flash()
        };
        messages.append(&mut state.flash.now);
        messages
    }

    /// "Remember me": keeps this session for `lifetime` of inactivity instead of the idle
    /// timeout, with a persistent cookie (`Max-Age`), e.g. 30 days after a login with the box
    /// ticked. The lifetime rides in the signed cookie, so it cannot be extended by the
    /// client. The absolute timeout, if configured, still applies. At least one second.
    pub fn remember(&self, lifetime: Duration) {
        let lifetime = lifetime.max(Duration::from_secs(1));
        let mut state = self.lock();
        if state.remember != Some(lifetime) {
            state.remember = Some(lifetime);
            state.remember_changed = true;
            state.mark(SessionStatus::Changed);
        }
    }

    /// The "remember me" lifetime of this session, if [`Session::remember`] set one.
    pub fn remembered(&self) -> Option<Duration> {
        self.lock().remember
    }

    /// What happened to the session during this request.
    pub fn status(&self) -> SessionStatus {
        self.lock().status()
    }

    /// The public handle of this session: the hex SHA-256 of its secret id, which is also its
    /// Redis key without the prefix. Safe to show (e.g. "this device") and to log.
    ///
    /// A new session gets its id here if it has none yet; it is stored only if it holds data.
    pub fn handle(&self) -> Handle {
        self.lock()
            .id
            .get_or_insert_with(SessionId::generate)
            .handle()
    }

    /// Whether the session was loaded from the store (as opposed to new in this request).
    pub fn is_new(&self) -> bool {
        !self.lock().stored
    }
}

fn data_field(key: &str) -> String {
    let mut field = String::with_capacity(DATA_PREFIX.len() + key.len());
    field.push_str(DATA_PREFIX);
    field.push_str(key);
    field
}

fn decode_error(key: &str, e: codec::DecodeError) -> SessionError {
    let source = match e {
        codec::DecodeError::Json(source) => source,
        other => serde::de::Error::custom(other),
    };
    SessionError::Deserialize {
        key: key.to_owned(),
        source,
    }
}

fn parse_millis(raw: &[u8]) -> Option<u64> {
    std::str::from_utf8(raw).ok()?.parse().ok()
}

pub(crate) fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

impl FromRequest for Session {
    type Error = SessionError;
    type Future = Ready<Result<Session, SessionError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(req.get_session())
    }
}

/// Access to the session from a request, e.g. in a guard, another middleware or a
/// `FromRequest` implementation.
pub trait SessionExt {
    /// The session of this request.
    ///
    /// # Errors
    ///
    /// [`SessionError::MissingMiddleware`] when the request did not pass through
    /// [`RedisSession`](crate::RedisSession).
    fn get_session(&self) -> Result<Session, SessionError>;
}

impl SessionExt for HttpRequest {
    fn get_session(&self) -> Result<Session, SessionError> {
        self.extensions()
            .get::<Session>()
            .cloned()
            .ok_or(SessionError::MissingMiddleware)
    }
}

impl SessionExt for ServiceRequest {
    fn get_session(&self) -> Result<Session, SessionError> {
        self.extensions()
            .get::<Session>()
            .cloned()
            .ok_or(SessionError::MissingMiddleware)
    }
}
