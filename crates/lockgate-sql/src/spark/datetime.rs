//! Spark's datetime patterns (`yyyy-MM-dd HH:mm:ss`, `EEE MMM dd HH:mm:ss yyyy`, ...)
//! and the functions that take them — `to_timestamp`, `try_to_timestamp`, `to_date`,
//! `date_format`, `unix_timestamp` (`to_unix_timestamp`), `from_unixtime` — and the
//! date fields (`year`, `month`, `day`, `dayofweek`, ...), with
//! Spark's semantics: text that does not parse is NULL (as Spark without ANSI mode;
//! the batch is not failed), times are UTC. A pattern is translated once into chrono's
//! format items; a pattern with a `%` is read as chrono's `strftime` format, which
//! earlier Lockgate queries use.

use std::sync::Arc;

use chrono::format::{Item, StrftimeItems};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Int64Array, StringViewArray, StringViewBuilder,
    TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
use datafusion::common::{exec_err, plan_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use super::args::{check_arity, constant_text, Args, Int, Text};
use crate::udf::{parse_timestamp, TimeFormat};

/// Spark's default pattern of `unix_timestamp` and `from_unixtime`.
pub(crate) const DEFAULT_PATTERN: &str = "yyyy-MM-dd HH:mm:ss";

/// A Spark datetime pattern as a chrono format, or why it cannot be one.
pub(crate) fn chrono_format(pattern: &str) -> std::result::Result<String, String> {
    let format = if pattern.contains('%') {
        pattern.to_string()
    } else {
        translate(pattern)?
    };
    if StrftimeItems::new(&format).any(|i| matches!(i, Item::Error)) {
        return Err(format!("`{pattern}` is not a valid chrono format"));
    }
    Ok(format)
}

/// Spark's pattern letters (Java's `DateTimeFormatter`) in chrono's `strftime`.
fn translate(pattern: &str) -> std::result::Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() * 2);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // Quoted text; `''` is a quote.
            if chars.get(i + 1) == Some(&'\'') {
                out.push('\'');
                i += 2;
                continue;
            }
            let mut j = i + 1;
            loop {
                match chars.get(j) {
                    None => return Err(format!("an unclosed quote in `{pattern}`")),
                    Some('\'') if chars.get(j + 1) == Some(&'\'') => {
                        out.push('\'');
                        j += 2;
                    }
                    Some('\'') => break,
                    Some(&'%') => {
                        out.push_str("%%");
                        j += 1;
                    }
                    Some(&c) => {
                        out.push(c);
                        j += 1;
                    }
                }
            }
            i = j + 1;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            if c == '[' || c == ']' {
                return Err(format!(
                    "optional sections (`[...]`) in `{pattern}` are not supported"
                ));
            }
            out.push(c);
            i += 1;
            continue;
        }
        let mut n = 1;
        while chars.get(i + n) == Some(&c) {
            n += 1;
        }
        i += n;
        let item = match (c, n) {
            ('y' | 'u', 2) => "%y",
            ('y' | 'u', _) => "%Y",
            ('M' | 'L', 1) => "%-m",
            ('M' | 'L', 2) => "%m",
            ('M' | 'L', 3) => "%b",
            ('M' | 'L', 4) => "%B",
            ('d', 1) => "%-d",
            ('d', 2) => "%d",
            ('D', 1 | 2) => "%-j",
            ('D', 3) => "%j",
            ('H', 1) => "%-H",
            ('H', 2) => "%H",
            ('h', 1) => "%-I",
            ('h', 2) => "%I",
            ('m', 1) => "%-M",
            ('m', 2) => "%M",
            ('s', 1) => "%-S",
            ('s', 2) => "%S",
            ('S', 1..=3) => "%3f",
            ('S', 4..=6) => "%6f",
            ('S', 7..=9) => "%9f",
            ('a', 1) => "%p",
            ('E', 1..=3) => "%a",
            ('E', 4) => "%A",
            ('X' | 'x' | 'Z', 1 | 2) | ('Z' | 'x', 3) => "%z",
            ('X', 3) | ('x', 4 | 5) | ('Z', 5) => "%:z",
            ('z', 1..=3) => "%Z",
            _ => {
                return Err(format!(
                    "the pattern letter{} `{}` in `{pattern}` {} not supported",
                    if n > 1 { "s" } else { "" },
                    c.to_string().repeat(n),
                    if n > 1 { "are" } else { "is" }
                ))
            }
        };
        out.push_str(item);
    }
    Ok(out)
}

/// A parser for one pattern: the fast layout where the format has one, else chrono.
fn parser(pattern: Option<&str>) -> Result<Option<TimeFormat>> {
    match pattern {
        None => Ok(None),
        Some(p) => match chrono_format(p) {
            Ok(f) => Ok(Some(TimeFormat::new(&f))),
            Err(e) => exec_err!("{e}"),
        },
    }
}

