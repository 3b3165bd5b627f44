//! Public error types and their mapping to HTTP responses.

use actix_web::{http::StatusCode, HttpResponse, ResponseError};
use std::{fmt, sync::Arc};

/// A [`Key`](crate::Key) could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The master secret is shorter than the minimum.
    #[error("a session key needs at least {min} bytes of secret, got {len}")]
    TooShort {
        /// Bytes given.
        len: usize,
        /// Bytes required.
        min: usize,
    },
    /// The environment variable is unset or not valid UTF-8.
    #[error(
        "environment variable {name} is not set; generate a value with `openssl rand -base64 64`"
    )]
    MissingEnv {
        /// Variable name.
        name: String,
    },
    /// The environment variable is not base64.
    #[error("environment variable {name} is not base64; generate a value with `openssl rand -base64 64`")]
    InvalidBase64 {
        /// Variable name.
        name: String,
    },
    /// An empty passphrase was given.
    #[error("the passphrase is empty")]
    EmptyPassphrase,
    /// The salt is shorter than 16 bytes.
    #[error("the salt needs at least 16 bytes, got {len}")]
    ShortSalt {
        /// Bytes given.
        len: usize,
    },
}

/// The session middleware could not be configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The Redis URL could not be parsed.
    #[error("invalid Redis URL")]
    InvalidUrl(#[source] redis::RedisError),
    /// The URL asks for TLS (`rediss://`) but the crate was built without the `tls` feature.
    #[error("`rediss://` URLs need the `tls` feature of actix-redis-session")]
    TlsNotEnabled,
    /// The connection pool could not be created.
    #[error("could not create the Redis connection pool")]
    Pool(#[source] r2d2::Error),
    /// An option has a value it cannot take.
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        /// The builder method.
        option: &'static str,
        /// Why the value is refused.
        reason: &'static str,
    },
}

