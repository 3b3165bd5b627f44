//! The formats of session values: [`Json`] (the default), `MessagePack` (feature
//! `msgpack`), or a [`Codec`] of your own; see the README's "Formats".
//!
//! Every value is stored as one header byte, then the payload.
//!
//! The header's low nibble is the id of the format that wrote the payload (1: JSON, 2:
//! MessagePack, 8 to 15: the application's own [`Codec`]s); bit 4 marks a gzip-compressed
//! payload and bit 5 an encrypted one; bits 6 and 7 are reserved. Every value is read with
//! the format it was written in, so a store may hold several at once (a change of format
//! logs nobody out), and readers reject what they do not know, so that a later format can
//! be rolled out without misreading old values. The session state holds values as encoded
//! here; the at-rest layer turns them into their stored form (compressed, sealed) and back at the
//! store's edge.
//!
//! The built-in formats are dispatched statically (the hot path: every `get` and `insert`);
//! a codec of the application's own goes through `erased-serde`.
//!
//! Metadata fields (`m:*`) are not user values and are stored as plain ASCII.

pub(crate) mod at_rest;
mod finite;
mod format;
mod well_formed;

use std::{
    any::TypeId,
    panic::{self, AssertUnwindSafe},
    sync::Arc,
};

use serde::{de::DeserializeOwned, Serialize};

#[cfg(feature = "msgpack")]
pub use self::format::MessagePack;
pub use self::format::{
    BoxError, Codec, CodecError, DecodeInto, Encode, Json, FIRST_CUSTOM_ID, JSON_ID,
    LAST_CUSTOM_ID, MSGPACK_ID,
};
use self::well_formed::WellFormed;

pub(crate) const FORMAT_MASK: u8 = 0x0f;
/// The payload is gzip-compressed ([`at_rest`]).
pub(crate) const FLAG_COMPRESSED: u8 = 0x10;
/// The payload is sealed with AES-256-GCM ([`at_rest`]).
pub(crate) const FLAG_ENCRYPTED: u8 = 0x20;
/// Bits no release sets yet.
pub(crate) const RESERVED_FLAGS: u8 = 0xc0;
/// The header byte of a JSON value as the session state holds it.
pub(crate) const FORMAT_JSON: u8 = JSON_ID;

const CUSTOM_SLOTS: usize = (LAST_CUSTOM_ID - FIRST_CUSTOM_ID + 1) as usize;

/// Why a stored value could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("empty value")]
    Empty,
    #[error("unknown value format {0:#04x}")]
    UnknownFormat(u8),
    #[error("value uses a feature this build does not enable (header {0:#04x})")]
    UnsupportedFlags(u8),
    #[error("invalid payload")]
    Payload(#[source] CodecError),
    #[error("sealed value does not open (changed, moved, or sealed under an unknown key)")]
    Sealed,
    #[error("invalid gzip payload")]
    Gzip(#[source] std::io::Error),
    #[error("value not sealed, and only sealed values are accepted")]
    NotSealed,
    #[error("compressed value expands beyond {limit} bytes")]
    TooLarge { limit: usize },
}

impl DecodeError {
    /// The error as a handler sees it.
    pub(crate) fn into_codec_error(self) -> CodecError {
        match self {
            DecodeError::Payload(e) => e,
            other => CodecError::new("value", other.to_string()),
        }
    }
}

/// A codec handed to the builder, and the one a middleware writes with: one of the
/// built-in formats (dispatched statically), or the application's own.
#[derive(Clone)]
pub(crate) enum Chosen {
    Json,
    #[cfg(feature = "msgpack")]
    MessagePack,
    /// With its type, so that naming one codec twice is not taken for two with one id.
    Custom(Arc<dyn Codec>, TypeId),
}

impl Chosen {
    pub(crate) fn of<C: Codec>(codec: C) -> Chosen {
        let ty = TypeId::of::<C>();
        if ty == TypeId::of::<Json>() {
            return Chosen::Json;
        }
        #[cfg(feature = "msgpack")]
        if ty == TypeId::of::<MessagePack>() {
            return Chosen::MessagePack;
        }
        Chosen::Custom(Arc::new(codec), ty)
    }
}

/// The formats of one middleware: the one it writes, and every one it reads.
#[derive(Clone)]
pub(crate) struct Codecs {
    writer: Chosen,
    /// The writer's id, as checked when built (a codec's `id()` is asked once).
    write_id: u8,
    custom: [Option<Arc<dyn Codec>>; CUSTOM_SLOTS],
    rewrite_on_load: bool,
}

impl std::fmt::Debug for Codecs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codecs")
            .field("writes", &self.write_codec().name())
            .field("rewrite_on_load", &self.rewrite_on_load)
            .finish_non_exhaustive()
    }
}

