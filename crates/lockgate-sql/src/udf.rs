//! The functions Lockgate adds to DataFusion's: the markers that carry an event-time
//! window through DataFusion's planner, and Spark's `try_to_timestamp`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

/// The name `window(ts, ...)` takes in the rewritten query: the group key holds the
/// record's exact event time until the window operator assigns it to windows.
pub const WINDOW: &str = "__lockgate_window";
/// The name `window.end` takes: replaced by the window's end after aggregation.
pub const WINDOW_END: &str = "__lockgate_window_end";

/// An identity function with a name the planner keeps (a marker).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Marker {
    name: &'static str,
    signature: Signature,
}

impl ScalarUDFImpl for Marker {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types.first() {
            Some(t @ (DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64)) => {
                Ok(t.clone())
            }
            Some(other) => exec_err!(
                "window(...): the event time must be a TIMESTAMP or DATE, not {other} \
                 (convert text with to_timestamp or try_to_timestamp)"
            ),
            None => exec_err!("window(...) needs an event-time column"),
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        match args.args.into_iter().next() {
            Some(v) => Ok(v),
            None => exec_err!("{} takes one argument", self.name),
        }
    }
}

fn marker(name: &'static str) -> ScalarUDF {
    ScalarUDF::new_from_impl(Marker {
        name,
        signature: Signature::any(1, Volatility::Immutable),
    })
}

/// Spark's `try_to_timestamp(text, format)`: the text parsed with a chrono format
/// (`%Y-%m-%d %H:%M:%S`, `%a %b %d %H:%M:%S %Y`, ...; UTC), or NULL when it does not
/// parse (DataFusion's `to_timestamp` fails the whole batch instead). Without a format,
/// RFC 3339 and `YYYY-MM-DD HH:MM:SS[.f]` are tried.
#[derive(Debug, PartialEq, Eq, Hash)]
struct TryToTimestamp {
    signature: Signature,
}

/// Parses `text` with `format` (or the default layouts) to epoch microseconds.
pub fn parse_timestamp(text: &str, format: Option<&str>) -> Option<i64> {
    let text = text.trim();
    let naive = match format {
        Some(f) => chrono::NaiveDateTime::parse_from_str(text, f).ok()?,
        None => match chrono::DateTime::parse_from_rfc3339(text) {
            Ok(t) => return Some(t.timestamp_micros()),
            Err(_) => chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                .or_else(|_| chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f"))
                .ok()?,
        },
    };
    Some(naive.and_utc().timestamp_micros())
}

impl ScalarUDFImpl for TryToTimestamp {
    fn name(&self) -> &str {
        "try_to_timestamp"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(TimeUnit::Microsecond, None))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let mut cols = args.args.into_iter();
        let text = match cols.next() {
            Some(c) => c.into_array(n)?,
            None => return exec_err!("try_to_timestamp(text[, format]) needs the text"),
        };
        let format = match cols.next() {
            None => None,
            Some(ColumnarValue::Scalar(s)) => match s {
                ScalarValue::Utf8(f) | ScalarValue::LargeUtf8(f) | ScalarValue::Utf8View(f) => {
                    f
                }
                other => return exec_err!("try_to_timestamp: the format must be text, not {other}"),
            },
            Some(ColumnarValue::Array(_)) => {
                return exec_err!("try_to_timestamp: the format must be a constant")
            }
        };
        let text = datafusion::arrow::compute::cast(&text, &DataType::Utf8)?;
        let text = text.as_string::<i32>();
        let out: TimestampMicrosecondArray = (0..text.len())
            .map(|i| {
                if text.is_null(i) {
                    None
                } else {
                    parse_timestamp(text.value(i), format.as_deref())
                }
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

/// Every function Lockgate adds.
pub fn all() -> Vec<ScalarUDF> {
    vec![
        marker(WINDOW),
        marker(WINDOW_END),
        ScalarUDF::new_from_impl(TryToTimestamp {
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Utf8]),
                    TypeSignature::Exact(vec![DataType::Utf8, DataType::Utf8]),
                ],
                Volatility::Immutable,
            ),
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_with_and_without_a_format() {
        assert_eq!(
            parse_timestamp("Fri Dec 18 00:00:10 2015", Some("%a %b %d %H:%M:%S %Y")),
            Some(1_450_396_810_000_000)
        );
        assert_eq!(parse_timestamp("2015-12-18 00:00:10", None), Some(1_450_396_810_000_000));
        assert_eq!(parse_timestamp("2015-12-18T00:00:10Z", None), Some(1_450_396_810_000_000));
        assert_eq!(parse_timestamp("not a time", None), None);
        assert_eq!(parse_timestamp("Fri Dec 32 00:00:10 2015", Some("%a %b %d %H:%M:%S %Y")), None);
    }
}