/// A session operation inside a handler failed.
///
/// As a [`ResponseError`] every variant answers `500 Internal Server Error` with an opaque
/// body (the detail goes to the log), but [`SessionError::Unavailable`], a `503`.
/// [`SessionError::MissingMiddleware`] and [`SessionError::NotLoaded`] are programming
/// errors: their body says how to fix them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// `Session` or `TypedSession` was used on a request that did not go through the middleware.
    #[error(
        "no session on this request: wrap the App (or scope) with the RedisSession middleware, \
         e.g. `App::new().wrap(RedisSession::new(url, key)?)`, before using Session or TypedSession"
    )]
    MissingMiddleware,
    /// The session could not be loaded: the store failed and
    /// [`OnStoreError::FailClosed`](crate::OnStoreError::FailClosed) is in force. Answers
    /// `503 Service Unavailable` with `Retry-After: 1`; the cause is in the log.
    #[error("the session store is unavailable")]
    Unavailable(#[source] StoreError),
    /// [`SessionExt::get_session`](crate::SessionExt::get_session) was called before the
    /// session was loaded: load it with
    /// [`SessionExt::load_session`](crate::SessionExt::load_session) (or an extractor) first.
    #[error(
        "the session is not loaded yet: call `load_session().await` (or extract `Session`) \
         before `get_session()`, or build the middleware with `.lazy_load(false)`"
    )]
    NotLoaded,
    /// The value could not be serialized in the configured format
    /// ([`codec`](crate::RedisSessionBuilder::codec)).
    #[error("could not serialize the session value for {key:?}")]
    Serialize {
        /// Session key.
        key: String,
        /// Cause: the format's error.
        #[source]
        source: crate::codec::CodecError,
    },
    /// The stored value does not deserialize into the requested type.
    #[error("the session value for {key:?} does not deserialize into the requested type")]
    Deserialize {
        /// Session key.
        key: String,
        /// Cause: the format's error.
        #[source]
        source: crate::codec::CodecError,
    },
    /// The key name is longer than the configured limit
    /// ([`max_key_len`](crate::RedisSessionBuilder::max_key_len)).
    #[error("the session key is {len} bytes long, over the limit of {limit}")]
    KeyTooLong {
        /// Length of the key in bytes.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The encoded value is larger than the configured limit.
    #[error("the session value for {key:?} is {size} bytes, over the limit of {limit}")]
    ValueTooLarge {
        /// Session key.
        key: String,
        /// Encoded size in bytes.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The session would grow past the configured total size (names and values).
    #[error("the session would hold {size} bytes, over the limit of {limit}")]
    SessionTooLarge {
        /// Names and values of all fields, in bytes, with the change.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The session would hold more fields than the configured limit.
    #[error("the session would hold more than {limit} fields")]
    TooManyFields {
        /// The configured limit.
        limit: usize,
    },
    /// A flash message is longer than the configured limit.
    #[error("the flash message is {size} bytes, over the limit of {limit}")]
    FlashTooLarge {
        /// Length of the content in bytes.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// More flash messages are waiting than the configured limit.
    #[error("more than {limit} flash messages are waiting")]
    TooManyFlashMessages {
        /// The configured limit.
        limit: usize,
    },
}

impl ResponseError for SessionError {
    fn status_code(&self) -> StatusCode {
        match self {
            SessionError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            // Logged where the load failed.
            SessionError::Unavailable(_) => unavailable(),
            SessionError::MissingMiddleware | SessionError::NotLoaded => {
                tracing::error!("{self}");
                HttpResponse::InternalServerError().body(self.to_string())
            }
            _ => {
                tracing::error!(error = %self, source = ?std::error::Error::source(self), "session error");
                HttpResponse::InternalServerError().body("Internal Server Error")
            }
        }
    }
}

/// The session store failed to load or save a session: a [kind](StoreErrorKind) and, if
/// there is one, the error that caused it.
///
/// Clients never see this error: the middleware answers `503 Service Unavailable` with an
/// opaque body (or, with [`OnStoreError::FailOpen`](crate::OnStoreError::FailOpen), serves
/// the request with an unsaved session) and logs the detail. The source is kept for that
/// log and for [`std::error::Error::source`]; its text must not hold session ids or values.
///
/// A [`SessionStore`](crate::store::SessionStore) of your own builds it from its own errors:
///
/// ```
/// use actix_redis_session::{StoreError, StoreErrorKind};
///
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
/// let e = StoreError::new(StoreErrorKind::Unavailable, io);
/// assert_eq!(e.kind(), StoreErrorKind::Unavailable);
/// assert!(std::error::Error::source(&e).is_some());
/// ```
#[derive(Clone)]
pub struct StoreError {
    kind: StoreErrorKind,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// What went wrong in a store, in terms that decide what to do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The store could not be reached: connection refused, reset or dropped, no pooled
    /// connection free, the blocking thread pool gone. Worth retrying.
    Unavailable,
    /// The store did not answer in time; whether the operation took effect is unknown.
    Timeout,
    /// The store answered with an error (e.g. a Redis error reply, a full disk) or with
    /// something that is not the answer expected.
    Backend,
    /// Every freshly drawn session id was already taken: the random source is broken.
    IdCollision,
    /// Anything else.
    Other,
    /// The store is out of room for writes: Redis at `maxmemory` with the `noeviction`
    /// policy (reads go on), a full disk. Not retried.
    Full,
    /// The [circuit breaker](crate::CircuitBreaker) is open after failures in a row: the
    /// store was not asked. Not retried; the breaker probes again after its cool-down.
    CircuitOpen,
    /// The store cannot do this: listing the sessions of the cookie store or of a store
    /// of your own ([`SessionAdmin`](crate::SessionAdmin)).
    Unsupported,
    /// The write is on the Redis master, but fewer replicas than
    /// [`wait_for_replicas`](crate::RedisSessionBuilder::wait_for_replicas) asks for had it
    /// in time: not answered as saved. Not retried (a retried delete would find nothing and
    /// read as "ended meanwhile").
    NotReplicated,
}

impl StoreError {
    /// An error of `kind` caused by `source`.
    pub fn new(
        kind: StoreErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> StoreError {
        StoreError {
            kind,
            source: Some(Arc::from(source.into())),
        }
    }

    /// An error of `kind` with no underlying cause.
    pub fn from_kind(kind: StoreErrorKind) -> StoreError {
        StoreError { kind, source: None }
    }

    /// What went wrong.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// The underlying error as a `T`, if it is one.
    pub fn source_as<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.source.as_deref()?.downcast_ref::<T>()
    }

    /// A Redis error, classified. Replies that mean "not now" (loading the data set after
    /// a restart, busy with a script, a replica or a master without its replicas, a cluster
    /// that is down or moving a slot) are `Unavailable`, hence retried; `OOM` and `MISCONF`
    /// (cannot persist) are `Full`.
    pub(crate) fn redis(e: redis::RedisError) -> StoreError {
        let kind = if e.is_timeout() {
            StoreErrorKind::Timeout
        } else if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
            StoreErrorKind::Unavailable
        } else {
            // The code of the reply, or of the first failed command of a pipeline.
            let code = e.code().map(str::to_owned).or_else(|| {
                let errors = e.clone().into_server_errors()?;
                errors.first().map(|(_, error)| error.code().to_owned())
            });
            match code.as_deref() {
                // Out of memory; MISCONF: Redis cannot persist (often a full disk) and
                // refuses writes.
                Some("OOM" | "MISCONF") => StoreErrorKind::Full,
                Some(
                    "LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN" | "CLUSTERDOWN" | "READONLY"
                    | "NOREPLICAS",
                ) => StoreErrorKind::Unavailable,
                _ => StoreErrorKind::Backend,
            }
        };
        StoreError::new(kind, e)
    }

    /// The underlying error, as it may be logged: an error *reply* of Redis is told by its
    /// code alone (`OOM`, `WRONGTYPE`), because some replies echo the command's arguments
    /// (`ERR unknown command ... with args beginning with: ...`), and those hold session
    /// values; connection and client errors, which hold none, in full.
    pub(crate) fn loggable_source(&self) -> String {
        let Some(source) = self.source.as_deref() else {
            return String::from("none");
        };
        let Some(e) = source.downcast_ref::<redis::RedisError>() else {
            return format!("{source:?}");
        };
        if let Some(code) = e.code() {
            return format!("Redis error reply {code}");
        }
        if let Some(errors) = e.clone().into_server_errors() {
            let codes: Vec<&str> = errors.iter().map(|(_, error)| error.code()).collect();
            return format!("Redis error replies {}", codes.join(", "));
        }
        format!("{e:?}")
    }

    /// Whether Redis answered `WRONGTYPE` (the key holds another type), to the command or to
    /// one of its pipeline's.
    pub(crate) fn is_wrong_type(&self) -> bool {
        self.source_as::<redis::RedisError>().is_some_and(|e| {
            e.code() == Some("WRONGTYPE")
                || e.clone()
                    .into_server_errors()
                    .is_some_and(|errors| errors.iter().any(|(_, e)| e.code() == "WRONGTYPE"))
        })
    }

    /// The Redis error code of the reply that failed (`WRONGTYPE`, `NOSCRIPT`, ...), if it
    /// was one.
    #[cfg(test)]
    pub(crate) fn redis_code(&self) -> Option<&str> {
        self.source_as::<redis::RedisError>()?.code()
    }
}

impl std::fmt::Debug for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("StoreError");
        debug.field("kind", &self.kind);
        if let Some(source) = &self.source {
            debug.field("source", source);
        }
        debug.finish()
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.kind {
            StoreErrorKind::Unavailable => "the session store is unavailable",
            StoreErrorKind::Timeout => "the session store did not answer in time",
            StoreErrorKind::Backend => "the session store answered with an error",
            StoreErrorKind::IdCollision => "could not find a free session id",
            StoreErrorKind::Other => "the session store failed",
            StoreErrorKind::Full => "the session store is full",
            StoreErrorKind::CircuitOpen => {
                "the session store is failing; the circuit breaker is open"
            }
            StoreErrorKind::Unsupported => "the session store cannot do this",
            StoreErrorKind::NotReplicated => {
                "the session store did not replicate the write in time"
            }
        })
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let source: &(dyn std::error::Error + 'static) = self.source.as_deref()?;
        Some(source)
    }
}

