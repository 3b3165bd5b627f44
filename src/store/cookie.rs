//! The client-side store: the whole session sealed into the cookie with AES-256-GCM.
//!
//! Cookie value: `base64url(nonce (12 bytes) || AES-256-GCM(seal_key, nonce, plaintext,
//! aad = "cookie-store:" name))`. Plaintext, big-endian: version `1` (1 byte), the session
//! id (32 bytes, so that the session has a handle and `renew` a meaning), the "remember me"
//! lifetime in seconds (4 bytes, 0 for none), the number of fields (4 bytes), then per field
//! its name and value, each as a 4-byte length and the bytes. The creation time (`m:c`) and
//! the last move of the idle timeout (`m:t`) are fields like any other, sealed with the rest:
//! the timeouts are enforced from them, not from the cookie's Max-Age, which a client can
//! ignore.

use std::time::Duration;

use aes_gcm::{
    aead::{Aead, KeyInit, Payload},
    Aes256Gcm, Nonce,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};

use crate::{
    cookie::{lifetime_from_secs, lifetime_secs, SessionId},
    key::Key,
    store::Fields,
};

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Version, id, lifetime, field count.
pub(crate) const HEADER_LEN: usize = 1 + 32 + 4 + 4;
/// Bytes a field costs beyond its name and value: the two lengths.
pub(crate) const FIELD_OVERHEAD: usize = 8;
/// Browsers keep cookies of up to 4096 bytes, counting the name, the value and (to be safe
/// in every browser) the attributes.
pub(crate) const MAX_COOKIE_BYTES: usize = 4096;

/// Sessions kept entirely in the cookie, sealed with AES-256-GCM: no server state at all, as
/// actix-session's cookie store and the Crystal Session library's cookie engine do.
///
/// - **Sealed, not only signed**: the client can neither read nor change what is in it. The
///   key is a sub-key of the middleware's [`Key`] (HKDF), every cookie has a fresh random
///   96-bit nonce, and the cookie name is bound as associated data, so that a cookie cannot
///   be replayed under another name. Cookies sealed under one of
///   [`Key::previous_keys`] are read and sealed again under the current key.
/// - **The same API**: [`Session`](crate::Session), [`TypedSession`](crate::TypedSession),
///   flash messages, `renew`, `purge`, "remember me", idle and absolute timeouts, which are
///   enforced from times sealed inside the cookie, not from its Max-Age.
/// - **Size**: a browser keeps at most 4096 bytes per cookie. An `insert` (or flash message)
///   that would make the sealed cookie larger fails there with
///   [`SessionError::SessionTooLarge`](crate::SessionError::SessionTooLarge), never with a
///   cookie the browser would silently drop. About 2.9 KB of values fit.
///
/// What it cannot do: revoke a session on the server. A logout removes the cookie from the
/// browser, but a copy taken before (by malware, a shared computer) stays valid until its
/// idle or absolute timeout: keep them short, or choose a server-side store where a stolen
/// cookie must die at logout. Each response that changes the session (or moves its idle
/// timeout) carries the whole sealed session, so keep it small. Choose it for small
/// sessions without a server to keep them (a preference, a cart of ids, a CSRF token).
///
/// # Examples
///
/// ```
/// use actix_redis_session::{store::CookieStore, Key, RedisSession};
/// use std::time::Duration;
///
/// let sessions = RedisSession::builder_with(CookieStore::new(), Key::generate())
///     .idle_timeout(Duration::from_secs(30 * 60))
///     .absolute_timeout(Duration::from_secs(12 * 3600))
///     .build()?;
/// # drop(sessions);
/// # Ok::<(), actix_redis_session::ConfigError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct CookieStore {
    _private: (),
}

impl CookieStore {
    /// The cookie store; its key comes from the middleware's.
    pub fn new() -> CookieStore {
        CookieStore { _private: () }
    }
}

