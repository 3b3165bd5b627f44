//! The bridge from actix-session: a request that carries an actix-session cookie and none of
//! ours has that cookie checked with actix-session's key, its state read from Redis in
//! actix-session's layout, and the session moved into a record of ours (see
//! [`FromActixSession`]).
//!
//! actix-session 0.11 (with its `RedisSessionStore`) keeps a session as one Redis string
//! under its cache key (the session key itself unless `cache_keygen` says otherwise): a JSON
//! map of key to the JSON of each value, with an expiry. Its cookie holds the session key,
//! 64 random alphanumeric characters, through the `cookie` crate's private jar (base64 of a
//! 12-byte nonce, AES-256-GCM ciphertext and tag, the cookie's name as associated data, the
//! second half of the 64-byte master key) or its signed jar (base64 of an HMAC-SHA256 of the
//! value under the first half, then the value). Both are checked here with the crates we
//! already use for our own cookies, in constant time.

use std::{collections::HashMap, fmt, time::Duration};

use actix_web::{cookie::SameSite, http::header};
use aes_gcm::{aead::Aead, Aes256Gcm, KeyInit, Nonce};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use redis::Value;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::{
    codec,
    cookie::{self, CookieConfig},
    record::DATA_PREFIX,
    store::{Budget, Fields, Guarded, StoreError},
};

/// The longest session key actix-session accepts (its `SessionKey`).
const MAX_SESSION_KEY: usize = 4064;
/// Old cookies checked per request, at most (each costs a MAC or a decryption).
const MAX_OLD_COOKIES: usize = 3;
/// Length of the base64 HMAC-SHA256 in front of a signed cookie's value.
const DIGEST_B64_LEN: usize = 44;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// How actix-session protected its cookie (its `CookieContentSecurity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ActixContentSecurity {
    /// Encrypted (AES-256-GCM), actix-session's default.
    #[default]
    Private,
    /// Signed (HMAC-SHA256), readable by the client.
    Signed,
}

/// How to read the sessions of an application that used actix-session 0.11 with its Redis
/// store, for [`RedisSessionBuilder::migrate_from_actix_session`](crate::RedisSessionBuilder::migrate_from_actix_session): with it, users who signed
/// in under actix-session stay signed in when the application switches.
///
/// A request that carries an actix-session cookie and no valid cookie of ours has that
/// cookie verified (or decrypted) with actix-session's key; the session it names is read
/// from Redis (one round trip more, once per user), each entry becomes a value of ours
/// (readable with [`Session::get`](crate::Session::get) as before), the time it had left is
/// kept (up to our idle timeout), the old Redis key is deleted once our record is stored,
/// our cookie is set and the old one removed. A cookie that does not verify, or whose
/// session has expired, is a fresh session, never an error.
///
/// # Examples
///
/// ```no_run
/// use actix_redis_session::{ActixContentSecurity, FromActixSession, Key, RedisSession};
///
/// // The key actix-session was configured with: `actix_web::cookie::Key::master()`.
/// let old_master = std::env::var("OLD_SESSION_KEY").unwrap();
/// let sessions = RedisSession::builder("redis://127.0.0.1:6379", Key::from_env("SESSION_KEY")?)
///     .migrate_from_actix_session(
///         FromActixSession::new(old_master.as_bytes())
///             .cookie_name("id")
///             .content_security(ActixContentSecurity::Private)
///             .key_prefix(""),
///     )
///     .build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct FromActixSession {
    master: Zeroizing<Vec<u8>>,
    cookie_name: String,
    security: ActixContentSecurity,
    key_prefix: String,
    cookie_path: String,
    cookie_domain: Option<String>,
}

impl fmt::Debug for FromActixSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromActixSession")
            .field("cookie_name", &self.cookie_name)
            .field("security", &self.security)
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

