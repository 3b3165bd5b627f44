//! Session ids and the signed cookie that carries them.
//!
//! Cookie value: `base64url(payload) "." base64url(HMAC-SHA256(sign_key, "cookie:" name NUL
//! payload))`, where the payload is the 32-byte session id, followed for "remember me" sessions
//! by their lifetime in seconds (4 bytes, big endian). The lifetime rides in the signed cookie
//! so that the load can refresh the right TTL in the same round trip, without reading the
//! record first. The MAC covers the cookie name, so that two middlewares that share a key (and
//! a key prefix) never accept each other's cookies. Cookies of 0.1, whose MAC is over the
//! payload alone, are still accepted, as if signed with an old key: re-issued bound to the
//! name on their next response.

use std::{fmt, time::Duration};

use actix_web::cookie::{time::OffsetDateTime, Cookie, SameSite};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::key::Key;

const ID_LEN: usize = 32;
const MAC_LEN: usize = 32;
/// Longest cookie value we try to decode; a valid one is at most 92 characters.
const MAX_VALUE_LEN: usize = 128;

type HmacSha256 = Hmac<Sha256>;

/// A "remember me" lifetime as cookies (and the bridge's forwards) carry it: whole seconds,
/// 0 for none; a lifetime is at least a second ([`lifetime::requested`]).
///
/// [`lifetime::requested`]: crate::lifetime::requested
pub(crate) fn lifetime_secs(remember: Option<Duration>) -> u32 {
    remember.map_or(0, |r| u32::try_from(r.as_secs()).unwrap_or(u32::MAX).max(1))
}

/// The lifetime [`lifetime_secs`] gave as `secs`.
pub(crate) fn lifetime_from_secs(secs: u32) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(u64::from(secs)))
}

/// A 256-bit session id from the OS CSPRNG. Secret: it is what the cookie proves possession of.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SessionId([u8; ID_LEN]);

impl SessionId {
    pub(crate) fn generate() -> SessionId {
        let mut id = [0u8; ID_LEN];
        getrandom::fill(&mut id).expect("the OS random number generator failed");
        SessionId(id)
    }

    /// The public handle: hex SHA-256 of the id.
    pub(crate) fn handle(&self) -> Handle {
        let mut hex = String::with_capacity(2 * 32);
        push_hex(&mut hex, &Sha256::digest(self.0));
        Handle(hex)
    }

    /// `prefix` followed by the [`Handle`], built in one allocation: the session's Redis key.
    pub(crate) fn storage_key(&self, prefix: &str) -> String {
        let mut key = String::with_capacity(prefix.len() + 2 * 32);
        key.push_str(prefix);
        push_hex(&mut key, &Sha256::digest(self.0));
        key
    }

    /// The id's bytes: secret, for sealing into a cookie only.
    pub(crate) fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }

    pub(crate) fn from_bytes(bytes: [u8; ID_LEN]) -> SessionId {
        SessionId(bytes)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

/// The public name of a session: the hex SHA-256 digest of its secret id.
///
/// It is the Redis key without its prefix and is safe to show, log or store (device lists,
/// admin pages): it cannot be turned back into a cookie.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(String);

impl Handle {
    /// The handle written as `hex` (64 lowercase hex characters, as [`Handle::as_str`]
    /// gives it, e.g. from a device list's "sign out" form); `None` for anything else.
    ///
    /// ```
    /// use actix_redis_session::Handle;
    ///
    /// let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    /// assert_eq!(Handle::parse(hex).unwrap().as_str(), hex);
    /// assert!(Handle::parse("9F86").is_none());
    /// ```
    pub fn parse(hex: &str) -> Option<Handle> {
        let ok = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| Handle(hex.to_owned()))
    }

    /// The 64 lowercase hex characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Handle {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
}

/// What a valid cookie says.
#[derive(Debug)]
pub(crate) struct Verified {
    pub(crate) id: SessionId,
    pub(crate) remember: Option<Duration>,
    /// Signed with a previous key: re-sign on the response.
    pub(crate) stale_key: bool,
}