/// Seals and opens one middleware's session cookies.
pub(crate) struct Sealer {
    /// The current key's cipher first, then the previous keys'.
    ciphers: Vec<Aes256Gcm>,
    aad: Vec<u8>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").finish_non_exhaustive()
    }
}

/// Why a cookie value did not open.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Too long, not base64url, too short: refused before any decryption.
    Malformed,
    /// Well-formed, but not sealed by this middleware's keys under its name, or changed.
    Unsealed,
}

/// What an opened cookie holds.
pub(crate) struct Opened {
    pub(crate) id: SessionId,
    pub(crate) remember: Option<Duration>,
    pub(crate) fields: Fields,
    /// Sealed under a previous key: seal again.
    pub(crate) stale_key: bool,
}

impl Sealer {
    pub(crate) fn new(key: &Key, cookie_name: &str) -> Sealer {
        let ciphers = key
            .all()
            .map(|keys| Aes256Gcm::new(keys.seal().into()))
            .collect();
        let mut aad = b"cookie-store:".to_vec();
        aad.extend_from_slice(cookie_name.as_bytes());
        Sealer { ciphers, aad }
    }

    /// The cookie value for a session.
    pub(crate) fn seal<'a>(
        &self,
        id: &SessionId,
        remember: Option<Duration>,
        fields: impl ExactSizeIterator<Item = (&'a String, &'a Vec<u8>)>,
    ) -> String {
        let mut plain = Vec::with_capacity(512);
        plain.push(VERSION);
        plain.extend_from_slice(id.as_bytes());
        plain.extend_from_slice(&lifetime_secs(remember).to_be_bytes());
        plain.extend_from_slice(
            &u32::try_from(fields.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        for (name, value) in fields {
            for part in [name.as_bytes(), value.as_slice()] {
                plain.extend_from_slice(
                    &u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes(),
                );
                plain.extend_from_slice(part);
            }
        }
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random number generator failed");
        let sealed = self.ciphers[0]
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &self.aad,
                },
            )
            .expect("AES-GCM seals any message shorter than 64 GiB");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// The session in a cookie value, if it is one of ours, whole and unchanged (the tag is
    /// checked in constant time, by `aes-gcm`); or why not: [`Refused::Malformed`] costs no
    /// decryption.
    pub(crate) fn try_open(&self, value: &[u8]) -> Result<Opened, Refused> {
        if value.len() > MAX_COOKIE_BYTES {
            return Err(Refused::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| Refused::Malformed)?;
        if bytes.len() < NONCE_LEN + TAG_LEN + HEADER_LEN {
            return Err(Refused::Malformed);
        }
        self.decrypt(&bytes).ok_or(Refused::Unsealed)
    }

    fn decrypt(&self, bytes: &[u8]) -> Option<Opened> {
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let payload = |cipher: &Aes256Gcm| {
            cipher
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: sealed,
                        aad: &self.aad,
                    },
                )
                .ok()
        };
        let (index, plain) = self
            .ciphers
            .iter()
            .enumerate()
            .find_map(|(i, cipher)| payload(cipher).map(|plain| (i, plain)))?;
        let mut opened = parse(&plain)?;
        opened.stale_key = index > 0;
        Some(opened)
    }
}

pub(crate) fn parse(plain: &[u8]) -> Option<Opened> {
    let mut rest = plain;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        rest = tail;
        Some(head)
    };
    if take(1)? != [VERSION] {
        return None;
    }
    let id = SessionId::from_bytes(take(32)?.try_into().ok()?);
    let secs = u32::from_be_bytes(take(4)?.try_into().ok()?);
    let count = u32::from_be_bytes(take(4)?.try_into().ok()?);
    let mut fields = Fields::new();
    for _ in 0..count {
        let len = u32::from_be_bytes(take(4)?.try_into().ok()?);
        let name = String::from_utf8(take(usize::try_from(len).ok()?)?.to_vec()).ok()?;
        let len = u32::from_be_bytes(take(4)?.try_into().ok()?);
        let value = take(usize::try_from(len).ok()?)?.to_vec();
        fields.insert(name, value);
    }
    if !rest.is_empty() {
        return None;
    }
    Some(Opened {
        id,
        remember: lifetime_from_secs(secs),
        fields,
        stale_key: false,
    })
}

