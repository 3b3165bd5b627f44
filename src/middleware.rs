//! `RedisSession`: the middleware that reads the session cookie, lets the extractors load
//! the session when a handler first asks for it, and saves what changed after the handler.

use std::{
    future::{ready, Future, Ready},
    pin::Pin,
    rc::Rc,
    sync::Arc,
    time::Duration,
};

use actix_web::{
    body::{EitherBody, MessageBody},
    cookie::Cookie,
    dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform},
    http::header,
    Error, HttpMessage, HttpResponse,
};

use crate::{
    config::{OnStoreError, RedisSessionBuilder, SessionConfig},
    cookie::{self, SessionId, Verified},
    error::{ConfigError, StoreError, StoreErrorKind},
    key::Key,
    record::now_ms,
    session::Session,
    state::{created_ms, record_size, Live, Plan, Retired},
    store::{Fields, IntoStore, MemoryStore, Outcome, Store, Write},
};

/// Attempts to find a free id for a new session. A collision of 256-bit random ids does not
/// happen in practice; the bound keeps a broken random source from looping forever.
const CREATE_ATTEMPTS: usize = 3;

/// The session middleware: `App::new().wrap(RedisSession::new(url, key)?)`.
///
/// For each request it verifies the session cookie; the first extraction of [`Session`],
/// [`TypedSession`](crate::TypedSession), [`Flash`](crate::Flash) or
/// [`IncomingFlashMessages`](crate::IncomingFlashMessages) loads the session in one round
/// trip (refreshing its idle timeout at the same time). After the handler it writes only what
/// changed, in one more round trip, and sets or removes the cookie as needed. A request that
/// changes nothing costs no write; one whose handler never asks for the session costs the
/// store nothing at all ([`lazy_load`](RedisSessionBuilder::lazy_load)).
///
/// It is cheap to clone; build it once, outside `HttpServer::new`, so that all workers share
/// one connection pool.
///
/// # Examples
///
/// ```no_run
/// use actix_redis_session::{Key, RedisSession};
/// use actix_web::{App, HttpServer};
///
/// #[actix_web::main]
/// async fn main() -> std::io::Result<()> {
///     let key = Key::from_env("SESSION_KEY").expect("SESSION_KEY");
///     let sessions = RedisSession::new("redis://127.0.0.1:6379", key).expect("valid URL");
///     HttpServer::new(move || App::new().wrap(sessions.clone()))
///         .bind(("127.0.0.1", 8080))?
///         .run()
///         .await
/// }
/// ```
#[derive(Clone)]
pub struct RedisSession {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<SessionConfig>,
    store: Store,
}

