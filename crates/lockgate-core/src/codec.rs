//! [`Codec`]: the compact binary encoding of checkpointed values (operator state, window
//! buffers, input descriptors).
//!
//! Integers are little-endian and fixed-size, lengths are `u64`, strings are UTF-8.
//! Implemented for the standard types a stream usually carries (integers, floats, `bool`,
//! `char`, `String`, `PathBuf`, `Option`, `Vec`, tuples up to four); implement it for your
//! own state types to checkpoint them.

use std::path::PathBuf;

/// Decoding failed: the bytes are not what the type expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {what}: {reason}")]
pub struct CodecError {
    /// The type or field being decoded.
    pub what: &'static str,
    /// Why it failed.
    pub reason: String,
}

impl CodecError {
    /// A decoding error for `what`.
    pub fn new(what: &'static str, reason: impl Into<String>) -> Self {
        CodecError {
            what,
            reason: reason.into(),
        }
    }
}

/// A value that can be written to and read back from a checkpoint.
pub trait Codec: Sized {
    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads one value from the front of `input`, advancing it.
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError>;
}

/// Encodes a value into a new buffer.
pub fn to_bytes<T: Codec>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    v.encode(&mut out);
    out
}

/// Decodes a value that must use all of `bytes`.
pub fn from_bytes<T: Codec>(mut bytes: &[u8]) -> Result<T, CodecError> {
    let v = T::decode(&mut bytes)?;
    if !bytes.is_empty() {
        return Err(CodecError::new(
            std::any::type_name::<T>(),
            format!("{} trailing bytes", bytes.len()),
        ));
    }
    Ok(v)
}

fn take<'a>(input: &mut &'a [u8], n: usize, what: &'static str) -> Result<&'a [u8], CodecError> {
    if input.len() < n {
        return Err(CodecError::new(
            what,
            format!("needs {n} bytes, {} left", input.len()),
        ));
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

macro_rules! codec_int {
    ($($t:ty),*) => {$(
        impl Codec for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
                let b = take(input, std::mem::size_of::<$t>(), stringify!($t))?;
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(b);
                Ok(<$t>::from_le_bytes(a))
            }
        }
    )*};
}

codec_int!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128, f32, f64);

impl Codec for usize {
    fn encode(&self, out: &mut Vec<u8>) {
        (*self as u64).encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        usize::try_from(u64::decode(input)?).map_err(|e| CodecError::new("usize", e.to_string()))
    }
}

impl Codec for isize {
    fn encode(&self, out: &mut Vec<u8>) {
        (*self as i64).encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        isize::try_from(i64::decode(input)?).map_err(|e| CodecError::new("isize", e.to_string()))
    }
}

impl Codec for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        match take(input, 1, "bool")?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(CodecError::new("bool", format!("byte {b}"))),
        }
    }
}

impl Codec for char {
    fn encode(&self, out: &mut Vec<u8>) {
        u32::from(*self).encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        let n = u32::decode(input)?;
        char::from_u32(n).ok_or_else(|| CodecError::new("char", format!("{n:#x}")))
    }
}

impl Codec for () {
    fn encode(&self, _out: &mut Vec<u8>) {}
    fn decode(_input: &mut &[u8]) -> Result<Self, CodecError> {
        Ok(())
    }
}

fn decode_len(input: &mut &[u8], what: &'static str) -> Result<usize, CodecError> {
    let n = u64::decode(input)?;
    let n = usize::try_from(n).map_err(|_| CodecError::new(what, format!("length {n}")))?;
    if n > input.len().saturating_mul(8).max(1 << 16) {
        // A length far beyond the remaining bytes means corrupt input, not a huge value.
        return Err(CodecError::new(
            what,
            format!("length {n} exceeds the input"),
        ));
    }
    Ok(n)
}

/// Writes a string as its length, then its UTF-8 bytes.
fn encode_str(s: &str, out: &mut Vec<u8>) {
    (s.len() as u64).encode(out);
    out.extend_from_slice(s.as_bytes());
}

