//! `RedisSession`: the middleware that reads the session cookie, lets the extractors load
//! the session when a handler first asks for it, and saves what changed after the handler.

mod incoming;
mod sealed;
mod server;

use std::{
    cell::{Cell, RefCell},
    future::{ready, Future, Ready},
    pin::Pin,
    rc::Rc,
    sync::Arc,
    time::Instant,
};

use actix_web::{
    body::{EitherBody, MessageBody},
    dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform},
    Error, HttpMessage,
};
use tracing::Instrument as _;

use self::{incoming::Incoming, server::Server};
use crate::{
    binding::{self, Binding, BindingMismatch, Checked},
    bridge::{self, Old, OldCookie},
    callback::run_callback,
    config::{OnStoreError, SessionConfig},
    cookie::Verified,
    error::{unavailable, SessionError, SessionLoadError, StoreError},
    session::{LoadSession, Loader, Session},
    store::{cookie::Sealer, Budget, Guarded, StoreHealth},
    telemetry,
};

/// The session middleware: `App::new().wrap(RedisSession::new(url, key)?)`.
///
/// For each request it verifies the session cookie; the first extraction of [`Session`],
/// [`TypedSession`](crate::TypedSession), [`Flash`](crate::Flash) or
/// [`IncomingFlashMessages`](crate::IncomingFlashMessages) loads the session in one round
/// trip (refreshing its idle timeout at the same time). After the handler it writes only what
/// changed, in one more round trip, and sets or removes the cookie as needed. A request that
/// changes nothing costs no write; one whose handler never asks for the session costs the
/// store nothing at all ([`lazy_load`](crate::RedisSessionBuilder::lazy_load)).
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
    engine: Engine,
}

/// Where the sessions of a middleware live.
#[derive(Clone)]
pub(crate) enum Engine {
    /// A server-side store behind the retry and breaker layer: the cookie holds a signed id.
    Server(Guarded),
    /// The cookie holds the whole session, sealed ([`CookieStore`](crate::store::CookieStore)).
    Cookie(Arc<Sealer>),
}

impl Engine {
    /// The engine as one actix worker uses it: the multiplexed transport gets a connection
    /// of its own per worker; the others are shared.
    fn for_worker(&self) -> Engine {
        match self {
            Engine::Server(store) => Engine::Server(store.for_worker()),
            Engine::Cookie(sealer) => Engine::Cookie(Arc::clone(sealer)),
        }
    }
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
    pub(crate) fn from_parts(config: Arc<SessionConfig>, engine: Engine) -> RedisSession {
        RedisSession {
            inner: Arc::new(Inner { config, engine }),
        }
    }

    /// The administration of this middleware's sessions: count, list, read and end them,
    /// other users' included ([`SessionAdmin`](crate::SessionAdmin)). Each call makes a new
    /// one (on the multiplexed transport with a connection of its own): make it once and
    /// share it, e.g. as `web::Data`.
    pub fn admin(&self) -> crate::SessionAdmin {
        let store = match &self.inner.engine {
            Engine::Server(store) => Some(store.store()),
            Engine::Cookie(_) => None,
        };
        let cache = match &self.inner.engine {
            Engine::Server(store) => store.cache().cloned(),
            Engine::Cookie(_) => None,
        };
        crate::SessionAdmin::new(
            crate::admin::Lister::of(store),
            Arc::clone(&self.inner.config),
            cache,
        )
    }

    /// How the session store is doing: the [circuit breaker](crate::CircuitBreaker)'s
    /// state and the store operations that failed in a row. Shared by every worker (and
    /// every clone) of this middleware. The memory and cookie stores, which cannot fail,
    /// are always healthy.
    ///
    /// # Examples
    ///
    /// A readiness probe that reports an open breaker:
    ///
    /// ```
    /// use actix_redis_session::{Key, RedisSession};
    /// use actix_web::{web, App, HttpResponse};
    ///
    /// let sessions = RedisSession::memory(Key::generate());
    /// let probe = sessions.clone();
    /// let app = App::new().wrap(sessions).route(
    ///     "/ready",
    ///     web::get().to(move || {
    ///         let health = probe.store_health();
    ///         async move {
    ///             if health.is_available() {
    ///                 HttpResponse::Ok().finish()
    ///             } else {
    ///                 HttpResponse::ServiceUnavailable().finish()
    ///             }
    ///         }
    ///     }),
    /// );
    /// # drop(app);
    /// ```
    pub fn store_health(&self) -> StoreHealth {
        self.health()
    }

