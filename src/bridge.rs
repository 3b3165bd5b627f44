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
    cookie::{self, lifetime_from_secs, lifetime_secs, CookieConfig, SessionId},
    key::Key,
    record::DATA_PREFIX,
    store::{Budget, Fields, Guarded, Outcome, StoreError},
};

/// First bytes of the forward left in place of a moved actix-session state (never JSON, so
/// never read as a state): then, in base64, a nonce and the new session's id and lifetime
/// sealed with our key. Text, so that an instance still running actix-session reads it as a
/// state it cannot parse (a fresh session there) rather than failing on bytes that are not
/// UTF-8.
const FORWARD: &[u8] = b"\x00actix-redis-session forward 1\x00";

/// What a forward seals: the id, then the lifetime ([`Session::remember`]) in seconds, 0 for
/// none.
///
/// [`Session::remember`]: crate::Session::remember
const FORWARD_PLAIN_LEN: usize = 32 + 4;

/// Associated data of a forward's seal, followed by the old key it lies under: a forward
/// opens only where it was left.
const FORWARD_AAD: &[u8] = b"actix-redis-session forward to";

/// How long a forward lives: the requests a browser sent together with the moving one (or
/// right after it, before our cookie arrived) find the moved session through it.
const FORWARD_TTL: Duration = Duration::from_secs(60);