impl From<StoreErrorKind> for StoreError {
    fn from(kind: StoreErrorKind) -> Self {
        StoreError::from_kind(kind)
    }
}

/// `503 Service Unavailable` with `Retry-After: 1` and an opaque body.
pub(crate) fn unavailable() -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .insert_header((actix_web::http::header::RETRY_AFTER, "1"))
        .content_type("text/plain; charset=utf-8")
        .body("Service Unavailable")
}

/// Stored data that could not be read when a session was loaded
/// ([`on_session_load_error`](crate::RedisSessionBuilder::on_session_load_error)). The
/// request goes on: an unreadable field is dropped (and deleted), an unusable record gives a
/// fresh session. Holds no session id and no value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionLoadError {
    kind: SessionLoadErrorKind,
    field: Option<String>,
}

/// What was wrong with stored session data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionLoadErrorKind {
    /// A stored value could not be read (corrupt JSON, an unknown format, a sealed value
    /// that does not open, a compressed one that does not inflate within
    /// [`max_value_size`](crate::RedisSessionBuilder::max_value_size), a plain one refused
    /// by [`reject_plain_values`](crate::RedisSessionBuilder::reject_plain_values)): the
    /// field was dropped, the rest of the session kept.
    UnreadableValue,
    /// The stored session is larger than
    /// [`max_session_size`](crate::RedisSessionBuilder::max_session_size): discarded.
    TooLarge,
    /// The record is not a session (no creation marker, or a corrupt one): discarded.
    NotASession,
}