impl std::fmt::Debug for RedisSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSession")
            .field("cookie_name", &self.inner.config.cookie.name)
            .field("idle_timeout", &self.inner.config.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisSession {
    /// Sessions in Redis at `url`, with default settings.
    ///
    /// URL forms: `redis://[[user]:password@]host[:port][/db]`, `rediss://…` (TLS, feature
    /// `tls`), `redis+unix:///path/to/redis.sock?db=N`.
    ///
    /// # Errors
    ///
    /// As [`RedisSessionBuilder::build`].
    pub fn new(url: impl AsRef<str>, key: Key) -> Result<RedisSession, ConfigError> {
        RedisSession::builder(url, key).build()
    }

    /// A builder for sessions in Redis at `url`.
    pub fn builder(url: impl AsRef<str>, key: Key) -> RedisSessionBuilder {
        RedisSessionBuilder::redis(url.as_ref().to_owned(), key)
    }

    /// Sessions in Redis through the application's own r2d2 pool, with default settings.
    ///
    /// One pool for the application and its sessions keeps the connection count down. Build
    /// the pool with `test_on_check_out(false)`: r2d2's default PINGs Redis on every checkout,
    /// two extra round trips per request.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use actix_redis_session::{Key, RedisSession};
    ///
    /// let client = redis::Client::open("redis://127.0.0.1:6379")?;
    /// let pool = r2d2::Pool::builder().test_on_check_out(false).build(client)?;
    /// let sessions = RedisSession::from_pool(pool.clone(), Key::generate());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_pool(pool: r2d2::Pool<redis::Client>, key: Key) -> RedisSession {
        RedisSession::builder_from_pool(pool, key)
            .build()
            .expect("the default options are valid")
    }

    /// A builder for sessions in Redis through the application's own r2d2 pool.
    pub fn builder_from_pool(pool: r2d2::Pool<redis::Client>, key: Key) -> RedisSessionBuilder {
        RedisSessionBuilder::pool(pool, key)
    }

    /// Sessions in this process's memory ([`MemoryStore`]), with default settings: for
    /// development and tests.
    pub fn memory(key: Key) -> RedisSession {
        RedisSession::builder_with_memory(MemoryStore::new(), key)
            .build()
            .expect("the default options are valid")
    }

    /// A builder for sessions in the given [`MemoryStore`]; the same as
    /// [`builder_with`](RedisSession::builder_with).
    pub fn builder_with_memory(store: MemoryStore, key: Key) -> RedisSessionBuilder {
        RedisSession::builder_with(store, key)
    }

    /// A builder for sessions in `store`: a [`MemoryStore`], a
    /// [`FileStore`](crate::store::FileStore), the [`CookieStore`](crate::store::CookieStore)
    /// or a [`SessionStore`](crate::store::SessionStore) of your own.
    ///
    /// The Redis-only setters ([`transport`](RedisSessionBuilder::transport),
    /// [`capacity`](RedisSessionBuilder::capacity) and the timeouts) make
    /// [`build`](RedisSessionBuilder::build) fail with a [`ConfigError`] here: they would
    /// have no effect.
    ///
    /// # Examples
    ///
    /// ```
    /// use actix_redis_session::{store::MemoryStore, Key, RedisSession};
    ///
    /// let sessions = RedisSession::builder_with(MemoryStore::new(), Key::generate())
    ///     .cookie_name("app")
    ///     .build()?;
    /// # drop(sessions);
    /// # Ok::<(), actix_redis_session::ConfigError>(())
    /// ```
    pub fn builder_with(store: impl IntoStore, key: Key) -> RedisSessionBuilder {
        RedisSessionBuilder::with_store(store.into_store(), key)
    }

    pub(crate) fn from_parts(config: Arc<SessionConfig>, store: Store) -> RedisSession {
        RedisSession {
            inner: Arc::new(Inner { config, store }),
        }
    }
}

impl<S, B> Transform<S, ServiceRequest> for RedisSession
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = SessionMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        // Built once per worker: the store may keep per-worker connections.
        let inner = Inner {
            config: Arc::clone(&self.inner.config),
            store: self.inner.store.for_worker(),
        };
        ready(Ok(SessionMiddleware {
            service: Rc::new(service),
            inner: Arc::new(inner),
        }))
    }
}

/// The service that [`RedisSession`] wraps around an application; not used directly.
#[doc(hidden)]
pub struct SessionMiddleware<S> {
    service: Rc<S>,
    inner: Arc<Inner>,
}

type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

impl<S, B> Service<ServiceRequest> for SessionMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = LocalBoxFuture<Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.handle(&*service, req).await })
    }
}

/// Distinct values of our cookie whose MAC is checked per request, at most: a request may
/// carry several (set for other paths or domains), but thousands of copies are someone
/// burning our CPU. Values that fail the cheap checks first (length, base64, size) do not
/// count, so that junk planted by a sibling subdomain cannot push the live cookie out cheaply.
const MAX_COOKIE_VALUES: usize = 8;

/// Validly signed ids looked up per request, at most: the first one the store knows wins.
const MAX_CANDIDATES: usize = 3;

/// The session cookie of a request.
enum Incoming {
    Absent,
    /// No validly signed value.
    Rejected,
    /// The validly signed ids, in the order the cookies came (the first apart: most requests
    /// have one, and it costs no allocation).
    Valid {
        first: Verified,
        rest: Vec<Verified>,
    },
}

