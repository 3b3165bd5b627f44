//! Configuration values and policies: what the middleware and the session handles read at
//! run time, and the limits the [builder](crate::RedisSessionBuilder) checks them against.

use std::time::Duration;

use crate::{
    binding::Binding,
    codec::at_rest::AtRest,
    cookie::{CookieConfig, Signer},
    flash::Level,
};

/// What the middleware does when the session store fails (Redis down, timeout, pool exhausted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnStoreError {
    /// Answer `503 Service Unavailable` with `Retry-After: 1` and an opaque body; the detail is
    /// logged. A request whose session changes could not be saved gets the 503 too, so no
    /// client is told that a write succeeded when it did not. The default.
    #[default]
    FailClosed,
    /// Run the handler with an empty session whose [`status`](crate::Session::status) is
    /// [`Degraded`](crate::SessionStatus::Degraded) and that is never saved; when only the save
    /// fails, keep the handler's response. For sites where a page without a session beats an
    /// error page.
    ///
    /// A logout is the exception: a [`purge`](crate::Session::purge) (on a degraded session
    /// too) whose delete fails answers `503` with the removal cookie, as with `FailClosed`.
    FailOpen,
}

/// How the Redis store talks to Redis. Both use the same key layout, scripts and round trips;
/// sessions written by one are read by the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Transport {
    /// An r2d2 pool of blocking connections, used on actix's blocking thread pool
    /// (`web::block`), never on a worker thread. Concurrent requests are batched: the
    /// pipelines queued meanwhile go to Redis in one write on one connection, so the hop to a
    /// blocking thread and Redis's read are shared by many requests. The default, and the
    /// only transport that can share the application's own `r2d2::Pool`
    /// ([`RedisSession::from_pool`](crate::RedisSession::from_pool)).
    #[default]
    Pool,
    /// redis-rs's multiplexed async connection, one per actix worker, reconnecting by
    /// itself and awaited on the worker (no thread hop). The concurrent requests of a worker
    /// are batched into one pipeline per round trip: the highest throughput, and less Redis
    /// CPU per request than the pool.
    Multiplexed,
}

/// The callback of [`on_store_failure`](crate::RedisSessionBuilder::on_store_failure).
#[derive(Clone)]
pub(crate) struct StoreFailureCallback(pub(crate) std::sync::Arc<StoreFailureFn>);

/// What [`StoreFailureCallback`] calls.
pub(crate) type StoreFailureFn = dyn Fn(&actix_web::HttpRequest, &crate::StoreError) + Send + Sync;

impl std::fmt::Debug for StoreFailureCallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreFailureCallback")
    }
}

/// The callback of
/// [`on_session_load_error`](crate::RedisSessionBuilder::on_session_load_error).
#[derive(Clone)]
pub(crate) struct LoadErrorCallback(pub(crate) std::sync::Arc<LoadErrorFn>);

/// What [`LoadErrorCallback`] calls.
pub(crate) type LoadErrorFn =
    dyn Fn(&actix_web::HttpRequest, &crate::SessionLoadError) + Send + Sync;

impl std::fmt::Debug for LoadErrorCallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoadErrorCallback")
    }
}

/// Limits on what one session may hold.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Longest key name of a plain value, in bytes.
    pub(crate) max_key_len: usize,
    pub(crate) max_value_size: usize,
    pub(crate) max_fields: usize,
    /// Names and values of all data fields together.
    pub(crate) max_session_size: usize,
    /// The cookie store: the most plaintext bytes a sealed session may take for its cookie
    /// to fit in a browser.
    pub(crate) cookie_budget: Option<usize>,
}

/// Flash message settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FlashConfig {
    pub(crate) min_level: Level,
    pub(crate) max_message_size: usize,
    pub(crate) max_messages: usize,
}

/// Everything the middleware and the session handles read at run time.
#[derive(Debug)]
pub(crate) struct SessionConfig {
    /// Signs and verifies this middleware's cookies (its key, bound to its cookie name).
    pub(crate) signer: Signer,
    pub(crate) cookie: CookieConfig,
    pub(crate) idle_timeout: Duration,
    /// Zero: the idle timeout moves on every load.
    pub(crate) touch_after: Duration,
    pub(crate) absolute_timeout: Option<Duration>,
    /// The longest "remember me" lifetime, for new sessions and for cookies issued before.
    pub(crate) remember_max: Duration,
    /// [`Session::remember`](crate::Session::remember) makes cookies persistent (`true`) or
    /// does nothing.
    pub(crate) allow_remember: bool,
    /// `set_user` records the device (User-Agent, network).
    pub(crate) record_devices: bool,
    pub(crate) key_prefix: String,
    pub(crate) limits: Limits,
    /// How values are stored: sealed, compressed (server-side stores).
    pub(crate) at_rest: AtRest,
    /// The format values are written in, and those read.
    pub(crate) codecs: crate::codec::Codecs,
    /// Sessions of actix-session taken over ([`FromActixSession`](crate::FromActixSession)).
    pub(crate) bridge: Option<crate::bridge::Bridge>,
    /// Client binding, if the session is bound to the User-Agent or the IP.
    pub(crate) binding: Option<Binding>,
    pub(crate) flash: FlashConfig,
    pub(crate) on_store_error: OnStoreError,
    /// The longest a request waits for the store in all.
    pub(crate) store_budget: Duration,
    /// Told of every failed load or save, after the handler.
    pub(crate) on_store_failure: Option<StoreFailureCallback>,
    /// Told of stored data a load could not read, after the handler.
    pub(crate) on_session_load_error: Option<LoadErrorCallback>,
    /// Load on the first extraction (`true`) or before routing.
    pub(crate) lazy_load: bool,
}

/// Longest idle timeout, absolute timeout and "remember me" lifetime: 400 days, the longest
/// `Max-Age` browsers keep a cookie for (RFC 6265bis caps it there).
pub const MAX_LIFETIME: Duration = Duration::from_secs(400 * 86_400);

/// Longest connect, command and checkout timeout: 1 hour.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Default cookie name. Neutral on purpose: names like `actix-session` or `connect.sid` tell
/// an attacker which framework (and which known bugs) to try.
pub const DEFAULT_COOKIE_NAME: &str = "sid";
