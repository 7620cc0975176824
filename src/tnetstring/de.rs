//! serde deserialization straight from tnetstring bytes.
//!
//! The deserializer walks the input without building a [`Value`] tree, and hands
//! out `&'de str` / `&'de [u8]` slices of the input, so borrowed fields cost no
//! copy. Mapping (see [`from_slice`]): dict → struct/map, list → seq/tuple, null →
//! `None`/unit, `,` → str/bytes (or a seq of `u8`), `#` → any integer type (range
//! checked), `^` → f32/f64, `!` → bool; enums from a string (unit variant) or a
//! single-key dict `{variant: value}`.

use std::borrow::Cow;
use std::fmt::{self, Display};

use serde::de::value::{BorrowedBytesDeserializer, BorrowedStrDeserializer, SeqDeserializer};
use serde::de::{
    self, DeserializeSeed, Deserializer as _, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};
use serde::Deserialize;

use super::{
    parse_bool, parse_float, parse_integer, parse_null, split_element, Dict, Element, Error, Value,
    DEFAULT_MAX_DEPTH,
};

impl de::Error for Error {
    fn custom<T: Display>(msg: T) -> Self {
        Error::Message(msg.to_string())
    }
}

/// Deserializes a `T` from exactly one tnetstring value (trailing bytes are an
/// error). Borrowed `&str` / `&[u8]` fields point into `input`.
///
/// Serde visits nested values by recursion, so nesting here stays capped at
/// [`DEFAULT_MAX_DEPTH`](super::DEFAULT_MAX_DEPTH) lists/dicts (deeper input is an
/// [`Error::TooDeep`]); for deeper trees parse with
/// [`parse_with_max_depth`](super::parse_with_max_depth), which does not recurse.
///
/// ```
/// #[derive(serde::Deserialize, Debug, PartialEq)]
/// struct Headers<'a> {
///     #[serde(rename = "METHOD")]
///     method: &'a str,
///     #[serde(rename = "DOWNLOAD_CREDITS")]
///     credits: Option<&'a str>,
/// }
/// let h: Headers = mongrel2_transceiver::tnetstring::from_slice(b"16:6:METHOD,4:JSON,}").unwrap();
/// assert_eq!(h, Headers { method: "JSON", credits: None });
/// ```
pub fn from_slice<'de, T: Deserialize<'de>>(input: &'de [u8]) -> Result<T, Error> {
    let mut de = Deserializer {
        input,
        base: 0,
        pos: 0,
        depth: 0,
        max_depth: DEFAULT_MAX_DEPTH,
    };
    let value = T::deserialize(&mut de)?;
    if de.pos < input.len() {
        return Err(Error::TrailingBytes { offset: de.pos });
    }
    Ok(value)
}

/// Reads consecutive elements from `input`, which starts at `base` in the
/// caller's input; `depth` counts the containers around it.
struct Deserializer<'de> {
    input: &'de [u8],
    base: usize,
    pos: usize,
    depth: usize,
    max_depth: usize,
}