impl Default for Codecs {
    fn default() -> Codecs {
        Codecs {
            writer: Chosen::Json,
            write_id: JSON_ID,
            custom: Default::default(),
            rewrite_on_load: false,
        }
    }
}

impl Codecs {
    /// Writes with `write`, reads the built-in formats, `write` and `read`.
    ///
    /// # Errors
    ///
    /// A codec of the application's whose id is outside `8..=15`, or two with one id.
    pub(crate) fn new(
        write: Chosen,
        read: Vec<Chosen>,
        rewrite_on_load: bool,
    ) -> Result<Codecs, &'static str> {
        let mut codecs = Codecs {
            writer: Chosen::Json,
            write_id: JSON_ID,
            custom: Default::default(),
            rewrite_on_load,
        };
        let mut types = [None; CUSTOM_SLOTS];
        for chosen in std::iter::once(&write).chain(&read) {
            if let Chosen::Custom(codec, ty) = chosen {
                let id = codec.id();
                if !(FIRST_CUSTOM_ID..=LAST_CUSTOM_ID).contains(&id) {
                    return Err("a codec of your own must have an id from 8 to 15 (the lower ones are this crate's)");
                }
                let slot = usize::from(id - FIRST_CUSTOM_ID);
                match types[slot] {
                    Some(other) if other != *ty => return Err("two codecs have the same id"),
                    // The same codec named again: the first one (the writer) is kept.
                    Some(_) => {}
                    None => {
                        types[slot] = Some(*ty);
                        codecs.custom[slot] = Some(Arc::clone(codec));
                    }
                }
            }
        }
        codecs.write_id = match &write {
            Chosen::Json => JSON_ID,
            #[cfg(feature = "msgpack")]
            Chosen::MessagePack => MSGPACK_ID,
            Chosen::Custom(codec, _) => codec.id(),
        };
        codecs.writer = write;
        Ok(codecs)
    }

    fn write_codec(&self) -> &dyn Codec {
        match &self.writer {
            Chosen::Json => &Json,
            #[cfg(feature = "msgpack")]
            Chosen::MessagePack => &MessagePack,
            Chosen::Custom(codec, _) => &**codec,
        }
    }

    /// Whether values in other formats are rewritten in this one when a session is loaded
    /// ([`rewrite_formats_on_load`](crate::RedisSessionBuilder::rewrite_formats_on_load)).
    pub(crate) fn rewrites_on_load(&self) -> bool {
        self.rewrite_on_load
    }

    /// The reader of format `id`, if this middleware knows it.
    fn reader(&self, id: u8) -> Option<&dyn Codec> {
        match id {
            JSON_ID => Some(&Json),
            #[cfg(feature = "msgpack")]
            MSGPACK_ID => Some(&MessagePack),
            FIRST_CUSTOM_ID..=LAST_CUSTOM_ID => {
                self.custom[usize::from(id - FIRST_CUSTOM_ID)].as_deref()
            }
            _ => None,
        }
    }

    /// Serializes `value` into its stored form, in the format this middleware writes.
    ///
    /// # Errors
    ///
    /// What the format refuses (JSON: a map key that is not a string or number, NaN or an
    /// infinite float, which it would store as `null` and so could not give back), or a
    /// `Serialize` that fails.
    pub(crate) fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        match &self.writer {
            Chosen::Json => encode(value),
            #[cfg(feature = "msgpack")]
            Chosen::MessagePack => {
                let mut out = Vec::with_capacity(32);
                out.push(MSGPACK_ID);
                msgpack_encode(value, &mut out).map_err(|e| CodecError::new("msgpack", e))?;
                Ok(out)
            }
            Chosen::Custom(codec, _) => {
                let id = self.write_id;
                let mut out = Vec::with_capacity(32);
                out.push(id);
                codec
                    .encode(Encode(&ByRef(value)), &mut out)
                    .map_err(|e| CodecError::new(codec.name(), e))?;
                if out.first() != Some(&id) {
                    // It replaced `out` instead of appending to it.
                    return Err(CodecError::new(
                        codec.name(),
                        "the codec's encode did not append to the header byte",
                    ));
                }
                Ok(out)
            }
        }
    }

    /// Deserializes a stored value, in the format its header names.
    pub(crate) fn decode<T: DeserializeOwned>(&self, raw: &[u8]) -> Result<T, DecodeError> {
        let (format, payload) = split(raw)?;
        match format {
            JSON_ID => serde_json::from_slice(payload)
                .map_err(|e| DecodeError::Payload(CodecError::new("json", e))),
            #[cfg(feature = "msgpack")]
            MSGPACK_ID => msgpack_decode(payload)
                .map_err(|e| DecodeError::Payload(CodecError::new("msgpack", e))),
            _ => {
                let codec = self
                    .reader(format)
                    .ok_or(DecodeError::UnknownFormat(raw[0]))?;
                let mut value = None;
                codec
                    .decode(
                        payload,
                        DecodeInto::new(&mut |d| {
                            value = Some(erased_serde::deserialize::<T>(d)?);
                            Ok(())
                        }),
                    )
                    .map_err(|e| DecodeError::Payload(CodecError::new(codec.name(), e)))?;
                value.ok_or_else(|| {
                    DecodeError::Payload(CodecError::new(
                        codec.name(),
                        "the codec's decode did not deserialize",
                    ))
                })
            }
        }
    }

    /// Checks that a stored value is readable without building it.
    pub(crate) fn validate(&self, raw: &[u8]) -> Result<(), DecodeError> {
        let (format, payload) = split(raw)?;
        if format == JSON_ID {
            return json_validate(payload)
                .map_err(|e| DecodeError::Payload(CodecError::new("json", e)));
        }
        #[cfg(feature = "msgpack")]
        if format == MSGPACK_ID {
            // Statically, as decode: every load validates every value.
            return msgpack_decode::<WellFormed>(payload)
                .map(drop)
                .map_err(|e| DecodeError::Payload(CodecError::new("msgpack", e)));
        }
        let codec = self
            .reader(format)
            .ok_or(DecodeError::UnknownFormat(raw[0]))?;
        codec
            .validate(payload)
            .map_err(|e| DecodeError::Payload(CodecError::new(codec.name(), e)))
    }

    /// The encoded value `raw` (valid, in another format than this middleware writes)
    /// rewritten in the format it writes; `None` if it is in that format already, or cannot
    /// be carried over exactly: it is then kept as it is, and rewritten when the application
    /// next writes it.
    ///
    /// Exactly means that carrying the result back into the old format gives the old bytes:
    /// what the new format holds otherwise (binary data and 128-bit integers become arrays
    /// in JSON, an integer beyond 64 bits a float, a NaN `null`, nesting JSON will not read
    /// back) is refused, not stored changed.
    pub(crate) fn rewrite(&self, raw: &[u8]) -> Option<Vec<u8>> {
        let (format, payload) = split(raw).ok()?;
        let target = self.write_id;
        if format == target {
            return None;
        }
        let source = self.reader(format)?;
        let sink = self.write_codec();
        // A codec of the application's own could panic, or serialize the streamed value
        // twice (which the transcoder does not allow): either way the value stays as it is.
        panic::catch_unwind(AssertUnwindSafe(|| {
            let rewritten = transcode(source, payload, sink, target)?;
            let back = transcode(sink, &rewritten[1..], source, format)?;
            (back[1..] == *payload).then_some(rewritten)
        }))
        .ok()
        .flatten()
    }
}