impl FromActixSession {
    /// Reads actix-session's cookies with its master key: the 64 bytes of
    /// `actix_web::cookie::Key::master()` (the first 32 sign, the last 32 encrypt, as in
    /// the `cookie` crate). [`build`](crate::RedisSessionBuilder::build) refuses fewer.
    /// Defaults: actix-session's: cookie `id`, private, no key prefix, path `/`, no domain.
    pub fn new(master_key: &[u8]) -> FromActixSession {
        FromActixSession {
            master: Zeroizing::new(master_key.to_vec()),
            cookie_name: "id".to_owned(),
            security: ActixContentSecurity::Private,
            key_prefix: String::new(),
            cookie_path: "/".to_owned(),
            cookie_domain: None,
        }
    }

    /// actix-session's cookie name (`SessionMiddlewareBuilder::cookie_name`). Default `id`.
    /// It may be ours too: a value that is not our cookie is then tried as theirs.
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = name.into();
        self
    }

    /// How actix-session protected its cookie (`cookie_content_security`). Default
    /// [`ActixContentSecurity::Private`].
    pub fn content_security(mut self, security: ActixContentSecurity) -> Self {
        self.security = security;
        self
    }

    /// What actix-session's `RedisSessionStore::cache_keygen` put before the session key.
    /// Default: nothing (actix-session's default keygen is the session key itself).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// The path actix-session's cookie was set for (`cookie_path`), to remove it. Default `/`.
    pub fn cookie_path(mut self, path: impl Into<String>) -> Self {
        self.cookie_path = path.into();
        self
    }

    /// The domain actix-session's cookie was set for (`cookie_domain`), to remove it.
    /// Default: none.
    pub fn cookie_domain(mut self, domain: impl Into<String>) -> Self {
        self.cookie_domain = Some(domain.into());
        self
    }

    /// The bridge a middleware runs, once the options are checked.
    pub(crate) fn into_bridge(self, secure: bool, ours: &str) -> Result<Bridge, &'static str> {
        if self.master.len() < 64 {
            return Err("actix-session's key is 64 bytes (cookie::Key::master())");
        }
        if !cookie::is_token(&self.cookie_name) {
            return Err("the actix-session cookie name must be a non-empty HTTP token");
        }
        if !cookie::is_safe_path(&self.cookie_path) {
            return Err(
                "the actix-session cookie path must start with '/' and hold visible ASCII \
                 without ';'",
            );
        }
        let mut signing = Zeroizing::new([0u8; 32]);
        signing.copy_from_slice(&self.master[..32]);
        let cipher = Aes256Gcm::new_from_slice(&self.master[32..64])
            .map_err(|_| "actix-session's encryption key is 32 bytes")?;
        let same_name = self.cookie_name == ours;
        Ok(Bridge {
            signing,
            cipher,
            security: self.security,
            key_prefix: self.key_prefix,
            same_name,
            cookie: CookieConfig {
                name: self.cookie_name,
                path: self.cookie_path,
                domain: self.cookie_domain,
                secure,
                http_only: true,
                same_site: SameSite::Lax,
                max_age: None,
            },
        })
    }
}

/// A configured bridge.
pub(crate) struct Bridge {
    signing: Zeroizing<[u8; 32]>,
    cipher: Aes256Gcm,
    security: ActixContentSecurity,
    key_prefix: String,
    /// actix-session's cookie has our cookie's name: no removal of its own.
    same_name: bool,
    cookie: CookieConfig,
}

impl fmt::Debug for Bridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bridge")
            .field("cookie", &self.cookie.name)
            .field("security", &self.security)
            .finish_non_exhaustive()
    }
}

/// What the bridge made of a request's actix-session cookie.
pub(crate) enum OldCookie {
    /// It verified: the Redis key of the session it names.
    Valid(String),
    /// It came, and did not verify (tampered, another key, truncated).
    Invalid,
}