impl<'de> Deserializer<'de> {
    fn peek(&self) -> Result<Element<'de>, Error> {
        split_element(&self.input[self.pos..], self.base + self.pos)
    }

    fn next_element(&mut self) -> Result<Element<'de>, Error> {
        let el = self.peek()?;
        self.pos += el.consumed;
        Ok(el)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    /// A deserializer over a container's payload, one level deeper.
    fn child(&self, el: &Element<'de>) -> Result<Deserializer<'de>, Error> {
        if self.depth >= self.max_depth {
            return Err(Error::TooDeep {
                offset: el.start,
                max_depth: self.max_depth,
            });
        }
        Ok(Deserializer {
            input: el.payload,
            base: el.payload_offset,
            pos: 0,
            depth: self.depth + 1,
            max_depth: self.max_depth,
        })
    }

    fn visit<V: Visitor<'de>>(&mut self, el: Element<'de>, visitor: V) -> Result<V::Value, Error> {
        match el.tag {
            b',' => match std::str::from_utf8(el.payload) {
                Ok(s) => visitor.visit_borrowed_str(s),
                Err(_) => visitor.visit_borrowed_bytes(el.payload),
            },
            b'#' => visitor.visit_i64(parse_integer(el.payload, el.payload_offset)?),
            b'^' => visitor.visit_f64(parse_float(el.payload, el.payload_offset)?),
            b'!' => visitor.visit_bool(parse_bool(el.payload, el.payload_offset)?),
            b'~' => {
                parse_null(el.payload, el.payload_offset)?;
                visitor.visit_unit()
            }
            b']' => {
                let mut child = self.child(&el)?;
                let value = visitor.visit_seq(&mut child)?;
                child.expect_consumed("list")?;
                Ok(value)
            }
            b'}' => {
                let mut child = self.child(&el)?;
                let value = visitor.visit_map(&mut child)?;
                child.expect_consumed("dict")?;
                Ok(value)
            }
            tag => Err(Error::UnknownTag {
                offset: el.payload_offset + el.payload.len(),
                tag,
            }),
        }
    }

    fn expect_consumed(&self, what: &str) -> Result<(), Error> {
        if self.at_end() {
            Ok(())
        } else {
            Err(Error::Message(format!(
                "{what} at byte {} has more elements than expected",
                self.base + self.pos
            )))
        }
    }

    /// Skips one element, checking it the way [`super::parse`] would.
    fn skip(&mut self) -> Result<(), Error> {
        let el = self.next_element()?;
        match el.tag {
            b',' => Ok(()),
            b'#' => parse_integer(el.payload, el.payload_offset).map(drop),
            b'^' => parse_float(el.payload, el.payload_offset).map(drop),
            b'!' => parse_bool(el.payload, el.payload_offset).map(drop),
            b'~' => parse_null(el.payload, el.payload_offset),
            b']' => {
                let mut child = self.child(&el)?;
                while !child.at_end() {
                    child.skip()?;
                }
                Ok(())
            }
            b'}' => {
                let mut child = self.child(&el)?;
                while !child.at_end() {
                    child.key()?;
                    child.skip()?;
                }
                Ok(())
            }
            tag => Err(Error::UnknownTag {
                offset: el.payload_offset + el.payload.len(),
                tag,
            }),
        }
    }

    /// Reads a dict key and checks that a value follows it.
    fn key(&mut self) -> Result<&'de [u8], Error> {
        let offset = self.base + self.pos;
        let el = self.next_element()?;
        if el.tag != b',' {
            return Err(Error::NonStringKey { offset });
        }
        if self.at_end() {
            return Err(Error::MissingValue {
                offset: self.base + self.pos,
            });
        }
        Ok(el.payload)
    }
}

impl<'de> de::Deserializer<'de> for &mut Deserializer<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let el = self.next_element()?;
        self.visit(el, visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let el = self.peek()?;
        if el.tag == b'~' {
            self.pos += el.consumed;
            parse_null(el.payload, el.payload_offset)?;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let el = self.next_element()?;
        if el.tag == b',' {
            visitor.visit_borrowed_bytes(el.payload)
        } else {
            self.visit(el, visitor)
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_bytes(visitor)
    }

    /// A `,` string also reads as a sequence of bytes, so `Vec<u8>` works
    /// without `serde_bytes`.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let el = self.next_element()?;
        if el.tag == b',' {
            let mut seq = SeqDeserializer::<_, Error>::new(el.payload.iter().copied());
            let value = visitor.visit_seq(&mut seq)?;
            seq.end()?;
            Ok(value)
        } else {
            self.visit(el, visitor)
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let el = self.next_element()?;
        match el.tag {
            b',' => {
                let name = std::str::from_utf8(el.payload).map_err(|_| {
                    Error::Message(format!(
                        "enum variant name at byte {} is not UTF-8",
                        el.payload_offset
                    ))
                })?;
                visitor.visit_enum(BorrowedStrDeserializer::<Error>::new(name))
            }
            b'}' => {
                let mut child = self.child(&el)?;
                if child.at_end() {
                    return Err(Error::Message(format!(
                        "empty dict at byte {} is not an enum variant",
                        el.payload_offset
                    )));
                }
                let key = child.key()?;
                let name = std::str::from_utf8(key).map_err(|_| {
                    Error::Message(format!(
                        "enum variant name at byte {} is not UTF-8",
                        el.payload_offset
                    ))
                })?;
                let value = visitor.visit_enum(Enum {
                    name,
                    de: &mut child,
                })?;
                child.expect_consumed("enum dict")?;
                Ok(value)
            }
            _ => Err(Error::Message(format!(
                "expected a string or a single-key dict for an enum at byte {}",
                el.payload_offset
            ))),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.skip()?;
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        unit unit_struct map struct identifier
    }
}

impl<'de> SeqAccess<'de> for Deserializer<'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if self.at_end() {
            return Ok(None);
        }
        seed.deserialize(self).map(Some)
    }
}