/// Reads what [`encode_str`] wrote (borrowed from the input).
fn decode_str<'a>(input: &mut &'a [u8], what: &'static str) -> Result<&'a str, CodecError> {
    let n = decode_len(input, what)?;
    let b = take(input, n, what)?;
    std::str::from_utf8(b).map_err(|e| CodecError::new(what, e.to_string()))
}

impl Codec for String {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_str(self, out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        decode_str(input, "String").map(str::to_owned)
    }
}

/// Encoded as a `String` is (length, then the UTF-8 bytes): the two are interchangeable
/// in checkpoints.
impl Codec for compact_str::CompactString {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_str(self, out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        decode_str(input, "CompactString").map(compact_str::CompactString::new)
    }
}

impl Codec for PathBuf {
    fn encode(&self, out: &mut Vec<u8>) {
        self.to_string_lossy().into_owned().encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        Ok(PathBuf::from(String::decode(input)?))
    }
}

impl<T: Codec> Codec for Option<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.encode(out);
            }
        }
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        match take(input, 1, "Option")?[0] {
            0 => Ok(None),
            1 => Ok(Some(T::decode(input)?)),
            b => Err(CodecError::new("Option", format!("tag {b}"))),
        }
    }
}

impl<T: Codec> Codec for Vec<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        (self.len() as u64).encode(out);
        for v in self {
            v.encode(out);
        }
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        let n = decode_len(input, "Vec")?;
        let mut v = Vec::with_capacity(n.min(1 << 20));
        for _ in 0..n {
            v.push(T::decode(input)?);
        }
        Ok(v)
    }
}

impl<T: Codec> Codec for Box<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        (**self).encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        Ok(Box::new(T::decode(input)?))
    }
}

macro_rules! codec_tuple {
    ($($name:ident $idx:tt),+) => {
        impl<$($name: Codec),+> Codec for ($($name,)+) {
            fn encode(&self, out: &mut Vec<u8>) {
                $(self.$idx.encode(out);)+
            }
            fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
                Ok(($($name::decode(input)?,)+))
            }
        }
    };
}

codec_tuple!(A 0);
codec_tuple!(A 0, B 1);
codec_tuple!(A 0, B 1, C 2);
codec_tuple!(A 0, B 1, C 2, D 3);

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip<T: Codec + PartialEq + std::fmt::Debug>(v: T) {
        assert_eq!(from_bytes::<T>(&to_bytes(&v)).unwrap(), v);
    }

    #[test]
    fn roundtrips_std_types() {
        roundtrip(42u64);
        roundtrip(-7i32);
        roundtrip(1.5f64);
        roundtrip(true);
        roundtrip('é');
        roundtrip(String::from("héllo"));
        roundtrip(PathBuf::from("/a/b"));
        roundtrip(Some((1u8, String::from("x"))));
        roundtrip(vec![
            (String::from("k"), (3i64, false)),
            (String::new(), (0, true)),
        ]);
        roundtrip(());
    }

    #[test]
    fn compact_strings_encode_as_strings() {
        for s in [
            "",
            "short",
            "a string longer than twenty-four bytes, kept on the heap",
        ] {
            let compact = compact_str::CompactString::new(s);
            assert_eq!(to_bytes(&compact), to_bytes(&s.to_string()));
            roundtrip(compact);
        }
        assert!(from_bytes::<compact_str::CompactString>(&to_bytes(&vec![0xffu8])).is_err());
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        let bytes = to_bytes(&vec![String::from("abc")]);
        for cut in 0..bytes.len() {
            assert!(from_bytes::<Vec<String>>(&bytes[..cut]).is_err());
        }
        assert!(from_bytes::<Vec<String>>(&[255; 16]).is_err());
        assert!(from_bytes::<u8>(&[1, 2]).is_err());
    }
}