impl Bridge {
    /// The actix-session cookie of a request, if it carries one: the first of (at most
    /// [`MAX_OLD_COOKIES`]) values that verifies.
    pub(crate) fn read(&self, headers: &header::HeaderMap) -> Option<OldCookie> {
        let name = self.cookie.name.as_bytes();
        let mut seen = 0;
        for value in headers
            .get_all(header::COOKIE)
            .flat_map(|h| cookie::cookie_values(h.as_bytes(), name))
        {
            if seen == MAX_OLD_COOKIES {
                break;
            }
            seen += 1;
            // actix-session percent-encodes its cookie (`Cookie::encoded`): base64's `+`, `/`
            // and `=` arrive as `%2B`, `%2F`, `%3D`.
            let decoded = percent_decode(value);
            if let Some(key) = std::str::from_utf8(&decoded)
                .ok()
                .and_then(|v| self.verify(v))
            {
                let mut storage = String::with_capacity(self.key_prefix.len() + key.len());
                storage.push_str(&self.key_prefix);
                storage.push_str(&key);
                return Some(OldCookie::Valid(storage));
            }
        }
        (seen > 0).then(|| {
            tracing::debug!("actix-session cookie rejected");
            OldCookie::Invalid
        })
    }

    /// The session key in an actix-session cookie value, if it verifies.
    fn verify(&self, value: &str) -> Option<String> {
        let key = match self.security {
            ActixContentSecurity::Signed => {
                if !value.is_char_boundary(DIGEST_B64_LEN) {
                    return None;
                }
                let (digest, key) = value.split_at(DIGEST_B64_LEN);
                let digest = base64::engine::general_purpose::STANDARD
                    .decode(digest)
                    .ok()?;
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.signing[..]).ok()?;
                mac.update(key.as_bytes());
                // Constant time.
                mac.verify_slice(&digest).ok()?;
                key.to_owned()
            }
            ActixContentSecurity::Private => {
                let sealed = base64::engine::general_purpose::STANDARD
                    .decode(value)
                    .ok()?;
                if sealed.len() < NONCE_LEN + TAG_LEN + 1 {
                    return None;
                }
                let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
                let payload = aes_gcm::aead::Payload {
                    msg: ciphertext,
                    aad: self.cookie.name.as_bytes(),
                };
                // The tag is checked (in constant time) before anything is decrypted.
                let plain = self
                    .cipher
                    .decrypt(Nonce::from_slice(nonce), payload)
                    .ok()?;
                String::from_utf8(plain).ok()?
            }
        };
        let well_formed = !key.is_empty()
            && key.len() <= MAX_SESSION_KEY
            && key.bytes().all(|b| b.is_ascii_graphic());
        well_formed.then_some(key)
    }

    /// The Set-Cookie that removes actix-session's cookie; `None` when it has our cookie's
    /// name (ours replaces it).
    pub(crate) fn removal_cookie(&self) -> Option<actix_web::cookie::Cookie<'static>> {
        (!self.same_name).then(|| self.cookie.removal_cookie())
    }
}