/// Which of Spark's datetime functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// `to_timestamp(x[, pattern])`.
    ToTimestamp,
    /// `try_to_timestamp(x[, pattern])`: the same, NULL where it does not parse.
    TryToTimestamp,
    /// `to_date(x[, pattern])`.
    ToDate,
    /// `date_format(ts, pattern)`.
    DateFormat,
    /// `unix_timestamp(x[, pattern])`, also `to_unix_timestamp`.
    UnixTimestamp,
    /// `from_unixtime(seconds[, pattern])`.
    FromUnixtime,
}

impl Kind {
    /// The function's name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::ToTimestamp => "to_timestamp",
            Kind::TryToTimestamp => "try_to_timestamp",
            Kind::ToDate => "to_date",
            Kind::DateFormat => "date_format",
            Kind::UnixTimestamp => "unix_timestamp",
            Kind::FromUnixtime => "from_unixtime",
        }
    }

    fn arity(self) -> (usize, usize) {
        match self {
            Kind::DateFormat => (2, 2),
            _ => (1, 2),
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct DateTimeFn {
    kind: Kind,
    aliases: Vec<String>,
    signature: Signature,
}

/// Epoch microseconds of the first argument: text parsed with the pattern (Spark's
/// cast where there is none), timestamps and dates as they are.
fn micros(x: ColumnarValue, pattern: Option<&str>, n: usize) -> Result<TimestampMicrosecondArray> {
    let x = x.into_array(n)?;
    if !matches!(
        x.data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) {
        let t = cast(&x, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
        return Ok(t.as_primitive::<TimestampMicrosecondType>().clone());
    }
    let format = parser(pattern)?;
    let text = Text::Column(x);
    Ok((0..n)
        .map(|i| {
            let t = text.get(i)?;
            match &format {
                Some(f) => f.parse(t),
                None => parse_timestamp(t, None),
            }
        })
        .collect())
}

/// The pattern argument (a constant: Spark's own functions take a literal pattern).
fn pattern_arg(
    name: &str,
    v: Option<ColumnarValue>,
    default: Option<&str>,
) -> Result<Option<String>> {
    match v {
        None => Ok(default.map(str::to_string)),
        Some(ColumnarValue::Scalar(s)) => constant_text(&s),
        Some(ColumnarValue::Array(_)) => {
            exec_err!("{name}(...): the pattern must be a constant")
        }
    }
}

impl ScalarUDFImpl for DateTimeFn {
    fn name(&self) -> &str {
        self.kind.name()
    }
    fn aliases(&self) -> &[String] {
        &self.aliases
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        check_arity(self.kind.name(), args.len(), self.kind.arity())?;
        Ok(match self.kind {
            Kind::ToTimestamp | Kind::TryToTimestamp => {
                DataType::Timestamp(TimeUnit::Microsecond, None)
            }
            Kind::ToDate => DataType::Date32,
            Kind::DateFormat | Kind::FromUnixtime => DataType::Utf8View,
            Kind::UnixTimestamp => DataType::Int64,
        })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let name = self.kind.name();
        let mut args = Args::new(name, args.args);
        let x = args.next("a value")?;
        let out: ArrayRef = match self.kind {
            Kind::ToTimestamp | Kind::TryToTimestamp => {
                let p = pattern_arg(name, args.optional(), None)?;
                Arc::new(micros(x, p.as_deref(), n)?)
            }
            Kind::ToDate => {
                let p = pattern_arg(name, args.optional(), None)?;
                let t = micros(x, p.as_deref(), n)?;
                let days: Date32Array = t
                    .iter()
                    .map(|v| v.and_then(|us| i32::try_from(us.div_euclid(86_400_000_000)).ok()))
                    .collect();
                Arc::new(days)
            }
            Kind::UnixTimestamp => {
                let p = pattern_arg(name, args.optional(), Some(DEFAULT_PATTERN))?;
                let t = micros(x, p.as_deref(), n)?;
                let secs: Int64Array = t
                    .iter()
                    .map(|v| v.map(|us| us.div_euclid(1_000_000)))
                    .collect();
                Arc::new(secs)
            }
            Kind::DateFormat | Kind::FromUnixtime => {
                let default = (self.kind == Kind::FromUnixtime).then_some(DEFAULT_PATTERN);
                let p = pattern_arg(name, args.optional(), default)?;
                let Some(p) = p else {
                    return Ok(ColumnarValue::Array(Arc::new(StringViewArray::new_null(n))));
                };
                let format = match chrono_format(&p) {
                    Ok(f) => f,
                    Err(e) => return exec_err!("{name}(...): {e}"),
                };
                let items: Vec<Item<'_>> = StrftimeItems::new(&format).collect();
                let t: Vec<Option<i64>> = if self.kind == Kind::FromUnixtime {
                    let secs = Int::of(Some(x), 0)?;
                    (0..n)
                        .map(|i| secs.get(i).and_then(|s| s.checked_mul(1_000_000)))
                        .collect()
                } else {
                    micros(x, None, n)?.iter().collect()
                };
                let mut out = StringViewBuilder::with_capacity(n);
                for v in t {
                    match v.and_then(chrono::DateTime::from_timestamp_micros) {
                        Some(dt) => out.append_value(
                            dt.naive_utc().format_with_items(items.iter()).to_string(),
                        ),
                        None => out.append_null(),
                    }
                }
                Arc::new(out.finish())
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// A field of a date (a timestamp's or date text's date), as Spark's `year(x)` etc.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Part {
    /// `year`.
    Year,
    /// `quarter`: 1 to 4.
    Quarter,
    /// `month`: 1 to 12.
    Month,
    /// `day`, `dayofmonth`.
    Day,
    /// `dayofweek`: 1 (Sunday) to 7 (Saturday).
    DayOfWeek,
    /// `dayofyear`: 1 to 366.
    DayOfYear,
    /// `weekofyear`: the ISO 8601 week, 1 to 53.
    WeekOfYear,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct PartFn {
    part: Part,
    name: &'static str,
    aliases: Vec<String>,
    signature: Signature,
}

impl ScalarUDFImpl for PartFn {
    fn name(&self) -> &str {
        self.name
    }
    fn aliases(&self) -> &[String] {
        &self.aliases
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        match args {
            [_] => Ok(vec![DataType::Date32]),
            _ => plan_err!("{}(date) takes one argument, not {}", self.name, args.len()),
        }
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int32)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        use chrono::Datelike;
        let n = args.number_rows;
        let Some(x) = args.args.into_iter().next() else {
            return exec_err!("{}(date) needs a date", self.name);
        };
        let days = cast(&x.into_array(n)?, &DataType::Date32)?;
        let days = days.as_primitive::<datafusion::arrow::datatypes::Date32Type>();
        let out: datafusion::arrow::array::Int32Array = days
            .iter()
            .map(|d| {
                let d = chrono::NaiveDate::from_num_days_from_ce_opt(d? + 719_163)?;
                Some(match self.part {
                    Part::Year => d.year(),
                    Part::Quarter => (d.month0() / 3 + 1) as i32,
                    Part::Month => d.month() as i32,
                    Part::Day => d.day() as i32,
                    Part::DayOfWeek => d.weekday().number_from_sunday() as i32,
                    Part::DayOfYear => d.ordinal() as i32,
                    Part::WeekOfYear => d.iso_week().week() as i32,
                })
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// datafusion-spark's `date_add`, `date_sub` and `add_months` taking what Spark's take:
/// a date, a timestamp or date text, and any integer count (a literal is a BIGINT).
#[derive(Debug, PartialEq, Eq, Hash)]
struct DateCount {
    inner: Arc<ScalarUDF>,
    signature: Signature,
}

impl ScalarUDFImpl for DateCount {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        match args {
            [_, n] if n.is_integer() || n.is_null() => Ok(vec![DataType::Date32, DataType::Int32]),
            _ => plan_err!(
                "{}(date, count) takes a date and an integer, not {args:?}",
                self.inner.name()
            ),
        }
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        self.inner.return_type(args)
    }
    fn return_field_from_args(
        &self,
        args: datafusion::logical_expr::ReturnFieldArgs<'_>,
    ) -> Result<datafusion::arrow::datatypes::FieldRef> {
        self.inner.return_field_from_args(args)
    }
    fn simplify(
        &self,
        args: Vec<datafusion::logical_expr::Expr>,
        info: &datafusion::logical_expr::simplify::SimplifyContext,
    ) -> Result<datafusion::logical_expr::simplify::ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.inner.invoke_with_args(args)
    }
}

/// `f` as Spark calls it, when it is one of datafusion-spark's date arithmetic
/// functions (see [`DateCount`]); else `f` itself.
pub(crate) fn spark_call(f: Arc<ScalarUDF>) -> Arc<ScalarUDF> {
    if ["date_add", "date_sub", "add_months"].contains(&f.name()) {
        Arc::new(ScalarUDF::new_from_impl(DateCount {
            inner: f,
            signature: Signature::user_defined(Volatility::Immutable),
        }))
    } else {
        f
    }
}

/// Spark's `try_to_timestamp`.
pub(crate) fn try_to_timestamp() -> ScalarUDF {
    ScalarUDF::new_from_impl(DateTimeFn {
        kind: Kind::TryToTimestamp,
        aliases: Vec::new(),
        signature: Signature::variadic_any(Volatility::Immutable),
    })
}

/// Spark's datetime functions.
pub(crate) fn all() -> Vec<ScalarUDF> {
    [
        (Kind::ToTimestamp, &[][..]),
        (Kind::TryToTimestamp, &[]),
        (Kind::ToDate, &[]),
        (Kind::DateFormat, &[]),
        (Kind::UnixTimestamp, &["to_unix_timestamp"]),
        (Kind::FromUnixtime, &[]),
    ]
    .into_iter()
    .map(|(kind, aliases)| {
        ScalarUDF::new_from_impl(DateTimeFn {
            kind,
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            signature: Signature::variadic_any(Volatility::Immutable),
        })
    })
    .chain(
        [
            (Part::Year, "year", &[][..]),
            (Part::Quarter, "quarter", &[]),
            (Part::Month, "month", &[]),
            (Part::Day, "day", &["dayofmonth"]),
            (Part::DayOfWeek, "dayofweek", &[]),
            (Part::DayOfYear, "dayofyear", &[]),
            (Part::WeekOfYear, "weekofyear", &[]),
        ]
        .into_iter()
        .map(|(part, name, aliases)| {
            ScalarUDF::new_from_impl(PartFn {
                part,
                name,
                aliases: aliases.iter().map(|a| a.to_string()).collect(),
                signature: Signature::user_defined(Volatility::Immutable),
            })
        }),
    )
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, pattern: &str) -> Option<i64> {
        let f = TimeFormat::new(&chrono_format(pattern).expect("valid"));
        f.parse(text).map(|us| us / 1_000_000)
    }

    // The cases of Spark's DateFunctionsSuite and DateTimeFormatterHelperSuite.
    #[test]
    fn spark_patterns_parse_as_spark() {
        assert_eq!(
            parse("2015-07-22 10:00:00", "yyyy-MM-dd HH:mm:ss"),
            Some(1_437_559_200)
        );
        assert_eq!(parse("2015-07-22", "yyyy-MM-dd"), Some(1_437_523_200));
        assert_eq!(parse("22/07/2015", "dd/MM/yyyy"), Some(1_437_523_200));
        assert_eq!(parse("2015-7-2", "yyyy-M-d"), Some(1_435_795_200));
        assert_eq!(
            parse("Wed Jul 22 10:00:00 2015", "EEE MMM dd HH:mm:ss yyyy"),
            Some(1_437_559_200)
        );
        assert_eq!(
            parse("2015-07-22T10:00:00", "yyyy-MM-dd'T'HH:mm:ss"),
            Some(1_437_559_200)
        );
        assert_eq!(
            parse("2015-07-22 10:00:00.123", "yyyy-MM-dd HH:mm:ss.SSS"),
            Some(1_437_559_200)
        );
        assert_eq!(
            parse("2015-07-22 12:00:00+02:00", "yyyy-MM-dd HH:mm:ssXXX"),
            Some(1_437_559_200)
        );
        assert_eq!(
            parse("07/22/15 10 AM", "MM/dd/yy hh a"),
            Some(1_437_559_200)
        );
        assert_eq!(parse("not a date", "yyyy-MM-dd"), None);
        assert_eq!(parse("2015-02-30", "yyyy-MM-dd"), None);
        // chrono's strftime, as earlier Lockgate queries wrote it.
        assert_eq!(
            parse("2015-07-22 10:00:00", "%Y-%m-%d %H:%M:%S"),
            Some(1_437_559_200)
        );
    }

    #[test]
    fn patterns_translate_and_refuse() {
        assert_eq!(
            translate("yyyy-MM-dd'T'HH:mm:ss.SSS").as_deref(),
            Ok("%Y-%m-%dT%H:%M:%S.%3f")
        );
        assert_eq!(translate("EEEE, d MMMM yy").as_deref(), Ok("%A, %-d %B %y"));
        assert_eq!(translate("'o''clock' h a").as_deref(), Ok("o'clock %-I %p"));
        assert_eq!(translate("100%").as_deref(), Ok("100%"));
        assert!(translate("yyyy QQ").unwrap_err().contains("`QQ`"));
        assert!(translate("yyyy-MM-dd[ HH]")
            .unwrap_err()
            .contains("optional"));
        assert!(translate("'open").unwrap_err().contains("unclosed"));
        assert!(chrono_format("%Q").is_err());
    }

    #[test]
    fn formats_as_spark() {
        let f = chrono_format("yyyy-MM-dd HH:mm:ss").expect("valid");
        let t = chrono::DateTime::from_timestamp(1_437_559_200, 0).expect("valid");
        assert_eq!(t.naive_utc().format(&f).to_string(), "2015-07-22 10:00:00");
        let f = chrono_format("EEE, d MMM yyyy").expect("valid");
        assert_eq!(t.naive_utc().format(&f).to_string(), "Wed, 22 Jul 2015");
    }
}
