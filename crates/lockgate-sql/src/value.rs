//! The values a SQL query keeps in state: group keys and partial aggregates, as
//! DataFusion scalars with a checkpoint encoding ([`Scalars`]), and the accumulators
//! that merge partial aggregates ([`Agg`]).
//!
//! The encoding is part of the checkpoint format: a tag per Arrow type, then the value
//! (`Option` of the primitive). Only the types of [`supported`] are kept in state; a
//! query grouping by another type is refused at start.

use std::cmp::Ordering;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::scalar::ScalarValue;
use lockgate_core::{Codec, CodecError};

/// True when values of `dt` can be group keys or aggregates in state.
pub fn supported(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Null
            | DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float32
            | DataType::Float64
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(_, _)
    )
}

/// A row of scalars: a group key, or a group's partial aggregates.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scalars(pub Vec<ScalarValue>);

fn encode_scalar(v: &ScalarValue, out: &mut Vec<u8>) {
    use ScalarValue as S;
    let tz = |tz: &Option<std::sync::Arc<str>>| tz.as_ref().map(|t| t.to_string());
    match v {
        S::Boolean(x) => {
            out.push(1);
            x.encode(out)
        }
        S::Int8(x) => {
            out.push(2);
            x.encode(out)
        }
        S::Int16(x) => {
            out.push(3);
            x.encode(out)
        }
        S::Int32(x) => {
            out.push(4);
            x.encode(out)
        }
        S::Int64(x) => {
            out.push(5);
            x.encode(out)
        }
        S::UInt8(x) => {
            out.push(6);
            x.encode(out)
        }
        S::UInt16(x) => {
            out.push(7);
            x.encode(out)
        }
        S::UInt32(x) => {
            out.push(8);
            x.encode(out)
        }
        S::UInt64(x) => {
            out.push(9);
            x.encode(out)
        }
        S::Float32(x) => {
            out.push(10);
            x.encode(out)
        }
        S::Float64(x) => {
            out.push(11);
            x.encode(out)
        }
        S::Utf8(x) => {
            out.push(12);
            x.encode(out)
        }
        S::LargeUtf8(x) => {
            out.push(13);
            x.encode(out)
        }
        S::Utf8View(x) => {
            out.push(14);
            x.encode(out)
        }
        S::Date32(x) => {
            out.push(15);
            x.encode(out)
        }
        S::Date64(x) => {
            out.push(16);
            x.encode(out)
        }
        S::TimestampSecond(x, z) => {
            out.push(17);
            x.encode(out);
            tz(z).encode(out)
        }
        S::TimestampMillisecond(x, z) => {
            out.push(18);
            x.encode(out);
            tz(z).encode(out)
        }
        S::TimestampMicrosecond(x, z) => {
            out.push(19);
            x.encode(out);
            tz(z).encode(out)
        }
        S::TimestampNanosecond(x, z) => {
            out.push(20);
            x.encode(out);
            tz(z).encode(out)
        }
        // Planning refuses every other type (see `supported`); a null stands in.
        _ => out.push(0),
    }
}

fn decode_scalar(input: &mut &[u8]) -> Result<ScalarValue, CodecError> {
    use ScalarValue as S;
    let tag = u8::decode(input)?;
    let tz = |input: &mut &[u8]| -> Result<_, CodecError> {
        Ok(Option::<String>::decode(input)?.map(|t| std::sync::Arc::from(t.as_str())))
    };
    Ok(match tag {
        0 => S::Null,
        1 => S::Boolean(Codec::decode(input)?),
        2 => S::Int8(Codec::decode(input)?),
        3 => S::Int16(Codec::decode(input)?),
        4 => S::Int32(Codec::decode(input)?),
        5 => S::Int64(Codec::decode(input)?),
        6 => S::UInt8(Codec::decode(input)?),
        7 => S::UInt16(Codec::decode(input)?),
        8 => S::UInt32(Codec::decode(input)?),
        9 => S::UInt64(Codec::decode(input)?),
        10 => S::Float32(Codec::decode(input)?),
        11 => S::Float64(Codec::decode(input)?),
        12 => S::Utf8(Codec::decode(input)?),
        13 => S::LargeUtf8(Codec::decode(input)?),
        14 => S::Utf8View(Codec::decode(input)?),
        15 => S::Date32(Codec::decode(input)?),
        16 => S::Date64(Codec::decode(input)?),
        17 => {
            let v = Codec::decode(input)?;
            S::TimestampSecond(v, tz(input)?)
        }
        18 => {
            let v = Codec::decode(input)?;
            S::TimestampMillisecond(v, tz(input)?)
        }
        19 => {
            let v = Codec::decode(input)?;
            S::TimestampMicrosecond(v, tz(input)?)
        }
        20 => {
            let v = Codec::decode(input)?;
            S::TimestampNanosecond(v, tz(input)?)
        }
        other => {
            return Err(CodecError::new(
                "SQL scalar",
                format!("unknown type tag {other}"),
            ))
        }
    })
}

