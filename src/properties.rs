//! Property tests over arbitrary inputs: every encoding round-trips, and every single-bit
//! change of a sealed value, a signed cookie, a sealed cookie or a session file is refused.

use std::{collections::BTreeMap, time::Duration};

use proptest::prelude::*;
use serde_json::Value;

use crate::{
    codec::{self, at_rest::AtRest},
    cookie::{SessionId, Signer},
    key::Key,
    store::{cookie::Sealer, file, Fields},
};

fn key() -> Key {
    Key::from_bytes(&[7u8; 64]).unwrap()
}

/// Any JSON value, nested a few levels deep, with any strings and finite numbers.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Encrypted or not, compressed (above 0 or 64 bytes) or not: every way to store a value.
fn every_form() -> Vec<AtRest> {
    let mut forms = Vec::new();
    for encrypt in [false, true] {
        for compress in [None, Some(0), Some(64)] {
            forms.push(AtRest::new(&key(), encrypt, compress, 1 << 20));
        }
    }
    forms
}

fn flips(bytes: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    (0..bytes.len() * 8).map(move |bit| {
        let mut changed = bytes.to_vec();
        changed[bit / 8] ^= 1 << (bit % 8);
        changed
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_json_value_round_trips_through_the_codec(value in json()) {
        let raw = codec::encode(&value).unwrap();
        prop_assert!(codec::validate(&raw).is_ok());
        prop_assert_eq!(codec::decode::<Value>(&raw).unwrap(), value);
    }

    /// MessagePack holds every JSON value, and a value carried from one format to the
    /// other (the eager migration) and back is the value it was, byte for byte.
    #[cfg(feature = "msgpack")]
    #[test]
    fn any_value_moves_between_the_formats_unchanged(value in json()) {
        let to_msgpack = codec::Codecs::new(codec::Chosen::of(codec::MessagePack), Vec::new(), true).unwrap();
        let to_json = codec::Codecs::default();
        let packed = to_msgpack.encode(&value).unwrap();
        prop_assert!(to_msgpack.validate(&packed).is_ok());
        prop_assert_eq!(&to_msgpack.decode::<Value>(&packed).unwrap(), &value);
        let json = codec::encode(&value).unwrap();
        prop_assert_eq!(to_msgpack.rewrite(&json).unwrap(), packed.clone());
        let back = codec::Codecs::new(codec::Chosen::Json, Vec::new(), true).unwrap().rewrite(&packed).unwrap();
        prop_assert_eq!(to_json.decode::<Value>(&back).unwrap(), value);
        prop_assert_eq!(back, json);
    }

    #[test]
    fn typed_values_round_trip_through_the_codec(
        value in any::<(String, Vec<u32>, Option<i64>, BTreeMap<String, bool>, Vec<u8>)>()
    ) {
        let raw = codec::encode(&value).unwrap();
        prop_assert_eq!(codec::decode::<(String, Vec<u32>, Option<i64>, BTreeMap<String, bool>, Vec<u8>)>(&raw).unwrap(), value);
    }

    #[test]
    fn every_stored_form_reads_back_alike(value in json(), field in "[a-z]{1,12}") {
        let encoded = codec::encode(&value).unwrap();
        let name = format!("d:{field}");
        for form in every_form() {
            let mut stored = form.seal("session:k", &name, &encoded);
            form.open("session:k", &name, &mut stored).unwrap();
            prop_assert_eq!(&stored, &encoded);
            // Any other form reads it too (the migration in either direction).
            for reader in every_form() {
                let mut again = form.seal("session:k", &name, &encoded);
                reader.open("session:k", &name, &mut again).unwrap();
                prop_assert_eq!(&again, &encoded);
            }
        }
    }

    #[test]
    fn every_bit_flip_of_a_sealed_value_is_refused(value in json(), compress in any::<bool>()) {
        let encoded = codec::encode(&value).unwrap();
        prop_assume!(encoded.len() <= 256);
        let strict = AtRest::new(&key(), true, compress.then_some(0), 1 << 20).reject_plain(true);
        let lenient = AtRest::new(&key(), true, compress.then_some(0), 1 << 20);
        let sealed = strict.seal("session:k", "d:v", &encoded);
        for changed in flips(&sealed) {
            let mut v = changed.clone();
            prop_assert!(strict.open("session:k", "d:v", &mut v).is_err());
            // While plain values are still read (the migration), a flip of the "sealed" bit
            // makes it look plain: its bytes are then no JSON, and the value is dropped.
            let mut v = changed;
            let read = lenient.open("session:k", "d:v", &mut v).is_ok() && codec::validate(&v).is_ok();
            prop_assert!(!read);
        }
    }

    #[test]
    fn every_bit_flip_of_a_signed_cookie_is_refused(id in any::<[u8; 32]>(), remember in proptest::option::of(1u64..=34_560_000)) {
        let signer = Signer::new(&key(), "sid");
        let value = signer.sign(&SessionId::from_bytes(id), remember.map(Duration::from_secs));
        let verified = signer.verify(&value).unwrap();
        prop_assert_eq!(verified.id.as_bytes(), &id);
        for changed in flips(value.as_bytes()) {
            if let Ok(changed) = std::str::from_utf8(&changed) {
                prop_assert!(signer.verify(changed).is_err(), "{} verified", changed);
            }
        }
    }

    #[test]
    fn every_bit_flip_of_a_sealed_cookie_is_refused(
        id in any::<[u8; 32]>(),
        fields in prop::collection::btree_map("[a-z:]{1,8}", prop::collection::vec(any::<u8>(), 0..32), 0..4),
    ) {
        let sealer = Sealer::new(&key(), "sid");
        let fields: Fields = fields.into_iter().collect();
        let value = sealer.seal(&SessionId::from_bytes(id), None, fields.iter());
        let opened = sealer.try_open(value.as_bytes()).unwrap();
        prop_assert_eq!(&opened.fields, &fields);
        for changed in flips(value.as_bytes()) {
            prop_assert!(sealer.try_open(&changed).is_err());
        }
    }

    #[test]
    fn session_files_round_trip_and_every_bit_flip_is_refused(
        fields in prop::collection::btree_map(".{0,8}", prop::collection::vec(any::<u8>(), 0..24), 0..4),
        ttl in 0u64..=u64::from(u32::MAX),
    ) {
        let record: Fields = fields.into_iter().collect();
        let bytes = file::encode(&record, Duration::from_millis(ttl));
        let (decoded, ttl_again) = file::decode(&bytes).unwrap();
        prop_assert_eq!(&decoded, &record);
        prop_assert_eq!(ttl_again, Duration::from_millis(ttl));
        for changed in flips(&bytes) {
            prop_assert!(file::decode(&changed).is_none());
        }
    }
}
