//! The `Session` handle: the public face of the per-request state in `state.rs`.

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    rc::Rc,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use actix_web::{
    dev::{Extensions, Payload, ServiceRequest, ServiceResponse},
    guard::GuardContext,
    FromRequest, HttpMessage, HttpRequest,
};
use serde::{de::DeserializeOwned, Serialize};

use crate::{
    codec,
    config::SessionConfig,
    cookie::{Handle, SessionId},
    error::{SessionError, StoreError},
    flash::FlashMessage,
    lifetime,
    record::DATA_PREFIX,
    state::{SessionStatus, State},
    store::Fields,
};

/// The session of the current request: a key/value map of serde values (stored as JSON, or
/// in the [format](crate::RedisSessionBuilder::codec) the middleware writes).
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

impl Default for Session {
    fn default() -> Self {
        Session::new()
    }
}

impl Session {
    /// A detached session, not tied to any request or store: for unit tests of code that
    /// takes a `Session`, without the middleware. It has the default limits and flash
    /// settings; nothing in it is ever saved.
    ///
    /// In a handler, extract `Session` instead: a detached one would silently lose what is
    /// put in it.
    ///
    /// # Examples
    ///
    /// ```
    /// use actix_redis_session::Session;
    ///
    /// fn add_to_cart(session: &Session, item: u32) -> Result<usize, actix_redis_session::SessionError> {
    ///     let mut cart: Vec<u32> = session.get("cart")?.unwrap_or_default();
    ///     cart.push(item);
    ///     session.insert("cart", &cart)?;
    ///     Ok(cart.len())
    /// }
    ///
    /// let session = Session::new();
    /// assert_eq!(add_to_cart(&session, 7)?, 1);
    /// assert_eq!(add_to_cart(&session, 9)?, 2);
    /// # Ok::<(), actix_redis_session::SessionError>(())
    /// ```
    pub fn new() -> Session {
        Session::fresh(Arc::new(SessionConfig::detached()))
    }

    /// A new, empty session (no cookie, or one that was rejected).
    pub(crate) fn fresh(config: Arc<SessionConfig>) -> Session {
        Session::wrap(State::new(config))
    }

    /// A fresh session that replaces a stored record which must go (expired, or a remnant
    /// without a creation marker).
    pub(crate) fn replacing(config: Arc<SessionConfig>, old_key: String) -> Session {
        Session::wrap(State::replacing(config, old_key))
    }

    /// A session moved over from another library's record under `old_key` (the
    /// [actix-session bridge](crate::FromActixSession)): stored as a new record of ours,
    /// living at most `left`, then the old record is deleted.
    pub(crate) fn migrated(
        config: Arc<SessionConfig>,
        fields: Fields,
        left: Option<Duration>,
        old_key: String,
    ) -> Session {
        Session::wrap(State::migrated(config, fields, left, old_key))
    }

    /// An empty session that is never saved (store down, fail-open policy); `key` is the
    /// record its cookie names, which a purge still deletes.
    pub(crate) fn degraded(config: Arc<SessionConfig>, key: String) -> Session {
        Session::wrap(State::degraded(config, key))
    }

    /// A stored session. Fields that cannot be read are dropped (and deleted on the next
    /// write) rather than failing the request.
    pub(crate) fn loaded(
        config: Arc<SessionConfig>,
        id: SessionId,
        key: String,
        fields: Fields,
        remember: Option<Duration>,
    ) -> Session {
        Session::wrap(State::loaded(config, id, key, fields, remember))
    }

    fn wrap(state: State) -> Session {
        Session(Arc::new(Mutex::new(state)))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // State changes are single assignments; a panic elsewhere cannot leave it torn.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value under `key`, deserialized into `T`; `None` if absent.
    ///
    /// # Errors
    ///
    /// [`SessionError::Deserialize`] when the stored value does not fit `T`.
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
        state
            .codecs()
            .decode(raw)
            .map(Some)
            .map_err(|e| decode_error(key, e))
    }

    /// Makes this session `user`'s: for the per-user index ("sign out everywhere", a device
    /// list) and [`SessionAdmin::sessions_of`](crate::SessionAdmin::sessions_of). Call it at
    /// login, with [`renew`](Self::renew). The user (an id, a name: any string) is stored as a
    /// value is (sealed with [`encrypt_at_rest`](crate::RedisSessionBuilder::encrypt_at_rest));
    /// the index keeps only handles. With it the middleware records the device for the
    /// user's device list: the User-Agent (its first 256 bytes) and the client's network
    /// (`/24` for IPv4, `/64` for IPv6).
    ///
    /// # Errors
    ///
    /// As [`insert`](Self::insert): a limit of the configuration.
    ///
    /// # Examples
    ///
    /// ```
    /// use actix_redis_session::Session;
    /// use actix_web::{post, HttpResponse};
    ///
    /// #[post("/login")]
    /// async fn login(session: Session) -> actix_web::Result<HttpResponse> {
    ///     // ... check the password first ...
    ///     session.renew();
    ///     session.set_user("alice")?;
    ///     Ok(HttpResponse::SeeOther().insert_header(("Location", "/")).finish())
    /// }
    /// ```
    pub fn set_user(&self, user: impl Into<String>) -> Result<(), SessionError> {
        self.lock().set_user(user.into())
    }

