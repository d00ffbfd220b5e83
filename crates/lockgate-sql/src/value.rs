//! What a SQL query keeps in state, in compact forms that are cheap to hash, move and
//! checkpoint: a group key as bytes ([`Key`], encoded column by column by
//! [`encode_keys`], decoded back to Arrow columns by [`decode_keys`]) and a group's
//! partial aggregates as [`Partials`] of typed [`Slot`]s, merged by [`Layout`].
//!
//! Both encodings are part of the checkpoint format (stable, this crate's own): a key
//! is, per column, a presence byte then the value — integers, timestamps and dates as
//! 8-byte little-endian `i64`, unsigned as `u64`, floats as `f64` bits (`-0.0` as `0.0`,
//! one NaN), booleans as a byte, text as a length (LEB128) and its UTF-8 bytes. Only
//! the types of [`supported`] are kept in state; a query grouping by another type is
//! refused at start.

use std::cmp::Ordering;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    UInt64Builder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, UInt64Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result;
use lockgate_core::{Codec, CodecError, CompactString};
use smallvec::SmallVec;

/// How a type's values are stored in state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    I64,
    U64,
    F64,
    Bool,
    Str,
}

fn class_of(dt: &DataType) -> Option<Class> {
    Some(match dt {
        DataType::Null
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::Date32
        | DataType::Date64
        | DataType::Timestamp(_, _) => Class::I64,
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => Class::U64,
        DataType::Float32 | DataType::Float64 => Class::F64,
        DataType::Boolean => Class::Bool,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Class::Str,
        _ => return None,
    })
}

/// True when values of `dt` can be group keys or aggregates in state.
pub fn supported(dt: &DataType) -> bool {
    class_of(dt).is_some()
}

/// `col` as its class's storage array (Int64, UInt64, Float64, Boolean or Utf8).
fn canonical(col: &ArrayRef, class: Class) -> Result<ArrayRef> {
    let to = match class {
        Class::I64 => DataType::Int64,
        Class::U64 => DataType::UInt64,
        Class::F64 => DataType::Float64,
        Class::Bool => DataType::Boolean,
        Class::Str => DataType::Utf8,
    };
    if col.data_type() == &to {
        return Ok(col.clone());
    }
    if col.data_type() == &DataType::Date32 {
        return Ok(cast(&cast(col, &DataType::Int32)?, &DataType::Int64)?);
    }
    Ok(cast(col, &to)?)
}

/// A storage array back as type `dt`.
fn restore(col: ArrayRef, dt: &DataType) -> Result<ArrayRef> {
    if col.data_type() == dt {
        return Ok(col);
    }
    match dt {
        DataType::Date32 => Ok(cast(&cast(&col, &DataType::Int32)?, dt)?),
        DataType::Null => Ok(datafusion::arrow::array::new_null_array(dt, col.len())),
        _ => Ok(cast(&col, dt)?),
    }
}

/// A group key: its columns' values, encoded (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub SmallVec<[u8; 24]>);

impl Codec for Key {
    const NAME: &'static str = "Key";
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.len().encode(out);
        out.extend_from_slice(&self.0);
    }
    fn decode(input: &mut &[u8]) -> std::result::Result<Self, CodecError> {
        let n = usize::decode(input)?;
        if n > input.len() {
            return Err(CodecError::new(
                "SQL key",
                format!("{n} bytes, {} left", input.len()),
            ));
        }
        let (head, rest) = input.split_at(n);
        *input = rest;
        Ok(Key(SmallVec::from_slice(head)))
    }
}

