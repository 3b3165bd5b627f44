//! Values at rest: compression and encryption of the stored values of a server-side store,
//! applied between the session state (which holds plain encoded values) and the store.
//!
//! Stored forms, by header byte (see the [codec](super)):
//!
//! | header | payload |
//! |--------|---------|
//! | `0x0F` | the encoded value (`F`: its format, 1 JSON, 2 MessagePack, 8-15 the application's) |
//! | `0x1F` | gzip(value) |
//! | `0x2F` | nonce (12 bytes) ‖ AES-256-GCM(value) ‖ tag (16 bytes) |
//! | `0x3F` | nonce ‖ AES-256-GCM(gzip(value)) ‖ tag |
//!
//! The associated data of a sealed value binds it to its header, its record and its field:
//! `"actix-redis-session v1 value" ‖ header ‖ len(storage key) as u32 BE ‖ storage key ‖
//! field name`. A value copied to another field or another session does not open there.
//! Metadata fields (`m:*`) are never transformed.
//!
//! Written by hand rather than through a crate: the format is three branches on a header
//! byte around `aes-gcm` and `flate2`, and it sits on every load and save.

use std::io::{Read as _, Write as _};

use aes_gcm::{
    aead::{AeadInPlace, KeyInit},
    Aes256Gcm, Nonce,
};
use flate2::{read::GzDecoder, write::GzEncoder, Compression};

use super::{DecodeError, FLAG_COMPRESSED, FLAG_ENCRYPTED, FORMAT_MASK, RESERVED_FLAGS};
use crate::{key::Key, record, store::Fields};

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const AAD_LABEL: &[u8] = b"actix-redis-session v1 value";

/// How one middleware stores its values: sealed or not, compressed above a size or not.
pub(crate) struct AtRest {
    /// The current key's cipher first, then the previous keys'. Present even when
    /// encryption is off, so that values sealed before it was turned off stay readable.
    ciphers: Vec<Aes256Gcm>,
    encrypt: bool,
    /// With `encrypt`: a value that is not sealed is refused, not migrated.
    reject_plain: bool,
    compress_above: Option<usize>,
    /// A compressed value may not expand beyond this (the encoded value's limit).
    max_value_size: usize,
}

impl std::fmt::Debug for AtRest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtRest")
            .field("encrypt", &self.encrypt)
            .field("compress_above", &self.compress_above)
            .finish_non_exhaustive()
    }
}

/// What [`AtRest::open`] made of a stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opened {
    /// Stored as this middleware would store it now.
    Current,
    /// Readable, but stored otherwise than the configuration says (plain while encryption is
    /// on, sealed while it is off, sealed under a previous key): write it again.
    Migrate,
}

impl AtRest {
    pub(crate) fn new(
        key: &Key,
        encrypt: bool,
        compress_above: Option<usize>,
        max_value_size: usize,
    ) -> AtRest {
        AtRest {
            ciphers: key
                .all()
                .map(|keys| Aes256Gcm::new(keys.encrypt().into()))
                .collect(),
            encrypt,
            reject_plain: false,
            compress_above,
            max_value_size,
        }
    }

    /// Refuse values that are not sealed (with encryption on).
    pub(crate) fn reject_plain(mut self, reject: bool) -> AtRest {
        self.reject_plain = reject && self.encrypt;
        self
    }

    /// Whether values are stored as they are encoded (the fast path: no copy).
    pub(crate) fn is_plain(&self) -> bool {
        !self.encrypt && self.compress_above.is_none()
    }

