//! The value formats: the public [`Codec`] trait, JSON and MessagePack, and the bridge that
//! lets a codec of the application's own take any `Serialize` and fill any `Deserialize`.

use std::{error::Error, fmt};

use serde::{Deserializer, Serialize, Serializer};

/// What a [`Codec`] answers when it cannot encode or decode a value: any error, boxed.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// The format id of [`Json`], in the header byte of each value it wrote.
pub const JSON_ID: u8 = 1;
/// The format id of `MessagePack` (feature `msgpack`).
pub const MSGPACK_ID: u8 = 2;
/// The first format id a codec of the application's own may take; ids
/// `FIRST_CUSTOM_ID..=LAST_CUSTOM_ID` are the application's, those below are this crate's.
pub const FIRST_CUSTOM_ID: u8 = 8;
/// The last format id (the header byte's low nibble).
pub const LAST_CUSTOM_ID: u8 = 15;

/// A format for session values: how a value becomes the bytes stored after its header byte,
/// and back.
///
/// Every stored value starts with one header byte whose low nibble is the id of the format
/// that wrote it, so a store can hold values of several formats at once and each is read with
/// its own. The middleware writes with the codec given to
/// [`RedisSessionBuilder::codec`](crate::RedisSessionBuilder::codec) and reads with any it
/// knows: the built-in ones ([`Json`], and `MessagePack` with the `msgpack` feature) and
/// those given to [`codec`](crate::RedisSessionBuilder::codec) or
/// [`read_codec`](crate::RedisSessionBuilder::read_codec).
///
/// The methods work through serde without knowing the value's type: `encode` gets an
/// [`Encode`] (a `Serialize`) to hand to the format's serializer, once, appending to `out`;
/// `decode` a [`DecodeInto`] to hand the format's deserializer to, once. They report errors
/// rather than panic (a panic in a handler's `insert` or `get` is the handler's panic).
///
/// # Examples
///
/// A codec for [CBOR](https://cbor.io) would look like this one, which stores JSON in a
/// pretty layout under format id 9:
///
/// ```
/// use actix_redis_session::codec::{BoxError, Codec, DecodeInto, Encode};
///
/// struct PrettyJson;
///
/// impl Codec for PrettyJson {
///     fn id(&self) -> u8 {
///         9
///     }
///
///     fn name(&self) -> &'static str {
///         "pretty-json"
///     }
///
///     fn encode(&self, value: Encode<'_>, out: &mut Vec<u8>) -> Result<(), BoxError> {
///         serde_json::to_writer_pretty(out, &value)?;
///         Ok(())
///     }
///
///     fn decode(&self, payload: &[u8], into: DecodeInto<'_>) -> Result<(), BoxError> {
///         let mut deserializer = serde_json::Deserializer::from_slice(payload);
///         into.deserialize(&mut deserializer)?;
///         deserializer.end()?;
///         Ok(())
///     }
/// }
///
/// # use actix_redis_session::{Key, RedisSession};
/// let sessions = RedisSession::builder_with_memory(Default::default(), Key::generate())
///     .codec(PrettyJson)
///     .build()?;
/// # Ok::<(), actix_redis_session::ConfigError>(())
/// ```
pub trait Codec: Send + Sync + 'static {
    /// The format id stored in the header byte of every value this codec writes:
    /// [`FIRST_CUSTOM_ID`]`..=`[`LAST_CUSTOM_ID`] for a codec of the application's own
    /// (checked when the middleware is built). Never change it once values are stored.
    fn id(&self) -> u8;

    /// A short name for logs and errors (`"json"`, `"msgpack"`).
    fn name(&self) -> &'static str;

    /// Appends the encoded `value` to `out` (which holds the header byte already).
    ///
    /// # Errors
    ///
    /// What the format cannot represent; the handler's `insert` answers it as
    /// [`SessionError::Serialize`](crate::SessionError::Serialize).
    fn encode(&self, value: Encode<'_>, out: &mut Vec<u8>) -> Result<(), BoxError>;

    /// Hands a deserializer over `payload` (the stored bytes after the header) to `into`,
    /// then checks that nothing is left over.
    ///
    /// # Errors
    ///
    /// A payload that is not a value of this format, or not the type asked for.
    fn decode(&self, payload: &[u8], into: DecodeInto<'_>) -> Result<(), BoxError>;

    /// Checks that `payload` is a well-formed value without building it; a load drops the
    /// fields that fail (a corrupt value is never handed to a handler). The default decodes
    /// it through `deserialize_any`, which self-describing formats (JSON, MessagePack, CBOR)
    /// support; a format that is not (bincode, postcard) must implement this itself.
    ///
    /// # Errors
    ///
    /// A payload that is not a well-formed value of this format.
    fn validate(&self, payload: &[u8]) -> Result<(), BoxError> {
        let mut ok = false;
        self.decode(
            payload,
            DecodeInto::new(&mut |d| {
                erased_serde::deserialize::<super::well_formed::WellFormed>(d)?;
                ok = true;
                Ok(())
            }),
        )?;
        if ok {
            Ok(())
        } else {
            Err("the codec's decode did not deserialize".into())
        }
    }
}

/// A value to encode, as a [`Codec`] gets it: hand it to the format's serializer (it is a
/// [`Serialize`]).
#[derive(Clone, Copy)]
pub struct Encode<'a>(pub(crate) &'a dyn erased_serde::Serialize);