/// `value` with its `%XX` escapes decoded (what the `cookie` crate's `parse_encoded` does);
/// a `%` not followed by two hex digits stays as it is.
fn percent_decode(value: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !value.contains(&b'%') {
        return std::borrow::Cow::Borrowed(value);
    }
    let hex = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if let (b'%', Some(&hi), Some(&lo)) = (value[i], value.get(i + 1), value.get(i + 2)) {
            if let (Some(hi), Some(lo)) = (hex(hi), hex(lo)) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(value[i]);
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

/// Reads the actix-session session under `key` and its time left: `None` if there is none
/// (expired, never stored, not a string, not actix-session's layout).
pub(crate) async fn load(
    store: &Guarded,
    budget: &Budget,
    key: &str,
) -> Result<Option<(Fields, Option<Duration>)>, StoreError> {
    let replies = store
        .query("migrate", budget, key, |pipe| {
            pipe.cmd("GET").arg(key);
            pipe.cmd("PTTL").arg(key);
        })
        .await;
    let replies = match replies {
        Ok(replies) => replies,
        // Something else under the key (a hash, a list): not an actix-session session.
        Err(e) if e.is_wrong_type() => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut replies = replies.into_iter();
    let (Some(Value::BulkString(state)), ttl) = (replies.next(), replies.next()) else {
        return Ok(None);
    };
    Ok(convert(&state).map(|fields| (fields, crate::store::commands::pttl(ttl))))
}

/// The values of an actix-session state (a JSON map of key to the JSON of each value) as
/// fields of ours: `d:<key>`, each JSON value with its header byte. `None` if the state is
/// not such a map; entries whose value is not valid JSON are left out.
pub(crate) fn convert(state: &[u8]) -> Option<Fields> {
    let map: HashMap<String, String> = match serde_json::from_slice(state) {
        Ok(map) => map,
        Err(_) => {
            tracing::warn!("actix-session state is not a JSON map of strings; not migrated");
            return None;
        }
    };
    let mut fields = Fields::with_capacity(map.len());
    for (key, value) in map {
        let mut encoded = Vec::with_capacity(1 + value.len());
        encoded.push(codec::FORMAT_JSON);
        encoded.extend_from_slice(value.as_bytes());
        if codec::validate(&encoded).is_err() {
            tracing::warn!(key = %key, "actix-session value is not valid JSON; not migrated");
            continue;
        }
        fields.insert(format!("{DATA_PREFIX}{key}"), encoded);
    }
    Some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridge(security: ActixContentSecurity) -> Bridge {
        FromActixSession::new(&(0..64).collect::<Vec<u8>>())
            .content_security(security)
            .into_bridge(true, "sid")
            .unwrap()
    }

    fn signed(key: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&(0..32).collect::<Vec<u8>>()).unwrap();
        mac.update(key.as_bytes());
        let mut value =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        value.push_str(key);
        value
    }

    #[test]
    fn signed_cookies_verify_and_tampered_ones_do_not() {
        let bridge = bridge(ActixContentSecurity::Signed);
        let key = "a".repeat(64);
        assert_eq!(bridge.verify(&signed(&key)).as_deref(), Some(key.as_str()));
        let good = signed(&key);
        for bad in [
            format!("{}b", &good[..good.len() - 1]),
            good[..good.len() - 1].to_owned(),
            good[..DIGEST_B64_LEN].to_owned(),
            key.clone(),
            String::new(),
            "é".repeat(30),
        ] {
            assert!(bridge.verify(&bad).is_none(), "{bad:?}");
        }
        // A private bridge does not take a signed cookie.
        assert!(super::tests::bridge(ActixContentSecurity::Private)
            .verify(&good)
            .is_none());
    }

    #[test]
    fn percent_escapes_are_decoded() {
        assert_eq!(&*percent_decode(b"ab%2Bc%2f%3D"), b"ab+c/=");
        assert_eq!(&*percent_decode(b"100%"), b"100%");
        assert_eq!(&*percent_decode(b"%zz%4"), b"%zz%4");
        assert_eq!(&*percent_decode(b"%e9%FF"), b"\xe9\xff");
    }

    #[test]
    fn short_keys_and_bad_names_are_refused() {
        assert!(FromActixSession::new(&[1; 63])
            .into_bridge(true, "sid")
            .is_err());
        assert!(FromActixSession::new(&[1; 64])
            .cookie_name("a b")
            .into_bridge(true, "sid")
            .is_err());
        assert!(FromActixSession::new(&[1; 64])
            .cookie_path("x")
            .into_bridge(true, "sid")
            .is_err());
        let same = FromActixSession::new(&[1; 64])
            .cookie_name("sid")
            .into_bridge(true, "sid")
            .unwrap();
        assert!(same.removal_cookie().is_none());
    }

    #[test]
    fn actix_session_state_becomes_our_fields() {
        let fields =
            convert(br#"{"user_id":"42","cart":"{\"items\":[1,2]}","bad":"{nope"}"#).unwrap();
        assert_eq!(fields.len(), 2);
        assert_eq!(fields["d:user_id"], b"\x0142");
        assert_eq!(
            codec::decode::<serde_json::Value>(&fields["d:cart"]).unwrap(),
            serde_json::json!({"items": [1, 2]})
        );
        assert!(convert(b"[1,2]").is_none());
        assert!(convert(b"\xff").is_none());
        assert!(convert(b"{}").unwrap().is_empty());
    }
}