/// The most plaintext bytes whose sealed cookie, with `overhead` bytes of name, `=` and
/// attributes, stays within [`MAX_COOKIE_BYTES`].
pub(crate) fn plaintext_budget(overhead: usize) -> usize {
    let value = MAX_COOKIE_BYTES.saturating_sub(overhead);
    // base64 without padding: 4 characters per 3 bytes, and 2 or 3 for a last 1 or 2.
    let bytes = value / 4 * 3 + (value % 4).saturating_sub(1);
    bytes.saturating_sub(NONCE_LEN + TAG_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &[u8])]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect()
    }

    #[test]
    fn a_sealed_session_opens_only_whole_under_its_key_and_name() {
        let key = Key::generate();
        let sealer = Sealer::new(&key, "sid");
        let id = SessionId::generate();
        let record = fields(&[("d:user", b"\x01\"ann\""), ("m:c", b"1.0011223344556677")]);
        let value = sealer.seal(&id, Some(Duration::from_secs(60)), record.iter());
        assert!(!value.contains("ann"));
        let opened = sealer.try_open(value.as_bytes()).expect("opens");
        assert!(opened.id == id);
        assert_eq!(opened.remember, Some(Duration::from_secs(60)));
        assert_eq!(opened.fields, record);
        assert!(!opened.stale_key);

        // Every truncation and every flipped bit is refused.
        let raw = URL_SAFE_NO_PAD.decode(&value).unwrap();
        for cut in 0..raw.len() {
            assert!(sealer
                .try_open(URL_SAFE_NO_PAD.encode(&raw[..cut]).as_bytes())
                .is_err());
        }
        for i in 0..raw.len() {
            let mut flipped = raw.clone();
            flipped[i] ^= 0x01;
            assert!(
                sealer
                    .try_open(URL_SAFE_NO_PAD.encode(&flipped).as_bytes())
                    .is_err(),
                "{i}"
            );
        }
        // Another name, another key: refused.
        assert!(Sealer::new(&key, "other")
            .try_open(value.as_bytes())
            .is_err());
        assert!(Sealer::new(&Key::generate(), "sid")
            .try_open(value.as_bytes())
            .is_err());
        // An old key is accepted, and says so.
        let rotated = Key::generate().previous_keys([key]);
        let opened = Sealer::new(&rotated, "sid")
            .try_open(value.as_bytes())
            .unwrap();
        assert!(opened.stale_key);
        // Two seals of the same session differ (fresh nonce).
        assert_ne!(
            value,
            sealer.seal(&id, Some(Duration::from_secs(60)), record.iter())
        );
    }

    #[test]
    fn the_budget_is_the_largest_plaintext_that_fits() {
        let key = Key::generate();
        let sealer = Sealer::new(&key, "sid");
        for overhead in [60, 61, 62, 63, 100, 200] {
            let budget = plaintext_budget(overhead);
            let id = SessionId::generate();
            // One field whose value fills the budget exactly.
            let filler = budget - HEADER_LEN - FIELD_OVERHEAD - 3;
            let record = fields(&[("d:x", &vec![b'a'; filler])]);
            let value = sealer.seal(&id, None, record.iter());
            assert!(value.len() + overhead <= MAX_COOKIE_BYTES, "{overhead}");
            let record = fields(&[("d:x", &vec![b'a'; filler + 1])]);
            let value = sealer.seal(&id, None, record.iter());
            assert!(
                value.len() + overhead > MAX_COOKIE_BYTES,
                "{overhead}: tight"
            );
        }
    }
}
