//! [`Value`]: a Python object as the engine holds it between Python calls.
//!
//! The plain data PySpark jobs pass between operators — `None`, `bool`, `int` (64-bit),
//! `float`, `str`, `bytes`, and tuples and lists of them — become Rust values: the engine
//! hashes and compares keys, shuffles, windows and checkpoints them without the GIL.
//! Anything else (a dict, a big int, a `Row`, an object of the job's own class) is kept
//! pickled and unpickled when a Python function receives it; as a key it is compared by
//! its pickled bytes.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use lockgate_core::codec::CodecError;
use lockgate_core::Codec;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyList, PyString, PyTuple};

/// A Python value held by the engine (see the module's documentation).
#[derive(Clone, Debug)]
pub enum Value {
    /// `None`.
    None,
    /// `True` or `False`.
    Bool(bool),
    /// An `int` that fits 64 bits.
    Int(i64),
    /// A `float`.
    Float(f64),
    /// A `str`.
    Str(Arc<str>),
    /// A `bytes`.
    Bytes(Arc<[u8]>),
    /// A `tuple` (exactly; a subclass such as a named tuple is pickled).
    Tuple(Arc<[Value]>),
    /// A `list` (exactly).
    List(Arc<[Value]>),
    /// Any other object, pickled.
    Pickled(Arc<[u8]>),
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        use Value::*;
        match (self, other) {
            (None, None) => true,
            (Bool(a), Bool(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (Float(a), Float(b)) => a.to_bits() == b.to_bits(),
            (Str(a), Str(b)) => a == b,
            (Bytes(a), Bytes(b)) | (Pickled(a), Pickled(b)) => a == b,
            (Tuple(a), Tuple(b)) | (List(a), List(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Value::None => {}
            Value::Bool(b) => b.hash(state),
            Value::Int(i) => i.hash(state),
            Value::Float(f) => f.to_bits().hash(state),
            Value::Str(s) => s.hash(state),
            Value::Bytes(b) | Value::Pickled(b) => b.hash(state),
            Value::Tuple(v) | Value::List(v) => v.hash(state),
        }
    }
}

impl Value {
    /// A pair `(key, value)`: the element of a keyed operation. An error names what
    /// the element was instead.
    pub fn into_pair(self) -> Result<(Value, Value), String> {
        match self {
            Value::Tuple(items) | Value::List(items) if items.len() == 2 => {
                Ok((items[0].clone(), items[1].clone()))
            }
            other => Err(format!(
                "a keyed operation needs (key, value) pairs, got {}",
                other.kind()
            )),
        }
    }

    /// The tuple `(a, b)`.
    pub fn pair(a: Value, b: Value) -> Value {
        Value::Tuple(Arc::from(vec![a, b]))
    }

    /// The Python type name of the value, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "a bool",
            Value::Int(_) => "an int",
            Value::Float(_) => "a float",
            Value::Str(_) => "a str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(t) if t.len() == 2 => "a tuple of 2",
            Value::Tuple(_) => "a tuple of other than 2 items",
            Value::List(_) => "a list",
            Value::Pickled(_) => "an object (neither a tuple nor a list)",
        }
    }

    /// Converts a Python object.
    pub fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
        if obj.is_none() {
            return Ok(Value::None);
        }
        // `bool` first: it is a subclass of `int`.
        if obj.is_exact_instance_of::<PyBool>() {
            return Ok(Value::Bool(obj.is_truthy()?));
        }
        if obj.is_exact_instance_of::<PyInt>() {
            if let Ok(i) = obj.extract::<i64>() {
                return Ok(Value::Int(i));
            }
        } else if obj.is_exact_instance_of::<PyString>() {
            return Ok(Value::Str(Arc::from(&*obj.cast::<PyString>()?.to_cow()?)));
        } else if obj.is_exact_instance_of::<PyFloat>() {
            return Ok(Value::Float(obj.extract::<f64>()?));
        } else if obj.is_exact_instance_of::<PyTuple>() {
            let t = obj.cast::<PyTuple>()?;
            let items = t
                .iter()
                .map(|x| Value::from_py(&x))
                .collect::<PyResult<Vec<_>>>()?;
            return Ok(Value::Tuple(Arc::from(items)));
        } else if obj.is_exact_instance_of::<PyList>() {
            let l = obj.cast::<PyList>()?;
            let items = l
                .iter()
                .map(|x| Value::from_py(&x))
                .collect::<PyResult<Vec<_>>>()?;
            return Ok(Value::List(Arc::from(items)));
        } else if obj.is_exact_instance_of::<PyBytes>() {
            return Ok(Value::Bytes(Arc::from(obj.cast::<PyBytes>()?.as_bytes())));
        }
        let bytes = pickle_dumps(obj.py())?.call1((obj, PICKLE_PROTOCOL))?;
        Ok(Value::Pickled(Arc::from(
            bytes.cast::<PyBytes>()?.as_bytes(),
        )))
    }