/// Why a cookie was not accepted (logged at debug level, never shown to the client).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rejected {
    TooLong,
    Malformed,
    BadBase64,
    BadSignature,
}

impl Rejected {
    /// Refused before any MAC was computed.
    pub(crate) fn is_cheap(&self) -> bool {
        !matches!(self, Rejected::BadSignature)
    }
}

/// Signs and verifies the cookies of one middleware: an HMAC state per key, prepared once
/// (keyed, and fed the cookie name), so that a request costs one clone and the payload's
/// blocks, not the key schedule again.
#[derive(Clone)]
pub(crate) struct Signer {
    /// The current key first, then the previous ones; bound to the cookie name.
    bound: Vec<HmacSha256>,
    /// The same keys over the payload alone: cookies issued by 0.1.
    legacy: Vec<HmacSha256>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("keys", &self.bound.len())
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub(crate) fn new(key: &Key, name: &str) -> Signer {
        let plain = |k: &crate::key::SubKeys| {
            HmacSha256::new_from_slice(k.sign()).expect("HMAC takes keys of any length")
        };
        let legacy: Vec<HmacSha256> = key.all().map(plain).collect();
        let bound = legacy
            .iter()
            .map(|mac| {
                let mut mac = mac.clone();
                // Cookie names are HTTP tokens: no NUL, so the end of the name is plain.
                mac.update(b"cookie:");
                mac.update(name.as_bytes());
                mac.update(b"\0");
                mac
            })
            .collect();
        Signer { bound, legacy }
    }

    /// The cookie value for `id`, signed with the current key.
    pub(crate) fn sign(&self, id: &SessionId, remember: Option<Duration>) -> String {
        let mut payload = [0u8; ID_LEN + 4];
        payload[..ID_LEN].copy_from_slice(&id.0);
        let len = match remember {
            Some(d) => {
                payload[ID_LEN..].copy_from_slice(&lifetime_secs(Some(d)).to_be_bytes());
                ID_LEN + 4
            }
            None => ID_LEN,
        };
        let payload = &payload[..len];
        let mut mac = self.bound[0].clone();
        mac.update(payload);
        let tag = mac.finalize().into_bytes();
        let mut out = String::with_capacity(96);
        URL_SAFE_NO_PAD.encode_string(payload, &mut out);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(tag, &mut out);
        out
    }

    /// Checks a cookie value against the current and previous keys (MACs compared in
    /// constant time), bound to the name first, then as 0.1 signed it.
    pub(crate) fn verify(&self, value: &str) -> Result<Verified, Rejected> {
        if value.len() > MAX_VALUE_LEN {
            return Err(Rejected::TooLong);
        }
        let (payload, tag) = value.split_once('.').ok_or(Rejected::Malformed)?;
        let mut buf = [0u8; MAX_VALUE_LEN];
        let payload_len = URL_SAFE_NO_PAD
            .decode_slice(payload, &mut buf)
            .map_err(|_| Rejected::BadBase64)?;
        let payload = &buf[..payload_len];
        let mut tag_buf = [0u8; MAX_VALUE_LEN];
        let tag_len = URL_SAFE_NO_PAD
            .decode_slice(tag, &mut tag_buf)
            .map_err(|_| Rejected::BadBase64)?;
        if tag_len != MAC_LEN || (payload_len != ID_LEN && payload_len != ID_LEN + 4) {
            return Err(Rejected::Malformed);
        }
        let tag = &tag_buf[..MAC_LEN];
        let matches = |mac: &HmacSha256| {
            let mut mac = mac.clone();
            mac.update(payload);
            mac.verify_slice(tag).is_ok()
        };
        let position = self
            .bound
            .iter()
            .position(matches)
            .or_else(|| {
                // Any 0.1 cookie counts as signed with an old key: it is re-issued.
                self.legacy.iter().position(matches).map(|_| usize::MAX)
            })
            .ok_or(Rejected::BadSignature)?;
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&payload[..ID_LEN]);
        let remember = (payload_len == ID_LEN + 4).then(|| {
            let secs = u32::from_be_bytes(payload[ID_LEN..].try_into().expect("4 bytes"));
            Duration::from_secs(u64::from(secs))
        });
        Ok(Verified {
            id: SessionId(id),
            remember,
            stale_key: position > 0,
        })
    }
}