/// `payload` (a value of `from`) streamed into a value of `to`, with the header `header`.
fn transcode(from: &dyn Codec, payload: &[u8], to: &dyn Codec, header: u8) -> Option<Vec<u8>> {
    let mut out = vec![header];
    let mut done = false;
    from.decode(
        payload,
        DecodeInto::new(&mut |d| {
            let streamed = serde_transcode::Transcoder::new(d);
            if header == JSON_ID {
                // Straight to serde_json: Json's encode would walk the value twice, and
                // the round trip back catches a NaN written as `null`.
                serde_json::to_writer(&mut out, &streamed).map_err(serde::ser::Error::custom)?;
            } else {
                to.encode(Encode(&streamed), &mut out)
                    .map_err(serde::ser::Error::custom)?;
            }
            done = true;
            Ok(())
        }),
    )
    .ok()?;
    (done && out.first() == Some(&header)).then_some(out)
}

/// A `Serialize` behind a reference that may be unsized, as a sized one (for `dyn`).
struct ByRef<'a, T: ?Sized>(&'a T);

impl<T: Serialize + ?Sized> Serialize for ByRef<'_, T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// The format id and the payload of an encoded value, after checking its header.
fn split(raw: &[u8]) -> Result<(u8, &[u8]), DecodeError> {
    let (&header, rest) = raw.split_first().ok_or(DecodeError::Empty)?;
    let flags = header & !FORMAT_MASK;
    if flags & (FLAG_COMPRESSED | FLAG_ENCRYPTED) != 0 {
        // Stored forms that at_rest opens (or features this build lacks).
        return Err(DecodeError::UnsupportedFlags(header));
    }
    if flags != 0 || header == 0 {
        return Err(DecodeError::UnknownFormat(header));
    }
    Ok((header, rest))
}