    /// The Python object.
    pub fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self {
            Value::None => py.None().into_bound(py),
            Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
            Value::Int(i) => i.into_pyobject(py)?.into_any(),
            Value::Float(f) => f.into_pyobject(py)?.into_any(),
            Value::Str(s) => PyString::new(py, s).into_any(),
            Value::Bytes(b) => PyBytes::new(py, b).into_any(),
            Value::Tuple(items) => {
                let items = items
                    .iter()
                    .map(|v| v.to_py(py))
                    .collect::<PyResult<Vec<_>>>()?;
                PyTuple::new(py, items)?.into_any()
            }
            Value::List(items) => {
                let items = items
                    .iter()
                    .map(|v| v.to_py(py))
                    .collect::<PyResult<Vec<_>>>()?;
                PyList::new(py, items)?.into_any()
            }
            Value::Pickled(b) => pickle_loads(py)?.call1((PyBytes::new(py, b),))?,
        })
    }
}

/// `values` as a Python list.
pub fn py_list<'py>(py: Python<'py>, values: &[Value]) -> PyResult<Bound<'py, PyList>> {
    let items = values
        .iter()
        .map(|v| v.to_py(py))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
}

/// The pickle protocol of pickled values (5: Python 3.8 and later).
const PICKLE_PROTOCOL: i32 = 5;

static DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn pickle_dumps(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    DUMPS.import(py, "pickle", "dumps")
}

fn pickle_loads(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    LOADS.import(py, "pickle", "loads")
}

/// Checkpoints hold values in this encoding (tag byte, then the payload); pickled
/// objects as their pickle bytes.
impl Codec for Value {
    const NAME: &'static str = "python_value";

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::None => out.push(0),
            Value::Bool(b) => out.extend([1, u8::from(*b)]),
            Value::Int(i) => {
                out.push(2);
                i.encode(out);
            }
            Value::Float(f) => {
                out.push(3);
                out.extend(f.to_bits().to_le_bytes());
            }
            Value::Str(s) => {
                out.push(4);
                encode_bytes(s.as_bytes(), out);
            }
            Value::Bytes(b) => {
                out.push(5);
                encode_bytes(b, out);
            }
            Value::Tuple(items) | Value::List(items) => {
                out.push(if matches!(self, Value::Tuple(_)) {
                    6
                } else {
                    7
                });
                (items.len() as u64).encode(out);
                for v in items.iter() {
                    v.encode(out);
                }
            }
            Value::Pickled(b) => {
                out.push(8);
                encode_bytes(b, out);
            }
        }
    }

    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        let tag = take(input, 1)?[0];
        Ok(match tag {
            0 => Value::None,
            1 => Value::Bool(take(input, 1)?[0] != 0),
            2 => Value::Int(i64::decode(input)?),
            3 => {
                let b: [u8; 8] = take(input, 8)?
                    .try_into()
                    .map_err(|_| CodecError::new("python_value", "a float of 8 bytes"))?;
                Value::Float(f64::from_bits(u64::from_le_bytes(b)))
            }
            4 => {
                let b = decode_bytes(input)?;
                let s = std::str::from_utf8(b)
                    .map_err(|e| CodecError::new("python_value", e.to_string()))?;
                Value::Str(Arc::from(s))
            }
            5 => Value::Bytes(Arc::from(decode_bytes(input)?)),
            6 | 7 => {
                let n = u64::decode(input)?;
                let mut items = Vec::with_capacity((n as usize).min(1 << 16));
                for _ in 0..n {
                    items.push(Value::decode(input)?);
                }
                if tag == 6 {
                    Value::Tuple(Arc::from(items))
                } else {
                    Value::List(Arc::from(items))
                }
            }
            8 => Value::Pickled(Arc::from(decode_bytes(input)?)),
            t => {
                return Err(CodecError::new(
                    "python_value",
                    format!("unknown tag {t} (a checkpoint of a newer Lockgate?)"),
                ))
            }
        })
    }
}