/// The session of one request, loaded on first use: the middleware puts it in the request's
/// extensions, the extractors (and [`SessionExt::load_session`](crate::SessionExt)) load it,
/// and after the handler the middleware saves it, if it was loaded.
pub(crate) struct Pending {
    inner: Arc<Inner>,
    incoming: Incoming,
    /// Exactly one value of our cookie came: a removal cookie for it cannot hit another.
    only_one: bool,
    /// Set once, by the first extraction: the session and whether its cookie was signed
    /// with an old key, or the load error (which later extractions get too, without a
    /// second round trip).
    loaded: tokio::sync::OnceCell<Result<(Session, bool), StoreError>>,
}

impl Pending {
    /// The session, loaded now if no extraction did it before.
    pub(crate) async fn session(&self) -> Result<Session, StoreError> {
        let loaded = self.loaded.get_or_init(|| self.load()).await;
        loaded
            .as_ref()
            .map(|(s, _)| s.clone())
            .map_err(Clone::clone)
    }

    /// The session if it needs no round trip: loaded already, or new (no valid cookie).
    /// `None`: it must be loaded first.
    pub(crate) fn session_now(&self) -> Option<Result<Session, StoreError>> {
        if let Some(loaded) = self.loaded.get() {
            return Some(
                loaded
                    .as_ref()
                    .map(|(s, _)| s.clone())
                    .map_err(Clone::clone),
            );
        }
        match self.incoming {
            Incoming::Valid { .. } => None,
            Incoming::Absent | Incoming::Rejected => {
                let fresh = Session::fresh(Arc::clone(&self.inner.config));
                // Set here unless a load raced in first (it cannot: nothing to load).
                let _ = self.loaded.set(Ok((fresh, false)));
                self.session_now()
            }
        }
    }

    async fn load(&self) -> Result<(Session, bool), StoreError> {
        let inner = &self.inner;
        let config = &inner.config;
        match &self.incoming {
            Incoming::Valid { first, rest } => match inner.load(first, rest).await {
                Ok(loaded) => Ok(loaded),
                Err((e, key)) => {
                    tracing::error!(error = %e, source = ?std::error::Error::source(&e), "session load failed");
                    match config.on_store_error {
                        OnStoreError::FailOpen => {
                            Ok((Session::degraded(Arc::clone(config), key), false))
                        }
                        _ => Err(e),
                    }
                }
            },
            Incoming::Absent | Incoming::Rejected => {
                Ok((Session::fresh(Arc::clone(config)), false))
            }
        }
    }
}

