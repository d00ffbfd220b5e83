//! [`Codec`]: the compact binary encoding of checkpointed values (operator state, window
//! buffers, input descriptors).
//!
//! Integers are little-endian and fixed-size, lengths are `u64`, strings are UTF-8.
//! Implemented for the standard types a stream usually carries (integers, floats, `bool`,
//! `char`, `String`, `PathBuf`, `Option`, `Vec`, tuples up to four); implement it for your
//! own state types to checkpoint them.
//!
//! Every codec type names itself ([`Codec::NAME`], [`Codec::VERSION`]): checkpoints
//! record that *schema*, never Rust's type path (which moves with modules and compiler
//! versions), so a state type can move to another module or crate and its checkpoints
//! still recover. A type whose encoding changes bumps its version and decodes the older
//! one in [`Codec::decode_version`]; recovery calls it for data the older version
//! wrote. Types with the same encoding may share a name (`String`, `CompactString` and
//! `PathBuf` are all `string`, `usize` is `u64`), so switching between them keeps
//! checkpoints.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

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
///
/// ```
/// use lockgate_core::codec::{from_bytes, schema_of, to_bytes, Codec, CodecError};
///
/// /// A user's session state, checkpointed by `update_state_by_key`.
/// #[derive(Debug, PartialEq)]
/// struct Session {
///     clicks: u64,
///     last_page: String,
/// }
///
/// impl Codec for Session {
///     // The name checkpoints record: keep it when the type moves or is renamed.
///     const NAME: &'static str = "Session";
///     fn encode(&self, out: &mut Vec<u8>) {
///         self.clicks.encode(out);
///         self.last_page.encode(out);
///     }
///     fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
///         Ok(Session {
///             clicks: Codec::decode_stored(input)?,
///             last_page: Codec::decode_stored(input)?,
///         })
///     }
/// }
///
/// let s = Session { clicks: 3, last_page: "/cart".into() };
/// assert_eq!(from_bytes::<Session>(&to_bytes(&s)).unwrap(), s);
/// assert_eq!(schema_of::<Vec<(String, Session)>>(), "vec<(string, Session)>");
/// ```
pub trait Codec: Sized {
    /// The type's stable name in checkpoints (letters, digits, `_`, `.`, `-`). Keep it
    /// when the type moves to another module or crate. A type whose checkpoints were
    /// written by Lockgate 0.1 (which recorded Rust's type paths) recovers them when
    /// its name is the last segment of that path (the type's Rust name).
    const NAME: &'static str;
    /// The version of the encoding, from 1. Bump it when `encode` changes, and decode
    /// the older versions' bytes in [`decode_version`](Self::decode_version).
    const VERSION: u32 = 1;
    /// Appends this type's schema to `out`: its name (with `@VERSION` from version 2),
    /// and for a type with type parameters their schemas (`vec<string>`). Generic types
    /// override it; see [`schema_of`].
    fn schema(out: &mut String) {
        named_schema(out, Self::NAME, Self::VERSION);
    }
    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads one value from the front of `input`, advancing it. Decode the fields of a
    /// composite type with [`decode_stored`](Self::decode_stored), so that a field
    /// type's older versions are migrated.
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError>;
    /// Reads one value that version `version` (older than [`VERSION`](Self::VERSION))
    /// of this type's encoding wrote: the migration recovery uses for a checkpoint
    /// written before the version was bumped. By default there is none (an error that
    /// says so: recovery then reports the operator and the way out).
    fn decode_version(version: u32, input: &mut &[u8]) -> Result<Self, CodecError> {
        let _ = input;
        Err(CodecError::new(
            Self::NAME,
            format!(
                "the checkpoint holds version {version} of `{}`, the code reads version {} and \
                 has no migration from it (implement Codec::decode_version)",
                Self::NAME,
                Self::VERSION
            ),
        ))
    }
    /// Reads one value as the checkpoint being read wrote it: with
    /// [`decode_version`](Self::decode_version) when that checkpoint recorded an older
    /// version of this type, otherwise with [`decode`](Self::decode).
    fn decode_stored(input: &mut &[u8]) -> Result<Self, CodecError> {
        // Version 1 has nothing older: the check costs nothing for most types.
        if Self::VERSION > 1 {
            if let Some(v) = stored_version(Self::NAME) {
                if v != Self::VERSION {
                    return Self::decode_version(v, input);
                }
            }
        }
        Self::decode(input)
    }
}

/// The schema of `T` as checkpoints record it (see [`Codec::schema`]).
pub fn schema_of<T: Codec>() -> String {
    let mut out = String::new();
    T::schema(&mut out);
    out
}

/// Appends `name`, with `@version` from version 2.
fn named_schema(out: &mut String, name: &str, version: u32) {
    out.push_str(name);
    if version > 1 {
        let _ = write!(out, "@{version}");
    }
}

/// Appends `name<A, B, ..>`: a generic type's schema.
pub fn generic_schema(out: &mut String, name: &str, version: u32, params: &[fn(&mut String)]) {
    named_schema(out, name, version);
    out.push('<');
    for (i, p) in params.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        p(out);
    }
    out.push('>');
}

/// The versions of the named types a checkpoint file recorded, by name (only
/// when some differ from the code's: the common case carries none).
pub type StoredVersions = Option<Arc<BTreeMap<String, u32>>>;

thread_local! {
    /// The versions of the checkpoint data being decoded on this thread.
    static STORED: RefCell<StoredVersions> = const { RefCell::new(None) };
}

