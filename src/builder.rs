//! [`RedisSessionBuilder`]: every setting with its default and its check, and the wiring of
//! the chosen store into a [`RedisSession`].

use std::{sync::Arc, time::Duration};

use actix_web::cookie::SameSite;

use crate::{
    binding::{Binding, BindingMismatch, ClientIp, MismatchCallback},
    bridge::{Bridge, FromActixSession},
    codec::{at_rest::AtRest, Chosen, Codec, Codecs},
    config::{
        FlashConfig, Limits, LoadErrorCallback, OnStoreError, SessionConfig, StoreFailureCallback,
        Transport, DEFAULT_COOKIE_NAME, MAX_LIFETIME, MAX_TIMEOUT,
    },
    cookie::{CookieConfig, Signer},
    error::ConfigError,
    flash::Level,
    key::Key,
    middleware::{Engine, RedisSession},
    store::{
        commands::RedisOptions,
        cookie::{plaintext_budget, Sealer},
        memory::MemoryStore,
        Cache, Choice, CircuitBreaker, Guarded, IntoStore, LocalCache, MultiplexedStore,
        RedisStore, RedisTls, Retry, Source, Store, StoreChoice,
    },
};

/// The default [`RedisSessionBuilder::store_budget`].
const DEFAULT_STORE_BUDGET: Duration = Duration::from_secs(3);

enum Backend {
    Url(String),
    Pool(r2d2::Pool<redis::Client>),
    /// The master that these sentinels monitor under this name.
    #[cfg(feature = "sentinel")]
    Sentinel {
        sentinels: Vec<String>,
        master: String,
    },
    /// The Redis Cluster these nodes belong to.
    #[cfg(feature = "cluster")]
    Cluster(Vec<String>),
    /// A store given to [`RedisSession::builder_with`](crate::RedisSession::builder_with).
    Given(Choice),
    /// No store: [`SessionConfig::detached`].
    None,
}

impl SessionConfig {
    /// The default settings with a random key, for a [`Session::new`](crate::Session::new)
    /// that no middleware saves.
    pub(crate) fn detached() -> SessionConfig {
        RedisSessionBuilder::new(Backend::None, Key::generate())
            .into_config(Codecs::default(), None)
    }
}

/// Builds a [`RedisSession`]; start from [`RedisSession::builder`],
/// [`RedisSession::builder_from_pool`] or [`RedisSession::builder_with_memory`].
///
/// Every setter states its default. Durations are `std::time::Duration`, which cannot be
/// negative.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use actix_redis_session::{Key, OnStoreError, RedisSession};
///
/// let sessions = RedisSession::builder("redis://127.0.0.1:6379/0", Key::generate())
///     .cookie_name("app_session")
///     .idle_timeout(Duration::from_secs(30 * 60))
///     .absolute_timeout(Duration::from_secs(12 * 3600))
///     .key_prefix("myapp:session:")
///     .on_store_error(OnStoreError::FailOpen)
///     .build()?;
/// # Ok::<(), actix_redis_session::ConfigError>(())
/// ```
#[must_use]
pub struct RedisSessionBuilder {
    backend: Backend,
    key: Key,
    cookie: CookieConfig,
    persistent_cookie: bool,
    idle_timeout: Duration,
    touch_after: Duration,
    /// Whether the application called `touch_after` (the local cache sets a default only if
    /// not).
    touch_after_set: bool,
    absolute_timeout: Option<Duration>,
    remember_max: Duration,
    allow_remember: bool,
    record_devices: bool,
    key_prefix: String,
    limits: Limits,
    flash: FlashConfig,
    on_store_error: OnStoreError,
    retry: Retry,
    circuit_breaker: CircuitBreaker,
    store_budget: Duration,
    redis: RedisOptions,
    transport: Transport,
    /// The first Redis-only setter called, which a store of another kind refuses.
    redis_only: Option<&'static str>,
    /// A production preset refuses `#insecure` (no TLS verification) in the URL.
    refuse_insecure_tls: bool,
    lazy_load: bool,
    encrypt_at_rest: bool,
    reject_plain_values: bool,
    compress_above: Option<usize>,
    /// The format values are written in, and the other formats read.
    codec: Chosen,
    read_codecs: Vec<Chosen>,
    rewrite_formats_on_load: bool,
    actix_session: Option<FromActixSession>,
    bind_to_user_agent: bool,
    bind_to_ip: Option<ClientIp>,
    on_binding_mismatch: Option<MismatchCallback>,
    on_store_failure: Option<StoreFailureCallback>,
    on_session_load_error: Option<LoadErrorCallback>,
    /// The preset applied last, for the warning at start-up.
    preset: Option<Preset>,
    local_cache: Option<LocalCache>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Preset {
    Development,
    Production,
    HighSecurity,
}

impl RedisSessionBuilder {
    fn new(backend: Backend, key: Key) -> Self {
        RedisSessionBuilder {
            backend,
            key,
            cookie: CookieConfig {
                name: DEFAULT_COOKIE_NAME.to_owned(),
                path: "/".to_owned(),
                domain: None,
                secure: true,
                http_only: true,
                same_site: SameSite::Lax,
                max_age: None,
            },
            persistent_cookie: false,
            idle_timeout: Duration::from_secs(3600),
            touch_after: Duration::ZERO,
            touch_after_set: false,
            absolute_timeout: None,
            remember_max: MAX_LIFETIME,
            allow_remember: true,
            record_devices: true,
            key_prefix: "session:".to_owned(),
            limits: Limits {
                max_value_size: 64 * 1024,
                max_fields: 64,
                max_key_len: 256,
                max_session_size: 1024 * 1024,
                cookie_budget: None,
            },
            flash: FlashConfig {
                min_level: Level::Info,
                max_message_size: 4096,
                max_messages: 16,
            },
            on_store_error: OnStoreError::FailClosed,
            retry: Retry::new(),
            circuit_breaker: CircuitBreaker::new(),
            store_budget: DEFAULT_STORE_BUDGET,
            redis: RedisOptions::default(),
            transport: Transport::Pool,
            redis_only: None,
            refuse_insecure_tls: false,
            lazy_load: true,
            encrypt_at_rest: false,
            reject_plain_values: false,
            compress_above: None,
            codec: Chosen::Json,
            read_codecs: Vec::new(),
            rewrite_formats_on_load: false,
            actix_session: None,
            bind_to_user_agent: false,
            bind_to_ip: None,
            on_binding_mismatch: None,
            on_store_failure: None,
            on_session_load_error: None,
            preset: None,
            local_cache: None,
        }
    }

    pub(crate) fn redis(url: String, key: Key) -> Self {
        Self::new(Backend::Url(url), key)
    }

    pub(crate) fn pool(pool: r2d2::Pool<redis::Client>, key: Key) -> Self {
        Self::new(Backend::Pool(pool), key)
    }

    pub(crate) fn with_store(store: StoreChoice, key: Key) -> Self {
        Self::new(Backend::Given(store.0), key)
    }

    /// Name of the session cookie. Default: `sid`.
    ///
    /// An HTTP token: visible ASCII without separators (`()<>@,;:\"/[]?={}`). The prefixes
    /// browsers enforce are checked too: `__Secure-` needs [`cookie_secure`](Self::cookie_secure),
    /// `__Host-` needs it as well, path `/` and no domain (the strongest binding of a cookie to
    /// its host, and the recommended name for a single-host site: `__Host-sid`).
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie.name = name.into();
        self
    }

    /// `Path` of the session cookie. Default: `/`. Starts with `/`; visible ASCII without `;`.
    pub fn cookie_path(mut self, path: impl Into<String>) -> Self {
        self.cookie.path = path.into();
        self
    }

    /// `Domain` of the session cookie. Default: none (host-only cookie, the safest choice).
    /// A host name: ASCII letters, digits, `-` and `.` (a leading `.` is allowed and ignored
    /// by browsers), at most 253 characters.
    pub fn cookie_domain(mut self, domain: impl Into<String>) -> Self {
        self.cookie.domain = Some(domain.into());
        self
    }