impl Inner {
    async fn handle<S, B>(
        self: &Arc<Self>,
        service: &S,
        req: ServiceRequest,
    ) -> Result<ServiceResponse<EitherBody<B>>, Error>
    where
        S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    {
        let config = &self.config;
        let (incoming, only_one) = self.read_cookie(&req);
        let pending = Rc::new(Pending {
            inner: Arc::clone(self),
            incoming,
            only_one,
            loaded: tokio::sync::OnceCell::new(),
        });
        if !config.lazy_load && pending.session().await.is_err() {
            // Loaded before routing, as guards need; fail-closed: nothing else to do.
            return Ok(req.into_response(unavailable()).map_into_right_body());
        }
        req.extensions_mut().insert(Rc::clone(&pending));

        let mut res = service.call(req).await?;

        // Never loaded (or its load failed, which the extractor answered): nothing to save,
        // no cookie to set. The request cost the store nothing.
        let Some(Ok((session, stale_key))) = pending.loaded.get() else {
            return Ok(res.map_into_left_body());
        };
        // A cookie that leads nowhere is removed, if it came alone: with several of our name,
        // a removal for our path and domain could delete the live one instead.
        let remove_dead = pending.only_one;
        let (plan, logout) = {
            let mut state = session.lock();
            let logout = state.purged();
            (state.plan(), logout)
        };
        let cookie = match self.save(plan, remove_dead, *stale_key).await {
            Ok(cookie) => cookie,
            Err(e) => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "session save failed");
                if logout {
                    // A logout that could not be carried out must not look like one that
                    // was, whatever the policy: 503, and the browser drops the cookie anyway.
                    let (req, _) = res.into_parts();
                    let mut res = unavailable();
                    let _ = res.add_cookie(&config.cookie.removal_cookie());
                    return Ok(ServiceResponse::new(req, res).map_into_right_body());
                }
                return Ok(match config.on_store_error {
                    OnStoreError::FailOpen => res.map_into_left_body(),
                    _ => {
                        let (req, _) = res.into_parts();
                        ServiceResponse::new(req, unavailable()).map_into_right_body()
                    }
                });
            }
        };
        if let Some(cookie) = cookie {
            if let Err(e) = res.response_mut().add_cookie(&cookie) {
                tracing::error!(error = %e, "could not set the session cookie");
            }
        }
        Ok(res.map_into_left_body())
    }

    /// Finds our cookie in the Cookie header(s) without building the request's cookie jar:
    /// our values are base64url, so there is nothing to percent-decode, and a header that is
    /// not UTF-8 or holds malformed pairs still yields a well-formed session cookie.
    ///
    /// Several cookies of that name can arrive (set for other paths or domains, by this app or
    /// another on the same site): each distinct value is verified, up to
    /// [`MAX_COOKIE_VALUES`] MAC checks, and the validly signed ones are kept in order, up to
    /// [`MAX_CANDIDATES`], so that a dead session's cookie cannot hide the live one. The
    /// answer also says whether exactly one value came.
    fn read_cookie(&self, req: &ServiceRequest) -> (Incoming, bool) {
        let name = self.config.cookie.name.as_bytes();
        // Fixed-size: most requests carry one cookie, and none should cost an allocation.
        let mut seen: [&[u8]; MAX_COOKIE_VALUES] = [&[]; MAX_COOKIE_VALUES];
        let mut checked = 0;
        let mut values = 0;
        let mut first = None;
        let mut rest = Vec::new();
        for value in req
            .headers()
            .get_all(header::COOKIE)
            .flat_map(|h| cookie_values(h.as_bytes(), name))
        {
            values += 1;
            let candidates = usize::from(first.is_some()) + rest.len();
            if seen[..checked].contains(&value)
                || checked == MAX_COOKIE_VALUES
                || candidates == MAX_CANDIDATES
            {
                continue;
            }
            let verified = std::str::from_utf8(value)
                .map_err(|_| cookie::Rejected::Malformed)
                .and_then(|value| self.config.signer.verify(value));
            if !matches!(verified, Err(ref why) if why.is_cheap()) {
                seen[checked] = value;
                checked += 1;
            }
            match verified {
                Ok(verified) if first.is_none() => first = Some(verified),
                Ok(verified) => rest.push(verified),
                Err(why) => tracing::debug!(reason = ?why, "session cookie rejected"),
            }
        }
        let only_one = values == 1;
        let incoming = match (first, values) {
            (Some(first), _) => Incoming::Valid { first, rest },
            (None, 0) => Incoming::Absent,
            (None, _) => Incoming::Rejected,
        };
        (incoming, only_one)
    }

    /// Loads the first of the candidates (`first`, then `rest`) that the store knows; the
    /// answer says whether its cookie was signed with an old key. None known: a fresh session
    /// (strict mode: a signed id that the store does not know is never adopted).
    async fn load(
        &self,
        first: &Verified,
        rest: &[Verified],
    ) -> Result<(Session, bool), (StoreError, String)> {
        let config = &self.config;
        // A record that exists but is no session any more (too large, no creation marker,
        // past its absolute timeout) does not stop the search either; it is deleted if no
        // other candidate is a session.
        let mut discarded = None;
        for verified in std::iter::once(first).chain(rest) {
            // A lifetime from before the policy was shortened is cut to the policy's.
            let remember = verified.remember.map(|r| r.min(config.remember_max));
            // With touch_after, the TTL moves only when due, right after this load
            // (State::due_touch).
            let ttl = config
                .touch_after
                .is_zero()
                .then(|| remember.unwrap_or(config.idle_timeout));
            let key = verified.id.storage_key(&config.key_prefix);
            let fields = match self.store.load(&key, ttl).await {
                Ok(Some(fields)) => fields,
                Ok(None) => {
                    tracing::debug!("session not found");
                    continue;
                }
                // The key that failed: a degraded session's purge must delete that one.
                Err(e) => return Err((e, key)),
            };
            match self.adopt(verified, remember, key, fields) {
                Ok(session) => return Ok((session, verified.stale_key)),
                Err(key) => {
                    discarded.get_or_insert(key);
                }
            }
        }
        let session = match discarded {
            Some(key) => Session::replacing(Arc::clone(config), key),
            None => Session::fresh(Arc::clone(config)),
        };
        Ok((session, false))
    }

    /// The session of a record the store had under `key`, after the checks on it; `Err`
    /// with the key when the record is not to be adopted.
    fn adopt(
        &self,
        verified: &Verified,
        remember: Option<Duration>,
        key: String,
        fields: Fields,
    ) -> Result<Session, String> {
        let config = &self.config;
        let size = record_size(&fields);
        if size > config.limits.max_session_size {
            tracing::warn!(
                size,
                limit = config.limits.max_session_size,
                "stored session over the size limit; discarding it"
            );
            return Err(key);
        }
        let Some(created) = created_ms(&fields) else {
            tracing::debug!("record without a creation marker; discarding it");
            return Err(key);
        };
        if let Some(absolute) = config.absolute_timeout {
            let age = Duration::from_millis(now_ms().saturating_sub(created));
            if age >= absolute {
                tracing::debug!("session reached its absolute timeout");
                return Err(key);
            }
        }
        let session = Session::loaded(
            Arc::clone(config),
            verified.id.clone(),
            key,
            fields,
            remember,
        );
        if remember != verified.remember {
            // The cookie still carries the longer lifetime: send it again.
            session.lock().remember_changed = true;
        }
        let touch = session.lock().due_touch();
        if let Some(touch) = touch {
            // Sent while the handler runs; a touch that fails is due again next time.
            self.store.write_detached(&touch);
        }
        Ok(session)
    }

    /// Carries out the plan; returns the cookie to set, if any.
    async fn save(
        &self,
        plan: Plan,
        remove_dead: bool,
        stale_key: bool,
    ) -> Result<Option<Cookie<'static>>, StoreError> {
        let config = &self.config;
        Ok(match plan {
            Plan::Skip => None,
            Plan::Keep { live: None } => {
                // A cookie that led nowhere (rejected, unknown id): tell the browser to drop it.
                remove_dead.then(|| config.cookie.removal_cookie())
            }
            Plan::Keep { live: Some(live) } => self.refreshed_cookie(&live, stale_key),
            Plan::Update { write, live } => match self.store.write(&write).await? {
                // Ended while this request ran (a logout in another tab, a renew, the
                // expiry): what the write left is removed. No cookie either: a removal could
                // clobber the cookie a concurrent renew just set; a stale cookie is removed on
                // its next request anyway.
                Outcome::Gone => {
                    if let Write::Update { key, .. } = write {
                        // Housekeeping (the remnant is never adopted and has a TTL): a
                        // failure here does not fail the response.
                        if let Err(e) = self.store.write(&Write::Delete { key }).await {
                            tracing::warn!(error = %e, "could not delete a session remnant");
                        }
                    }
                    None
                }
                _ => self.refreshed_cookie(&live, stale_key),
            },
            Plan::Empty { write, live } => match self.store.write(&write).await? {
                Outcome::Applied => Some(config.cookie.removal_cookie()),
                Outcome::Refused => self.refreshed_cookie(&live, stale_key),
                Outcome::Gone => None,
            },
            Plan::Delete { key } => {
                self.store.write(&Write::Delete { key }).await?;
                Some(config.cookie.removal_cookie())
            }
            Plan::Create {
                id,
                fields,
                ttl,
                replaces,
                remember,
            } => {
                // A record that must go in any case goes first: a logout is carried out even
                // if the session that carries its flash message cannot be stored.
                let renewed = match replaces {
                    Some((old, Retired::Renewed)) => Some(old),
                    Some((old, Retired::Purged)) => {
                        self.store.write(&Write::Delete { key: old }).await?;
                        None
                    }
                    Some((old, Retired::Discarded)) => {
                        // Not a session any more: deleting it is housekeeping, which a later
                        // load repeats if this one fails.
                        if let Err(e) = self.store.write(&Write::Delete { key: old }).await {
                            tracing::warn!(error = %e, "could not delete a discarded session record");
                        }
                        None
                    }
                    None => None,
                };
                let id = self.create(id, fields, ttl).await?;
                if let Some(old) = renewed {
                    // Only now that the new record exists may the old one go. If it was gone
                    // already, the session was ended while this request ran (a logout in
                    // another tab, an administrator, another renew): the renewed copy must
                    // not outlive it, and no cookie is sent (the browser keeps what the
                    // request that ended it sent).
                    if self.store.write(&Write::Delete { key: old }).await? == Outcome::Gone {
                        tracing::debug!("session ended during its renewal; discarding the copy");
                        let key = id.storage_key(&config.key_prefix);
                        self.store.write(&Write::Delete { key }).await?;
                        return Ok(None);
                    }
                }
                let value = config.signer.sign(&id, remember);
                Some(config.cookie.session_cookie(value, remember))
            }
        })
    }

    /// Stores a new record under `id`, or under another fresh id if that one is taken;
    /// returns the id used.
    async fn create(
        &self,
        mut id: SessionId,
        fields: Vec<(String, Vec<u8>)>,
        ttl: Duration,
    ) -> Result<SessionId, StoreError> {
        let mut write = Write::Create {
            key: id.storage_key(&self.config.key_prefix),
            fields,
            ttl,
        };
        let mut attempt = 1;
        while self.store.write(&write).await? != Outcome::Applied {
            if attempt == CREATE_ATTEMPTS {
                return Err(StoreErrorKind::IdCollision.into());
            }
            tracing::warn!("new session id already taken; drawing another");
            attempt += 1;
            id = SessionId::generate();
            if let Write::Create { key, .. } = &mut write {
                *key = id.storage_key(&self.config.key_prefix);
            }
        }
        Ok(id)
    }

    /// The cookie of a session that goes on, when it must be sent again: signed with an old
    /// key, a new "remember me" lifetime, or a persistent cookie whose Max-Age moves.
    fn refreshed_cookie(&self, live: &Live, stale_key: bool) -> Option<Cookie<'static>> {
        let config = &self.config;
        let persistent = live.remember.or(config.cookie.max_age).is_some();
        (stale_key || live.remember_changed || persistent).then(|| {
            let value = config.signer.sign(&live.id, live.remember);
            config.cookie.session_cookie(value, live.remember)
        })
    }
}