/// The version of `name` the data being decoded was written with, when it differs
/// from the code's.
fn stored_version(name: &str) -> Option<u32> {
    STORED.with(|s| s.borrow().as_ref().and_then(|m| m.get(name).copied()))
}

/// Bytes read from a checkpoint, with the versions of the types that wrote them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// The encoded value.
    pub bytes: Vec<u8>,
    /// The recorded versions of the types that differ from the code's (`None`: none).
    pub versions: StoredVersions,
}

impl Stored {
    /// Bytes written by the code's own versions.
    pub fn current(bytes: Vec<u8>) -> Self {
        Stored {
            bytes,
            versions: None,
        }
    }

    /// Decodes a value that must use all the bytes, migrating the types the checkpoint
    /// recorded at an older version (see [`Codec::decode_stored`]).
    pub fn decode<T: Codec>(&self) -> Result<T, CodecError> {
        if self.versions.is_none() {
            return from_bytes(&self.bytes);
        }
        let before = STORED.with(|s| s.replace(self.versions.clone()));
        let out = from_bytes(&self.bytes);
        STORED.with(|s| *s.borrow_mut() = before);
        out
    }

    /// Other bytes of the same checkpoint file (a part of these).
    pub fn with_bytes(&self, bytes: Vec<u8>) -> Stored {
        Stored {
            bytes,
            versions: self.versions.clone(),
        }
    }
}

/// Encodes a value into a new buffer.
pub fn to_bytes<T: Codec>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    v.encode(&mut out);
    out
}

/// Decodes a value that must use all of `bytes`.
pub fn from_bytes<T: Codec>(mut bytes: &[u8]) -> Result<T, CodecError> {
    let v = T::decode_stored(&mut bytes)?;
    if !bytes.is_empty() {
        return Err(CodecError::new(
            T::NAME,
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
            const NAME: &'static str = stringify!($t);
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

/// Encoded as a `u64` (schema `u64`).
impl Codec for usize {
    const NAME: &'static str = "u64";
    fn encode(&self, out: &mut Vec<u8>) {
        (*self as u64).encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        usize::try_from(u64::decode(input)?).map_err(|e| CodecError::new("usize", e.to_string()))
    }
}

/// Encoded as an `i64` (schema `i64`).
impl Codec for isize {
    const NAME: &'static str = "i64";
    fn encode(&self, out: &mut Vec<u8>) {
        (*self as i64).encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        isize::try_from(i64::decode(input)?).map_err(|e| CodecError::new("isize", e.to_string()))
    }
}

impl Codec for bool {
    const NAME: &'static str = "bool";
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
    const NAME: &'static str = "char";
    fn encode(&self, out: &mut Vec<u8>) {
        u32::from(*self).encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        let n = u32::decode(input)?;
        char::from_u32(n).ok_or_else(|| CodecError::new("char", format!("{n:#x}")))
    }
}

impl Codec for () {
    const NAME: &'static str = "()";
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
    const NAME: &'static str = "string";
    fn encode(&self, out: &mut Vec<u8>) {
        encode_str(self, out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        decode_str(input, "String").map(str::to_owned)
    }
}

/// Encoded as a `String` is (length, then the UTF-8 bytes; schema `string`): the two are
/// interchangeable in checkpoints.
impl Codec for compact_str::CompactString {
    const NAME: &'static str = "string";
    fn encode(&self, out: &mut Vec<u8>) {
        encode_str(self, out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        decode_str(input, "CompactString").map(compact_str::CompactString::new)
    }
}

/// Encoded as its `String` (schema `string`).
impl Codec for PathBuf {
    const NAME: &'static str = "string";
    fn encode(&self, out: &mut Vec<u8>) {
        self.to_string_lossy().into_owned().encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        Ok(PathBuf::from(String::decode(input)?))
    }
}

impl<T: Codec> Codec for Option<T> {
    const NAME: &'static str = "option";
    fn schema(out: &mut String) {
        generic_schema(out, Self::NAME, Self::VERSION, &[T::schema]);
    }
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
            1 => Ok(Some(T::decode_stored(input)?)),
            b => Err(CodecError::new("Option", format!("tag {b}"))),
        }
    }
}

impl<T: Codec> Codec for Vec<T> {
    const NAME: &'static str = "vec";
    fn schema(out: &mut String) {
        generic_schema(out, Self::NAME, Self::VERSION, &[T::schema]);
    }
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
            v.push(T::decode_stored(input)?);
        }
        Ok(v)
    }
}

/// Encoded as the boxed value (its schema too).
impl<T: Codec> Codec for Box<T> {
    const NAME: &'static str = T::NAME;
    fn schema(out: &mut String) {
        T::schema(out);
    }
    fn encode(&self, out: &mut Vec<u8>) {
        (**self).encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        Ok(Box::new(T::decode_stored(input)?))
    }
}

macro_rules! codec_tuple {
    ($($name:ident $idx:tt),+) => {
        impl<$($name: Codec),+> Codec for ($($name,)+) {
            const NAME: &'static str = "tuple";
            /// `(A, B)`; a 1-tuple is `(A,)`.
            fn schema(out: &mut String) {
                out.push('(');
                let mut n = 0;
                $(
                    if n > 0 {
                        out.push_str(", ");
                    }
                    $name::schema(out);
                    n += 1;
                )+
                if n == 1 {
                    out.push(',');
                }
                out.push(')');
            }
            fn encode(&self, out: &mut Vec<u8>) {
                $(self.$idx.encode(out);)+
            }
            fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
                Ok(($($name::decode_stored(input)?,)+))
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