    /// The user of this session ([`set_user`](Self::set_user)), if any.
    pub fn user(&self) -> Option<String> {
        self.lock().user()
    }

    /// Ends every other session of this session's user once this request is done ("sign
    /// out my other devices"); this one stays. Nothing happens for a session without a
    /// user. A failure to carry it out answers like a failed save (`503` with
    /// [`OnStoreError::FailClosed`](crate::OnStoreError::FailClosed)).
    pub fn sign_out_other_sessions(&self) {
        self.lock().sign_out_others();
    }

    /// Stores `value` under `key`, serialized in the middleware's format (JSON unless
    /// [`codec`](crate::RedisSessionBuilder::codec) says otherwise). Only this field is
    /// written back.
    ///
    /// # Errors
    ///
    /// [`SessionError::Serialize`] when `value` cannot be serialized,
    /// [`SessionError::KeyTooLong`], [`SessionError::ValueTooLarge`],
    /// [`SessionError::SessionTooLarge`] and [`SessionError::TooManyFields`] when a limit of
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
        // Serialized without the lock: a `Serialize` may be slow, or read the session.
        let config = self.lock().shared_config();
        let raw = config
            .codecs
            .encode(value)
            .map_err(|source| SessionError::Serialize {
                key: key.to_owned(),
                source,
            })?;
        self.lock().set(field, raw, key)
    }

    /// Removes `key`; `true` if it was there. A value under `key` in a format this
    /// middleware does not read (which [`Session::get`] does not see) is removed too, and
    /// counts as not there.
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
            // Nothing this middleware reads; a value it cannot read goes (as with `remove`).
            state.unset(&field);
            return Ok(None);
        };
        let value = state
            .codecs()
            .decode(raw)
            .map_err(|e| decode_error(key, e))?;
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

    /// Replaces the value under `key` with `f(value)`; if `key` is absent, stores `default`
    /// as it is (`f` is not called), as actix-session's method of the same name does.
    ///
    /// # Errors
    ///
    /// As [`Session::get`] and [`Session::insert`].
    ///
    /// # Examples
    ///
    /// ```
    /// use actix_redis_session::Session;
    ///
    /// let session = Session::new();
    /// session.update_or("visits", 1u32, |n| n + 1)?; // absent: stores 1
    /// session.update_or("visits", 1u32, |n| n + 1)?; // present: 1 + 1
    /// assert_eq!(session.get::<u32>("visits")?, Some(2));
    /// # Ok::<(), actix_redis_session::SessionError>(())
    /// ```
    pub fn update_or<T, F>(&self, key: &str, default: T, f: F) -> Result<(), SessionError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(T) -> T,
    {
        let value = match self.get::<T>(key)? {
            Some(value) => f(value),
            None => default,
        };
        self.insert(key, value)
    }

    /// Removes every value (plain, typed and flash). A [`TypedSession`](crate::TypedSession)
    /// read before the clear is not written back. A session left without values at the end
    /// of a request is deleted and its cookie removed, as with [`Session::purge`]; values
    /// inserted after `clear` in the same request keep the session and its id.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The plain values (those set with [`Session::insert`]) as JSON, by key (whatever format
    /// they are stored in; a value JSON cannot hold, such as MessagePack binary data, is left
    /// out).
    pub fn entries(&self) -> BTreeMap<String, serde_json::Value> {
        let state = self.lock();
        state
            .fields
            .iter()
            .filter_map(|(name, raw)| {
                let key = name.strip_prefix(DATA_PREFIX)?;
                Some((key.to_owned(), state.codecs().decode(raw).ok()?))
            })
            .collect()
    }

    /// Moves the session to a new id, keeping its data, and deletes the old record.
    ///
    /// Call it when privileges change, above all on login: an attacker who planted or learned
    /// the old id (session fixation) is left with a dead cookie.
    ///
    /// The new record is stored first and the old one deleted after, so a renew that fails
    /// half-way never loses the session. If the old record is gone by then (a logout in
    /// another tab, or an administrator, ended the session while this request ran), the new
    /// one is deleted too and the response sets no cookie (the browser keeps what the request
    /// that ended the session sent): a renew never brings back a session that was ended.
    pub fn renew(&self) {
        self.lock().renew();
    }

    /// Ends the session: its record is deleted and the browser is told to drop the cookie.
    /// Call it on logout. Values inserted afterwards start a new session with a new id, and
    /// a [`TypedSession`](crate::TypedSession) read before the purge is not written back.
    ///
    /// If the delete fails (Redis down), the response is a `503` that still removes the
    /// cookie, whatever the [`OnStoreError`](crate::OnStoreError) policy: a logout that did
    /// not happen never looks like one that did.
    pub fn purge(&self) {
        self.lock().purge();
    }

    pub(crate) fn flash_send(&self, message: FlashMessage, now: bool) -> Result<(), SessionError> {
        self.lock().send_flash(message, now)
    }

    /// The stored flash messages (marked read) followed by this request's `now` messages.
    pub(crate) fn flash_take(&self) -> Vec<FlashMessage> {
        self.lock().take_flash()
    }

    /// "Remember me": keeps this session for `lifetime` of inactivity instead of the idle
    /// timeout, with a persistent cookie (`Max-Age`), e.g. 30 days after a login with the box
    /// ticked. The lifetime rides in the signed cookie, so it cannot be extended by the
    /// client. The absolute timeout, if configured, still applies. Clamped to the range from
    /// one second to [`remember_max`](crate::RedisSessionBuilder::remember_max) (by default
    /// [`MAX_LIFETIME`](crate::config::MAX_LIFETIME), 400 days, the longest `Max-Age`
    /// browsers keep).
    pub fn remember(&self, lifetime: Duration) {
        self.lock().remember(Some(lifetime::requested(lifetime)));
    }

    /// Undoes [`Session::remember`]: the session goes back to the idle timeout and a
    /// browser-session cookie (sent again without `Max-Age`, so that the browser drops it
    /// when it closes). E.g. "sign out other devices" or unticking "remember me" in the
    /// settings. Does nothing if the session is not remembered.
    pub fn forget(&self) {
        self.lock().remember(None);
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

    /// Whether this session is not (or no longer) the one in the store: `true` for a session
    /// new in this request, and after [`renew`](Session::renew) or [`purge`](Session::purge)
    /// (what is saved goes under a new id), and for a [degraded](SessionStatus::Degraded)
    /// session; `false` for a session loaded from the store.
    pub fn is_new(&self) -> bool {
        self.lock().key.is_none()
    }
}