/// The values of the cookies called `name` in one Cookie header (`a=1; b=2`), surrounding
/// whitespace and optional double quotes removed.
fn cookie_values<'a>(header: &'a [u8], name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    header.split(|&b| b == b';').filter_map(move |pair| {
        let (key, value) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
        (key.trim_ascii() == name).then(|| {
            let value = value[1..].trim_ascii();
            value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value)
        })
    })
}

/// `503 Service Unavailable` with `Retry-After: 1` and an opaque body.
pub(crate) fn unavailable() -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .insert_header((header::RETRY_AFTER, "1"))
        .content_type("text/plain; charset=utf-8")
        .body("Service Unavailable")
}

#[cfg(test)]
mod tests {
    use actix_web::{test, web, App};

    use super::*;
    use crate::cookie::tests::FORCED_IDS;

    async fn set(session: Session, value: web::Path<String>) -> actix_web::Result<String> {
        session.insert("v", value.into_inner())?;
        Ok("ok".into())
    }

    async fn get(session: Session) -> actix_web::Result<String> {
        Ok(session.get::<String>("v")?.unwrap_or_default())
    }

    /// Creates a session whose id is drawn from `ids`; returns the cookie value.
    async fn create_with_ids(sessions: &RedisSession, ids: &[[u8; 32]], value: &str) -> String {
        FORCED_IDS.with(|f| f.borrow_mut().extend(ids.iter().copied()));
        let app = test::init_service(
            App::new()
                .wrap(sessions.clone())
                .route("/set/{v}", web::get().to(set)),
        )
        .await;
        let req = test::TestRequest::get()
            .uri(&format!("/set/{value}"))
            .to_request();
        let res = test::call_service(&app, req).await;
        assert!(res.status().is_success());
        assert!(
            FORCED_IDS.with(|f| f.borrow().is_empty()),
            "all forced ids used"
        );
        let cookie = res.response().cookies().next().expect("a session cookie");
        cookie.value().to_owned()
    }