impl Codec for Scalars {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.len().encode(out);
        for v in &self.0 {
            encode_scalar(v, out);
        }
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        let n = usize::decode(input)?;
        if n > input.len() {
            return Err(CodecError::new("SQL row", format!("{n} values in {} bytes", input.len())));
        }
        (0..n).map(|_| decode_scalar(input)).collect::<Result<_, _>>().map(Scalars)
    }
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

/// Adds two non-null scalars of one type (the types of partial sums and counts).
fn add(a: &ScalarValue, b: &ScalarValue) -> ScalarValue {
    if a.is_null() {
        return b.clone();
    }
    if b.is_null() {
        return a.clone();
    }
    // Integer overflow wraps like Spark's non-ANSI sums; a type mismatch cannot happen
    // (both sides come from the same planned column) and keeps the left side.
    a.add_checked(b)
        .or_else(|_| a.add(b))
        .unwrap_or_else(|_| a.clone())
}

fn pick(a: &ScalarValue, b: &ScalarValue, keep: Ordering) -> ScalarValue {
    if a.is_null() {
        return b.clone();
    }
    if b.is_null() {
        return a.clone();
    }
    match b.partial_cmp(a) {
        Some(o) if o == keep => b.clone(),
        _ => a.clone(),
    }
}

/// The layout of a group's partial aggregates: a row count first (groups whose count
/// stays 0 did not occur), then each aggregate's partial values.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The aggregates, in the query's order.
    pub aggs: Vec<Agg>,
}

impl Layout {
    /// Folds `b` into `a`.
    pub fn merge(&self, a: &mut Scalars, b: &Scalars) {
        if a.0.is_empty() {
            a.0.clone_from(&b.0);
            return;
        }
        a.0[0] = add(&a.0[0], &b.0[0]);
        let mut i = 1;
        for agg in &self.aggs {
            match agg {
                Agg::Count | Agg::Sum => a.0[i] = add(&a.0[i], &b.0[i]),
                Agg::Min => a.0[i] = pick(&a.0[i], &b.0[i], Ordering::Less),
                Agg::Max => a.0[i] = pick(&a.0[i], &b.0[i], Ordering::Greater),
                Agg::Avg => {
                    a.0[i] = add(&a.0[i], &b.0[i]);
                    a.0[i + 1] = add(&a.0[i + 1], &b.0[i + 1]);
                }
            }
            i += agg.width();
        }
    }

    /// The rows the partial aggregates stand for.
    pub fn rows(p: &Scalars) -> i64 {
        match p.0.first() {
            Some(ScalarValue::Int64(Some(n))) => *n,
            _ => 0,
        }
    }

    /// The final values of the aggregates, cast to the query's output types.
    pub fn finish(&self, p: &Scalars, types: &[DataType]) -> Vec<ScalarValue> {
        let mut out = Vec::with_capacity(self.aggs.len());
        let mut i = 1;
        for (agg, dt) in self.aggs.iter().zip(types) {
            let v = match agg {
                Agg::Avg => match (&p.0[i], &p.0[i + 1]) {
                    (ScalarValue::Float64(Some(s)), ScalarValue::Int64(Some(n))) if *n > 0 => {
                        ScalarValue::Float64(Some(s / *n as f64))
                    }
                    _ => ScalarValue::Float64(None),
                },
                Agg::Count => match &p.0[i] {
                    v if v.is_null() => ScalarValue::Int64(Some(0)),
                    v => v.clone(),
                },
                _ => p.0[i].clone(),
            };
            out.push(v.cast_to(dt).unwrap_or_else(|_| {
                ScalarValue::try_from(dt).unwrap_or(ScalarValue::Null)
            }));
            i += agg.width();
        }
        out
    }
}

/// Epoch milliseconds of a timestamp or date scalar (`None` for null or another type).
pub fn epoch_ms(v: &ScalarValue) -> Option<i64> {
    use ScalarValue as S;
    match v {
        S::TimestampSecond(Some(x), _) => x.checked_mul(1000),
        S::TimestampMillisecond(Some(x), _) => Some(*x),
        S::TimestampMicrosecond(Some(x), _) => Some(x.div_euclid(1000)),
        S::TimestampNanosecond(Some(x), _) => Some(x.div_euclid(1_000_000)),
        S::Date32(Some(d)) => Some(i64::from(*d) * 86_400_000),
        S::Date64(Some(x)) => Some(*x),
        _ => None,
    }
}

/// The scalar of type `dt` (a timestamp or date) at epoch millisecond `ms`.
pub fn from_epoch_ms(ms: i64, dt: &DataType) -> ScalarValue {
    use ScalarValue as S;
    match dt {
        DataType::Timestamp(unit, tz) => {
            let tz = tz.clone();
            match unit {
                TimeUnit::Second => S::TimestampSecond(Some(ms.div_euclid(1000)), tz),
                TimeUnit::Millisecond => S::TimestampMillisecond(Some(ms), tz),
                TimeUnit::Microsecond => S::TimestampMicrosecond(ms.checked_mul(1000), tz),
                TimeUnit::Nanosecond => S::TimestampNanosecond(ms.checked_mul(1_000_000), tz),
            }
        }
        DataType::Date32 => S::Date32(i32::try_from(ms.div_euclid(86_400_000)).ok()),
        DataType::Date64 => S::Date64(Some(ms)),
        _ => S::TimestampMillisecond(Some(ms), None),
    }
}