impl SessionLoadError {
    pub(crate) fn new(kind: SessionLoadErrorKind, field: Option<String>) -> SessionLoadError {
        SessionLoadError { kind, field }
    }

    /// The stored field `field` could not be read, and was dropped.
    pub(crate) fn unreadable(field: String) -> SessionLoadError {
        SessionLoadError::new(SessionLoadErrorKind::UnreadableValue, Some(field))
    }

    /// What was wrong.
    pub fn kind(&self) -> SessionLoadErrorKind {
        self.kind
    }

    /// The stored field's name (`d:<key>` for a plain value, `t:<KEY>` for a typed one,
    /// `f:…` for a flash message), for [`SessionLoadErrorKind::UnreadableValue`].
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }
}

impl fmt::Display for SessionLoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, &self.field) {
            (SessionLoadErrorKind::UnreadableValue, Some(field)) => {
                write!(f, "stored value {field} is unreadable; dropped")
            }
            (SessionLoadErrorKind::UnreadableValue, None) => {
                f.write_str("a stored value is unreadable; dropped")
            }
            (SessionLoadErrorKind::TooLarge, _) => {
                f.write_str("stored session over max_session_size; discarded")
            }
            (SessionLoadErrorKind::NotASession, _) => {
                f.write_str("stored record is not a session; discarded")
            }
        }
    }
}

impl std::error::Error for SessionLoadError {}

#[cfg(test)]
mod classification {
    use super::*;

    /// The error Redis answers with `line` (`CODE message`).
    fn reply(line: &str) -> redis::RedisError {
        match redis::parse_redis_value(format!("-{line}\r\n").as_bytes()).unwrap() {
            redis::Value::ServerError(e) => redis::RedisError::from(e),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn replies_that_mean_not_now_are_unavailable_and_a_full_redis_is_full() {
        for (line, kind) in [
            (
                "LOADING Redis is loading the dataset in memory",
                StoreErrorKind::Unavailable,
            ),
            (
                "BUSY Redis is busy running a script",
                StoreErrorKind::Unavailable,
            ),
            (
                "READONLY You can't write against a read only replica.",
                StoreErrorKind::Unavailable,
            ),
            (
                "MASTERDOWN Link with MASTER is down",
                StoreErrorKind::Unavailable,
            ),
            (
                "TRYAGAIN Multiple keys request during rehashing",
                StoreErrorKind::Unavailable,
            ),
            (
                "CLUSTERDOWN The cluster is down",
                StoreErrorKind::Unavailable,
            ),
            (
                "NOREPLICAS Not enough good replicas to write.",
                StoreErrorKind::Unavailable,
            ),
            (
                "OOM command not allowed when used memory > 'maxmemory'.",
                StoreErrorKind::Full,
            ),
            (
                "MISCONF Redis is configured to save RDB snapshots",
                StoreErrorKind::Full,
            ),
            (
                "WRONGTYPE Operation against a key holding the wrong kind",
                StoreErrorKind::Backend,
            ),
            ("ERR unknown command 'HSET'", StoreErrorKind::Backend),
        ] {
            assert_eq!(StoreError::redis(reply(line)).kind(), kind, "{line}");
        }
    }

    #[test]
    fn an_error_reply_is_logged_by_its_code_alone() {
        let e = StoreError::redis(reply(
            "ERR unknown command 'HSET', with args beginning with: 'session:ab' 'd:secret' 'MARKER'",
        ));
        let logged = e.loggable_source();
        assert_eq!(logged, "Redis error reply ERR");
        assert!(!logged.contains("MARKER"));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = StoreError::redis(redis::RedisError::from(io));
        assert_eq!(e.kind(), StoreErrorKind::Unavailable);
        assert!(
            e.loggable_source().contains("refused"),
            "{}",
            e.loggable_source()
        );
    }
}
