//! Entry points for the cargo-fuzz targets in `fuzz/`: each runs untrusted bytes through the
//! code a request runs them through, and checks the round trips it can. Not part of the API:
//! no semver promise, may change in any release.

use std::sync::OnceLock;

use crate::{
    codec::{self, at_rest::AtRest},
    cookie::{cookie_values, SessionId, Signer},
    key::Key,
    store::{
        cookie::{Sealer, MAX_COOKIE_BYTES},
        file, Fields,
    },
};

struct Fixture {
    signer: Signer,
    sealer: Sealer,
    /// Encryption and compression on; and off.
    sealing: AtRest,
    plain: AtRest,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = Key::from_bytes(&[7u8; 64])
            .expect("64 bytes")
            .previous_keys([Key::from_bytes(&[9u8; 64]).expect("64 bytes")]);
        Fixture {
            signer: Signer::new(&key, "sid"),
            sealer: Sealer::new(&key, "sid"),
            sealing: AtRest::new(&key, true, Some(16), 64 * 1024),
            plain: AtRest::new(&key, false, None, 64 * 1024),
        }
    })
}

/// A Cookie header as a request brings it: every `sid` value is verified, as the middleware
/// does. Returns how many verified (none, for anything but a signature of ours).
pub fn cookie_header(header: &[u8]) -> usize {
    let fixture = fixture();
    let mut valid = 0;
    for value in cookie_values(header, b"sid") {
        if let Ok(value) = std::str::from_utf8(value) {
            if let Ok(verified) = fixture.signer.verify(value) {
                // Only a value we signed verifies; signing its id again verifies too.
                let again = fixture.signer.sign(&verified.id, verified.remember);
                assert!(fixture.signer.verify(&again).is_ok());
                valid += 1;
            }
        }
    }
    valid
}

/// A sealed cookie-store value as a request brings it, and the plaintext format inside one
/// (which a forged cookie cannot reach, so it is fuzzed on its own): parsed, and what
/// parses is sealed again and must open to the same session.
pub fn sealed_cookie(data: &[u8]) -> bool {
    let fixture = fixture();
    let opened_raw = fixture.sealer.try_open(data).is_ok();
    if let Some(opened) = crate::store::cookie::parse(data) {
        let value = fixture
            .sealer
            .seal(&opened.id, opened.remember, opened.fields.iter());
        // Larger than a browser keeps is refused unread (the middleware never sends one).
        if value.len() <= MAX_COOKIE_BYTES {
            let again = fixture
                .sealer
                .try_open(value.as_bytes())
                .expect("a session we sealed opens");
            assert_eq!(again.fields, opened.fields);
            assert_eq!(again.remember, opened.remember);
            assert_eq!(again.id.as_bytes(), opened.id.as_bytes());
        }
    }
    opened_raw
}

/// A stored value as a load reads it: its stored form opened (sealed, compressed, plain),
/// then the header and payload (JSON, or MessagePack with the `msgpack` feature) checked and
/// decoded. What decodes is stored again in every form and must read back the same.
pub fn stored_value(raw: &[u8]) -> bool {
    let fixture = fixture();
    for at_rest in [&fixture.sealing, &fixture.plain] {
        let mut value = raw.to_vec();
        if at_rest.open("session:k", "d:v", &mut value).is_err() {
            continue;
        }
        let Ok(decoded) = codec::decode::<serde_json::Value>(&value) else {
            // A JSON value that passes validation reads as a `serde_json::Value`; a
            // MessagePack one may not (binary data has no JSON form).
            if value.first() == Some(&codec::FORMAT_JSON) {
                assert!(codec::validate(&value).is_err());
            }
            continue;
        };
        codec::validate(&value).expect("what decodes validates");
        let encoded = codec::encode(&decoded).expect("a JSON value encodes");
        for again in [&fixture.sealing, &fixture.plain] {
            let mut stored = again.seal("session:k", "d:v", &encoded);
            again
                .open("session:k", "d:v", &mut stored)
                .expect("a value we stored opens");
            assert_eq!(stored, encoded);
        }
        return true;
    }
    false
}

/// A session file as the file store reads it, raw (its checksum almost never matches) and
/// with a valid checksum appended, so that the parser behind it is reached. What parses is
/// written again and must read back the same.
pub fn file_record(data: &[u8]) -> bool {
    let raw = file::decode(data).is_some();
    let mut checked = data.to_vec();
    checked.extend_from_slice(&file::checksum(data));
    if let Some((record, ttl)) = file::decode(&checked) {
        let again: Fields = record.clone();
        let bytes = file::encode(&again, ttl);
        let (decoded, ttl_again) = file::decode(&bytes).expect("a record we wrote reads");
        assert_eq!(decoded, record);
        assert_eq!(ttl_again, ttl);
    }
    raw
}

/// A fresh signed cookie value, for seeding the corpus.
pub fn signed_value() -> String {
    fixture().signer.sign(&SessionId::generate(), None)
}