fn data_field(key: &str) -> String {
    let mut field = String::with_capacity(DATA_PREFIX.len() + key.len());
    field.push_str(DATA_PREFIX);
    field.push_str(key);
    field
}

pub(crate) fn decode_error(key: &str, e: codec::DecodeError) -> SessionError {
    SessionError::Deserialize {
        key: key.to_owned(),
        source: e.into_codec_error(),
    }
}

impl FromRequest for Session {
    type Error = SessionError;
    type Future = LoadSession;

    /// Loads the session on the first extraction in a request (one store round trip, none
    /// for a request without a valid cookie); later extractions share it.
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        load(&req.extensions())
    }
}

type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// What loading a session is: one boxed future, whose output the extractors map.
pub(crate) type LoadSession = LocalBoxFuture<'static, Result<Session, SessionError>>;

/// What the middleware leaves in a request's extensions: its session, loaded on demand.
pub(crate) trait Loader {
    /// The session, loaded now if nothing loaded it before in this request: one boxed
    /// future, ready at once when there is nothing to load.
    fn load(self: Rc<Self>) -> LoadSession;

    /// The session if it needs no loading (loaded already, or new); `None`: it must be
    /// loaded first.
    fn session_now(&self) -> Option<Result<Session, StoreError>>;
}

/// The request's pending session, if it went through the middleware.
fn pending(extensions: &Extensions) -> Result<Rc<dyn Loader>, SessionError> {
    extensions
        .get::<Rc<dyn Loader>>()
        .cloned()
        .ok_or(SessionError::MissingMiddleware)
}

/// The session without a round trip, if it needs none.
fn session_now(extensions: &Extensions) -> Result<Session, SessionError> {
    match pending(extensions)?.session_now() {
        Some(Ok(session)) => Ok(session),
        Some(Err(e)) => Err(SessionError::Unavailable(e)),
        None => Err(SessionError::NotLoaded),
    }
}

/// Loads the session of the request whose extensions these are.
pub(crate) fn load(extensions: &Extensions) -> LoadSession {
    match pending(extensions) {
        Ok(pending) => pending.load(),
        Err(e) => Box::pin(std::future::ready(Err(e))),
    }
}