/// Serializes `value` as JSON into its stored form: what a middleware with the default
/// format writes.
///
/// # Errors
///
/// See [`Codecs::encode`].
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(32);
    out.push(FORMAT_JSON);
    json_encode(value, &mut out).map_err(|e| CodecError::new("json", e))?;
    Ok(out)
}

/// Appends the JSON of `value`, refusing floats JSON cannot hold.
pub(crate) fn json_encode<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    let start = out.len();
    serde_json::to_writer(&mut *out, value)?;
    // serde_json writes a float that is not finite as `null`: only JSON with a `null` in it
    // can hold one, so most values skip the second walk.
    if memchr::memmem::find(&out[start..], b"null").is_some() {
        finite::check(value)?;
    }
    Ok(())
}

/// Whether a JSON payload is a value whose strings and numbers serde_json can hand to a type.
pub(crate) fn json_validate(payload: &[u8]) -> Result<(), serde_json::Error> {
    serde_json::from_slice::<WellFormed>(payload).map(|_| ())
}

#[cfg(feature = "msgpack")]
pub(crate) fn msgpack_encode<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), rmp_serde::encode::Error> {
    let mut serializer = rmp_serde::Serializer::new(out)
        .with_struct_map()
        .with_human_readable();
    value.serialize(&mut serializer)
}

#[cfg(feature = "msgpack")]
type MsgpackDeserializer<'a> = rmp_serde::Deserializer<
    rmp_serde::decode::ReadReader<&'a [u8]>,
    rmp_serde::config::HumanReadableConfig<rmp_serde::config::DefaultConfig>,
>;

#[cfg(feature = "msgpack")]
pub(crate) fn msgpack_deserializer(payload: &[u8]) -> MsgpackDeserializer<'_> {
    let mut deserializer = rmp_serde::Deserializer::new(payload).with_human_readable();
    // JSON's (serde_json) nesting limit, not rmp-serde's 1024: a crafted value must not run
    // the stack out, through the codec bridge and the transcoder least of all.
    deserializer.set_max_depth(128);
    deserializer
}

