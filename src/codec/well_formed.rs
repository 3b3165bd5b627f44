//! A value of any self-describing format, checked for what a type could be handed and
//! building nothing: how a load tells a corrupt stored value from a readable one.
//!
//! serde's `IgnoredAny` is not enough: serde_json skips what it ignores without checking
//! that strings are UTF-8 or that numbers fit an `f64`, so such a value would pass and fail
//! only when a handler reads it (both found by the `stored_value` fuzz target).

use std::fmt;

use serde::{
    de::{EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor},
    Deserialize, Deserializer,
};

/// Any value whose strings and numbers the format can hand to a type.
pub(crate) struct WellFormed;

impl<'de> Deserialize<'de> for WellFormed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(WellFormed)
    }
}

impl<'de> Visitor<'de> for WellFormed {
    type Value = WellFormed;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<WellFormed, E> {
        Ok(WellFormed)
    }

    fn visit_i64<E>(self, _: i64) -> Result<WellFormed, E> {
        Ok(WellFormed)
    }

    fn visit_u64<E>(self, _: u64) -> Result<WellFormed, E> {
        Ok(WellFormed)
    }

    fn visit_i128<E>(self, _: i128) -> Result<WellFormed, E> {
        Ok(WellFormed)
    }

    fn visit_u128<E>(self, _: u128) -> Result<WellFormed, E> {
        Ok(WellFormed)
    }

    fn visit_f64<E>(self, _: f64) -> Result<WellFormed, E> {
        Ok(WellFormed)
    }

    fn visit_str<E>(self, _: &str) -> Result<WellFormed, E> {
        Ok(WellFormed)
    }

    fn visit_bytes<E>(self, _: &[u8]) -> Result<WellFormed, E> {
        Ok(WellFormed)
    }

    fn visit_unit<E>(self) -> Result<WellFormed, E> {
        Ok(WellFormed)
    }

    fn visit_none<E>(self) -> Result<WellFormed, E> {
        Ok(WellFormed)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<WellFormed, D::Error> {
        WellFormed::deserialize(d)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<WellFormed, D::Error> {
        WellFormed::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<WellFormed, A::Error> {
        while seq.next_element::<WellFormed>()?.is_some() {}
        Ok(WellFormed)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WellFormed, A::Error> {
        while map.next_entry::<WellFormed, WellFormed>()?.is_some() {}
        Ok(WellFormed)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<WellFormed, A::Error> {
        let (WellFormed, variant) = data.variant::<WellFormed>()?;
        variant.newtype_variant::<WellFormed>()
    }
}