/// Access to the session from a request, e.g. in another middleware, a `FromRequest`
/// implementation or a guard.
///
/// The middleware loads a session when it is first asked for
/// ([`lazy_load`](crate::RedisSessionBuilder::lazy_load)), so from a request there are two
/// ways: [`load_session`](SessionExt::load_session) loads it if need be (one round trip, the
/// first time in a request), [`get_session`](SessionExt::get_session) returns it only if that
/// costs nothing: it was loaded already in this request (by an extractor or a
/// `load_session`), or the request has no valid session cookie (a new session).
///
/// # Examples
///
/// In a middleware:
///
/// ```
/// use actix_redis_session::SessionExt;
/// use actix_web::{body::MessageBody, dev::{ServiceRequest, ServiceResponse}, middleware::Next, Error};
///
/// async fn log_user(
///     req: ServiceRequest,
///     next: Next<impl MessageBody>,
/// ) -> Result<ServiceResponse<impl MessageBody>, Error> {
///     let session = req.load_session().await?;
///     if let Some(user) = session.get::<String>("user")? {
///         tracing::info!(%user, "request");
///     }
///     next.call(req).await
/// }
/// ```
pub trait SessionExt {
    /// The session of this request, if it needs no loading: loaded already, or new.
    ///
    /// # Errors
    ///
    /// [`SessionError::MissingMiddleware`] when the request did not pass through
    /// [`RedisSession`](crate::RedisSession), [`SessionError::NotLoaded`] when it must be
    /// loaded first ([`load_session`](SessionExt::load_session)),
    /// [`SessionError::Unavailable`] when its load failed.
    fn get_session(&self) -> Result<Session, SessionError>;

    /// The session of this request, loaded if no one loaded it yet (one store round trip,
    /// none without a valid session cookie).
    ///
    /// # Errors
    ///
    /// [`SessionError::MissingMiddleware`] when the request did not pass through
    /// [`RedisSession`](crate::RedisSession), [`SessionError::Unavailable`] when the store
    /// failed (and [`OnStoreError::FailClosed`](crate::OnStoreError::FailClosed) is in force).
    fn load_session(&self) -> Pin<Box<dyn Future<Output = Result<Session, SessionError>>>>;
}

impl SessionExt for HttpRequest {
    fn get_session(&self) -> Result<Session, SessionError> {
        session_now(&self.extensions())
    }

    fn load_session(&self) -> Pin<Box<dyn Future<Output = Result<Session, SessionError>>>> {
        load(&self.extensions())
    }
}

impl SessionExt for ServiceRequest {
    fn get_session(&self) -> Result<Session, SessionError> {
        session_now(&self.extensions())
    }

    fn load_session(&self) -> Pin<Box<dyn Future<Output = Result<Session, SessionError>>>> {
        load(&self.extensions())
    }
}

/// The session of the request this response answers, e.g. in a middleware's response path.
impl<B> SessionExt for ServiceResponse<B> {
    fn get_session(&self) -> Result<Session, SessionError> {
        self.request().get_session()
    }

    fn load_session(&self) -> Pin<Box<dyn Future<Output = Result<Session, SessionError>>>> {
        self.request().load_session()
    }
}

/// The session in a guard, e.g. to route signed-in users:
///
/// ```
/// use actix_redis_session::{Session, SessionExt};
/// use actix_web::{guard, web, HttpResponse};
///
/// let signed_in = guard::fn_guard(|ctx| {
///     ctx.get_session()
///         .ok()
///         .and_then(|session: Session| session.get::<String>("user").ok().flatten())
///         .is_some()
/// });
/// let home = web::resource("/")
///     .route(web::get().guard(signed_in).to(|| async { HttpResponse::Ok().body("dashboard") }))
///     .route(web::get().to(|| async { HttpResponse::Ok().body("welcome") }));
/// # let _ = home;
/// ```
///
/// Guards run before extractors and cannot wait: they see the stored session only if the
/// middleware loads it before routing ([`lazy_load(false)`](crate::RedisSessionBuilder::lazy_load)),
/// or if a middleware of the scope loaded it ([`SessionExt::load_session`]). Otherwise
/// `get_session` answers [`SessionError::NotLoaded`] for a request with a session cookie.
impl SessionExt for GuardContext<'_> {
    fn get_session(&self) -> Result<Session, SessionError> {
        session_now(&self.req_data())
    }

    /// Guards cannot wait: the same as [`get_session`](SessionExt::get_session).
    fn load_session(&self) -> Pin<Box<dyn Future<Output = Result<Session, SessionError>>>> {
        Box::pin(std::future::ready(self.get_session()))
    }
}