    /// The stored form of the encoded value `plain` of field `name` in the record `key`.
    pub(crate) fn seal(&self, key: &str, name: &str, plain: &[u8]) -> Vec<u8> {
        let format = match plain.first() {
            Some(&format) if record::is_data(name) && format != 0 && format & !FORMAT_MASK == 0 => {
                format
            }
            _ => return plain.to_vec(),
        };
        let payload = &plain[1..];
        let compressed = self
            .compress_above
            .filter(|&above| payload.len() > above)
            .and_then(|_| gzip(payload).filter(|gz| gz.len() < payload.len()));
        let (mut header, body) = match &compressed {
            Some(gz) => (format | FLAG_COMPRESSED, &gz[..]),
            None => (format, payload),
        };
        if !self.encrypt {
            let mut out = Vec::with_capacity(1 + body.len());
            out.push(header);
            out.extend_from_slice(body);
            return out;
        }
        header |= FLAG_ENCRYPTED;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random number generator failed");
        let aad = associated_data(header, key, name);
        // Sealed where it lies: one buffer, no copy of the ciphertext.
        let mut out = Vec::with_capacity(1 + NONCE_LEN + body.len() + TAG_LEN);
        out.push(header);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(body);
        let tag = self.ciphers[0]
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, &mut out[1 + NONCE_LEN..])
            .expect("AES-GCM seals any message shorter than 64 GiB");
        out.extend_from_slice(&tag);
        out
    }

    /// Turns the stored form of field `name` of record `key` back into the encoded value, in
    /// place.
    ///
    /// # Errors
    ///
    /// A sealed value that does not open under any key (changed, moved from another field or
    /// record, sealed by another key), a compressed one that is corrupt or expands beyond
    /// `max_value_size`, a header this release does not know. `value` is left as it was,
    /// but for a sealed value that opened and then did not inflate: emptied.
    pub(crate) fn open(
        &self,
        key: &str,
        name: &str,
        value: &mut Vec<u8>,
    ) -> Result<Opened, DecodeError> {
        if !record::is_data(name) {
            return Ok(Opened::Current);
        }
        let Some(&header) = value.first() else {
            return Err(DecodeError::Empty);
        };
        let format = header & FORMAT_MASK;
        if format == 0 || header & RESERVED_FLAGS != 0 {
            return Err(DecodeError::UnknownFormat(header));
        }
        if self.reject_plain && header & FLAG_ENCRYPTED == 0 {
            return Err(DecodeError::NotSealed);
        }
        if header == format {
            return Ok(if self.encrypt {
                Opened::Migrate
            } else {
                Opened::Current
            });
        }
        let mut migrate = false;
        // `value[start..end]` holds the payload once opened.
        let (start, end) = if header & FLAG_ENCRYPTED != 0 {
            migrate = !self.encrypt;
            if value.len() < 1 + NONCE_LEN + TAG_LEN {
                return Err(DecodeError::Sealed);
            }
            let end = value.len() - TAG_LEN;
            let (head, rest) = value.split_at_mut(1 + NONCE_LEN);
            let nonce = *Nonce::from_slice(&head[1..]);
            let (ciphertext, tag) = rest.split_at_mut(end - 1 - NONCE_LEN);
            let tag = aes_gcm::Tag::clone_from_slice(tag);
            let aad = associated_data(header, key, name);
            // Opened where it lies: the tag is checked before anything is decrypted, so a
            // key that does not fit leaves the bytes as they were for the next one.
            let position = self
                .ciphers
                .iter()
                .position(|cipher| {
                    cipher
                        .decrypt_in_place_detached(&nonce, &aad, ciphertext, &tag)
                        .is_ok()
                })
                .ok_or(DecodeError::Sealed)?;
            migrate |= position > 0;
            (1 + NONCE_LEN, end)
        } else {
            (1, value.len())
        };
        if header & FLAG_COMPRESSED != 0 {
            let mut out = vec![format];
            let inflated = gunzip(
                &value[start..end],
                self.max_value_size.saturating_sub(1),
                &mut out,
            );
            if let Err(e) = inflated {
                if header & FLAG_ENCRYPTED != 0 {
                    // Decrypted in place: the caller is told the value is left as stored.
                    *value = Vec::new();
                }
                return Err(e);
            }
            *value = out;
        } else {
            value.truncate(end);
            value.drain(..start - 1);
            value[0] = format;
        }
        Ok(if migrate {
            Opened::Migrate
        } else {
            Opened::Current
        })
    }

    /// Opens every value of a loaded record, in place. A value that does not open is removed
    /// from `fields` and named in `failed`; one whose header this release does not know
    /// stays as it is. The answer names the fields to write again: those
    /// stored otherwise than the configuration says (written as they are now), and those
    /// removed (deleted).
    pub(crate) fn open_record(
        &self,
        key: &str,
        fields: &mut Fields,
        failed: &mut Vec<String>,
    ) -> Vec<String> {
        let mut rewrite = Vec::new();
        fields.retain(|name, value| match self.open(key, name, value) {
            Ok(Opened::Current) => true,
            Ok(Opened::Migrate) => {
                rewrite.push(name.clone());
                true
            }
            // A header this release does not know (a later release's flag or format): left
            // as it is, for the session to keep out of the handler's sight and in the store,
            // as it does with a format it does not read.
            Err(DecodeError::UnknownFormat(_)) => true,
            Err(e) => {
                tracing::warn!(field = %name, error = %e, "dropping a stored value that does not open");
                rewrite.push(name.clone());
                failed.push(name.clone());
                false
            }
        });
        rewrite
    }

    /// The stored forms of `fields` (encoded values) for the record `key`.
    pub(crate) fn seal_fields(&self, key: &str, fields: &mut [(String, Vec<u8>)]) {
        if self.is_plain() {
            return;
        }
        for (name, value) in fields.iter_mut() {
            *value = self.seal(key, name, value);
        }
    }
}