fn put_len(out: &mut SmallVec<[u8; 24]>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn take_len(input: &mut &[u8]) -> Option<usize> {
    let mut n = 0usize;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = input.split_first()?;
        *input = rest;
        n |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if input.len() < n {
        return None;
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Some(head)
}

fn canonical_f64(x: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else if x.is_nan() {
        f64::NAN
    } else {
        x
    }
}

/// The keys of `rows` rows whose key columns are `cols`.
pub fn encode_keys(cols: &[ArrayRef], rows: usize) -> Result<Vec<Key>> {
    let mut keys = vec![Key::default(); rows];
    for col in cols {
        let class = class_of(col.data_type()).unwrap_or(Class::Str);
        let col = canonical(col, class)?;
        for (r, key) in keys.iter_mut().enumerate() {
            let k = &mut key.0;
            if col.is_null(r) {
                k.push(0);
                continue;
            }
            k.push(1);
            match class {
                Class::I64 => {
                    k.extend_from_slice(&col.as_primitive::<Int64Type>().value(r).to_le_bytes())
                }
                Class::U64 => {
                    k.extend_from_slice(&col.as_primitive::<UInt64Type>().value(r).to_le_bytes())
                }
                Class::F64 => k.extend_from_slice(
                    &canonical_f64(col.as_primitive::<Float64Type>().value(r))
                        .to_bits()
                        .to_le_bytes(),
                ),
                Class::Bool => k.push(u8::from(col.as_boolean().value(r))),
                Class::Str => {
                    let s = col.as_string::<i32>().value(r);
                    put_len(k, s.len());
                    k.extend_from_slice(s.as_bytes());
                }
            }
        }
    }
    Ok(keys)
}

fn corrupt() -> datafusion::error::DataFusionError {
    datafusion::error::DataFusionError::Execution(
        "a group key in state does not decode with the query's key types (damaged state?)".into(),
    )
}

/// The key columns (of `types`) of `keys`.
pub fn decode_keys<'a>(
    keys: impl Iterator<Item = &'a Key> + Clone,
    types: &[DataType],
) -> Result<Vec<ArrayRef>> {
    let n = keys.clone().count();
    let classes: Vec<Class> = types
        .iter()
        .map(|t| class_of(t).unwrap_or(Class::Str))
        .collect();
    enum B {
        I(Int64Builder),
        U(UInt64Builder),
        F(Float64Builder),
        Bo(BooleanBuilder),
        S(StringBuilder),
    }
    let mut builders: Vec<B> = classes
        .iter()
        .map(|c| match c {
            Class::I64 => B::I(Int64Builder::with_capacity(n)),
            Class::U64 => B::U(UInt64Builder::with_capacity(n)),
            Class::F64 => B::F(Float64Builder::with_capacity(n)),
            Class::Bool => B::Bo(BooleanBuilder::with_capacity(n)),
            Class::Str => B::S(StringBuilder::with_capacity(n, n * 8)),
        })
        .collect();
    for key in keys {
        let mut input = key.0.as_slice();
        for b in &mut builders {
            let present = *take(&mut input, 1)
                .ok_or_else(corrupt)?
                .first()
                .ok_or_else(corrupt)?
                == 1;
            let eight = |input: &mut &[u8]| -> Result<[u8; 8]> {
                let mut a = [0u8; 8];
                a.copy_from_slice(take(input, 8).ok_or_else(corrupt)?);
                Ok(a)
            };
            match b {
                B::I(b) if present => b.append_value(i64::from_le_bytes(eight(&mut input)?)),
                B::U(b) if present => b.append_value(u64::from_le_bytes(eight(&mut input)?)),
                B::F(b) if present => {
                    b.append_value(f64::from_bits(u64::from_le_bytes(eight(&mut input)?)))
                }
                B::Bo(b) if present => {
                    b.append_value(take(&mut input, 1).ok_or_else(corrupt)? == [1])
                }
                B::S(b) if present => {
                    let len = take_len(&mut input).ok_or_else(corrupt)?;
                    let bytes = take(&mut input, len).ok_or_else(corrupt)?;
                    b.append_value(std::str::from_utf8(bytes).map_err(|_| corrupt())?);
                }
                B::I(b) => b.append_null(),
                B::U(b) => b.append_null(),
                B::F(b) => b.append_null(),
                B::Bo(b) => b.append_null(),
                B::S(b) => b.append_null(),
            }
        }
    }
    builders
        .into_iter()
        .zip(types)
        .map(|(b, t)| {
            let a: ArrayRef = match b {
                B::I(mut b) => Arc::new(b.finish()),
                B::U(mut b) => Arc::new(b.finish()),
                B::F(mut b) => Arc::new(b.finish()),
                B::Bo(mut b) => Arc::new(b.finish()),
                B::S(mut b) => Arc::new(b.finish()),
            };
            restore(a, t)
        })
        .collect()
}

/// One partial aggregate value.
#[derive(Clone, Debug, PartialEq)]
pub enum Slot {
    /// No value (no non-null input yet).
    Null,
    /// A signed integer (also timestamps and dates, raw).
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// Text.
    Str(CompactString),
}

impl Codec for Slot {
    const NAME: &'static str = "Slot";
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Slot::Null => out.push(0),
            Slot::Int(x) => {
                out.push(1);
                x.encode(out)
            }
            Slot::UInt(x) => {
                out.push(2);
                x.encode(out)
            }
            Slot::Float(x) => {
                out.push(3);
                x.encode(out)
            }
            Slot::Bool(x) => {
                out.push(4);
                x.encode(out)
            }
            Slot::Str(x) => {
                out.push(5);
                x.encode(out)
            }
        }
    }
    fn decode(input: &mut &[u8]) -> std::result::Result<Self, CodecError> {
        Ok(match u8::decode(input)? {
            0 => Slot::Null,
            1 => Slot::Int(Codec::decode_stored(input)?),
            2 => Slot::UInt(Codec::decode_stored(input)?),
            3 => Slot::Float(Codec::decode_stored(input)?),
            4 => Slot::Bool(Codec::decode_stored(input)?),
            5 => Slot::Str(Codec::decode_stored(input)?),
            t => {
                return Err(CodecError::new(
                    "SQL partial aggregate",
                    format!("unknown tag {t}"),
                ))
            }
        })
    }
}