    /// What the [local cache](crate::RedisSessionBuilder::local_cache) has done: hits,
    /// misses, invalidations, evictions, and whether tracking is on now. `None` without a
    /// local cache. Shared by every worker and clone of this middleware.
    ///
    /// ```
    /// use actix_redis_session::{Key, RedisSession};
    ///
    /// let sessions = RedisSession::memory(Key::generate());
    /// assert!(sessions.cache_stats().is_none());
    /// ```
    pub fn cache_stats(&self) -> Option<crate::store::CacheStats> {
        match &self.inner.engine {
            Engine::Server(store) => store.cache_stats(),
            Engine::Cookie(_) => None,
        }
    }

    fn health(&self) -> StoreHealth {
        match &self.inner.engine {
            Engine::Server(store) => store.health(),
            Engine::Cookie(_) => Guarded::healthy(),
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
            engine: self.inner.engine.for_worker(),
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

/// The session of one request, loaded on first use: the middleware puts it in the request's
/// extensions, the extractors (and [`SessionExt::load_session`](crate::SessionExt)) load it,
/// and after the handler the middleware saves it, if it was loaded.
struct Pending {
    inner: Arc<Inner>,
    incoming: Incoming,
    /// Exactly one value of our cookie came: a removal cookie for it cannot hit another.
    only_one: bool,
    /// An actix-session cookie came ([`crate::FromActixSession`]): once the session is
    /// loaded (and moved over, if it could be), the browser is told to drop it.
    old_cookie: bool,
    /// Set once, by the first extraction: the session and whether its cookie was signed
    /// with an old key, or the load error (which later extractions get too, without a
    /// second round trip).
    loaded: tokio::sync::OnceCell<Result<(Session, bool), StoreError>>,
    /// With client binding: this request's client.
    client: Option<binding::Client>,
    /// The cookie named a session bound to another client: reported after the handler.
    mismatch: Cell<Option<BindingMismatch>>,
    /// The load failed: reported after the handler.
    failure: RefCell<Option<StoreError>>,
    /// Stored data the load could not read: reported after the handler.
    problems: RefCell<Vec<SessionLoadError>>,
    /// The store time this request has left.
    budget: Budget,
}

/// This request's client, for the binding check of a loaded session.
pub(super) struct ThisClient<'a> {
    binding: &'a Binding,
    client: &'a binding::Client,
    pub(super) mismatch: &'a Cell<Option<BindingMismatch>>,
}

impl ThisClient<'_> {
    /// Its `m:b`.
    pub(super) fn bound(&self) -> &[u8] {
        self.binding.value(self.client)
    }

    /// Whether a stored session is this client's: `Ok(true)` if its binding must be written.
    pub(super) fn check(&self, fields: &crate::store::Fields) -> Result<bool, BindingMismatch> {
        self.binding
            .check(self.client, fields)
            .map(|checked| checked == Checked::Rebind)
    }
}

impl Loader for Pending {
    fn load(self: Rc<Self>) -> LoadSession {
        if let Some(now) = self.session_now() {
            return Box::pin(ready(now.map_err(SessionError::Unavailable)));
        }
        Box::pin(async move { self.session().await.map_err(SessionError::Unavailable) })
    }

