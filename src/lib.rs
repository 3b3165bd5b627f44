//! Server-side sessions for [actix-web] 4, stored in Redis.
//!
//! ```no_run
//! use actix_redis_session::{Key, RedisSession, Session, SessionData, TypedSession};
//! use actix_web::{get, post, web, App, HttpResponse, HttpServer, Result};
//! use serde::{Deserialize, Serialize};
//!
//! #[get("/")]
//! async fn index(session: Session) -> Result<String> {
//!     let visits: u64 = session.get("visits")?.unwrap_or(0);
//!     session.insert("visits", visits + 1)?;
//!     Ok(format!("{} visits", visits + 1))
//! }
//!
//! #[derive(Serialize, Deserialize, Default)]
//! struct Cart {
//!     items: Vec<u32>,
//! }
//!
//! impl SessionData for Cart {
//!     const KEY: &'static str = "cart";
//! }
//!
//! #[post("/cart/{id}")]
//! async fn add(mut cart: TypedSession<Cart>, id: web::Path<u32>) -> HttpResponse {
//!     cart.items.push(*id); // written back after the handler
//!     HttpResponse::Ok().finish()
//! }
//!
//! #[actix_web::main]
//! async fn main() -> std::io::Result<()> {
//!     let key = Key::from_env("SESSION_KEY").expect("SESSION_KEY holds 32+ base64 bytes");
//!     let sessions = RedisSession::new("redis://127.0.0.1:6379", key).expect("valid URL");
//!     HttpServer::new(move || App::new().wrap(sessions.clone()).service(index).service(add))
//!         .bind(("127.0.0.1", 8080))?
//!         .run()
//!         .await
//! }
//! ```
//!
//! Flash messages ride in the session too: send with
//! [`FlashMessage::success("Saved").send(&session)`](FlashMessage::send) or the [`Flash`]
//! extractor, read once with [`IncomingFlashMessages`].
//!
//! Redis is reached through an r2d2 pool on actix's blocking threads ([`Transport::Pool`], the
//! default, which can share the application's pool) or through one multiplexed async
//! connection per worker ([`Transport::Multiplexed`], the highest read-write throughput). Both
//! batch the commands of concurrent requests into one pipeline per round trip. Other stores
//! ([`store::MemoryStore`] for development and tests, [`store::FileStore`], or your own
//! [`store::SessionStore`]) go to [`RedisSession::builder_with`].
//!
//! How it works:
//!
//! - The cookie holds a random 256-bit id, the "remember me" lifetime when one is set, and
//!   an HMAC-SHA256 over both; nothing else. Tampered,
//!   truncated or foreign cookies get a fresh session, never an error.
//! - One Redis hash per session under `prefix + hex(SHA-256(id))`, so a dump of Redis holds no
//!   usable cookie. One field per key, so concurrent requests that change different keys do
//!   not overwrite each other.
//! - Loaded only when a handler asks (the first `Session`, `TypedSession` or flash
//!   extractor): assets and health checks that carry the cookie cost the store nothing.
//! - One round trip to load (which also refreshes the idle timeout, or with
//!   [`touch_after`](RedisSessionBuilder::touch_after) at most once per interval), none to
//!   finish a request that changed nothing, one to write the changed fields.
//! - Pool transport: Redis calls run on actix's blocking thread pool (`web::block`), over an
//!   r2d2 pool that does not PING on checkout; concurrent requests' commands are batched into
//!   one write on one connection.
//!
//! [actix-web]: https://docs.rs/actix-web

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod admin;
mod binding;
mod bridge;
mod builder;
mod callback;
pub mod codec;
pub mod config;
mod cookie;
pub mod csrf;
mod error;
pub mod flash;
mod key;
mod lifetime;
mod middleware;
mod record;
mod session;
mod state;
pub mod store;
mod telemetry;
mod typed;

/// The README's examples, compiled (and run where they need no server) as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;

#[cfg(test)]
mod properties;

/// The integration tests' redis-server harness, shared with unit tests that need Redis.
#[cfg(test)]
#[path = "../tests/common/redis_server.rs"]
#[allow(dead_code)]
mod test_redis;

pub use self::{
    admin::{SessionAdmin, SessionInfo, SessionView, DEFAULT_SCAN_COUNT},
    binding::{BindingMismatch, ClientIp},
    bridge::{ActixContentSecurity, FromActixSession},
    builder::RedisSessionBuilder,
    codec::{Codec, CodecError},
    config::{OnStoreError, Transport},
    cookie::Handle,
    csrf::{Csrf, CsrfError, CsrfForm},
    error::{
        ConfigError, KeyError, SessionError, SessionLoadError, SessionLoadErrorKind, StoreError,
        StoreErrorKind,
    },
    flash::{Flash, FlashMessage, IncomingFlashMessages, Level},
    key::Key,
    middleware::RedisSession,
    session::{Session, SessionExt},
    state::SessionStatus,
    store::{BreakerState, CircuitBreaker, Retry, StoreHealth},
    typed::{SessionData, TypedSession},
};