impl Slot {
    fn add(&self, other: &Slot) -> Slot {
        match (self, other) {
            (Slot::Null, x) | (x, Slot::Null) => x.clone(),
            // Integer sums wrap on overflow, as Spark's non-ANSI sums.
            (Slot::Int(a), Slot::Int(b)) => Slot::Int(a.wrapping_add(*b)),
            (Slot::UInt(a), Slot::UInt(b)) => Slot::UInt(a.wrapping_add(*b)),
            (Slot::Float(a), Slot::Float(b)) => Slot::Float(a + b),
            (a, _) => a.clone(),
        }
    }

    fn cmp(&self, other: &Slot) -> Option<Ordering> {
        Some(match (self, other) {
            (Slot::Int(a), Slot::Int(b)) => a.cmp(b),
            (Slot::UInt(a), Slot::UInt(b)) => a.cmp(b),
            (Slot::Float(a), Slot::Float(b)) => a.total_cmp(b),
            (Slot::Bool(a), Slot::Bool(b)) => a.cmp(b),
            (Slot::Str(a), Slot::Str(b)) => a.cmp(b),
            _ => return None,
        })
    }

    fn pick(&self, other: &Slot, keep: Ordering) -> Slot {
        match (self, other) {
            (Slot::Null, x) | (x, Slot::Null) => x.clone(),
            (a, b) if b.cmp(a) == Some(keep) => b.clone(),
            (a, _) => a.clone(),
        }
    }
}

/// A group's partial aggregates: the rows it stands for first (a group whose count
/// stays 0 did not occur), then each aggregate's partial values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Partials(pub SmallVec<[Slot; 3]>);

impl Codec for Partials {
    const NAME: &'static str = "Partials";
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.len().encode(out);
        for s in &self.0 {
            s.encode(out);
        }
    }
    fn decode(input: &mut &[u8]) -> std::result::Result<Self, CodecError> {
        let n = usize::decode(input)?;
        if n > input.len() {
            return Err(CodecError::new(
                "SQL partials",
                format!("{n} values in {} bytes", input.len()),
            ));
        }
        (0..n)
            .map(|_| Slot::decode(input))
            .collect::<std::result::Result<_, _>>()
            .map(Partials)
    }
}

/// The partials of `rows` rows whose partial columns are `cols`.
pub fn read_partials(cols: &[ArrayRef], rows: usize) -> Result<Vec<Partials>> {
    let mut out = vec![Partials(SmallVec::with_capacity(cols.len())); rows];
    for col in cols {
        let class = class_of(col.data_type()).unwrap_or(Class::Str);
        let col = canonical(col, class)?;
        for (r, p) in out.iter_mut().enumerate() {
            p.0.push(if col.is_null(r) {
                Slot::Null
            } else {
                match class {
                    Class::I64 => Slot::Int(col.as_primitive::<Int64Type>().value(r)),
                    Class::U64 => Slot::UInt(col.as_primitive::<UInt64Type>().value(r)),
                    Class::F64 => Slot::Float(col.as_primitive::<Float64Type>().value(r)),
                    Class::Bool => Slot::Bool(col.as_boolean().value(r)),
                    Class::Str => Slot::Str(col.as_string::<i32>().value(r).into()),
                }
            });
        }
    }
    Ok(out)
}