    async fn read(sessions: &RedisSession, cookie: &str) -> String {
        let app = test::init_service(
            App::new()
                .wrap(sessions.clone())
                .route("/", web::get().to(get)),
        )
        .await;
        let req = test::TestRequest::get()
            .cookie(Cookie::new("sid", cookie.to_owned()))
            .to_request();
        String::from_utf8(test::call_and_read_body(&app, req).await.to_vec()).unwrap()
    }

    async fn a_taken_id_is_never_overwritten(sessions: RedisSession) {
        let (a, b) = ([0xaa; 32], [0xbb; 32]);
        let first = create_with_ids(&sessions, &[a], "first").await;
        // The next new session draws `a` again: taken, so it must draw another.
        let second = create_with_ids(&sessions, &[a, b], "second").await;
        let signer = &sessions.inner.config.signer;
        assert_eq!(
            signer.verify(&first).unwrap().id.handle(),
            crate::cookie::SessionId::from_bytes(a).handle()
        );
        assert_eq!(
            signer.verify(&second).unwrap().id.handle(),
            crate::cookie::SessionId::from_bytes(b).handle()
        );
        assert_eq!(
            read(&sessions, &first).await,
            "first",
            "the first session is intact"
        );
        assert_eq!(read(&sessions, &second).await, "second");

        // A random source stuck on one value gives up with an error instead of looping.
        FORCED_IDS.with(|f| f.borrow_mut().extend([a, a, a]));
        let app = test::init_service(
            App::new()
                .wrap(sessions.clone())
                .route("/set/{v}", web::get().to(set)),
        )
        .await;
        let res =
            test::call_service(&app, test::TestRequest::get().uri("/set/x").to_request()).await;
        assert_eq!(res.status(), 503);
        assert_eq!(read(&sessions, &first).await, "first");
    }