/// Re-exported so that cookie options can be named without a direct dependency.
pub use actix_web::cookie::SameSite;

/// Entry points for the fuzz targets in `fuzz/`. Not part of the API: no semver promise, may
/// change in any release.
#[doc(hidden)]
#[path = "fuzzing.rs"]
pub mod __fuzz;

/// Internals exposed for the micro benchmarks in `bench/`. Not part of the API: no semver
/// promise, may change in any release.
#[doc(hidden)]
pub mod __bench {
    use serde::{de::DeserializeOwned, Serialize};

    use crate::{codec, cookie, Key};

    /// What signs and verifies one middleware's cookies.
    pub struct Signer(cookie::Signer);

    /// A fixed key, for benchmarks that need the same one twice.
    pub fn signer_key() -> Key {
        Key::from_bytes(&[7u8; 64]).expect("64 bytes")
    }

    /// The signer of a middleware with `key` and the default cookie name.
    pub fn signer(key: &Key) -> Signer {
        Signer(cookie::Signer::new(key, crate::config::DEFAULT_COOKIE_NAME))
    }

    /// Signs a session cookie value for a fresh random id.
    pub fn sign_new_cookie(signer: &Signer) -> String {
        signer.0.sign(&cookie::SessionId::generate(), None)
    }

    /// Verifies a cookie value; `true` when valid.
    pub fn verify_cookie(signer: &Signer, value: &str) -> bool {
        signer.0.verify(value).is_ok()
    }

    /// The formats of a middleware that writes in one of them.
    pub struct Formats(codec::Codecs);

    /// JSON delegated to through the public trait, under id 8: what a codec of the
    /// application's own costs over the statically dispatched built-in one.
    struct ErasedJson;

    impl codec::Codec for ErasedJson {
        fn id(&self) -> u8 {
            8
        }

        fn name(&self) -> &'static str {
            "erased-json"
        }

        fn encode(
            &self,
            value: codec::Encode<'_>,
            out: &mut Vec<u8>,
        ) -> Result<(), codec::BoxError> {
            codec::Json.encode(value, out)
        }

        fn decode(
            &self,
            payload: &[u8],
            into: codec::DecodeInto<'_>,
        ) -> Result<(), codec::BoxError> {
            codec::Json.decode(payload, into)
        }
    }

    /// Writes in `name`: `json`, `msgpack` (with the feature) or `erased-json`.
    pub fn formats(name: &str) -> Formats {
        let write = match name {
            #[cfg(feature = "msgpack")]
            "msgpack" => codec::Chosen::of(codec::MessagePack),
            "erased-json" => codec::Chosen::of(ErasedJson),
            _ => codec::Chosen::Json,
        };
        Formats(codec::Codecs::new(write, Vec::new(), false).expect("valid formats"))
    }

    /// Encodes a value in the format `formats` writes.
    pub fn encode_as<T: Serialize>(formats: &Formats, value: &T) -> Vec<u8> {
        formats.0.encode(value).expect("serializable")
    }

    /// Decodes a stored value, in the format its header names.
    pub fn decode_as<T: DeserializeOwned>(formats: &Formats, raw: &[u8]) -> Option<T> {
        formats.0.decode(raw).ok()
    }

    /// Checks a stored value the way a load does.
    pub fn validate_as(formats: &Formats, raw: &[u8]) -> bool {
        formats.0.validate(raw).is_ok()
    }

    /// The value rewritten in the format `formats` writes (eager migration).
    pub fn rewrite_as(formats: &Formats, raw: &[u8]) -> Option<Vec<u8>> {
        formats.0.rewrite(raw)
    }

    /// Encodes a value as stored (header byte + JSON).
    pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
        codec::encode(value).expect("serializable")
    }

    /// Decodes a stored value.
    pub fn decode<T: DeserializeOwned>(raw: &[u8]) -> Option<T> {
        codec::decode(raw).ok()
    }

    /// Checks a stored value the way a load does.
    pub fn validate(raw: &[u8]) -> bool {
        codec::validate(raw).is_ok()
    }

    /// How a middleware stores values: sealed (`encrypt_at_rest`) and/or compressed.
    pub struct AtRest(codec::at_rest::AtRest);

    /// The stored form of a middleware with `key`.
    pub fn at_rest(key: &Key, encrypt: bool, compress_above: Option<usize>) -> AtRest {
        AtRest(codec::at_rest::AtRest::new(
            key,
            encrypt,
            compress_above,
            1 << 20,
        ))
    }

    /// The stored form of an encoded value (field `d:v` of one record).
    pub fn seal(at_rest: &AtRest, encoded: &[u8]) -> Vec<u8> {
        at_rest.0.seal("session:0123456789abcdef", "d:v", encoded)
    }

    /// The encoded value of a stored form, as a load opens it; `false` if it does not open.
    pub fn open(at_rest: &AtRest, stored: &mut Vec<u8>) -> bool {
        at_rest
            .0
            .open("session:0123456789abcdef", "d:v", stored)
            .is_ok()
    }
}