/// Replaces a moved actix-session state (`KEYS[1]`) with its forward (`ARGV[2]`, living
/// `ARGV[3]` ms): 1 if done, or done already by an earlier attempt of this very call; 0 if
/// the state is gone (ended, expired) or another request's forward is there (it moved the
/// session first). `ARGV[1]` is [`FORWARD`].
const FORWARD_SCRIPT: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
if v == ARGV[2] then return 1 end
if string.sub(v, 1, string.len(ARGV[1])) == ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

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
/// kept (up to our idle timeout), the old state is replaced by a forward to our record once
/// that is stored (for a minute, so that the requests the browser sent along with this one
/// find the moved session; deleted instead when the request renews the session), our
/// cookie is set and the old one removed. A cookie that does not verify, or whose session
/// has expired, is a fresh session, never an error.
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
    pub(crate) fn into_bridge(
        self,
        secure: bool,
        ours: &str,
        key: &Key,
    ) -> Result<Bridge, &'static str> {
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
        let forward = key
            .all()
            .map(|keys| Aes256Gcm::new(keys.encrypt().into()))
            .collect();
        Ok(Bridge {
            signing,
            cipher,
            forward,
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
    /// Seals and opens forwards with our key: the current one first, then the previous ones.
    forward: Vec<Aes256Gcm>,
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

    /// The forward to the session `id` (with the lifetime `remember`) that replaces the
    /// moved state under `old`.
    fn seal_forward(&self, old: &str, id: &SessionId, remember: Option<Duration>) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random number generator failed");
        let secs = lifetime_secs(remember).to_be_bytes();
        let plain = Zeroizing::new([&id.as_bytes()[..], &secs].concat());
        let aad = forward_aad(old);
        let payload = aes_gcm::aead::Payload {
            msg: &plain,
            aad: &aad,
        };
        let sealed = self.forward[0]
            .encrypt(Nonce::from_slice(&nonce), payload)
            .expect("AES-GCM seals any message shorter than 64 GiB");
        let text = base64::engine::general_purpose::STANDARD.encode([&nonce[..], &sealed].concat());
        [FORWARD, text.as_bytes()].concat()
    }

    /// The session (and its lifetime) a forward under `old` leads to; `None` if `value` is
    /// no forward, or does not open with our keys there (checked in constant time).
    fn open_forward(&self, old: &str, value: &[u8]) -> Option<(SessionId, Option<Duration>)> {
        let text = value.strip_prefix(FORWARD)?;
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?;
        if sealed.len() != NONCE_LEN + FORWARD_PLAIN_LEN + TAG_LEN {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let aad = forward_aad(old);
        self.forward.iter().find_map(|cipher| {
            let payload = aes_gcm::aead::Payload {
                msg: ciphertext,
                aad: &aad,
            };
            let plain = Zeroizing::new(cipher.decrypt(Nonce::from_slice(nonce), payload).ok()?);
            let (id, secs) = plain.split_at(32);
            let remember = lifetime_from_secs(u32::from_be_bytes(secs.try_into().ok()?));
            Some((SessionId::from_bytes(id.try_into().ok()?), remember))
        })
    }

    /// Replaces the moved state under `old` with a forward to `id` (whose cookie has the
    /// lifetime `remember`), living [`FORWARD_TTL`]:
    /// [`Outcome::Applied`], or [`Outcome::Gone`] when the state was gone or another request
    /// moved it first (this copy is then to be deleted, as a renew's whose old record was
    /// gone).
    pub(crate) async fn forward(
        &self,
        store: &Guarded,
        budget: &Budget,
        old: &str,
        id: &SessionId,
        remember: Option<Duration>,
    ) -> Result<Outcome, StoreError> {
        let forward = self.seal_forward(old, id, remember);
        let ttl = u64::try_from(FORWARD_TTL.as_millis()).unwrap_or(u64::MAX);
        let replies = store
            .query("migrate", budget, old, |pipe| {
                pipe.cmd("EVAL")
                    .arg(FORWARD_SCRIPT)
                    .arg(1)
                    .arg(old)
                    .arg(FORWARD)
                    .arg(&forward)
                    .arg(ttl);
            })
            .await?;
        Ok(match replies.first() {
            Some(Value::Int(1)) => Outcome::Applied,
            _ => Outcome::Gone,
        })
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

/// [`FORWARD_AAD`] followed by the key a forward lies under.
fn forward_aad(old: &str) -> Vec<u8> {
    [FORWARD_AAD, old.as_bytes()].concat()
}

/// What lies under an actix-session cookie's key.
pub(crate) enum Old {
    /// Its session, not moved yet: our fields and its time left.
    State(Fields, Option<Duration>),
    /// Moved a moment ago by another request: the session it became, and its lifetime.
    Moved(SessionId, Option<Duration>),
}

/// Reads the actix-session session under `key` and its time left, or the forward a move
/// left there: `None` if there is neither (expired, never stored, not a string, not
/// actix-session's layout, a forward that does not open).
pub(crate) async fn load(
    bridge: &Bridge,
    store: &Guarded,
    budget: &Budget,
    key: &str,
) -> Result<Option<Old>, StoreError> {
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
    if state.starts_with(FORWARD) {
        return Ok(bridge
            .open_forward(key, &state)
            .map(|(id, remember)| Old::Moved(id, remember)));
    }
    Ok(convert(&state).map(|fields| Old::State(fields, crate::store::commands::pttl(ttl))))
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
            .into_bridge(true, "sid", &Key::generate())
            .unwrap()
    }

    #[test]
    fn a_forward_opens_with_our_keys_under_its_own_key_only() {
        let master = (0..64).collect::<Vec<u8>>();
        let old = Key::generate();
        let with = |key: &Key| {
            FromActixSession::new(&master)
                .into_bridge(true, "sid", key)
                .unwrap()
        };
        let before = with(&old);
        let id = SessionId::generate();
        let forward = before.seal_forward("k1", &id, None);
        assert!(forward.starts_with(FORWARD));
        assert!(serde_json::from_slice::<serde_json::Value>(&forward).is_err());
        let (opened, remember) = before.open_forward("k1", &forward).expect("opens");
        assert_eq!((opened.as_bytes(), remember), (id.as_bytes(), None));
        let week = Duration::from_secs(7 * 86_400);
        let lasting = before.seal_forward("k1", &id, Some(week));
        assert_eq!(before.open_forward("k1", &lasting).unwrap().1, Some(week));
        // Text (what actix-session reads as a string), and never JSON.
        assert!(std::str::from_utf8(&forward).is_ok());
        // Not under another key, not with another key, not when truncated or extended.
        assert!(before.open_forward("k2", &forward).is_none());
        assert!(with(&Key::generate())
            .open_forward("k1", &forward)
            .is_none());
        assert!(before
            .open_forward("k1", &forward[..forward.len() - 1])
            .is_none());
        assert!(before
            .open_forward("k1", &[&forward[..], b"x"].concat())
            .is_none());
        // After a key rotation, a forward sealed with the previous key still opens.
        let rotated = with(&Key::generate().previous_keys([old]));
        let (opened, _) = rotated.open_forward("k1", &forward).expect("opens");
        assert_eq!(opened.as_bytes(), id.as_bytes());
        // Two forwards to one session differ (fresh nonces).
        assert_ne!(before.seal_forward("k1", &id, None), forward);
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
            .into_bridge(true, "sid", &Key::generate())
            .is_err());
        assert!(FromActixSession::new(&[1; 64])
            .cookie_name("a b")
            .into_bridge(true, "sid", &Key::generate())
            .is_err());
        assert!(FromActixSession::new(&[1; 64])
            .cookie_path("x")
            .into_bridge(true, "sid", &Key::generate())
            .is_err());
        let same = FromActixSession::new(&[1; 64])
            .cookie_name("sid")
            .into_bridge(true, "sid", &Key::generate())
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