    fn session_now(&self) -> Option<Result<Session, StoreError>> {
        if let Some(loaded) = self.loaded.get() {
            return Some(shared(loaded));
        }
        match self.incoming {
            Incoming::Valid { .. } | Incoming::Sealed(_) | Incoming::Foreign(_) => None,
            Incoming::Absent | Incoming::Rejected => {
                if matches!(self.incoming, Incoming::Rejected) {
                    telemetry::load("invalid", None);
                }
                let fresh = self.fresh();
                // Nothing to load, so no load can have raced in first.
                let _ = self.loaded.set(Ok((fresh.clone(), false)));
                Some(Ok(fresh))
            }
        }
    }
}

/// The device a user signs in from, for their device list: its User-Agent (cut to
/// [`MAX_AGENT`](crate::record::MAX_AGENT) bytes) and its network, found as
/// [`bind_to_ip`](crate::RedisSessionBuilder::bind_to_ip) finds the client's address (its
/// trusted proxies believed), else from the peer.
fn device(
    config: &SessionConfig,
    req: &actix_web::HttpRequest,
) -> (Option<String>, Option<String>) {
    let agent = req
        .headers()
        .get(actix_web::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|agent| {
            let mut end = agent.len().min(crate::record::MAX_AGENT);
            while !agent.is_char_boundary(end) {
                end -= 1;
            }
            agent[..end].to_owned()
        });
    let network = match config.binding.as_ref().and_then(Binding::client_ip) {
        Some(client_ip) => client_ip.device_network(req),
        None => crate::ClientIp::peer().device_network(req),
    };
    (agent, network)
}

/// Whether a session moved over from actix-session keeps within this middleware's limits
/// (those a handler's `insert` and a load check): stored otherwise, its next load would
/// discard it.
fn fits(config: &SessionConfig, fields: &crate::store::Fields) -> bool {
    let limits = &config.limits;
    fields.len() <= limits.max_fields
        && crate::state::record_size(fields) <= limits.max_session_size
        && fields.iter().all(|(name, value)| {
            name.len() - crate::record::DATA_PREFIX.len() <= limits.max_key_len
                && value.len() <= limits.max_value_size
        })
}

/// Logs a failed load or save: an error, except while the circuit breaker is open (its
/// opening was logged once; a line per request would flood the log).
fn log_failure(what: &'static str, e: &StoreError) {
    if e.kind() == crate::StoreErrorKind::CircuitOpen {
        tracing::debug!(error = %e, "{what}");
    } else {
        tracing::error!(error = %e, source = %e.loggable_source(), "{what}");
    }
}

/// Microseconds since `started`, for the latency of a span.
fn micros(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// A handle to the loaded session (or the load's error) for one more extraction.
fn shared(loaded: &Result<(Session, bool), StoreError>) -> Result<Session, StoreError> {
    loaded
        .as_ref()
        .map(|(session, _)| session.clone())
        .map_err(Clone::clone)
}

impl Pending {
    fn this_client(&self) -> Option<ThisClient<'_>> {
        let binding = self.inner.config.binding.as_ref()?;
        let client = self.client.as_ref()?;
        Some(ThisClient {
            binding,
            client,
            mismatch: &self.mismatch,
        })
    }

    /// A new session, bound to this client if binding is on.
    fn fresh(&self) -> Session {
        let session = Session::fresh(Arc::clone(&self.inner.config));
        if let Some(client) = self.this_client() {
            session.lock().bind(client.bound(), false);
        }
        session
    }

    /// The session, loaded now if no extraction did it before.
    async fn session(&self) -> Result<Session, StoreError> {
        shared(self.loaded.get_or_init(|| self.load_now()).await)
    }

    async fn load_now(&self) -> Result<(Session, bool), StoreError> {
        let inner = &self.inner;
        let config = &inner.config;
        let client = self.this_client();
        match &self.incoming {
            Incoming::Sealed(opened) => match sealed::open(config, opened, client.as_ref()) {
                Some(opened) => {
                    let dropped = opened.0.lock().take_dropped();
                    telemetry::load(if dropped.is_empty() { "hit" } else { "corrupt" }, None);
                    self.problems
                        .borrow_mut()
                        .extend(dropped.into_iter().map(SessionLoadError::unreadable));
                    Ok(opened)
                }
                None => {
                    telemetry::load("bound_elsewhere", None);
                    Ok((self.fresh(), false))
                }
            },
            Incoming::Valid { first, rest } => {
                let span = tracing::debug_span!(
                    "session_load",
                    outcome = tracing::field::Empty,
                    latency_us = tracing::field::Empty
                );
                let started = Instant::now();
                let loaded = inner
                    .server(&self.budget)
                    .load(first, rest, client.as_ref(), &self.problems)
                    .instrument(span.clone())
                    .await;
                let outcome = match &loaded {
                    Ok(_) if !self.problems.borrow().is_empty() => "corrupt",
                    Ok((session, _)) if session.lock().key.is_some() => "hit",
                    Ok(_) if self.mismatch.get().is_some() => "bound_elsewhere",
                    Ok(_) => "miss",
                    Err(_) => "error",
                };
                span.record("outcome", outcome);
                span.record("latency_us", micros(started));
                telemetry::load(outcome, Some(started.elapsed()));
                if let Err((e, _)) = &loaded {
                    telemetry::store_error(e.kind());
                }
                match loaded {
                    Ok((session, stale_key)) => {
                        if let Some(client) = &client {
                            let mut state = session.lock();
                            if !state.is_bound() {
                                state.bind(client.bound(), false);
                            }
                        }
                        Ok((session, stale_key))
                    }
                    Err((e, key)) => self.load_failed("session load failed", e, key),
                }
            }
            Incoming::Foreign(old) => self.migrate(old).await,
            Incoming::Absent => Ok((self.fresh(), false)),
            Incoming::Rejected => {
                telemetry::load("invalid", None);
                Ok((self.fresh(), false))
            }
        }
    }

    /// The actix-session session under `old`, moved into a new session of ours (a fresh one
    /// if it is gone).
    async fn migrate(&self, old: &str) -> Result<(Session, bool), StoreError> {
        let config = &self.inner.config;
        let (Engine::Server(store), Some(bridge)) = (&self.inner.engine, &config.bridge) else {
            // The builder allows the bridge with the Redis store only.
            return Ok((self.fresh(), false));
        };
        let span = tracing::debug_span!("session_migrate", outcome = tracing::field::Empty);
        let started = Instant::now();
        let loaded = bridge::load(bridge, store, &self.budget, old)
            .instrument(span.clone())
            .await;
        let outcome = match &loaded {
            Ok(Some(_)) => "migrated",
            Ok(None) => "miss",
            Err(_) => "error",
        };
        span.record("outcome", outcome);
        telemetry::load(outcome, Some(started.elapsed()));
        match loaded {
            Ok(Some(Old::Moved(id, remember))) => {
                // Moved a moment ago by a request sent with this one: that session, and our
                // cookie for it (as if it were signed with an old key: sent again).
                tracing::debug!("actix-session session moved by another request; following it");
                let verified = Verified {
                    id,
                    remember,
                    stale_key: true,
                };
                let client = self.this_client();
                self.inner
                    .server(&self.budget)
                    .load(&verified, &[], client.as_ref(), &self.problems)
                    .await
                    .or_else(|(e, key)| self.load_failed("session load failed", e, key))
            }
            Ok(Some(Old::State(fields, _))) if !fits(config, &fields) => {
                // Moved, it would be discarded on its next load: it stays where it is (and
                // its cookie with it), and this request gets a fresh session.
                tracing::warn!(
                    values = fields.len(),
                    "actix-session session over this middleware's limits (max_value_size, \
                     max_key_len, max_fields, max_session_size); not moved"
                );
                Ok((self.fresh(), false))
            }
            Ok(Some(Old::State(fields, left))) => {
                tracing::debug!(
                    values = fields.len(),
                    "moving an actix-session session over"
                );
                let session = Session::migrated(Arc::clone(config), fields, left, old.to_owned());
                if let Some(client) = self.this_client() {
                    session.lock().bind(client.bound(), false);
                }
                Ok((session, false))
            }
            Ok(None) => {
                tracing::debug!(
                    "actix-session cookie verified, but its session is not in Redis (expired, \
                     ended, or under another key_prefix)"
                );
                Ok((self.fresh(), false))
            }
            Err(e) => {
                telemetry::store_error(e.kind());
                // Degraded, a logout still deletes the old record.
                self.load_failed("actix-session session load failed", e, old.to_owned())
            }
        }
    }

    /// A load that failed: logged, reported after the handler, and answered by the
    /// [`OnStoreError`] policy (fail-open: a degraded session whose purge deletes `key`).
    fn load_failed(
        &self,
        what: &'static str,
        e: StoreError,
        key: String,
    ) -> Result<(Session, bool), StoreError> {
        log_failure(what, &e);
        *self.failure.borrow_mut() = Some(e.clone());
        match self.inner.config.on_store_error {
            OnStoreError::FailOpen => Ok((
                Session::degraded(Arc::clone(&self.inner.config), key),
                false,
            )),
            _ => Err(e),
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
        let (mut incoming, only_one) = match &self.engine {
            Engine::Server(_) => incoming::read_signed(config, &req),
            Engine::Cookie(sealer) => incoming::read_sealed(config, sealer, &req),
        };
        let mut old_cookie = false;
        if let (Some(bridge), Incoming::Absent | Incoming::Rejected) = (&config.bridge, &incoming) {
            match bridge.read(req.headers()) {
                Some(OldCookie::Valid(old)) => {
                    incoming = Incoming::Foreign(old);
                    old_cookie = true;
                }
                // Tampered, or under another key: a fresh session; the cookie goes once one of
                // ours replaces it.
                Some(OldCookie::Invalid) => old_cookie = true,
                None => {}
            }
        }
        let client = config
            .binding
            .as_ref()
            .map(|binding| binding.client(req.request()));
        let pending = Rc::new(Pending {
            inner: Arc::clone(self),
            incoming,
            only_one,
            old_cookie,
            loaded: tokio::sync::OnceCell::new(),
            client,
            mismatch: Cell::new(None),
            failure: RefCell::new(None),
            problems: RefCell::new(Vec::new()),
            budget: Budget::new(config.store_budget),
        });
        if !config.lazy_load && pending.session().await.is_err() {
            // Loaded before routing, as guards need; fail-closed: nothing else to do.
            if let Some(e) = pending.failure.take() {
                self.store_failed(req.request(), &e);
            }
            return Ok(req.into_response(unavailable()).map_into_right_body());
        }
        let loader: Rc<dyn Loader> = Rc::clone(&pending) as Rc<dyn Loader>;
        req.extensions_mut().insert(loader);

        let mut res = service.call(req).await?;
        if let (Some(mismatch), Some(binding)) = (pending.mismatch.take(), &config.binding) {
            binding.report(res.request(), &mismatch);
        }
        if let Some(e) = pending.failure.take() {
            self.store_failed(res.request(), &e);
        }
        if let Some(callback) = &config.on_session_load_error {
            for problem in pending.problems.take() {
                run_callback("on_session_load_error", || {
                    (callback.0)(res.request(), &problem)
                });
            }
        }

        // Never loaded (or its load failed, which the extractor answered): nothing to save,
        // no cookie to set. The request cost the store nothing.
        let Some(Ok((session, stale_key))) = pending.loaded.get() else {
            return Ok(res.map_into_left_body());
        };
        // A cookie that leads nowhere is removed, if it came alone: with several of our name,
        // a removal for our path and domain could delete the live one instead.
        let remove_dead = pending.only_one;
        let (plan, logout, change) = {
            let mut state = session.lock();
            let logout = state.purged();
            let change = state.user_change();
            // The device list is of server-side sessions; a sealed cookie keeps its bytes.
            if change.set && config.record_devices && matches!(self.engine, Engine::Server(_)) {
                let (agent, network) = device(config, res.request());
                state.set_device(agent.as_deref(), network);
            }
            (state.plan(), logout, change)
        };
        let saved = match &self.engine {
            Engine::Server(store) => {
                let server = Server {
                    config,
                    store,
                    budget: &pending.budget,
                };
                let kind = plan.kind();
                let span = tracing::debug_span!(
                    "session_save",
                    kind,
                    outcome = tracing::field::Empty,
                    latency_us = tracing::field::Empty
                );
                let started = Instant::now();
                let saved = server
                    .save_with_user(plan, remove_dead, *stale_key, change)
                    .instrument(span.clone())
                    .await;
                span.record("outcome", if saved.is_ok() { "ok" } else { "error" });
                span.record("latency_us", micros(started));
                telemetry::save(kind, saved.is_ok(), started.elapsed());
                if let Err(e) = &saved {
                    telemetry::store_error(e.kind());
                }
                saved
            }
            Engine::Cookie(sealer) => {
                sealed::save(config, sealer, session, plan, remove_dead, *stale_key)
            }
        };
        let cookie = match saved {
            Ok(cookie) => cookie,
            Err(e) => {
                log_failure("session save failed", &e);
                self.store_failed(res.request(), &e);
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
        // The actix-session cookie goes when a session cookie of ours replaces it (its
        // session moved, or a new one began) or on a logout: never for a cookie that did not verify or
        // named no session, which a misconfigured bridge (another key, another prefix)
        // would take every old user's cookie for; nor after a failed load, or a move that
        // found its old record ended meanwhile (a concurrent request moved it first).
        let replaced = cookie
            .as_ref()
            .is_some_and(|c| c.name() == config.cookie.name && !c.value().is_empty());
        // A logout ends the old session too (its record is deleted with the plan).
        let old_removal = (pending.old_cookie && (replaced || logout))
            .then(|| {
                config
                    .bridge
                    .as_ref()
                    .and_then(bridge::Bridge::removal_cookie)
            })
            .flatten();
        for cookie in cookie.iter().chain(&old_removal) {
            if let Err(e) = res.response_mut().add_cookie(cookie) {
                tracing::error!(error = %e, "could not set the session cookie");
            }
        }
        Ok(res.map_into_left_body())
    }

    /// Tells the application's [`on_store_failure`](crate::RedisSessionBuilder::on_store_failure)
    /// callback, if any.
    fn store_failed(&self, req: &actix_web::HttpRequest, error: &StoreError) {
        if let Some(callback) = &self.config.on_store_failure {
            run_callback("on_store_failure", || (callback.0)(req, error));
        }
    }

    /// The server-side half, for a middleware with a server-side store.
    fn server<'a>(&'a self, budget: &'a Budget) -> Server<'a> {
        match &self.engine {
            Engine::Server(store) => Server {
                config: &self.config,
                store,
                budget,
            },
            Engine::Cookie(_) => unreachable!("a signed id comes only with a server-side store"),
        }
    }
}