/// The aggregate functions a streaming query keeps incrementally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agg {
    /// `count(...)`: partial counts add up.
    Count,
    /// `sum(x)`: partial sums add up (nulls ignored).
    Sum,
    /// `min(x)`.
    Min,
    /// `max(x)`.
    Max,
    /// `avg(x)`: a sum (as `Float64`) and a count, two partial values.
    Avg,
}

impl Agg {
    /// The aggregate of a DataFusion function name, if it is kept incrementally.
    pub fn of(name: &str) -> Option<Agg> {
        Some(match name {
            "count" => Agg::Count,
            "sum" => Agg::Sum,
            "min" => Agg::Min,
            "max" => Agg::Max,
            "avg" | "mean" => Agg::Avg,
            _ => return None,
        })
    }

    /// How many partial values it keeps.
    pub fn width(self) -> usize {
        if self == Agg::Avg {
            2
        } else {
            1
        }
    }
}

/// How a query's partial aggregates merge and finish.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The aggregates, in the query's order.
    pub aggs: Vec<Agg>,
}

impl Layout {
    /// Folds `b` into `a`.
    pub fn merge(&self, a: &mut Partials, b: &Partials) {
        if a.0.is_empty() {
            a.0.clone_from(&b.0);
            return;
        }
        if a.0.len() != b.0.len() {
            // Cannot happen: the state's operator name carries its layout (see
            // `state_signature`), so state of another layout is never read into it.
            return;
        }
        a.0[0] = a.0[0].add(&b.0[0]);
        let mut i = 1;
        for agg in &self.aggs {
            match agg {
                Agg::Count | Agg::Sum => a.0[i] = a.0[i].add(&b.0[i]),
                Agg::Min => a.0[i] = a.0[i].pick(&b.0[i], Ordering::Less),
                Agg::Max => a.0[i] = a.0[i].pick(&b.0[i], Ordering::Greater),
                Agg::Avg => {
                    a.0[i] = a.0[i].add(&b.0[i]);
                    a.0[i + 1] = a.0[i + 1].add(&b.0[i + 1]);
                }
            }
            i += agg.width();
        }
    }

    /// The rows the partial aggregates stand for.
    pub fn rows(p: &Partials) -> i64 {
        match p.0.first() {
            Some(Slot::Int(n)) => *n,
            _ => 0,
        }
    }

    /// The final values of the aggregates of `groups`, as columns of `types`.
    pub fn finish<'a>(
        &self,
        groups: impl Iterator<Item = &'a Partials> + Clone,
        types: &[DataType],
    ) -> Result<Vec<ArrayRef>> {
        let mut out = Vec::with_capacity(self.aggs.len());
        let mut i = 1;
        for (agg, dt) in self.aggs.iter().zip(types) {
            let slots = groups.clone().map(|p| match agg {
                Agg::Avg => match (&p.0[i], &p.0[i + 1]) {
                    (Slot::Float(s), Slot::Int(n)) if *n > 0 => Slot::Float(s / *n as f64),
                    _ => Slot::Null,
                },
                Agg::Count => match &p.0[i] {
                    Slot::Null => Slot::Int(0),
                    v => v.clone(),
                },
                _ => p.0[i].clone(),
            });
            out.push(slots_to_array(slots, dt)?);
            i += agg.width();
        }
        Ok(out)
    }
}