/// Attributes of the session cookie.
#[derive(Clone, Debug)]
pub(crate) struct CookieConfig {
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) domain: Option<String>,
    pub(crate) secure: bool,
    pub(crate) http_only: bool,
    pub(crate) same_site: SameSite,
    /// `Some`: persistent cookie with this Max-Age; `None`: browser-session cookie.
    pub(crate) max_age: Option<Duration>,
}

impl CookieConfig {
    fn base(&self, value: String) -> Cookie<'static> {
        let mut cookie = Cookie::new(self.name.clone(), value);
        cookie.set_path(self.path.clone());
        if let Some(domain) = &self.domain {
            cookie.set_domain(domain.clone());
        }
        cookie.set_secure(self.secure);
        cookie.set_http_only(self.http_only);
        cookie.set_same_site(self.same_site);
        cookie
    }

    /// The Set-Cookie for a session; `remember` overrides the configured lifetime.
    pub(crate) fn session_cookie(
        &self,
        value: String,
        remember: Option<Duration>,
    ) -> Cookie<'static> {
        let mut cookie = self.base(value);
        if let Some(max_age) = remember.or(self.max_age) {
            let secs = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
            cookie.set_max_age(actix_web::cookie::time::Duration::seconds(secs));
        }
        cookie
    }

    /// A Set-Cookie that makes the browser drop the session cookie (same name, path and domain).
    pub(crate) fn removal_cookie(&self) -> Cookie<'static> {
        let mut cookie = self.base(String::new());
        cookie.set_max_age(actix_web::cookie::time::Duration::ZERO);
        cookie.set_expires(OffsetDateTime::UNIX_EPOCH);
        cookie
    }
}

/// Whether `name` can be a cookie's name: a non-empty HTTP token (RFC 6265).
pub(crate) fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// Whether `path` can be a cookie's `Path` without injecting an attribute: starts with `/`,
/// visible ASCII, no `;`.
pub(crate) fn is_safe_path(path: &str) -> bool {
    path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic() && b != b';')
}