    /// `Secure` flag: the browser sends the cookie over HTTPS only. Default: `true`.
    ///
    /// Browsers also accept Secure cookies from `http://localhost`, so development on
    /// localhost works with the default. Turn it off only for other plain-HTTP hosts.
    pub fn cookie_secure(mut self, secure: bool) -> Self {
        self.cookie.secure = secure;
        self
    }

    /// `HttpOnly` flag: scripts cannot read the cookie. Default: `true`.
    pub fn cookie_http_only(mut self, http_only: bool) -> Self {
        self.cookie.http_only = http_only;
        self
    }

    /// `SameSite` attribute. Default: [`SameSite::Lax`]. [`SameSite::None`] needs
    /// [`cookie_secure`](Self::cookie_secure): browsers drop a `SameSite=None` cookie that
    /// is not `Secure`.
    pub fn cookie_same_site(mut self, same_site: SameSite) -> Self {
        self.cookie.same_site = same_site;
        self
    }

    /// Persistent cookie: `Max-Age` equal to the idle timeout, moved forward on every response,
    /// so the cookie survives a browser restart as long as the session does. Default: `false`,
    /// a browser-session cookie that goes when the browser closes.
    ///
    /// A single session can instead be made persistent with
    /// [`Session::remember`](crate::Session::remember).
    pub fn persistent_cookie(mut self, persistent: bool) -> Self {
        self.persistent_cookie = persistent;
        self
    }

    /// Sliding idle timeout: a session not used for this long is gone. Every request that
    /// loads the session moves it forward (in the same round trip as the load; see
    /// [`touch_after`](Self::touch_after) to do that less often). Enforced by the store
    /// (Redis TTL), not by the cookie. Default: 1 hour. From 1 second to [`MAX_LIFETIME`]
    /// (400 days).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Moves the idle timeout forward at most once per `interval` per session, instead of on
    /// every request. Default: zero, every request. Must be shorter than the idle timeout.
    ///
    /// With an interval, loading a session is a lone `HGETALL`: a request that changes
    /// nothing writes nothing to Redis (no `PEXPIRE` to run, replicate or append to the AOF)
    /// until the session's last refresh is `interval` old; that request then refreshes the
    /// TTL and records the time (field `m:t`) right after the load, while its handler runs,
    /// without waiting for the reply. Requests that write refresh it anyway. The price: a
    /// session expires between `idle_timeout - interval` and `idle_timeout` after its last
    /// request, instead of exactly `idle_timeout` after it. A "remember me" lifetime shorter
    /// than twice the interval is refreshed at least twice per lifetime. The same trade as
    /// connect-mongo's `touchAfter`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use actix_redis_session::{Key, RedisSession};
    ///
    /// // Idle sessions end after 30 to 31 minutes; at most one TTL write per minute each.
    /// let sessions = RedisSession::builder("redis://127.0.0.1:6379", Key::generate())
    ///     .idle_timeout(Duration::from_secs(31 * 60))
    ///     .touch_after(Duration::from_secs(60))
    ///     .build()?;
    /// # Ok::<(), actix_redis_session::ConfigError>(())
    /// ```
    pub fn touch_after(mut self, interval: Duration) -> Self {
        self.touch_after = interval;
        self.touch_after_set = true;
        self
    }

    /// Keeps loaded sessions in this process's memory, coherent with Redis: a request whose
    /// session is cached costs no Redis round trip, and Redis tells every process the moment
    /// a session changes anywhere (`CLIENT TRACKING` in broadcast mode, one connection per
    /// middleware), so a write on one server is seen by the next request on every other.
    /// Off by default. See [`LocalCache`] for the sizes, and the README's "Local cache" for
    /// the guarantees and when not to use it.
    ///
    /// Needs [`touch_after`](Self::touch_after), because every TTL refresh evicts the
    /// session from every cache: left at zero (or by a preset), it becomes 60 seconds, or
    /// half the idle timeout if that is shorter, and `build` says so in the log; set to zero
    /// by this builder's own call, `build` fails. One Redis server by URL
    /// ([`RedisSession::builder`]) or Redis Sentinel
    /// ([`RedisSession::builder_sentinel`]: tracking follows the master through a failover),
    /// either transport: `build` fails with a cluster, an application's pool or another
    /// store.
    ///
    /// ```
    /// use std::time::Duration;
    /// use actix_redis_session::{store::LocalCache, Key, RedisSession, Transport};
    ///
    /// let sessions = RedisSession::builder("redis://127.0.0.1:6379", Key::generate())
    ///     .transport(Transport::Multiplexed)
    ///     .touch_after(Duration::from_secs(120))
    ///     .local_cache(LocalCache::new().max_bytes(128 << 20))
    ///     .build()?;
    /// // Hits, misses, invalidations: `sessions.cache_stats()`.
    /// # drop(sessions);
    /// # Ok::<(), actix_redis_session::ConfigError>(())
    /// ```
    pub fn local_cache(mut self, cache: LocalCache) -> Self {
        self.redis_only.get_or_insert("local_cache");
        self.local_cache = Some(cache);
        self
    }

    /// Absolute lifetime: a session older than this is gone however active it is, checked
    /// against its creation time on every load. Default: none. From 1 second to
    /// [`MAX_LIFETIME`] (400 days).
    pub fn absolute_timeout(mut self, timeout: Duration) -> Self {
        self.absolute_timeout = Some(timeout);
        self
    }

    /// The longest "remember me" lifetime ([`Session::remember`](crate::Session::remember)):
    /// longer ones are cut to it, and so are the lifetimes in cookies issued before, on their
    /// next request (the cookie is then sent again with the shorter `Max-Age`), so that
    /// shortening the policy reaches every session. Default and maximum: [`MAX_LIFETIME`]
    /// (400 days); at least 1 second.
    pub fn remember_max(mut self, lifetime: Duration) -> Self {
        self.remember_max = lifetime;
        self
    }

    /// Whether [`Session::remember`](crate::Session::remember) may make a session persistent.
    /// Default: `true`. With `false` it does nothing, and cookies that carry a "remember
    /// me" lifetime from before get the idle timeout and a browser-session cookie from their
    /// next response on.
    pub fn allow_remember_me(mut self, allow: bool) -> Self {
        self.allow_remember = allow;
        self
    }

    /// Whether [`Session::set_user`](crate::Session::set_user) records the device a user
    /// signs in from, for their device list ([`SessionAdmin::sessions_of`]): its User-Agent
    /// (first 256 bytes) and its network (`/24` or `/64`, never the full address), in plain
    /// metadata fields of the session. Default: `true`. With `false` nothing about the device
    /// is stored (and a device list shows none).
    ///
    /// [`SessionAdmin::sessions_of`]: crate::SessionAdmin::sessions_of
    pub fn record_devices(mut self, record: bool) -> Self {
        self.record_devices = record;
        self
    }

    /// Starting point for local development: cookies without `Secure`, so that they work
    /// over plain `http://localhost` in every browser; a long idle timeout (24 hours). All
    /// else as by default (see the table on [`production`](Self::production)).
    /// [`build`](Self::build) says so in a warning, on stderr and in the log: never ship it.
    ///
    /// A preset sets the values in the table and nothing else; call it first, and setters
    /// after it override it.
    pub fn development(mut self) -> Self {
        self = self.production_values();
        self.refuse_insecure_tls = false;
        self.cookie.secure = false;
        self.idle_timeout = Duration::from_secs(24 * 3600);
        self.absolute_timeout = None;
        self.touch_after = Duration::ZERO;
        self.touch_after_set = false;
        self.preset = Some(Preset::Development);
        self
    }

