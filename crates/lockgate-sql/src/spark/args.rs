//! Reading a Spark function's arguments: text and integers, constant or a column, in
//! every Arrow encoding DataFusion hands over (string views are read in place).

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::ColumnarValue;

/// A text argument: a constant, or a column read row by row.
pub(crate) enum Text {
    /// The same text (or NULL) on every row.
    Constant(Option<String>),
    /// A column of `Utf8`, `LargeUtf8` or `Utf8View`.
    Column(ArrayRef),
}

impl Text {
    /// The argument, other types cast to text as Spark casts them.
    pub(crate) fn of(v: ColumnarValue) -> Result<Self> {
        Ok(match v {
            ColumnarValue::Scalar(s) => Text::Constant(constant_text(&s)?),
            ColumnarValue::Array(a) => match a.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Text::Column(a),
                _ => Text::Column(cast(&a, &DataType::Utf8)?),
            },
        })
    }

    /// The text on row `i` (NULL as `None`).
    pub(crate) fn get(&self, i: usize) -> Option<&str> {
        match self {
            Text::Constant(s) => s.as_deref(),
            Text::Column(a) if a.is_null(i) => None,
            Text::Column(a) => match a.data_type() {
                DataType::Utf8View => Some(a.as_string_view().value(i)),
                DataType::Utf8 => Some(a.as_string::<i32>().value(i)),
                DataType::LargeUtf8 => Some(a.as_string::<i64>().value(i)),
                _ => None,
            },
        }
    }
}

/// A constant's text (NULL as `None`), other types cast to text.
pub(crate) fn constant_text(s: &ScalarValue) -> Result<Option<String>> {
    Ok(match s {
        ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => v.clone(),
        ScalarValue::Null => None,
        other => match other.cast_to(&DataType::Utf8)? {
            ScalarValue::Utf8(v) => v,
            _ => None,
        },
    })
}

/// An integer argument: a constant, or a column cast to 64 bits.
pub(crate) enum Int {
    /// The same value (or NULL) on every row.
    Constant(Option<i64>),
    /// A column of `Int64`.
    Column(ArrayRef),
}

impl Int {
    /// The argument (`None`: absent, `default` on every row).
    pub(crate) fn of(v: Option<ColumnarValue>, default: i64) -> Result<Self> {
        Ok(match v {
            None => Int::Constant(Some(default)),
            Some(ColumnarValue::Scalar(s)) => match s.cast_to(&DataType::Int64)? {
                ScalarValue::Int64(v) => Int::Constant(v),
                other => return exec_err!("expected an integer, got {other}"),
            },
            Some(ColumnarValue::Array(a)) => Int::Column(cast(&a, &DataType::Int64)?),
        })
    }

    /// The value on row `i` (NULL as `None`).
    pub(crate) fn get(&self, i: usize) -> Option<i64> {
        match self {
            Int::Constant(v) => *v,
            Int::Column(a) if a.is_null(i) => None,
            Int::Column(a) => Some(a.as_primitive::<Int64Type>().value(i)),
        }
    }
}

/// The arguments of a call, in order; `name` for messages.
pub(crate) struct Args {
    name: &'static str,
    args: std::vec::IntoIter<ColumnarValue>,
}

impl Args {
    /// The arguments of a call of `name`.
    pub(crate) fn new(name: &'static str, args: Vec<ColumnarValue>) -> Self {
        Args {
            name,
            args: args.into_iter(),
        }
    }

    /// The next argument, which the call needs (`what` names it in the error).
    pub(crate) fn next(&mut self, what: &str) -> Result<ColumnarValue> {
        match self.args.next() {
            Some(a) => Ok(a),
            None => exec_err!("{}(...) needs {what}", self.name),
        }
    }

    /// The next argument if the call gives it.
    pub(crate) fn optional(&mut self) -> Option<ColumnarValue> {
        self.args.next()
    }
}

/// Refuses a call of `name` with `n` arguments, when it takes `min` to `max`.
pub(crate) fn check_arity(name: &str, n: usize, (min, max): (usize, usize)) -> Result<()> {
    if n < min || n > max {
        return plan_err!("{name}(...) takes {min} to {max} arguments, not {n}");
    }
    Ok(())
}