impl Serialize for Encode<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        erased_serde::serialize(self.0, serializer)
    }
}

impl fmt::Debug for Encode<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Encode(..)")
    }
}

/// The place a decoded value goes, as a [`Codec`] gets it: [`deserialize`](Self::deserialize)
/// it from the format's deserializer.
pub struct DecodeInto<'a> {
    visit: &'a mut Visit<'a>,
}

type Visit<'a> = dyn for<'de> FnMut(&mut dyn erased_serde::Deserializer<'de>) -> Result<(), erased_serde::Error>
    + 'a;

impl<'a> DecodeInto<'a> {
    pub(crate) fn new(visit: &'a mut Visit<'a>) -> DecodeInto<'a> {
        DecodeInto { visit }
    }

    /// Deserializes the value asked for from `deserializer`.
    ///
    /// # Errors
    ///
    /// The deserializer's: the payload is not a value of the type asked for.
    pub fn deserialize<'de, D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        let mut erased = <dyn erased_serde::Deserializer>::erase(deserializer);
        (self.visit)(&mut erased).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for DecodeInto<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DecodeInto(..)")
    }
}

/// JSON (serde_json), the default: readable in `redis-cli`, and what every release before
/// formats could be chosen wrote. NaN and infinite floats are refused, as JSON has no such
/// numbers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Json;

impl Codec for Json {
    fn id(&self) -> u8 {
        JSON_ID
    }

    fn name(&self) -> &'static str {
        "json"
    }

    fn encode(&self, value: Encode<'_>, out: &mut Vec<u8>) -> Result<(), BoxError> {
        super::json_encode(&value, out).map_err(Into::into)
    }

    fn decode(&self, payload: &[u8], into: DecodeInto<'_>) -> Result<(), BoxError> {
        let mut deserializer = serde_json::Deserializer::from_slice(payload);
        into.deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(())
    }

    fn validate(&self, payload: &[u8]) -> Result<(), BoxError> {
        super::json_validate(payload).map_err(Into::into)
    }
}

/// MessagePack (rmp-serde; feature `msgpack`): smaller than JSON for most values and faster
/// to read. Structs are stored as maps with their field names (so that fields can be added
/// with `#[serde(default)]`, as with JSON), and types that serialize otherwise for humans
/// (timestamps, UUIDs, addresses) as they do in JSON, so that a value moves between the two
/// formats unchanged.
#[cfg(feature = "msgpack")]
#[derive(Clone, Copy, Debug, Default)]
pub struct MessagePack;

#[cfg(feature = "msgpack")]
impl Codec for MessagePack {
    fn id(&self) -> u8 {
        MSGPACK_ID
    }

    fn name(&self) -> &'static str {
        "msgpack"
    }

    fn encode(&self, value: Encode<'_>, out: &mut Vec<u8>) -> Result<(), BoxError> {
        super::msgpack_encode(&value, out).map_err(Into::into)
    }

    fn decode(&self, payload: &[u8], into: DecodeInto<'_>) -> Result<(), BoxError> {
        let mut deserializer = super::msgpack_deserializer(payload);
        into.deserialize(&mut deserializer)?;
        super::msgpack_end(&deserializer).map_err(Into::into)
    }

    fn validate(&self, payload: &[u8]) -> Result<(), BoxError> {
        super::msgpack_decode::<super::well_formed::WellFormed>(payload).map(drop)
    }
}

/// A stored value could not be encoded or decoded: the format's error, with the format's
/// name. The source of [`SessionError::Serialize`](crate::SessionError::Serialize) and
/// [`SessionError::Deserialize`](crate::SessionError::Deserialize).
#[derive(Debug)]
pub struct CodecError {
    format: &'static str,
    source: BoxError,
}

impl CodecError {
    pub(crate) fn new(format: &'static str, source: impl Into<BoxError>) -> CodecError {
        CodecError {
            format,
            source: source.into(),
        }
    }

    /// The name of the format ([`Codec::name`]), or `"value"` for a header that names no
    /// format this middleware knows.
    pub fn format(&self) -> &'static str {
        self.format
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.format, self.source)
    }
}

impl Error for CodecError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}