    /// Starting point for a production deployment. A preset sets the values below and
    /// nothing else (the cookie name, the key prefix, the limits and the store are left as
    /// they are); call it first, and setters after it override it.
    ///
    /// | setting | [`development`](Self::development) | `production` | [`high_security`](Self::high_security) |
    /// |---|---|---|---|
    /// | [`cookie_secure`](Self::cookie_secure) | `false` | `true` | `true` |
    /// | [`cookie_http_only`](Self::cookie_http_only) | `true` | `true` | `true` |
    /// | [`cookie_same_site`](Self::cookie_same_site) | `Lax` | `Lax` | `Strict` |
    /// | [`persistent_cookie`](Self::persistent_cookie) | `false` | `false` | `false` |
    /// | [`idle_timeout`](Self::idle_timeout) | 24 h | 1 h | 15 min |
    /// | [`absolute_timeout`](Self::absolute_timeout) | none | 7 days | 8 h |
    /// | [`touch_after`](Self::touch_after) | 0 | 60 s | 0 |
    /// | [`allow_remember_me`](Self::allow_remember_me) | `true` | `true` | `false` |
    /// | [`remember_max`](Self::remember_max) | 30 days | 30 days | 30 days (unused) |
    /// | [`encrypt_at_rest`](Self::encrypt_at_rest) | `false` | `false` | `true` |
    /// | [`reject_plain_values`](Self::reject_plain_values) | `false` | `false` | `true` |
    /// | [`bind_to_user_agent`](Self::bind_to_user_agent) | `false` | `false` | `true` |
    /// | [`on_store_error`](Self::on_store_error) | `FailClosed` | `FailClosed` | `FailClosed` |
    /// | a `rediss://…#insecure` URL (no certificate check) | warns | refused | refused |
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use actix_redis_session::{Key, RedisSession};
    ///
    /// let sessions = RedisSession::builder("redis://127.0.0.1:6379", Key::generate())
    ///     .production()
    ///     .idle_timeout(Duration::from_secs(30 * 60)) // overrides the preset's 1 h
    ///     .build()?;
    /// # drop(sessions);
    /// # Ok::<(), actix_redis_session::ConfigError>(())
    /// ```
    pub fn production(mut self) -> Self {
        self = self.production_values();
        self.preset = Some(Preset::Production);
        self
    }

    /// Starting point for applications where a session is worth attacking (banking, admin
    /// consoles, health data): short idle (15 min) and absolute (8 h) timeouts with exact
    /// idle expiry, `SameSite=Strict`, every value sealed at rest, sessions bound to the
    /// User-Agent, and no "remember me". Stored values that are not sealed are refused
    /// ([`reject_plain_values`](Self::reject_plain_values)): an existing deployment moving
    /// to this preset adds `.reject_plain_values(false)` until its sessions have migrated.
    /// Values: the table on
    /// [`production`](Self::production). Add [`bind_to_ip`](Self::bind_to_ip) where clients
    /// keep their address, and a `__Host-` cookie name.
    ///
    /// `SameSite=Strict` means that following a link to the site from elsewhere (an email,
    /// another site) arrives without the session: the first page looks signed out until the
    /// next navigation within the site.
    pub fn high_security(mut self) -> Self {
        self = self.production_values();
        self.cookie.same_site = SameSite::Strict;
        self.idle_timeout = Duration::from_secs(15 * 60);
        self.absolute_timeout = Some(Duration::from_secs(8 * 3600));
        self.touch_after = Duration::ZERO;
        self.touch_after_set = false;
        self.allow_remember = false;
        self.encrypt_at_rest = true;
        self.reject_plain_values = true;
        self.bind_to_user_agent = true;
        self.preset = Some(Preset::HighSecurity);
        self
    }

    /// The `production` column of the presets' table.
    fn production_values(mut self) -> Self {
        self.refuse_insecure_tls = true;
        self.cookie.secure = true;
        self.cookie.http_only = true;
        self.cookie.same_site = SameSite::Lax;
        self.persistent_cookie = false;
        self.idle_timeout = Duration::from_secs(3600);
        self.absolute_timeout = Some(Duration::from_secs(7 * 86_400));
        self.touch_after = Duration::from_secs(60);
        self.touch_after_set = false;
        self.allow_remember = true;
        self.remember_max = Duration::from_secs(30 * 86_400);
        self.encrypt_at_rest = false;
        self.reject_plain_values = false;
        self.bind_to_user_agent = false;
        self.on_store_error = OnStoreError::FailClosed;
        self
    }

    /// Prefix of every Redis key this middleware writes. Default: `session:`.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Longest key name of a plain value ([`Session::insert`](crate::Session::insert)), in
    /// bytes; a longer one is [`SessionError::KeyTooLong`](crate::SessionError::KeyTooLong)
    /// at the insert. Default: 256. Keys are field names in every store (and in the
    /// cookie store, in the cookie): a key taken from user input must not grow a session
    /// without bound.
    pub fn max_key_len(mut self, bytes: usize) -> Self {
        self.limits.max_key_len = bytes;
        self
    }