/// A column of type `dt` from slots.
fn slots_to_array(slots: impl Iterator<Item = Slot>, dt: &DataType) -> Result<ArrayRef> {
    let class = class_of(dt).unwrap_or(Class::Str);
    let a: ArrayRef = match class {
        Class::I64 => Arc::new(
            slots
                .map(|s| match s {
                    Slot::Int(x) => Some(x),
                    _ => None,
                })
                .collect::<datafusion::arrow::array::Int64Array>(),
        ),
        Class::U64 => Arc::new(
            slots
                .map(|s| match s {
                    Slot::UInt(x) => Some(x),
                    _ => None,
                })
                .collect::<datafusion::arrow::array::UInt64Array>(),
        ),
        Class::F64 => Arc::new(
            slots
                .map(|s| match s {
                    Slot::Float(x) => Some(x),
                    _ => None,
                })
                .collect::<datafusion::arrow::array::Float64Array>(),
        ),
        Class::Bool => Arc::new(
            slots
                .map(|s| match s {
                    Slot::Bool(x) => Some(x),
                    _ => None,
                })
                .collect::<datafusion::arrow::array::BooleanArray>(),
        ),
        Class::Str => {
            let mut b = StringBuilder::new();
            for s in slots {
                match s {
                    Slot::Str(x) => b.append_value(x),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
    };
    restore(a, dt)
}

/// Epoch milliseconds of each value of a timestamp or date column (`None` for nulls).
pub fn epoch_ms(col: &ArrayRef) -> Result<Vec<Option<i64>>> {
    use datafusion::arrow::datatypes::TimeUnit;
    let ms = match col.data_type() {
        DataType::Date32 => cast(&cast(col, &DataType::Date64)?, &DataType::Int64)?,
        DataType::Date64 => cast(col, &DataType::Int64)?,
        _ => cast(
            &cast(col, &DataType::Timestamp(TimeUnit::Millisecond, None))?,
            &DataType::Int64,
        )?,
    };
    let ms = ms.as_primitive::<Int64Type>();
    Ok((0..ms.len())
        .map(|i| (!ms.is_null(i)).then(|| ms.value(i)))
        .collect())
}

/// A column of type `dt` (a timestamp or date) of epoch milliseconds.
pub fn from_epoch_ms(ms: impl Iterator<Item = i64>, dt: &DataType) -> Result<ArrayRef> {
    use datafusion::arrow::datatypes::TimeUnit;
    let a: ArrayRef = Arc::new(ms.collect::<datafusion::arrow::array::Int64Array>());
    match dt {
        DataType::Date32 | DataType::Date64 => Ok(cast(&cast(&a, &DataType::Date64)?, dt)?),
        _ => Ok(cast(
            &cast(&a, &DataType::Timestamp(TimeUnit::Millisecond, None))?,
            dt,
        )?),
    }
}

/// The value at `row` of `col` as JSON: numbers as numbers, text as text, timestamps
/// and dates as ISO-8601 text (`2015-12-18T00:00:30`), nulls as null, nested values as
/// Arrow displays them.
pub fn to_json(col: &ArrayRef, row: usize) -> serde_json::Value {
    use datafusion::scalar::ScalarValue as S;
    use serde_json::Value as J;
    if col.is_null(row) {
        return J::Null;
    }
    match S::try_from_array(col, row) {
        Ok(S::Boolean(Some(b))) => J::Bool(b),
        Ok(S::Int8(Some(x))) => J::from(x),
        Ok(S::Int16(Some(x))) => J::from(x),
        Ok(S::Int32(Some(x))) => J::from(x),
        Ok(S::Int64(Some(x))) => J::from(x),
        Ok(S::UInt8(Some(x))) => J::from(x),
        Ok(S::UInt16(Some(x))) => J::from(x),
        Ok(S::UInt32(Some(x))) => J::from(x),
        Ok(S::UInt64(Some(x))) => J::from(x),
        Ok(S::Float32(Some(x))) => {
            serde_json::Number::from_f64(f64::from(x)).map_or(J::Null, J::Number)
        }
        Ok(S::Float64(Some(x))) => serde_json::Number::from_f64(x).map_or(J::Null, J::Number),
        Ok(S::Utf8(Some(s)) | S::LargeUtf8(Some(s)) | S::Utf8View(Some(s))) => J::String(s),
        _ => datafusion::arrow::util::display::array_value_to_string(col, row)
            .map_or(J::Null, J::String),
    }
}

/// The partial aggregates of the pre part's output: (key, exact event time, partials)
/// per group that occurred.
pub(crate) fn partial_rows(
    out: &[RecordBatch],
    key_index: &[usize],
    window_index: Option<usize>,
    groups: usize,
) -> datafusion::error::Result<Vec<(Key, Option<i64>, Partials)>> {
    let mut rows = Vec::new();
    for b in out {
        let n = b.num_rows();
        let key_cols: Vec<ArrayRef> = key_index.iter().map(|&i| b.column(i).clone()).collect();
        let keys = encode_keys(&key_cols, n)?;
        let times = match window_index {
            Some(w) => epoch_ms(b.column(w))?,
            None => vec![None; n],
        };
        let partials = read_partials(&b.columns()[groups..], n)?;
        rows.extend(
            keys.into_iter()
                .zip(times)
                .zip(partials)
                .filter(|(_, p)| Layout::rows(p) > 0)
                .map(|((k, t), p)| (k, t, p)),
        );
    }
    if window_index.is_some() {
        sort_for_windows(&mut rows);
    }
    Ok(rows)
}

/// Orders a partition's windowed partials by key and event time (a hash aggregation
/// gives them in no order): the window operator aggregates a run of one key's records
/// that fall in the same windows once, so sorted partials make long runs.
fn sort_for_windows(rows: &mut [(Key, Option<i64>, Partials)]) {
    rows.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        Date32Array, Float64Array, Int32Array, StringArray, TimestampMicrosecondArray,
    };
    use datafusion::arrow::datatypes::TimeUnit;

    #[test]
    fn keys_round_trip_through_bytes_and_the_checkpoint() {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![Some("wörd"), None, Some("")])),
            Arc::new(Int32Array::from(vec![Some(-5), Some(7), None])),
            Arc::new(Float64Array::from(vec![
                Some(-0.0),
                Some(1.5),
                Some(f64::NAN),
            ])),
            Arc::new(Date32Array::from(vec![Some(3), None, Some(-1)])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(1_000_000), None, Some(-1)])
                    .with_timezone("UTC"),
            ),
        ];
        let types: Vec<DataType> = cols.iter().map(|c| c.data_type().clone()).collect();
        assert_eq!(types[4], ts);
        let keys = encode_keys(&cols, 3).expect("encodes");
        let back = decode_keys(keys.iter(), &types).expect("decodes");
        for (a, b) in cols.iter().zip(&back) {
            assert_eq!(a.data_type(), b.data_type());
            for r in 0..3 {
                assert_eq!(to_json(a, r), to_json(b, r), "{a:?} row {r}");
            }
        }
        // -0.0 and 0.0 are one key.
        let z: Vec<ArrayRef> = vec![Arc::new(Float64Array::from(vec![0.0, -0.0]))];
        let k = encode_keys(&z, 2).expect("encodes");
        assert_eq!(k[0], k[1]);
        for k in &keys {
            let bytes = lockgate_core::codec::to_bytes(k);
            assert_eq!(
                lockgate_core::codec::from_bytes::<Key>(&bytes).as_ref(),
                Ok(k)
            );
        }
        assert!(decode_keys(
            [Key(SmallVec::from_slice(&[1, 9]))].iter(),
            &[DataType::Int64]
        )
        .is_err());
    }

    #[test]
    fn partial_aggregates_merge_finish_and_round_trip() {
        let layout = Layout {
            aggs: vec![Agg::Count, Agg::Sum, Agg::Min, Agg::Max, Agg::Avg],
        };
        let p = |rows: i64, sum: Slot, m: &str, s: f64, n: i64| {
            Partials(SmallVec::from_vec(vec![
                Slot::Int(rows),
                Slot::Int(rows),
                sum,
                Slot::Str(m.into()),
                Slot::Str(m.into()),
                Slot::Float(s),
                Slot::Int(n),
            ]))
        };
        let mut a = Partials::default();
        layout.merge(&mut a, &p(2, Slot::Int(5), "m", 5.0, 2));
        layout.merge(&mut a, &p(3, Slot::Null, "c", 1.0, 2));
        layout.merge(&mut a, &p(1, Slot::Int(1), "x", 3.0, 2));
        assert_eq!(Layout::rows(&a), 6);
        let bytes = lockgate_core::codec::to_bytes(&a);
        assert_eq!(
            lockgate_core::codec::from_bytes::<Partials>(&bytes).as_ref(),
            Ok(&a)
        );
        let types = [
            DataType::Int64,
            DataType::Int64,
            DataType::Utf8,
            DataType::Utf8,
            DataType::Float64,
        ];
        let cols = layout.finish([&a].into_iter(), &types).expect("finishes");
        let got: Vec<serde_json::Value> = cols.iter().map(|c| to_json(c, 0)).collect();
        assert_eq!(
            got,
            serde_json::json!([6, 6, "c", "x", 1.5])
                .as_array()
                .cloned()
                .unwrap_or_default()
        );
    }

    #[test]
    fn window_bounds_convert_between_units() {
        let ts = DataType::Timestamp(TimeUnit::Nanosecond, None);
        let col = from_epoch_ms([30_000i64].into_iter(), &ts).expect("converts");
        assert_eq!(col.data_type(), &ts);
        assert_eq!(epoch_ms(&col).expect("converts"), vec![Some(30_000)]);
        assert_eq!(to_json(&col, 0), serde_json::json!("1970-01-01T00:00:30"));
        let d: ArrayRef = Arc::new(Date32Array::from(vec![Some(1), None]));
        assert_eq!(
            epoch_ms(&d).expect("converts"),
            vec![Some(86_400_000), None]
        );
    }
}