    #[::core::prelude::v1::test]
    fn cookie_values_are_found_in_any_position_and_form() {
        let values = |header: &[u8]| -> Vec<Vec<u8>> {
            cookie_values(header, b"sid").map(<[u8]>::to_vec).collect()
        };
        assert_eq!(values(b"sid=a.b"), [b"a.b".to_vec()]);
        assert_eq!(values(b"x=1; sid=a.b; y=2"), [b"a.b".to_vec()]);
        assert_eq!(values(b"x=1;sid=\"a.b\" ;y"), [b"a.b".to_vec()]);
        assert_eq!(values(b" sid = a.b "), [b"a.b".to_vec()]);
        assert_eq!(
            values(b"sid=one; other=x; sid=two"),
            [b"one".to_vec(), b"two".to_vec()]
        );
        assert_eq!(values(b"sid=a=b"), [b"a=b".to_vec()]);
        assert_eq!(values(b"sid="), [Vec::<u8>::new()]);
        assert!(values(b"sidx=1; xsid=2; sid; =sid").is_empty());
        assert_eq!(
            values(b"\xff\xfe=1; sid=\xff.\x00"),
            [b"\xff.\x00".to_vec()]
        );
        assert!(values(b"").is_empty());
    }

    #[actix_web::test]
    async fn a_colliding_new_id_is_replaced_in_the_memory_store() {
        a_taken_id_is_never_overwritten(RedisSession::memory(Key::generate())).await;
    }

    #[actix_web::test]
    async fn a_colliding_new_id_is_replaced_in_redis() {
        let server = crate::test_redis::RedisServer::start();
        let sessions = RedisSession::new(server.url(), Key::generate()).unwrap();
        a_taken_id_is_never_overwritten(sessions).await;
    }
}