/// A scalar as JSON: numbers as numbers, timestamps as ISO-8601 text (as Spark writes
/// them), nulls as null, anything else as its display text.
pub fn to_json(v: &ScalarValue) -> serde_json::Value {
    use serde_json::Value as J;
    use ScalarValue as S;
    if v.is_null() {
        return J::Null;
    }
    match v {
        S::Boolean(Some(b)) => J::Bool(*b),
        S::Int8(Some(x)) => J::from(*x),
        S::Int16(Some(x)) => J::from(*x),
        S::Int32(Some(x)) => J::from(*x),
        S::Int64(Some(x)) => J::from(*x),
        S::UInt8(Some(x)) => J::from(*x),
        S::UInt16(Some(x)) => J::from(*x),
        S::UInt32(Some(x)) => J::from(*x),
        S::UInt64(Some(x)) => J::from(*x),
        S::Float32(Some(x)) => serde_json::Number::from_f64(f64::from(*x)).map_or(J::Null, J::Number),
        S::Float64(Some(x)) => serde_json::Number::from_f64(*x).map_or(J::Null, J::Number),
        S::Utf8(Some(s)) | S::LargeUtf8(Some(s)) | S::Utf8View(Some(s)) => J::String(s.clone()),
        // Timestamps and dates as ISO-8601 (`2015-12-18T00:00:00`), nested values as
        // Arrow displays them.
        other => match other.to_array() {
            Ok(a) => datafusion::arrow::util::display::array_value_to_string(&a, 0)
                .map_or_else(|_| J::String(other.to_string()), J::String),
            Err(_) => J::String(other.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_round_trip_through_the_checkpoint_encoding() {
        let row = Scalars(vec![
            ScalarValue::Null,
            ScalarValue::Boolean(Some(true)),
            ScalarValue::Int32(None),
            ScalarValue::Int64(Some(-5)),
            ScalarValue::UInt64(Some(7)),
            ScalarValue::Float64(Some(1.5)),
            ScalarValue::Utf8(Some("wörd".into())),
            ScalarValue::Utf8View(Some("v".into())),
            ScalarValue::Date32(Some(3)),
            ScalarValue::TimestampMicrosecond(Some(1_000_000), Some("UTC".into())),
            ScalarValue::TimestampSecond(Some(30), None),
        ]);
        let bytes = lockgate_core::codec::to_bytes(&row);
        assert_eq!(lockgate_core::codec::from_bytes::<Scalars>(&bytes), Ok(row));
        assert!(lockgate_core::codec::from_bytes::<Scalars>(&[1, 0, 0, 0, 0, 0, 0, 0, 99]).is_err());
    }

    #[test]
    fn partial_aggregates_merge_and_finish() {
        let layout = Layout {
            aggs: vec![Agg::Count, Agg::Sum, Agg::Min, Agg::Max, Agg::Avg],
        };
        let p = |rows: i64, sum: Option<i64>, m: i64, s: f64, n: i64| {
            Scalars(vec![
                ScalarValue::Int64(Some(rows)),
                ScalarValue::Int64(Some(rows)),
                ScalarValue::Int64(sum),
                ScalarValue::Int64(Some(m)),
                ScalarValue::Int64(Some(m)),
                ScalarValue::Float64(Some(s)),
                ScalarValue::Int64(Some(n)),
            ])
        };
        let mut a = Scalars(Vec::new());
        layout.merge(&mut a, &p(2, Some(5), 3, 5.0, 2));
        layout.merge(&mut a, &p(3, None, 1, 1.0, 2));
        layout.merge(&mut a, &p(1, Some(1), 9, 3.0, 2));
        assert_eq!(Layout::rows(&a), 6);
        let types = [
            DataType::Int64,
            DataType::Int64,
            DataType::Int64,
            DataType::Int64,
            DataType::Float64,
        ];
        assert_eq!(
            layout.finish(&a, &types),
            vec![
                ScalarValue::Int64(Some(6)),
                ScalarValue::Int64(Some(6)),
                ScalarValue::Int64(Some(1)),
                ScalarValue::Int64(Some(9)),
                ScalarValue::Float64(Some(1.5)),
            ]
        );
    }

    #[test]
    fn window_bounds_convert_between_units() {
        let ts = DataType::Timestamp(TimeUnit::Nanosecond, None);
        let v = from_epoch_ms(30_000, &ts);
        assert_eq!(v, ScalarValue::TimestampNanosecond(Some(30_000_000_000), None));
        assert_eq!(epoch_ms(&v), Some(30_000));
        assert_eq!(epoch_ms(&ScalarValue::Date32(Some(1))), Some(86_400_000));
        assert_eq!(to_json(&v), serde_json::json!("1970-01-01T00:00:30"));
    }
}
