//! The record layout: what the field names of a stored session mean, for every store.
//!
//! A record is a map of field name to bytes. `d:<key>` holds a plain value, `t:<KEY>` a typed
//! struct, `f:<order>` one flash message; `m:*` fields are metadata, plain ASCII, never user
//! data. A record with nothing but metadata holds no data.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Prefix of metadata fields.
pub(crate) const META_PREFIX: &str = "m:";
/// Prefix of plain values ([`Session::insert`](crate::Session::insert)).
pub(crate) const DATA_PREFIX: &str = "d:";
/// Prefix of typed structs ([`TypedSession`](crate::TypedSession)).
pub(crate) const TYPED_PREFIX: &str = "t:";
/// Prefix of flash messages, one field each, named so that their order sorts as sent.
pub(crate) const FLASH_PREFIX: &str = "f:";
/// The flash list of releases before 0.2 (all messages in one field), still read.
pub(crate) const LEGACY_FLASH: &str = "f";

/// The session's CSRF token ([`Session::csrf_token`](crate::Session::csrf_token)): 32 random
/// bytes in base64url, stored as any value is (header byte + JSON string).
pub(crate) const CSRF: &str = "x:csrf";

/// The creation marker: `<unix ms>.<16 hex digits of randomness>`. Only a create writes it,
/// and a record without it is not a session (0.1's field-level updates could leave such a
/// remnant behind when they raced with expiry; it is never adopted). The random part lets a
/// create that is
/// retried after a dropped connection recognise the record its first attempt wrote.
/// Records written before 0.2 hold the time alone, which reads the same.
pub(crate) const CREATED: &str = "m:c";
/// When the idle timeout last moved (unix milliseconds), written only with
/// [`touch_after`](crate::RedisSessionBuilder::touch_after).
pub(crate) const TOUCHED: &str = "m:t";
/// The client binding: keyed digests of the User-Agent and the client IP the session was
/// created for ([`bind_to_user_agent`](crate::RedisSessionBuilder::bind_to_user_agent)),
/// `ua=<32 hex>;ip=<32 hex>`.
pub(crate) const BOUND: &str = "m:b";

/// The user the session belongs to ([`Session::set_user`](crate::Session::set_user)),
/// stored as any value is (header byte + JSON string; sealed with `encrypt_at_rest`). Not
/// metadata: a session that holds a user and nothing else is not empty.
pub(crate) const USER: &str = "x:user";
/// The device a user signed in from, for their device list: its User-Agent (at most
/// [`MAX_AGENT`] bytes) and its network (`203.0.113.0/24`, `2001:db8::/64`), written when
/// [`Session::set_user`](crate::Session::set_user) is called.
pub(crate) const AGENT: &str = "m:a";
pub(crate) const NETWORK: &str = "m:i";
/// The longest User-Agent kept for a device list.
pub(crate) const MAX_AGENT: usize = 256;
/// Where a user's index lives: `{key_prefix}user:{hex SHA-256 of the user}`, one record
/// whose fields are `h:<handle>` (empty values), one per session of that user.
pub(crate) const INDEX_INFIX: &str = "user:";
pub(crate) const INDEX_FIELD: &str = "h:";

/// The key of `user`'s index under `prefix`.
pub(crate) fn index_key(prefix: &str, user: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(user.as_bytes());
    let mut key = String::with_capacity(prefix.len() + INDEX_INFIX.len() + 64);
    key.push_str(prefix);
    key.push_str(INDEX_INFIX);
    for b in digest {
        key.push_str(&format!("{b:02x}"));
    }
    key
}

/// Whether a field holds data (anything but metadata).
pub(crate) fn is_data(name: &str) -> bool {
    !name.starts_with(META_PREFIX)
}

/// Whether a field holds a value of the application's (plain or typed): what
/// [`max_fields`](crate::RedisSessionBuilder::max_fields) counts.
pub(crate) fn is_value(name: &str) -> bool {
    name.starts_with(DATA_PREFIX) || name.starts_with(TYPED_PREFIX)
}

/// Whether a field holds a flash message (either layout).
pub(crate) fn is_flash(name: &str) -> bool {
    name.starts_with(FLASH_PREFIX) || name == LEGACY_FLASH
}

/// A fresh creation marker for a record created at `now_ms`.
pub(crate) fn creation_marker(now_ms: u64) -> Vec<u8> {
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).expect("the OS random number generator failed");
    format!("{now_ms}.{:016x}", u64::from_be_bytes(nonce)).into_bytes()
}

/// When a record was created, from its creation marker; `None` if it is not one.
pub(crate) fn created_ms(marker: &[u8]) -> Option<u64> {
    let time = match marker.iter().position(|&b| b == b'.') {
        Some(dot) => {
            let nonce = &marker[dot + 1..];
            if nonce.len() != 16 || !nonce.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            &marker[..dot]
        }
        None => marker,
    };
    parse_millis(time)
}

/// Unix milliseconds written as ASCII digits.
pub(crate) fn parse_millis(raw: &[u8]) -> Option<u64> {
    if raw.is_empty() || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(raw).ok()?.parse().ok()
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The current time in unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_markers_carry_the_time_and_differ_from_each_other() {
        let a = creation_marker(1_700_000_000_123);
        let b = creation_marker(1_700_000_000_123);
        assert_ne!(a, b);
        assert_eq!(created_ms(&a), Some(1_700_000_000_123));
        // The marker of earlier releases: the time alone.
        assert_eq!(created_ms(b"1700000000123"), Some(1_700_000_000_123));
        for bad in [
            &b""[..],
            b"x",
            b"12.",
            b"12.zz00000000000000",
            b".0123456789abcdef",
            b"-5",
            b"+5",
        ] {
            assert_eq!(created_ms(bad), None, "{bad:?}");
        }
    }
}