/// Fails if the MessagePack payload goes on after its value.
#[cfg(feature = "msgpack")]
pub(crate) fn msgpack_end(deserializer: &MsgpackDeserializer<'_>) -> Result<(), &'static str> {
    if deserializer.get_ref().is_empty() {
        Ok(())
    } else {
        Err("trailing bytes after the value")
    }
}

#[cfg(feature = "msgpack")]
fn msgpack_decode<T: for<'de> serde::Deserialize<'de>>(payload: &[u8]) -> Result<T, BoxError> {
    let mut deserializer = msgpack_deserializer(payload);
    let value = T::deserialize(&mut deserializer)?;
    msgpack_end(&deserializer)?;
    Ok(value)
}

/// Deserializes a stored value of a built-in format.
pub(crate) fn decode<T: DeserializeOwned>(raw: &[u8]) -> Result<T, DecodeError> {
    Codecs::default().decode(raw)
}

/// Checks that a stored value of a built-in format is readable without building it: any
/// JSON value that passes can be read as a `serde_json::Value`.
pub(crate) fn validate(raw: &[u8]) -> Result<(), DecodeError> {
    Codecs::default().validate(raw)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json_with_a_header() {
        let raw = encode(&vec![1u32, 2, 3]).unwrap();
        assert_eq!(raw[0], FORMAT_JSON);
        assert_eq!(&raw[1..], b"[1,2,3]");
        assert_eq!(decode::<Vec<u32>>(&raw).unwrap(), vec![1, 2, 3]);
        validate(&raw).unwrap();
    }

    #[test]
    fn refuses_values_json_cannot_give_back() {
        #[derive(Serialize)]
        struct Reading {
            label: Option<String>,
            values: Vec<f64>,
        }
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let reading = Reading {
                label: None,
                values: vec![1.0, bad],
            };
            let e = encode(&reading).unwrap_err();
            assert!(e.to_string().contains("NaN"), "{e}");
            assert!(encode(&Some(bad as f32)).is_err());
        }
        // `null` for a real None, or inside a string, is fine.
        let fine = Reading {
            label: Some("null".into()),
            values: vec![1.5, -0.0, f64::MAX],
        };
        assert_eq!(
            decode::<serde_json::Value>(&encode(&fine).unwrap()).unwrap(),
            serde_json::json!({"label": "null", "values": [1.5, -0.0, f64::MAX]})
        );
        // Map keys JSON cannot hold.
        let map: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        assert!(encode(&map).is_err());
    }

    #[test]
    fn floats_read_back_exactly() {
        // Found by the property tests: serde_json's default float parser read this back one
        // ULP off (2.52718670111708e-191).
        for f in [2.527_186_701_117_080_2e-191_f64, 0.1, 1e308, 5e-324, -0.0] {
            assert_eq!(
                decode::<f64>(&encode(&f).unwrap()).unwrap().to_bits(),
                f.to_bits()
            );
        }
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        assert!(matches!(decode::<u8>(b""), Err(DecodeError::Empty)));
        assert!(matches!(
            decode::<u8>(b"\x07{}"),
            Err(DecodeError::UnknownFormat(7))
        ));
        assert!(matches!(
            decode::<u8>(&[FORMAT_JSON | FLAG_ENCRYPTED, b'1']),
            Err(DecodeError::UnsupportedFlags(_))
        ));
        assert!(matches!(
            validate(b"\x01{not json"),
            Err(DecodeError::Payload(_))
        ));
        assert!(validate(b"\x01\xff\xfe").is_err());
        // Invalid UTF-8 inside a string: serde_json skips it when ignoring the value, so
        // validate checks the payload itself (found by fuzzing; it used to pass here and
        // fail at `Session::get`).
        let bad = b"\x01{\"\xdda\":[1,2.5,\"x\",null,true]}";
        assert!(decode::<serde_json::Value>(bad).is_err());
        assert!(matches!(validate(bad), Err(DecodeError::Payload(_))));
        assert!(validate(b"\x01\"\xdd\"").is_err());
        // A number no f64 holds (also found by fuzzing), alone and nested.
        for big in [&b"\x01\n1.11119e3111"[..], b"\x01{\"a\":[-1e400]}"] {
            assert!(decode::<serde_json::Value>(big).is_err());
            assert!(validate(big).is_err(), "{big:?}");
        }
        // What it accepts, every JSON shape.
        validate(br#"{"a":[1,-2,3.5e10,"\u00e9\n",true,false,null,{}],"b":{"c":[]}}"#.as_slice())
            .unwrap_err(); // no header byte
        validate(b"\x01{\"a\":[1,-2,3.5e10,\"\\u00e9\\n\",true,false,null,{}],\"b\":{\"c\":[]}}")
            .unwrap();
        validate(b"\x01 18446744073709551615 ").unwrap();
    }

    /// JSON stored pretty under id 9: a codec of one's own, through the public trait.
    struct Pretty;

    impl Codec for Pretty {
        fn id(&self) -> u8 {
            9
        }

        fn name(&self) -> &'static str {
            "pretty"
        }

        fn encode(&self, value: Encode<'_>, out: &mut Vec<u8>) -> Result<(), BoxError> {
            serde_json::to_writer_pretty(out, &value)?;
            Ok(())
        }

        fn decode(&self, payload: &[u8], into: DecodeInto<'_>) -> Result<(), BoxError> {
            let mut deserializer = serde_json::Deserializer::from_slice(payload);
            into.deserialize(&mut deserializer)?;
            deserializer.end()?;
            Ok(())
        }
    }

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Cart {
        items: Vec<u32>,
        note: Option<String>,
        total: f64,
    }

    fn cart() -> Cart {
        Cart {
            items: vec![1, 2, 3],
            note: None,
            total: 12.5,
        }
    }

    fn writing(codec: impl Codec, rewrite: bool) -> Codecs {
        Codecs::new(Chosen::of(codec), vec![Chosen::of(Pretty)], rewrite).unwrap()
    }

    #[test]
    fn a_codec_of_ones_own_round_trips_and_is_read_by_its_id() {
        let codecs = writing(Pretty, false);
        let raw = codecs.encode(&cart()).unwrap();
        assert_eq!(raw[0], 9);
        assert!(raw.contains(&b'\n'), "pretty");
        assert_eq!(codecs.decode::<Cart>(&raw).unwrap(), cart());
        codecs.validate(&raw).unwrap();
        // Unsized values go through too.
        assert_eq!(
            codecs
                .decode::<String>(&codecs.encode("abc").unwrap())
                .unwrap(),
            "abc"
        );
        // The built-in reader does not know id 9: unknown, never misread.
        assert!(matches!(
            decode::<Cart>(&raw),
            Err(DecodeError::UnknownFormat(9))
        ));
        assert!(validate(&raw).is_err());
        // A type mismatch is the codec's error, named.
        let e = codecs.decode::<u8>(&raw).unwrap_err().into_codec_error();
        assert_eq!(e.format(), "pretty");
        // A corrupt payload fails validation.
        assert!(codecs.validate(b"\x09{\"items\": [1,").is_err());
        assert!(codecs.validate(b"\x09{} trailing").is_err());
    }

    #[test]
    fn every_format_is_read_whatever_the_writer() {
        let json = encode(&cart()).unwrap();
        let pretty = writing(Pretty, false).encode(&cart()).unwrap();
        for writer in [writing(Json, false), writing(Pretty, false)] {
            for raw in [&json, &pretty] {
                assert_eq!(writer.decode::<Cart>(raw).unwrap(), cart());
                writer.validate(raw).unwrap();
            }
        }
    }

    #[test]
    fn the_builder_refuses_ids_that_are_not_the_applications() {
        struct Claims(u8);
        impl Codec for Claims {
            fn id(&self) -> u8 {
                self.0
            }
            fn name(&self) -> &'static str {
                "claims"
            }
            fn encode(&self, _: Encode<'_>, _: &mut Vec<u8>) -> Result<(), BoxError> {
                Ok(())
            }
            fn decode(&self, _: &[u8], _: DecodeInto<'_>) -> Result<(), BoxError> {
                Ok(())
            }
        }
        for id in [0, 1, 2, 7, 16, 255] {
            assert!(
                Codecs::new(Chosen::of(Claims(id)), vec![], false).is_err(),
                "{id}"
            );
        }
        assert!(Codecs::new(Chosen::of(Claims(8)), vec![], false).is_ok());
        assert!(Codecs::new(Chosen::of(Claims(9)), vec![Chosen::of(Pretty)], false).is_err());
        // A decode that never deserializes is an error, not a missing value.
        let lazy = Codecs::new(Chosen::of(Claims(8)), vec![], false).unwrap();
        assert!(lazy.decode::<u8>(b"\x08anything").is_err());
        assert!(lazy.validate(b"\x08anything").is_err());
    }

    #[test]
    fn rewriting_carries_a_value_into_the_written_format() {
        let json = encode(&cart()).unwrap();
        let to_pretty = writing(Pretty, true);
        let pretty = to_pretty.rewrite(&json).expect("rewritten");
        assert_eq!(pretty[0], 9);
        assert_eq!(to_pretty.decode::<Cart>(&pretty).unwrap(), cart());
        assert!(
            to_pretty.rewrite(&pretty).is_none(),
            "already in the format"
        );
        let back = writing(Json, true).rewrite(&pretty).expect("rewritten");
        assert_eq!(back, json, "the same bytes JSON writes");
        // Unknown formats and corrupt values stay as they are.
        assert!(to_pretty.rewrite(b"\x0c1").is_none());
        assert!(to_pretty.rewrite(b"\x01{not json").is_none());
    }

    #[cfg(feature = "msgpack")]
    mod msgpack {
        use super::*;

        /// What `serde_bytes` would give: the bytes of a string or binary value.
        mod serde_bytes_like {
            pub(super) struct Bytes(pub(super) Vec<u8>);

            impl<'de> serde::Deserialize<'de> for Bytes {
                fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                    struct Visit;
                    impl serde::de::Visitor<'_> for Visit {
                        type Value = Bytes;
                        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                            f.write_str("bytes")
                        }
                        fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
                            Ok(Bytes(v.to_vec()))
                        }
                    }
                    d.deserialize_bytes(Visit)
                }
            }
        }

        #[test]
        fn round_trips_smaller_than_json_and_checks_its_input() {
            let codecs = writing(MessagePack, false);
            let raw = codecs.encode(&cart()).unwrap();
            assert_eq!(raw[0], MSGPACK_ID);
            assert!(raw.len() < encode(&cart()).unwrap().len());
            assert_eq!(codecs.decode::<Cart>(&raw).unwrap(), cart());
            // Read by every middleware, whatever it writes.
            assert_eq!(decode::<Cart>(&raw).unwrap(), cart());
            validate(&raw).unwrap();
            // Struct fields by name: a field added with a default reads old values.
            #[derive(serde::Deserialize)]
            struct Grown {
                items: Vec<u32>,
                #[serde(default)]
                added: u8,
            }
            let grown: Grown = codecs.decode(&raw).unwrap();
            assert_eq!((grown.items, grown.added), (vec![1, 2, 3], 0));
            // NaN is a MessagePack number.
            let nan: f64 = codecs.decode(&codecs.encode(&f64::NAN).unwrap()).unwrap();
            assert!(nan.is_nan());
            // Truncated, trailing, garbage: refused, never a panic.
            for cut in 1..raw.len() {
                assert!(validate(&raw[..cut]).is_err(), "cut at {cut}");
            }
            let mut trailing = raw.clone();
            trailing.push(0xc0);
            assert!(decode::<Cart>(&trailing).is_err());
            assert!(validate(&trailing).is_err());
            assert!(validate(&[MSGPACK_ID, 0xc1]).is_err());
            // Invalid UTF-8 in a string: rmp-serde hands it over as bytes, so it validates
            // (as binary data would) and reading it as a string is an error, not a panic.
            let bad = [MSGPACK_ID, 0xa2, 0xff, 0xfe];
            assert!(decode::<String>(&bad).is_err());
            assert_eq!(
                decode::<serde_bytes_like::Bytes>(&bad).unwrap().0,
                [0xff, 0xfe]
            );
        }

        #[test]
        fn values_move_between_json_and_msgpack_unchanged() {
            let json = encode(&cart()).unwrap();
            let to_msgpack = writing(MessagePack, true);
            let packed = to_msgpack.rewrite(&json).expect("rewritten");
            assert_eq!(packed, to_msgpack.encode(&cart()).unwrap());
            let to_json = writing(Json, true);
            assert_eq!(to_json.rewrite(&packed).unwrap(), json);
            // A NaN has no JSON form: the MessagePack value is kept.
            let nan = to_msgpack.encode(&vec![1.0, f64::NAN]).unwrap();
            assert!(to_json.rewrite(&nan).is_none());
            // A real None becomes null (checked, then kept).
            let none = to_msgpack.encode(&Some(Option::<u8>::None)).unwrap();
            assert_eq!(to_json.rewrite(&none).unwrap(), b"\x01null");
            // Human-readable forms in both: an address is a string in either.
            let ip: std::net::IpAddr = "203.0.113.7".parse().unwrap();
            let packed = to_msgpack.encode(&ip).unwrap();
            let json = to_json.rewrite(&packed).unwrap();
            assert_eq!(json, b"\x01\"203.0.113.7\"");
        }

        /// Binary data, as `serde_bytes` serializes it.
        struct Blob(Vec<u8>);

        impl Serialize for Blob {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }

        #[test]
        fn what_the_other_format_would_change_is_not_rewritten() {
            let to_msgpack = writing(MessagePack, true);
            let to_json = writing(Json, true);
            // Binary data and 128-bit integers would be arrays in JSON.
            for packed in [
                to_msgpack.encode(&Blob(vec![1, 2, 255])).unwrap(),
                to_msgpack.encode(&u128::MAX).unwrap(),
                to_msgpack.encode(&vec![("k", Blob(vec![0; 4]))]).unwrap(),
            ] {
                to_msgpack.validate(&packed).unwrap();
                assert!(to_json.rewrite(&packed).is_none(), "{packed:?}");
            }
            // An integer beyond 64 bits is a float to serde_json: MessagePack would keep
            // the float, not the integer.
            assert!(to_msgpack.rewrite(b"\x01100000000000000000000").is_none());
            // JSON written by another writer (escapes, spaces) reads the same but does not
            // come back byte for byte: kept.
            assert!(to_msgpack.rewrite(b"\x01 {\"a\" : \"\\u00e9\"}").is_none());
            // What comes back exactly is rewritten.
            assert!(to_msgpack
                .rewrite(&encode(&vec![1.5, -2.0]).unwrap())
                .is_some());
        }

        #[test]
        fn deep_nesting_is_refused_without_running_the_stack_out() {
            let mut deep = vec![MSGPACK_ID];
            deep.extend(std::iter::repeat_n(0x91, 100_000)); // [[[[...
            deep.push(0xc0);
            assert!(validate(&deep).is_err());
            assert!(decode::<serde_json::Value>(&deep).is_err());
            assert!(writing(Json, true).rewrite(&deep).is_none());
            let mut fine = vec![MSGPACK_ID];
            fine.extend(std::iter::repeat_n(0x91, 100));
            fine.push(0xc0);
            validate(&fine).unwrap();
        }

        #[test]
        fn sealed_and_compressed_msgpack_values_keep_their_format() {
            let at_rest = at_rest::AtRest::new(
                &crate::key::Key::from_bytes(&[7; 64]).unwrap(),
                true,
                Some(10),
                64 * 1024,
            );
            let codecs = writing(MessagePack, false);
            let plain = codecs.encode(&"word ".repeat(50)).unwrap();
            let stored = at_rest.seal("session:k", "d:v", &plain);
            assert_eq!(stored[0], 0x32);
            let mut opened = stored.clone();
            at_rest.open("session:k", "d:v", &mut opened).unwrap();
            assert_eq!(opened, plain);
        }
    }
}