    /// Largest encoded size of one value; a larger insert is
    /// [`SessionError::ValueTooLarge`](crate::SessionError::ValueTooLarge). Default: 64 KiB.
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.limits.max_value_size = bytes;
        self
    }

    /// Most values one session may hold (plain and typed; flash messages have a limit of
    /// their own); one more is
    /// [`SessionError::TooManyFields`](crate::SessionError::TooManyFields). Default: 64.
    pub fn max_fields(mut self, fields: usize) -> Self {
        self.limits.max_fields = fields;
        self
    }

    /// Largest size of a whole session: the names and encoded values of all its fields
    /// (plain, typed and flash) together. An insert that would grow the session past it is
    /// [`SessionError::SessionTooLarge`](crate::SessionError::SessionTooLarge); a stored
    /// record found larger on load (written under a larger limit, or by hand) is discarded
    /// with a warning, and the request gets a fresh session. Default: 1 MiB.
    ///
    /// Every request loads (and Redis reads and sends) the whole session, on its single
    /// thread: a bound on the total keeps one client's cookie from making every request of
    /// its own an expensive read for everyone's Redis.
    pub fn max_session_size(mut self, bytes: usize) -> Self {
        self.limits.max_session_size = bytes;
        self
    }

    /// Flash messages below this level are dropped when sent. Default: [`Level::Info`]
    /// (debug messages are dropped); lower it to `Level::Debug` in development.
    pub fn flash_min_level(mut self, level: Level) -> Self {
        self.flash.min_level = level;
        self
    }

    /// Longest flash message content, in bytes; a longer one is
    /// [`SessionError::FlashTooLarge`](crate::SessionError::FlashTooLarge). Default: 4096.
    pub fn flash_max_message_size(mut self, bytes: usize) -> Self {
        self.flash.max_message_size = bytes;
        self
    }

    /// Most flash messages waiting at once (and most `now` messages per request); one more
    /// is [`SessionError::TooManyFlashMessages`](crate::SessionError::TooManyFlashMessages).
    /// Default: 16.
    pub fn flash_max_messages(mut self, messages: usize) -> Self {
        self.flash.max_messages = messages;
        self
    }

    /// Seal every stored value with AES-256-GCM. Default: `false`.
    ///
    /// The cipher key is a sub-key of the middleware's [`Key`] (HKDF-SHA256, label
    /// `actix-redis-session v1 value encryption`); each value gets a fresh random 96-bit
    /// nonce, and its record's storage key and its field name are bound to it as associated
    /// data, so that a value copied to another field or another session does not open there
    /// (that field is dropped from the session; the rest of the session stays). Session ids
    /// never reach the store in any case (records are named by a SHA-256 of the id), so a
    /// dump of Redis, or of a [`FileStore`](crate::store::FileStore)'s directory, then shows
    /// neither ids nor values: only metadata (`m:*` fields: creation and touch times, the
    /// [client binding](Self::bind_to_user_agent) digest) and the number and names of fields.
    ///
    /// Migration goes both ways without a logout: with encryption on, plain values are read
    /// and sealed on the request that loads them; with it off, sealed values are read and
    /// written back plain. Values sealed under one of [`Key::previous_keys`] are read and
    /// sealed again under the current key on the request that loads them. A
    /// [`renew`](crate::Session::renew) seals every value again under the new record's key.
    /// Cost: 29 bytes and one AES-GCM pass per value. `encrypt_at_rest(false)` also turns
    /// [`reject_plain_values`](Self::reject_plain_values) off.
    ///
    /// The [cookie store](crate::store::CookieStore) seals the whole session anyway: there the
    /// setting changes nothing.
    pub fn encrypt_at_rest(mut self, encrypt: bool) -> Self {
        self.encrypt_at_rest = encrypt;
        if !encrypt {
            // Nothing is sealed any more: nothing to insist on.
            self.reject_plain_values = false;
        }
        self
    }

    /// With [`encrypt_at_rest`](Self::encrypt_at_rest): refuse stored values that are not
    /// sealed, instead of reading them and sealing them (the migration). Default: `false`.
    ///
    /// Sealing keeps a value secret and tied to its field and session, but while plain values
    /// are still read, someone who can write to the store can plant a plain value (say
    /// `d:role` = `"admin"`) and have it believed. Turn this on once every session has been
    /// seen (or has expired) since encryption was turned on, or from the start in a new
    /// deployment: an unsealed value is then dropped from the session, like a damaged one.
    /// [`build`](Self::build) refuses it without `encrypt_at_rest(true)`.
    pub fn reject_plain_values(mut self, reject: bool) -> Self {
        self.reject_plain_values = reject;
        self
    }

    /// Gzip-compress stored values whose encoded form is longer than `bytes`. Default: off.
    ///
    /// A value is stored compressed only if that makes it smaller; compressed and plain
    /// values are read alike, so the setting can change at any time. Decompression stops at
    /// [`max_value_size`](Self::max_value_size): a crafted value cannot expand without limit.
    /// The limits ([`max_value_size`](Self::max_value_size),
    /// [`max_session_size`](Self::max_session_size)) count values before compression.
    /// With [`encrypt_at_rest`](Self::encrypt_at_rest), values are compressed, then sealed.
    ///
    /// Mind the usual caveat of compressing before encrypting: someone who can both put
    /// chosen text into a session value and watch the stored size of that value can learn
    /// about the rest of it. Stored sizes are seen by those who can read the store, not by a
    /// network observer, whose view is the cookie's size, which compression does not touch.
    ///
    /// Server-side stores only: with the [cookie store](crate::store::CookieStore),
    /// [`build`](Self::build) refuses it.
    pub fn compress_above(mut self, bytes: usize) -> Self {
        self.compress_above = Some(bytes);
        self
    }

    /// The format session values are written in: [`Json`](crate::codec::Json) (the default),
    /// `MessagePack` (feature `msgpack`), or a [`Codec`] of your own.
    ///
    /// Every value records its format in its header byte and is read with the format it was
    /// written in, so the setting can change at any time without logging anyone out: values
    /// in the old format are read as before and stored in the new one the next time the
    /// application writes them ([`rewrite_formats_on_load`](Self::rewrite_formats_on_load)
    /// rewrites them as soon as a session is loaded instead). The built-in formats are
    /// always read (MessagePack in a build with the `msgpack` feature); a codec of your own
    /// that you move away from must stay readable ([`read_codec`](Self::read_codec)) while
    /// values in it remain. A value in a format the middleware does not read is hidden from
    /// the handler (and told to
    /// [`on_session_load_error`](Self::on_session_load_error)) but kept in the session
    /// (through writes and renews; a removal of its name, a clear or a logout ends it), so
    /// roll a new format out in two steps: every instance able to read it first, then the
    /// switch of `codec`.
    ///
    /// [`build`](Self::build) refuses a codec of your own whose [`Codec::id`] is not from 8
    /// to 15, or two codecs with one id.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "msgpack")] {
    /// use actix_redis_session::{codec::MessagePack, Key, RedisSession};
    ///
    /// let sessions = RedisSession::builder("redis://127.0.0.1:6379", Key::generate())
    ///     .codec(MessagePack)
    ///     .build()?;
    /// # }
    /// # Ok::<(), actix_redis_session::ConfigError>(())
    /// ```
    pub fn codec(mut self, codec: impl Codec) -> Self {
        self.codec = Chosen::of(codec);
        self
    }

    /// Also read values in this format (a [`Codec`] of your own that values are moving
    /// away from); values are written with [`codec`](Self::codec). May be called several
    /// times. The built-in formats need not be named: they are always read.
    pub fn read_codec(mut self, codec: impl Codec) -> Self {
        self.read_codecs.push(Chosen::of(codec));
        self
    }

    /// Rewrite values stored in another format than [`codec`](Self::codec)'s as soon as a
    /// session is loaded, instead of the next time the application writes each of them.
    /// Default: `false`.
    ///
    /// The value is carried over without knowing its type (streamed through
    /// `serde-transcode`, then back, to check that it comes back byte for byte) and written
    /// back with that request's save: one more write for each session's first request after
    /// the switch. A value that would not come back the same (binary data or a 128-bit
    /// integer into JSON, an integer beyond 64 bits into MessagePack, a NaN into JSON), or
    /// would outgrow [`max_value_size`](Self::max_value_size) or
    /// [`max_session_size`](Self::max_session_size), is kept as it is (and tried again on
    /// the next load: CPU only). Turn it on to be done with an old format sooner (and then
    /// stop reading it); the lazy default costs nothing.
    pub fn rewrite_formats_on_load(mut self, rewrite: bool) -> Self {
        self.rewrite_formats_on_load = rewrite;
        self
    }

    /// Take over the sessions of actix-session (0.11, with its Redis store), so that
    /// switching logs nobody out: see [`FromActixSession`] and the README's "Coming from
    /// actix-session". Redis only (the old sessions are read from the same Redis):
    /// [`build`](Self::build) refuses it with another store, and refuses a key shorter than
    /// actix-session's 64 bytes.
    ///
    /// Turn it off once every actix-session session has expired (its TTL after the switch:
    /// actix-session's default is one day) or moved: until then it costs a request without
    /// our cookie one cookie check more, and a request with an old cookie one round trip
    /// more, once.
    pub fn migrate_from_actix_session(mut self, from: FromActixSession) -> Self {
        self.actix_session = Some(from);
        self
    }

    /// Bind each session to the User-Agent of the client that created it. Default: `false`.
    ///
    /// The session stores a keyed digest of the User-Agent header (HMAC-SHA256 under a
    /// sub-key of the [`Key`], truncated to 128 bits, in the `m:b` metadata field; never the
    /// header itself). A request whose User-Agent differs gets a fresh session, as if it had
    /// no cookie: the stored session stays, for its owner. The mismatch is logged as a
    /// warning (without the id, the address or the header) and passed to
    /// [`on_binding_mismatch`](Self::on_binding_mismatch).
    ///
    /// It stops a stolen cookie from working in another browser unless the thief copies the
    /// User-Agent too, which is public: a speed bump, not a wall. It also signs users out
    /// when their browser updates itself (the version is part of the header): pair it with a
    /// "remember me" that survives that, or accept it. Sessions created before binding was
    /// turned on are bound on their next request.
    pub fn bind_to_user_agent(mut self, bind: bool) -> Self {
        self.bind_to_user_agent = bind;
        self
    }

    /// Bind each session to the IP address (or network) of the client that created it, read
    /// as [`ClientIp`] says. Default: not bound.
    ///
    /// As with [`bind_to_user_agent`](Self::bind_to_user_agent), a keyed digest is stored
    /// (the address cannot be read back from the store), and a request from another address
    /// gets a fresh session. Clients change addresses (mobile networks, IPv6 privacy
    /// addresses, a laptop moving from home to office): bind to a
    /// [network](ClientIp::network), and weigh the logouts against the protection. A
    /// request without a peer address (an application served on a unix socket) counts as
    /// one address of its own.
    pub fn bind_to_ip(mut self, client_ip: ClientIp) -> Self {
        self.bind_to_ip = Some(client_ip);
        self
    }

    /// Called when a request's cookie names a session bound to another client, after the
    /// handler (which saw a fresh session) has run. Default: none (the warning in the log
    /// only).
    ///
    /// Given the request and what differed; it must not block. A panic in it is caught and
    /// logged, and the response goes out.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use actix_redis_session::{Key, RedisSession};
    ///
    /// static MISMATCHES: AtomicU64 = AtomicU64::new(0);
    /// let sessions = RedisSession::builder("redis://127.0.0.1:6379", Key::generate())
    ///     .bind_to_user_agent(true)
    ///     .on_binding_mismatch(|req, mismatch| {
    ///         MISMATCHES.fetch_add(1, Ordering::Relaxed);
    ///         eprintln!("session from another client on {} ({mismatch:?})", req.path());
    ///     })
    ///     .build()?;
    /// # drop(sessions);
    /// # Ok::<(), actix_redis_session::ConfigError>(())
    /// ```
    pub fn on_binding_mismatch<F>(mut self, callback: F) -> Self
    where
        F: Fn(&actix_web::HttpRequest, &BindingMismatch) + Send + Sync + 'static,
    {
        self.on_binding_mismatch = Some(Arc::new(callback));
        self
    }

    /// Called for every request whose session could not be loaded or saved because the
    /// store failed (Redis down, a timeout, a refused command), under either
    /// [`OnStoreError`] policy, after the handler (or instead of it, when the load before
    /// routing failed: [`lazy_load(false)`](Self::lazy_load)). Default: none (the error is
    /// logged in any case). The `on_redis_down` of Rails' redis-session-store.
    ///
    /// Given the request and the error, whose [`kind`](crate::StoreError::kind) says what
    /// failed; neither holds a session id or value. It must not block (count, alert, flip a
    /// health flag). A panic in it is caught and logged, and the response goes out.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use actix_redis_session::{Key, RedisSession, StoreErrorKind};
    ///
    /// static TIMEOUTS: AtomicU64 = AtomicU64::new(0);
    /// let sessions = RedisSession::builder("redis://127.0.0.1:6379", Key::generate())
    ///     .on_store_failure(|req, error| {
    ///         if error.kind() == StoreErrorKind::Timeout {
    ///             TIMEOUTS.fetch_add(1, Ordering::Relaxed);
    ///         }
    ///         eprintln!("session store failed on {}: {error}", req.path());
    ///     })
    ///     .build()?;
    /// # drop(sessions);
    /// # Ok::<(), actix_redis_session::ConfigError>(())
    /// ```
    pub fn on_store_failure<F>(mut self, callback: F) -> Self
    where
        F: Fn(&actix_web::HttpRequest, &crate::StoreError) + Send + Sync + 'static,
    {
        self.on_store_failure = Some(StoreFailureCallback(Arc::new(callback)));
        self
    }

    /// Called, after the handler, for each piece of stored data a load could not read: a
    /// corrupt or unreadable value (dropped, the rest of the session kept), a stored session
    /// over [`max_session_size`](Self::max_session_size) or a record that is no session
    /// (discarded: a fresh session). The `on_session_load_error` of Rails'
    /// redis-session-store. Default: none (each is logged as a warning).
    ///
    /// Given the request and a [`SessionLoadError`](crate::SessionLoadError) (its
    /// [`kind`](crate::SessionLoadError::kind) and, for a value, the field's name; never
    /// the id or a value). A panic in it is caught and logged.
    ///
    /// ```
    /// use actix_redis_session::{Key, RedisSession};
    ///
    /// let sessions = RedisSession::builder("redis://127.0.0.1:6379", Key::generate())
    ///     .on_session_load_error(|req, error| {
    ///         eprintln!("{} on {}: {error}", req.method(), req.path());
    ///     })
    ///     .build()?;
    /// # drop(sessions);
    /// # Ok::<(), actix_redis_session::ConfigError>(())
    /// ```
    pub fn on_session_load_error<F>(mut self, callback: F) -> Self
    where
        F: Fn(&actix_web::HttpRequest, &crate::SessionLoadError) + Send + Sync + 'static,
    {
        self.on_session_load_error = Some(LoadErrorCallback(Arc::new(callback)));
        self
    }

    /// What to do when the store fails. Default: [`OnStoreError::FailClosed`].
    pub fn on_store_error(mut self, policy: OnStoreError) -> Self {
        self.on_store_error = policy;
        self
    }

    /// How store operations that failed because the store was unavailable or slow are
    /// tried again: exponential delays with full jitter, within the
    /// [store budget](Self::store_budget). Default: [`Retry::new`] (3 attempts, delays
    /// from 10 ms up to 250 ms); [`Retry::disabled`] for one attempt. Every transport and
    /// every server-side store gets the same policy (the memory store cannot fail).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// When to stop asking a failing store for a while: see [`CircuitBreaker`]. Default:
    /// [`CircuitBreaker::new`] (open after 5 operations in a row failed, 1 second of
    /// cool-down, then one probe); [`CircuitBreaker::disabled`] never opens. Its state:
    /// [`RedisSession::store_health`].
    pub fn circuit_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.circuit_breaker = breaker;
        self
    }

    /// The longest a request waits for the session store in all: its load, its save (and
    /// a renewal's delete), retries and their delays included; the time its handler takes
    /// does not count. An operation still waiting when it is spent fails with
    /// [`StoreErrorKind::Timeout`](crate::StoreErrorKind::Timeout), answered by the
    /// [`OnStoreError`] policy. Default: 3 seconds; above zero, at most [`MAX_TIMEOUT`]
    /// (1 hour).
    ///
    /// The [`command_timeout`](Self::command_timeout) bounds one attempt; the budget bounds
    /// the request. With the defaults (2 s and 3 s) a stalled Redis costs a request 3 seconds
    /// at most. A Redis restart costs a retry or two: milliseconds on the multiplexed
    /// transport; on the pool transport as long as r2d2 takes to open a connection again
    /// (it tries every 200 ms, up to the [`checkout_timeout`](Self::checkout_timeout)).
    pub fn store_budget(mut self, budget: Duration) -> Self {
        self.store_budget = budget;
        self
    }

    /// When to load the session. Default: `true`, on the first extraction of [`Session`],
    /// [`TypedSession`], [`Flash`] or [`IncomingFlashMessages`] (or
    /// [`SessionExt::load_session`]): a request whose handler never asks (assets, health
    /// checks) costs the store nothing, sets no cookie and succeeds while the store is down.
    ///
    /// `false` loads it before routing, for every request that carries the cookie, as 0.1
    /// did: for applications whose [guards](actix_web::guard) or synchronous
    /// [`SessionExt::get_session`] calls must see the stored session without loading it
    /// first. A failed load is then answered before the handler runs.
    ///
    /// [`Session`]: crate::Session
    /// [`TypedSession`]: crate::TypedSession
    /// [`Flash`]: crate::Flash
    /// [`IncomingFlashMessages`]: crate::IncomingFlashMessages
    /// [`SessionExt::load_session`]: crate::SessionExt::load_session
    /// [`SessionExt::get_session`]: crate::SessionExt::get_session
    pub fn lazy_load(mut self, lazy: bool) -> Self {
        self.lazy_load = lazy;
        self
    }

    /// How to talk to Redis. Default: [`Transport::Pool`]. A shared pool
    /// ([`RedisSession::builder_from_pool`]) is always the pool transport. Redis only: with
    /// another store ([`RedisSession::builder_with`]) `build` fails.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.redis_only.get_or_insert("transport");
        self.transport = transport;
        self
    }

    /// Connections of the Redis pool, which is also how many batches of requests can be in
    /// flight at once. Default: 2.
    ///
    /// The pool transport batches: every request queued while a batch is out goes with the
    /// next one, in one write on one connection. Two connections (one batch in flight while
    /// the next fills) keep a nearby Redis busy; more help when Redis is far (high round-trip
    /// time) or slow. From 1 to 1024. Ignored for a shared pool (the store uses at most 2 of
    /// its connections) and the multiplexed transport (one connection per worker). On a
    /// cluster ([`builder_cluster`](RedisSession::builder_cluster)) it is per node, and 1 by
    /// default. Redis only: with another store `build` fails.
    pub fn capacity(mut self, connections: u32) -> Self {
        self.redis_only.get_or_insert("capacity");
        self.redis.capacity = connections;
        self
    }

    /// Longest wait for a free pooled connection. Default: 2 seconds. Above zero, at most
    /// [`MAX_TIMEOUT`] (1 hour). Ignored for a shared pool (its own setting applies), the
    /// multiplexed transport (it has no pool). Redis only: with another store `build` fails.
    pub fn checkout_timeout(mut self, timeout: Duration) -> Self {
        self.redis_only.get_or_insert("checkout_timeout");
        self.redis.checkout_timeout = timeout;
        self
    }

    /// Longest wait to open a connection to Redis. Default: 2 seconds. Above zero, at most
    /// [`MAX_TIMEOUT`] (1 hour). Ignored for a shared pool. Redis only: with another store
    /// `build` fails.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.redis_only.get_or_insert("connect_timeout");
        self.redis.connect_timeout = timeout;
        self
    }

    /// Certificates for `rediss://` of your own: a private CA, a client certificate for
    /// mutual TLS ([`RedisTls`]). Default: none, the public roots. Needs the `tls` feature
    /// and a `rediss://` URL. Redis by URL only: with another store, or the application's
    /// own pool (which connects with its own client), `build` fails.
    pub fn redis_tls(mut self, tls: RedisTls) -> Self {
        self.redis_only.get_or_insert("redis_tls");
        self.redis.tls = Some(tls);
        self
    }

    /// Longest wait for Redis to accept a batch of commands or to answer it (concurrent
    /// requests share batches; a stalled Redis fails a batch after one timeout, not one per
    /// command). Default: 2 seconds. Above zero, at most [`MAX_TIMEOUT`] (1 hour). Applies to
    /// shared pools too (set on every checkout).
    ///
    /// A batch that failed (a timeout, a dropped connection) is retried by the
    /// [`retry`](Self::retry) policy, within the [`store_budget`](Self::store_budget). Redis
    /// only: with another store `build` fails.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.redis_only.get_or_insert("command_timeout");
        self.redis.command_timeout = timeout;
        self
    }

    /// After every write, wait until `replicas` replicas have it (Redis's `WAIT`), at most
    /// `timeout`; a write that fewer replicas acknowledged in time is not answered as
    /// saved: [`StoreErrorKind::NotReplicated`](crate::StoreErrorKind::NotReplicated), not
    /// retried, a `503` with [`OnStoreError::FailClosed`] (a logout so answered removes the
    /// cookie anyway). Default: off.
    ///
    /// Redis replicates asynchronously: without it, a write that the master acknowledged and
    /// lost before a replica had it (the master crashed, then a failover) is lost. With it,
    /// an acknowledged save is on `replicas` replicas, so a failover to one of them keeps it.
    /// Cost: each request that writes waits for a replication round trip (on loopback
    /// tens of microseconds; across zones a millisecond or more), and with too few replicas
    /// reachable, writes fail after `timeout` while reads go on. Redis only; `build` refuses
    /// zero replicas, and a timeout that is zero or not below
    /// [`command_timeout`](Self::command_timeout).
    pub fn wait_for_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.redis_only.get_or_insert("wait_for_replicas");
        self.redis.wait = Some((replicas, timeout));
        self
    }

    /// Credentials for the master and replicas that the sentinels name (feature
    /// `sentinel`): an ACL user (`None` for the `default` user of `requirepass`) and its
    /// password. The sentinels' own credentials, if they need any, go in their URLs
    /// (`redis://:password@host:26379`). Only with
    /// [`builder_sentinel`](RedisSession::builder_sentinel); `build` refuses it otherwise.
    /// The password is never logged, nor shown by `Debug`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use actix_redis_session::{Key, RedisSession};
    ///
    /// let sessions = RedisSession::builder_sentinel(
    ///     ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379", "redis://10.0.0.3:26379"],
    ///     "sessions",
    ///     Key::from_env("SESSION_KEY")?,
    /// )
    /// .sentinel_master_auth(Some("sessions"), std::env::var("REDIS_PASSWORD")?)
    /// .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "sentinel")]
    pub fn sentinel_master_auth(
        mut self,
        username: Option<&str>,
        password: impl Into<String>,
    ) -> Self {
        self.redis.node_auth = Some(crate::store::commands::NodeAuth {
            username: username.map(str::to_owned),
            password: zeroize::Zeroizing::new(password.into()),
        });
        self
    }

    /// The middleware.
    ///
    /// Connections are opened in the background, so a Redis server that is down at start-up
    /// does not stop the application: requests fail by the [`OnStoreError`] policy until it
    /// is back.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidUrl`] for a URL Redis cannot use, [`ConfigError::TlsNotEnabled`]
    /// for `rediss://` without the `tls` feature, [`ConfigError::InvalidOption`] for an option
    /// out of range.
    pub fn build(mut self) -> Result<RedisSession, ConfigError> {
        if self.local_cache.is_some() && self.touch_after.is_zero() {
            if self.touch_after_set {
                return Err(ConfigError::InvalidOption {
                    option: "local_cache",
                    reason: "needs touch_after above zero: every TTL refresh evicts the \
                             session from every process's cache",
                });
            }
            self.touch_after = Duration::from_secs(60).min(self.idle_timeout / 2);
            tracing::info!(
                touch_after_secs = self.touch_after.as_secs_f64(),
                "local_cache: touch_after was zero; set so that TTL refreshes (which evict \
                 the session from every cache) are rare"
            );
        }
        self.check()?;
        if let Some(cache) = &self.local_cache {
            cache.check().map_err(|reason| ConfigError::InvalidOption {
                option: "local_cache",
                reason,
            })?;
            #[cfg(feature = "sentinel")]
            let sentinel = matches!(self.backend, Backend::Sentinel { .. });
            #[cfg(not(feature = "sentinel"))]
            let sentinel = false;
            if !matches!(self.backend, Backend::Url(_)) && !sentinel {
                return Err(ConfigError::InvalidOption {
                    option: "local_cache",
                    reason: "needs one Redis server by URL (RedisSession::builder) or \
                             Sentinel: not yet a cluster, nor an application's pool or another \
                             store",
                });
            }
        }
        let codecs = Codecs::new(
            self.codec.clone(),
            self.read_codecs.clone(),
            self.rewrite_formats_on_load,
        )
        .map_err(|reason| ConfigError::InvalidOption {
            option: "codec",
            reason,
        })?;
        let bridge = match &self.actix_session {
            None => None,
            Some(from) => {
                let invalid = |reason| ConfigError::InvalidOption {
                    option: "migrate_from_actix_session",
                    reason,
                };
                let on_redis = match &self.backend {
                    Backend::Url(_) | Backend::Pool(_) => true,
                    #[cfg(feature = "sentinel")]
                    Backend::Sentinel { .. } => true,
                    #[cfg(feature = "cluster")]
                    Backend::Cluster(_) => true,
                    Backend::Given(Choice::Server(store)) => {
                        matches!(store, Store::Redis(_) | Store::Multiplexed(_))
                    }
                    _ => false,
                };
                if !on_redis {
                    return Err(invalid(
                        "actix-session's sessions are read from Redis: it needs the Redis store",
                    ));
                }
                Some(
                    from.clone()
                        .into_bridge(self.cookie.secure, &self.cookie.name, &self.key)
                        .map_err(invalid)?,
                )
            }
        };
        if let Backend::Url(url) = &self.backend {
            if insecure_tls(url) {
                tracing::warn!(
                    "the Redis URL ends in #insecure: TLS certificates are not verified, so \
                     anyone on the path to Redis can read and change every session"
                );
            }
        }
        if self.preset == Some(Preset::Development) && !self.cookie.secure {
            const WARNING: &str = "actix-redis-session: DEVELOPMENT preset: session cookies \
                 are sent without Secure, over plain http, where anyone on the network can \
                 read and replay them. Never use it in production.";
            tracing::warn!("{WARNING}");
            eprintln!("{WARNING}");
        }
        let engine = match self.backend {
            Backend::Url(ref url) => {
                let guarded = self.guarded(match self.transport {
                    Transport::Pool => Store::Redis(RedisStore::open(url, &self.redis)?),
                    Transport::Multiplexed => {
                        Store::Multiplexed(MultiplexedStore::open(url, &self.redis)?)
                    }
                });
                let client = || crate::store::redis::client(url, self.redis.tls.as_ref());
                Engine::Server(self.cached(guarded, || Ok(Source::Client(client()?)))?)
            }
            #[cfg(feature = "sentinel")]
            Backend::Sentinel {
                ref sentinels,
                ref master,
            } => {
                let guarded =
                    self.guarded(match self.transport {
                        Transport::Pool => {
                            Store::Redis(RedisStore::open_sentinel(sentinels, master, &self.redis)?)
                        }
                        Transport::Multiplexed => Store::Multiplexed(
                            MultiplexedStore::open_sentinel(sentinels, master, &self.redis)?,
                        ),
                    });
                Engine::Server(self.cached(guarded, || {
                    crate::store::redis::sentinel_client(sentinels, master, &self.redis)
                        .map(Source::Sentinel)
                        .map_err(ConfigError::InvalidUrl)
                })?)
            }
            #[cfg(feature = "cluster")]
            Backend::Cluster(ref nodes) => Engine::Server(self.guarded(Store::Cluster(
                crate::store::ClusterStore::open(nodes, &self.redis, self.transport)?,
            ))),
            Backend::Pool(ref pool) => {
                let store = Store::Redis(RedisStore::shared(pool.clone(), &self.redis));
                Engine::Server(self.guarded(store))
            }
            Backend::Given(Choice::Server(ref store)) => {
                Engine::Server(self.guarded(store.clone()))
            }
            Backend::Given(Choice::Cookie(_)) => {
                Engine::Cookie(Arc::new(Sealer::new(&self.key, &self.cookie.name)))
            }
            Backend::None => {
                return Err(ConfigError::InvalidOption {
                    option: "store",
                    reason: "a detached configuration has no store",
                })
            }
        };
        Ok(RedisSession::from_parts(
            Arc::new(self.into_config(codecs, bridge)),
            engine,
        ))
    }

    /// `guarded` with the local cache in front of it, if asked for, its tracking connection
    /// going where `source` says.
    fn cached(
        &self,
        guarded: Guarded,
        source: impl FnOnce() -> Result<Source, ConfigError>,
    ) -> Result<Guarded, ConfigError> {
        let Some(settings) = &self.local_cache else {
            return Ok(guarded);
        };
        let timeouts = (self.redis.connect_timeout, self.redis.command_timeout);
        let cache =
            Cache::start(settings, source()?, &self.key_prefix, timeouts).map_err(|_| {
                ConfigError::InvalidOption {
                    option: "local_cache",
                    reason: "could not start the cache's tracking thread",
                }
            })?;
        Ok(guarded.with_cache(cache))
    }

    /// A server-side store behind this configuration's retry and breaker layer.
    fn guarded(&self, store: Store) -> Guarded {
        Guarded::new(store, self.retry, self.circuit_breaker)
    }

    fn into_config(self, codecs: Codecs, bridge: Option<Bridge>) -> SessionConfig {
        let mut cookie = self.cookie;
        cookie.max_age = self.persistent_cookie.then_some(self.idle_timeout);
        let mut limits = self.limits;
        if let Backend::Given(Choice::Cookie(_)) = self.backend {
            // Name, `=` and the attributes at their longest (a Max-Age of 400 days).
            let empty = cookie.session_cookie(String::new(), Some(MAX_LIFETIME));
            limits.cookie_budget = Some(plaintext_budget(empty.to_string().len()));
        }
        SessionConfig {
            signer: Signer::new(&self.key, &cookie.name),
            cookie,
            idle_timeout: self.idle_timeout,
            touch_after: self.touch_after,
            absolute_timeout: self.absolute_timeout,
            remember_max: self.remember_max,
            allow_remember: self.allow_remember,
            record_devices: self.record_devices,
            key_prefix: self.key_prefix,
            at_rest: AtRest::new(
                &self.key,
                self.encrypt_at_rest,
                self.compress_above,
                limits.max_value_size,
            )
            .reject_plain(self.reject_plain_values),
            codecs,
            bridge,
            binding: Binding::new(
                &self.key,
                self.bind_to_user_agent,
                self.bind_to_ip,
                self.on_binding_mismatch,
            ),
            limits,
            flash: self.flash,
            on_store_error: self.on_store_error,
            store_budget: self.store_budget,
            on_store_failure: self.on_store_failure,
            on_session_load_error: self.on_session_load_error,
            lazy_load: self.lazy_load,
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |option, reason| Err(ConfigError::InvalidOption { option, reason });
        let cookie = &self.cookie;
        if !crate::cookie::is_token(&cookie.name) {
            return invalid("cookie_name", "must be a non-empty HTTP token");
        }
        if !crate::cookie::is_safe_path(&cookie.path) {
            return invalid(
                "cookie_path",
                "must start with '/' and hold visible ASCII without ';'",
            );
        }
        if let Some(domain) = &cookie.domain {
            let host = domain.strip_prefix('.').unwrap_or(domain);
            let domain_ok = !host.is_empty()
                && domain.len() <= 253
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !domain_ok {
                return invalid(
                    "cookie_domain",
                    "must be a host name (letters, digits, '-' and '.')",
                );
            }
        }
        if cookie.same_site == SameSite::None && !cookie.secure {
            return invalid(
                "cookie_same_site",
                "SameSite=None needs cookie_secure(true): browsers drop it otherwise",
            );
        }
        if cookie.name.starts_with("__Secure-") && !cookie.secure {
            return invalid(
                "cookie_name",
                "a __Secure- cookie needs cookie_secure(true)",
            );
        }
        if cookie.name.starts_with("__Host-")
            && (!cookie.secure || cookie.path != "/" || cookie.domain.is_some())
        {
            return invalid(
                "cookie_name",
                "a __Host- cookie needs cookie_secure(true), path '/' and no domain",
            );
        }
        let lifetime = Duration::from_secs(1)..=MAX_LIFETIME;
        if !lifetime.contains(&self.idle_timeout) {
            return invalid("idle_timeout", "must be from 1 second to 400 days");
        }
        if self
            .absolute_timeout
            .is_some_and(|a| !lifetime.contains(&a))
        {
            return invalid("absolute_timeout", "must be from 1 second to 400 days");
        }
        if !lifetime.contains(&self.remember_max) {
            return invalid("remember_max", "must be from 1 second to 400 days");
        }
        if self.touch_after >= self.idle_timeout {
            return invalid("touch_after", "must be shorter than idle_timeout");
        }
        let limits = &self.limits;
        if limits.max_fields == 0
            || limits.max_value_size == 0
            || limits.max_session_size == 0
            || limits.max_key_len == 0
        {
            return invalid(
                "max_fields/max_value_size/max_session_size/max_key_len",
                "must be above zero",
            );
        }
        if self.reject_plain_values && !self.encrypt_at_rest {
            return invalid("reject_plain_values", "needs encrypt_at_rest(true)");
        }
        if let Some(Err(reason)) = self.bind_to_ip.as_ref().map(ClientIp::check) {
            return invalid("bind_to_ip", reason);
        }
        if let Some((replicas, timeout)) = self.redis.wait {
            if replicas == 0 {
                return invalid("wait_for_replicas", "needs at least one replica");
            }
            if timeout.is_zero() || timeout >= self.redis.command_timeout {
                return invalid(
                    "wait_for_replicas",
                    "the timeout must be above zero and below command_timeout",
                );
            }
        }
        if self.flash.max_messages == 0 || self.flash.max_message_size == 0 {
            return invalid(
                "flash_max_messages/flash_max_message_size",
                "must be above zero",
            );
        }
        match &self.backend {
            Backend::Pool(_) if self.redis.tls.is_some() => {
                return invalid(
                    "redis_tls",
                    "a shared r2d2 pool connects with its own client: give it the certificates",
                );
            }
            Backend::Url(url) if self.refuse_insecure_tls && insecure_tls(url) => {
                return invalid(
                    "url",
                    "#insecure turns off TLS certificate verification, which the production \
                     presets refuse: trust the server's CA with redis_tls instead",
                );
            }
            #[cfg(feature = "sentinel")]
            Backend::Sentinel { sentinels, .. } if sentinels.is_empty() => {
                return invalid("builder_sentinel", "needs at least one sentinel");
            }
            #[cfg(feature = "cluster")]
            Backend::Cluster(nodes) if nodes.is_empty() => {
                return invalid("builder_cluster", "needs the URL of at least one node");
            }
            #[cfg(feature = "cluster")]
            Backend::Cluster(nodes)
                if self.refuse_insecure_tls && nodes.iter().any(|url| insecure_tls(url)) =>
            {
                return invalid(
                    "builder_cluster",
                    "#insecure turns off TLS certificate verification, which the production \
                     presets refuse: trust the server's CA with redis_tls instead",
                );
            }
            Backend::Pool(_) if self.transport == Transport::Multiplexed => {
                return invalid(
                    "transport",
                    "a shared r2d2 pool is always the pool transport",
                );
            }
            #[cfg(feature = "sentinel")]
            Backend::Url(_) | Backend::Pool(_) | Backend::Given(_)
                if self.redis.node_auth.is_some() =>
            {
                return invalid("sentinel_master_auth", "applies to builder_sentinel only");
            }
            #[cfg(all(feature = "sentinel", feature = "cluster"))]
            Backend::Cluster(_) if self.redis.node_auth.is_some() => {
                return invalid("sentinel_master_auth", "applies to builder_sentinel only");
            }
            Backend::Given(_) if self.redis_only.is_some() => {
                return invalid(
                    self.redis_only.unwrap_or("transport"),
                    "applies to Redis only, and this middleware has another store",
                );
            }
            Backend::Given(Choice::Cookie(_)) if self.compress_above.is_some() => {
                return invalid(
                    "compress_above",
                    "applies to server-side stores; the cookie store seals sessions whole",
                );
            }
            Backend::Given(Choice::Server(Store::Memory(store)))
                if !(MemoryStore::MIN_GC_INTERVAL..=MAX_LIFETIME)
                    .contains(&store.gc_interval()) =>
            {
                return invalid(
                    "MemoryStore::with_gc_interval",
                    "must be from 1 millisecond to 400 days",
                );
            }
            _ => {}
        }
        if !(1..=1024).contains(&self.redis.capacity) {
            return invalid("capacity", "must be from 1 to 1024");
        }
        let timeouts = [
            self.redis.checkout_timeout,
            self.redis.connect_timeout,
            self.redis.command_timeout,
        ];
        if timeouts.iter().any(|t| t.is_zero() || *t > MAX_TIMEOUT) {
            return invalid("timeouts", "must be above zero and at most 1 hour");
        }
        if self.store_budget.is_zero() || self.store_budget > MAX_TIMEOUT {
            return invalid("store_budget", "must be above zero and at most 1 hour");
        }
        if let Err(reason) = self.retry.check() {
            return invalid("retry", reason);
        }
        if let Err(reason) = self.circuit_breaker.check() {
            return invalid("circuit_breaker", reason);
        }
        Ok(())
    }
}