fn encode_bytes(b: &[u8], out: &mut Vec<u8>) {
    (b.len() as u64).encode(out);
    out.extend_from_slice(b);
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], CodecError> {
    if input.len() < n {
        return Err(CodecError::new("python_value", "the value is cut short"));
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

fn decode_bytes<'a>(input: &mut &'a [u8]) -> Result<&'a [u8], CodecError> {
    let n = u64::decode(input)?;
    let n = usize::try_from(n).map_err(|_| CodecError::new("python_value", "a length"))?;
    take(input, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: &Value) -> Value {
        let mut out = Vec::new();
        v.encode(&mut out);
        let mut input = &out[..];
        let back = Value::decode(&mut input).unwrap();
        assert!(input.is_empty());
        back
    }

    #[test]
    fn the_codec_round_trips_every_kind() {
        let values = vec![
            Value::None,
            Value::Bool(true),
            Value::Int(-42),
            Value::Float(2.5),
            Value::Str(Arc::from("héllo")),
            Value::Bytes(Arc::from(&b"\x00\x01"[..])),
            Value::pair(Value::Str(Arc::from("a")), Value::Int(1)),
            Value::List(Arc::from(vec![Value::Int(1), Value::None])),
            Value::Pickled(Arc::from(&b"\x80\x05K\x01."[..])),
        ];
        for v in &values {
            assert_eq!(&round_trip(v), v);
        }
    }

    #[test]
    fn a_truncated_value_is_an_error() {
        let mut out = Vec::new();
        Value::Str(Arc::from("hello")).encode(&mut out);
        let mut input = &out[..out.len() - 1];
        assert!(Value::decode(&mut input).is_err());
    }

    #[test]
    fn python_objects_convert_both_ways() {
        Python::initialize();
        Python::attach(|py| {
            let src = "(1, 'a', 2.5, None, True, b'x', [1, (2, 3)], {'k': 1}, 10**30)";
            let obj = py
                .eval(&std::ffi::CString::new(src).unwrap(), None, None)
                .unwrap();
            let v = Value::from_py(&obj).unwrap();
            let Value::Tuple(items) = &v else {
                panic!("{v:?}")
            };
            assert_eq!(items[0], Value::Int(1));
            assert!(matches!(items[7], Value::Pickled(_)), "a dict is pickled");
            assert!(
                matches!(items[8], Value::Pickled(_)),
                "a big int is pickled"
            );
            let back = v.to_py(py).unwrap();
            assert!(back.eq(&obj).unwrap());
        });
    }

    #[test]
    fn only_pairs_are_keyed_elements() {
        let p = Value::pair(Value::Int(1), Value::Int(2));
        assert_eq!(p.into_pair().unwrap(), (Value::Int(1), Value::Int(2)));
        let err = Value::Int(3).into_pair().unwrap_err();
        assert!(err.contains("got an int"), "{err}");
    }
}