/// The values of the cookies called `name` in one Cookie header (`a=1; b=2`), surrounding
/// whitespace and optional double quotes removed.
pub(crate) fn cookie_values<'a>(
    header: &'a [u8],
    name: &'a [u8],
) -> impl Iterator<Item = &'a [u8]> + 'a {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Key {
        Key::from_bytes(&[b; 32]).unwrap()
    }

    fn sign(key: &Key, id: &SessionId, remember: Option<Duration>) -> String {
        Signer::new(key, "sid").sign(id, remember)
    }

    fn verify(key: &Key, value: &str) -> Result<Verified, Rejected> {
        Signer::new(key, "sid").verify(value)
    }

    #[test]
    fn signed_value_verifies_and_carries_remember() {
        let k = key(1);
        let id = SessionId::generate();
        let plain = sign(&k, &id, None);
        assert!(plain.len() <= MAX_VALUE_LEN);
        let v = verify(&k, &plain).unwrap();
        assert!(v.id == id && v.remember.is_none() && !v.stale_key);

        let long = sign(&k, &id, Some(Duration::from_secs(86_400 * 30)));
        assert!(long.len() <= 92, "{}", long.len());
        let v = verify(&k, &long).unwrap();
        assert_eq!(v.remember, Some(Duration::from_secs(86_400 * 30)));
    }

    #[test]
    fn every_kind_of_bad_value_is_rejected() {
        let k = key(1);
        let good = sign(&k, &SessionId::generate(), None);
        assert_eq!(verify(&key(2), &good).unwrap_err(), Rejected::BadSignature);
        assert_eq!(verify(&k, "").unwrap_err(), Rejected::Malformed);
        assert_eq!(verify(&k, "abc").unwrap_err(), Rejected::Malformed);
        assert_eq!(verify(&k, &"a".repeat(500)).unwrap_err(), Rejected::TooLong);
        assert_eq!(verify(&k, "!!!.???").unwrap_err(), Rejected::BadBase64);
        assert!(verify(&k, &good[..good.len() - 3]).is_err());
        // Flip one character of the payload.
        let mut bytes = good.clone().into_bytes();
        bytes[5] = if bytes[5] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(verify(&k, &tampered).unwrap_err(), Rejected::BadSignature);
        // A remember lifetime cannot be grafted onto a plain cookie.
        let (p, t) = good.split_once('.').unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(p).unwrap();
        raw.extend_from_slice(&u32::MAX.to_be_bytes());
        let grafted = format!("{}.{t}", URL_SAFE_NO_PAD.encode(raw));
        assert_eq!(verify(&k, &grafted).unwrap_err(), Rejected::BadSignature);
    }

    #[test]
    fn previous_keys_verify_and_are_flagged_stale() {
        let old = key(1);
        let rotated = key(2).previous_keys([old.clone()]);
        let value = sign(&old, &SessionId::generate(), None);
        assert!(verify(&rotated, &value).unwrap().stale_key);
        assert!(
            !verify(&rotated, &sign(&rotated, &SessionId::generate(), None))
                .unwrap()
                .stale_key
        );
    }

    /// Computed apart from this crate (Python's hmac and base64): the wire format of every
    /// cookie in the wild.
    #[test]
    fn a_signed_cookie_matches_a_known_answer_and_is_bound_to_its_name() {
        let master: Vec<u8> = (0u8..32).collect();
        let key = Key::from_bytes(&master).unwrap();
        let id = SessionId::from_bytes([0u8; 32]);
        let payload = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let for_sid = format!("{payload}.4lMNBVPTBJ31yXjUoK-kedF4Uir8IxIH_8sGzr-Z8l4");
        let for_app = format!("{payload}.-FQr-dLt4jv-ghGAxiTYGoRzN5fsuYgl6qrEmZP3RLc");
        assert_eq!(Signer::new(&key, "sid").sign(&id, None), for_sid);
        assert_eq!(Signer::new(&key, "app_session").sign(&id, None), for_app);
        // A cookie for one name is no cookie for another, under the same key.
        assert_eq!(
            Signer::new(&key, "app_session")
                .verify(&for_sid)
                .unwrap_err(),
            Rejected::BadSignature
        );
        assert!(!Signer::new(&key, "sid").verify(&for_sid).unwrap().stale_key);
        // 0.1 signed the payload alone: still accepted, and re-issued.
        let legacy = format!("{payload}.ujK7HWmTe598NTOT_NenluoL7Q8_12axaVsih4Ow04g");
        let verified = Signer::new(&key, "sid").verify(&legacy).unwrap();
        assert!(verified.id == id && verified.stale_key);
    }

    #[test]
    fn debug_of_an_id_shows_nothing_of_it() {
        let id = SessionId::from_bytes([0xab; 32]);
        let shown = format!("{id:?} {id:#?}");
        assert_eq!(shown, "SessionId(<redacted>) SessionId(<redacted>)");
        let verified = verify(&key(1), &sign(&key(1), &id, None)).unwrap();
        let shown = format!("{verified:?}");
        assert!(!shown.contains("ab") && !shown.contains("171"), "{shown}");
    }

    #[test]
    fn handle_is_the_hex_sha256_of_the_id() {
        let id = SessionId::from_bytes([0u8; 32]);
        assert_eq!(
            id.handle().as_str(),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
        assert_eq!(id.storage_key("app:s:"), format!("app:s:{}", id.handle()));
    }
}