/// Whether a Redis URL turns off TLS certificate verification (`rediss://host/#insecure`).
fn insecure_tls(url: &str) -> bool {
    url.split_once('#')
        .is_some_and(|(_, fragment)| fragment == "insecure")
}

/// The constructors: Redis by URL or by the application's pool, any other store.
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

    /// A builder for sessions in the Redis master that the sentinels at `sentinels`
    /// (`redis://host:port` URLs of the sentinels themselves) monitor as `master_name`
    /// (feature `sentinel`).
    ///
    /// Every new connection asks the sentinels where the master is. After a failover the
    /// old master's connections are retired as soon as one of them turns out dropped or
    /// answers `READONLY` (a demoted master), and the operations that met it are retried
    /// (see [`Retry`](crate::Retry)) on the new master: a failover costs the requests in
    /// flight at the moment of it a retry, not an error, once the sentinels have promoted
    /// the replica. Both transports: on the multiplexed one, each worker asks the sentinels
    /// again as soon as its connection drops or meets `READONLY`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use actix_redis_session::{Key, RedisSession};
    ///
    /// let sessions = RedisSession::builder_sentinel(
    ///     ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379", "redis://10.0.0.3:26379"],
    ///     "sessions",
    ///     Key::from_env("SESSION_KEY")?,
    /// )
    /// .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "sentinel")]
    pub fn builder_sentinel(
        sentinels: impl IntoIterator<Item = impl AsRef<str>>,
        master_name: impl Into<String>,
        key: Key,
    ) -> RedisSessionBuilder {
        RedisSessionBuilder::new(
            Backend::Sentinel {
                sentinels: sentinels
                    .into_iter()
                    .map(|s| s.as_ref().to_owned())
                    .collect(),
                master: master_name.into(),
            },
            key,
        )
    }

    /// A builder for sessions in a Redis Cluster (feature `cluster`), reached first through
    /// the nodes at `nodes` (`redis://host:port` or `rediss://` URLs; one is enough, more
    /// are asked when it does not answer; credentials and TLS settings of the first apply
    /// to every node).
    ///
    /// Both transports. Every session is one key, in one slot: a request's commands go to
    /// the master serving it, and concurrent requests whose sessions live on one master
    /// share that master's round trips as on a single Redis, so a request costs the same one
    /// round trip. `MOVED` and `ASK` (a resharding) are followed; after a node fails, the
    /// slot map is asked for again and the operation retried (see [`Retry`](crate::Retry)),
    /// so a failover costs the requests in flight a retry once the replica is promoted.
    /// Pair it with [`wait_for_replicas`](RedisSessionBuilder::wait_for_replicas) to keep
    /// every acknowledged write through a failover.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use actix_redis_session::{Key, RedisSession};
    ///
    /// let sessions = RedisSession::builder_cluster(
    ///     ["redis://10.0.0.1:6379", "redis://10.0.0.2:6379", "redis://10.0.0.3:6379"],
    ///     Key::from_env("SESSION_KEY")?,
    /// )
    /// .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "cluster")]
    pub fn builder_cluster(
        nodes: impl IntoIterator<Item = impl AsRef<str>>,
        key: Key,
    ) -> RedisSessionBuilder {
        let mut builder = RedisSessionBuilder::new(
            Backend::Cluster(nodes.into_iter().map(|n| n.as_ref().to_owned()).collect()),
            key,
        );
        // Per node: each master has a batch in flight while the next one fills, and every
        // other master does too (measured faster than two per node, BENCHMARKS.md).
        builder.redis.capacity = 1;
        builder
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of the table on [`RedisSessionBuilder::production`], column by column.
    #[test]
    fn presets_set_the_values_of_their_table() {
        let builder = || RedisSession::builder_with_memory(MemoryStore::new(), Key::generate());
        type Row = (
            bool,
            bool,
            SameSite,
            bool,
            u64,
            Option<u64>,
            u64,
            bool,
            u64,
            bool,
            bool,
            OnStoreError,
        );
        let row = |b: &RedisSessionBuilder| -> Row {
            (
                b.cookie.secure,
                b.cookie.http_only,
                b.cookie.same_site,
                b.persistent_cookie,
                b.idle_timeout.as_secs(),
                b.absolute_timeout.map(|a| a.as_secs()),
                b.touch_after.as_secs(),
                b.allow_remember,
                b.remember_max.as_secs(),
                b.encrypt_at_rest,
                b.bind_to_user_agent,
                b.on_store_error,
            )
        };
        let fail_closed = OnStoreError::FailClosed;
        let month = 30 * 86_400;
        let development = builder().development();
        assert_eq!(
            row(&development),
            (
                false,
                true,
                SameSite::Lax,
                false,
                86_400,
                None,
                0,
                true,
                month,
                false,
                false,
                fail_closed
            )
        );
        assert_eq!(development.preset, Some(Preset::Development));
        assert_eq!(
            row(&builder().production()),
            (
                true,
                true,
                SameSite::Lax,
                false,
                3600,
                Some(7 * 86_400),
                60,
                true,
                month,
                false,
                false,
                fail_closed
            )
        );
        assert_eq!(
            row(&builder().high_security()),
            (
                true,
                true,
                SameSite::Strict,
                false,
                900,
                Some(8 * 3600),
                0,
                false,
                month,
                true,
                true,
                fail_closed
            )
        );
        // The thirteenth row (tuples compare up to twelve).
        let strict = |b: RedisSessionBuilder| b.reject_plain_values;
        assert!(!strict(builder().development()));
        assert!(!strict(builder().production()));
        assert!(strict(builder().high_security()));
        // A preset over earlier settings resets what it sets, and leaves the rest.
        let b = builder()
            .cookie_name("app")
            .encrypt_at_rest(true)
            .cookie_same_site(SameSite::None)
            .production();
        assert_eq!((b.cookie.name.as_str(), b.encrypt_at_rest), ("app", false));
        assert_eq!(b.cookie.same_site, SameSite::Lax);
        // Every preset builds.
        for b in [
            builder().development(),
            builder().production(),
            builder().high_security(),
        ] {
            b.build().unwrap();
        }
    }
}