fn associated_data(header: u8, key: &str, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_LABEL.len() + 5 + key.len() + name.len());
    aad.extend_from_slice(AAD_LABEL);
    aad.push(header);
    let len = u32::try_from(key.len()).unwrap_or(u32::MAX);
    aad.extend_from_slice(&len.to_be_bytes());
    aad.extend_from_slice(key.as_bytes());
    aad.extend_from_slice(name.as_bytes());
    aad
}

fn gzip(data: &[u8]) -> Option<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(data.len() / 2), Compression::fast());
    encoder.write_all(data).ok()?;
    encoder.finish().ok()
}

/// Appends the gunzipped `data` to `out`, refusing more than `limit` bytes.
fn gunzip(data: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let start = out.len();
    let mut decoder = GzDecoder::new(data);
    let read = decoder
        .by_ref()
        .take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(out)
        .map_err(DecodeError::Gzip)?;
    if read > limit {
        out.truncate(start);
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    const KEY: &str = "session:ab12";

    fn at_rest(encrypt: bool, compress_above: Option<usize>) -> AtRest {
        AtRest::new(
            &Key::from_bytes(&[7; 64]).unwrap(),
            encrypt,
            compress_above,
            64 * 1024,
        )
    }

    fn round_trip(at_rest: &AtRest, name: &str, plain: &[u8]) -> Vec<u8> {
        let stored = at_rest.seal(KEY, name, plain);
        let mut opened = stored.clone();
        assert_eq!(
            at_rest.open(KEY, name, &mut opened).unwrap(),
            Opened::Current
        );
        assert_eq!(opened, plain);
        stored
    }

    #[test]
    fn every_form_round_trips_and_is_marked_in_the_header() {
        let long = codec::encode(&"word ".repeat(200)).unwrap();
        let short = codec::encode(&"x").unwrap();
        assert_eq!(round_trip(&at_rest(false, None), "d:a", &long), long);
        let gz = round_trip(&at_rest(false, Some(100)), "d:a", &long);
        assert_eq!(gz[0], 0x11);
        assert!(gz.len() < long.len() / 4);
        // Under the threshold, or not smaller when compressed: stored as encoded.
        assert_eq!(round_trip(&at_rest(false, Some(100)), "d:a", &short), short);
        let sealed = round_trip(&at_rest(true, None), "d:a", &short);
        assert_eq!(sealed[0], 0x21);
        assert_eq!(sealed.len(), short.len() + NONCE_LEN + TAG_LEN);
        let both = round_trip(&at_rest(true, Some(100)), "d:a", &long);
        assert_eq!(both[0], 0x31);
        assert!(!both.windows(4).any(|w| w == b"word"));
        // Metadata is never touched.
        assert_eq!(round_trip(&at_rest(true, Some(0)), "m:c", b"1.00"), b"1.00");
    }

    #[test]
    fn a_sealed_value_opens_only_in_its_own_field_and_record() {
        let sealing = at_rest(true, None);
        let plain = codec::encode(&42).unwrap();
        let stored = sealing.seal(KEY, "d:a", &plain);
        for (key, name) in [(KEY, "d:b"), ("session:ab13", "d:a"), (KEY, "t:a")] {
            let mut moved = stored.clone();
            assert!(matches!(
                sealing.open(key, name, &mut moved),
                Err(DecodeError::Sealed)
            ));
            assert_eq!(moved, stored, "left as stored");
        }
        // The header is bound too: claiming "not compressed" for a compressed one fails.
        let compressing = at_rest(true, Some(0));
        let both = compressing.seal(KEY, "d:a", &codec::encode(&"a".repeat(99)).unwrap());
        assert_eq!(both[0], 0x31);
        let mut relabelled = both.clone();
        relabelled[0] = 0x21;
        assert!(compressing.open(KEY, "d:a", &mut relabelled).is_err());
    }

    #[test]
    fn migration_goes_both_ways_and_follows_key_rotation() {
        let plain = codec::encode(&"v").unwrap();
        let on = at_rest(true, None);
        let off = at_rest(false, None);
        // Plain while encryption is on: readable, to be sealed.
        let mut v = plain.clone();
        assert_eq!(on.open(KEY, "d:a", &mut v).unwrap(), Opened::Migrate);
        assert_eq!(v, plain);
        // Sealed while it is off: readable, to be written plain.
        let mut v = on.seal(KEY, "d:a", &plain);
        assert_eq!(off.open(KEY, "d:a", &mut v).unwrap(), Opened::Migrate);
        assert_eq!(v, plain);
        // Sealed under a key that is now a previous one.
        let old = Key::from_bytes(&[7; 64]).unwrap();
        let rotated = Key::from_bytes(&[9; 64]).unwrap().previous_keys([old]);
        let rotated = AtRest::new(&rotated, true, None, 1024);
        let mut v = on.seal(KEY, "d:a", &plain);
        assert_eq!(rotated.open(KEY, "d:a", &mut v).unwrap(), Opened::Migrate);
        assert_eq!(v, plain);
        // And under a key it does not know at all.
        let stranger = AtRest::new(&Key::from_bytes(&[3; 64]).unwrap(), true, None, 1024);
        let mut v = on.seal(KEY, "d:a", &plain);
        assert!(stranger.open(KEY, "d:a", &mut v).is_err());
    }

    #[test]
    fn strict_mode_refuses_what_is_not_sealed() {
        let strict = at_rest(true, Some(0)).reject_plain(true);
        let plain = codec::encode(&"a".repeat(100)).unwrap();
        let mut sealed = strict.seal(KEY, "d:a", &plain);
        assert_eq!(
            strict.open(KEY, "d:a", &mut sealed).unwrap(),
            Opened::Current
        );
        for unsealed in [
            plain.clone(),
            at_rest(false, Some(0)).seal(KEY, "d:a", &plain),
        ] {
            let mut v = unsealed;
            assert!(matches!(
                strict.open(KEY, "d:a", &mut v),
                Err(DecodeError::NotSealed)
            ));
        }
        // Metadata is never sealed, so never refused.
        let mut meta = b"1.0123456789abcdef".to_vec();
        assert!(strict.open(KEY, "m:c", &mut meta).is_ok());
        // Without encryption there is nothing to be strict about.
        assert!(!at_rest(false, None).reject_plain(true).reject_plain);
    }

    #[test]
    fn decompression_is_bounded_by_the_value_limit() {
        // A gzip bomb: 10 MB of zeros in about 10 KB.
        let bomb = gzip(&vec![b'0'; 10 << 20]).unwrap();
        let mut stored = vec![0x11];
        stored.extend_from_slice(&bomb);
        let compressing = at_rest(false, Some(100));
        let mut v = stored.clone();
        assert!(matches!(
            compressing.open(KEY, "d:a", &mut v),
            Err(DecodeError::TooLarge { .. })
        ));
        assert_eq!(v, stored);
        // Corrupt gzip and unknown headers are errors too, never panics.
        for bad in [
            &[0x11, 1, 2, 3][..],
            &[0x41, b'1'],
            &[0x21, 1, 2],
            &[0x81],
            &[0x10, 1],
        ] {
            let mut v = bad.to_vec();
            assert!(compressing.open(KEY, "d:a", &mut v).is_err(), "{bad:?}");
        }
    }
}