impl<'de> MapAccess<'de> for Deserializer<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        if self.at_end() {
            return Ok(None);
        }
        let key = self.key()?;
        seed.deserialize(KeyDeserializer { key }).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(self)
    }
}

/// A dict key: always a byte string, offered as `&str` when it is UTF-8.
struct KeyDeserializer<'de> {
    key: &'de [u8],
}

impl<'de> de::Deserializer<'de> for KeyDeserializer<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match std::str::from_utf8(self.key) {
            Ok(s) => visitor.visit_borrowed_str(s),
            Err(_) => visitor.visit_borrowed_bytes(self.key),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_borrowed_bytes(self.key)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_borrowed_bytes(self.key)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match std::str::from_utf8(self.key) {
            Ok(s) => {
                BorrowedStrDeserializer::<Error>::new(s).deserialize_enum(name, variants, visitor)
            }
            Err(_) => BorrowedBytesDeserializer::<Error>::new(self.key).deserialize_any(visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        option unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

/// An enum given as `{variant: value}`; `de` is positioned at the value.
struct Enum<'a, 'de> {
    name: &'de str,
    de: &'a mut Deserializer<'de>,
}

impl<'a, 'de> EnumAccess<'de> for Enum<'a, 'de> {
    type Error = Error;
    type Variant = &'a mut Deserializer<'de>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Error> {
        let variant = seed.deserialize(self.name.into_deserializer())?;
        Ok((variant, self.de))
    }
}

impl<'de> VariantAccess<'de> for &mut Deserializer<'de> {
    type Error = Error;

    /// `{variant: null}` is accepted for a unit variant too.
    fn unit_variant(self) -> Result<(), Error> {
        <()>::deserialize(self)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }
}

/// Builds a [`Value`] from any serde format; with tnetstring input, byte
/// strings stay borrowed.
impl<'de> Deserialize<'de> for Value<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tnetstring value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value<'de>, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value<'de>, E> {
        Ok(Value::Integer(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value<'de>, E> {
        i64::try_from(v)
            .map(Value::Integer)
            .map_err(|_| E::custom("integer does not fit a tnetstring i64"))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value<'de>, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value<'de>, E> {
        Ok(Value::Bytes(Cow::Owned(v.as_bytes().to_vec())))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Value<'de>, E> {
        Ok(Value::Bytes(Cow::Borrowed(v.as_bytes())))
    }

    fn visit_string<E>(self, v: String) -> Result<Value<'de>, E> {
        Ok(Value::Bytes(Cow::Owned(v.into_bytes())))
    }

    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value<'de>, E> {
        Ok(Value::Bytes(Cow::Owned(v.to_vec())))
    }

    fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Value<'de>, E> {
        Ok(Value::Bytes(Cow::Borrowed(v)))
    }

    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Value<'de>, E> {
        Ok(Value::Bytes(Cow::Owned(v)))
    }

    fn visit_none<E>(self) -> Result<Value<'de>, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value<'de>, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value<'de>, D::Error> {
        Value::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value<'de>, A::Error> {
        // Not sized from size_hint: it may come from the peer.
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value<'de>, A::Error> {
        let mut dict = Dict::new();
        while let Some((KeyBytes(k), v)) = map.next_entry::<KeyBytes<'de>, Value<'de>>()? {
            dict.push(k, v);
        }
        Ok(Value::Dict(dict))
    }
}

/// A dict key read from any format as bytes, borrowed when possible.
struct KeyBytes<'de>(Cow<'de, [u8]>);

impl<'de> Deserialize<'de> for KeyBytes<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = KeyBytes<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string dict key")
            }

            fn visit_str<E>(self, v: &str) -> Result<KeyBytes<'de>, E> {
                Ok(KeyBytes(Cow::Owned(v.as_bytes().to_vec())))
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<KeyBytes<'de>, E> {
                Ok(KeyBytes(Cow::Borrowed(v.as_bytes())))
            }

            fn visit_string<E>(self, v: String) -> Result<KeyBytes<'de>, E> {
                Ok(KeyBytes(Cow::Owned(v.into_bytes())))
            }

            fn visit_bytes<E>(self, v: &[u8]) -> Result<KeyBytes<'de>, E> {
                Ok(KeyBytes(Cow::Owned(v.to_vec())))
            }

            fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<KeyBytes<'de>, E> {
                Ok(KeyBytes(Cow::Borrowed(v)))
            }

            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<KeyBytes<'de>, E> {
                Ok(KeyBytes(Cow::Owned(v)))
            }
        }
        d.deserialize_bytes(KeyVisitor)
    }
}
