//! The functions Lockgate adds to DataFusion's: the markers that carry an event-time
//! window through DataFusion's planner, the compiled time formats the datetime
//! functions parse with, and a `string_to_array` that splits string views without
//! copying.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, ByteView, ListArray, StringViewArray, StringViewBuilder,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{exec_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
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

/// A chrono format compiled once: a fast parser for fixed layouts of `%Y %m %d %e %H
/// %M %S %b %a` and literal text, else chrono's items parsed once.
#[derive(Debug)]
pub enum TimeFormat {
    /// The fast layout.
    Fast(Vec<Piece>),
    /// Anything else, with chrono.
    Chrono(String),
}

/// A piece of a fast layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    /// A literal byte.
    Lit(u8),
    /// `%Y`, four digits.
    Year,
    /// `%m`.
    Month,
    /// `%d` or `%e`: two digits, the first may be a space.
    Day,
    /// `%H`.
    Hour,
    /// `%M`.
    Minute,
    /// `%S`.
    Second,
    /// `%b`: `Jan` ... `Dec`.
    MonthName,
    /// `%a`: `Mon` ... `Sun`, checked against the date (as chrono does).
    Weekday,
}

impl TimeFormat {
    /// Compiles `format`.
    pub fn new(format: &str) -> Self {
        let mut pieces = Vec::new();
        let mut bytes = format.bytes();
        while let Some(b) = bytes.next() {
            if b != b'%' {
                pieces.push(Piece::Lit(b));
                continue;
            }
            pieces.push(match bytes.next() {
                Some(b'Y') => Piece::Year,
                Some(b'm') => Piece::Month,
                Some(b'd' | b'e') => Piece::Day,
                Some(b'H') => Piece::Hour,
                Some(b'M') => Piece::Minute,
                Some(b'S') => Piece::Second,
                Some(b'b') => Piece::MonthName,
                Some(b'a') => Piece::Weekday,
                Some(b'%') => Piece::Lit(b'%'),
                _ => return TimeFormat::Chrono(format.to_string()),
            });
        }
        if !pieces.contains(&Piece::Year)
            || !pieces
                .iter()
                .any(|p| matches!(p, Piece::Month | Piece::MonthName))
            || !pieces.contains(&Piece::Day)
        {
            return TimeFormat::Chrono(format.to_string());
        }
        TimeFormat::Fast(pieces)
    }

    /// Epoch microseconds of `text` (UTC), `None` when it does not parse.
    pub fn parse(&self, text: &str) -> Option<i64> {
        match self {
            TimeFormat::Chrono(f) => parse_timestamp(text, Some(f)),
            TimeFormat::Fast(pieces) => {
                // Trimmed as `str::trim` does (ASCII whitespace first: cheaper).
                let ascii = text.trim_ascii();
                let b = if ascii.starts_with(char::is_whitespace)
                    || ascii.ends_with(char::is_whitespace)
                {
                    text.trim()
                } else {
                    ascii
                }
                .as_bytes();
                let (mut i, mut y, mut mo, mut d, mut h, mut mi, mut s) =
                    (0usize, 0i64, 0u32, 0u32, 0u32, 0u32, 0u32);
                let digits = |i: usize, n: usize| -> Option<u32> {
                    let mut v = 0;
                    for k in 0..n {
                        let c = *b.get(i + k)?;
                        if !c.is_ascii_digit() {
                            return None;
                        }
                        v = v * 10 + u32::from(c - b'0');
                    }
                    Some(v)
                };
                let mut weekday = None;
                for p in pieces {
                    match *p {
                        Piece::Lit(c) => {
                            if *b.get(i)? != c {
                                return None;
                            }
                            i += 1;
                        }
                        Piece::Year => {
                            y = i64::from(digits(i, 4)?);
                            i += 4;
                        }
                        Piece::Month => {
                            mo = digits(i, 2)?;
                            i += 2;
                        }
                        Piece::Day => {
                            d = if b.get(i) == Some(&b' ') {
                                digits(i + 1, 1)?
                            } else {
                                digits(i, 2)?
                            };
                            i += 2;
                        }
                        Piece::Hour => {
                            h = digits(i, 2)?;
                            i += 2;
                        }
                        Piece::Minute => {
                            mi = digits(i, 2)?;
                            i += 2;
                        }
                        Piece::Second => {
                            s = digits(i, 2)?;
                            i += 2;
                        }
                        Piece::MonthName => {
                            const MONTHS: [&[u8]; 12] = [
                                b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug",
                                b"Sep", b"Oct", b"Nov", b"Dec",
                            ];
                            let name = b.get(i..i + 3)?;
                            mo = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(name))? as u32
                                + 1;
                            i += 3;
                        }
                        Piece::Weekday => {
                            const DAYS: [&[u8]; 7] =
                                [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
                            let name = b.get(i..i + 3)?;
                            weekday = Some(DAYS.iter().position(|w| w.eq_ignore_ascii_case(name))?);
                            i += 3;
                        }
                    }
                }
                if i != b.len() || !(1..=12).contains(&mo) || h > 23 || mi > 59 || s > 59 {
                    return None;
                }
                let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
                let days_in = [
                    31,
                    if leap { 29 } else { 28 },
                    31,
                    30,
                    31,
                    30,
                    31,
                    31,
                    30,
                    31,
                    30,
                    31,
                ];
                if d == 0 || d > days_in[mo as usize - 1] {
                    return None;
                }
                // Days since the epoch (Howard Hinnant's days_from_civil).
                let (yy, m) = (if mo <= 2 { y - 1 } else { y }, i64::from(mo));
                let era = yy.div_euclid(400);
                let yoe = yy - era * 400;
                let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
                let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
                let days = era * 146_097 + doe - 719_468;
                // chrono checks the weekday against the date: so does this.
                if let Some(w) = weekday {
                    // 1970-01-01 was a Thursday (index 3).
                    if (days + 3).rem_euclid(7) as usize != w {
                        return None;
                    }
                }
                let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s);
                secs.checked_mul(1_000_000)
            }
        }
    }
}

/// Parses `text` with `format` (or the default layouts) to epoch microseconds. As
/// Spark, fields the format lacks are zero (the time of a date-only format) or 1970 (the
/// year), and an offset in the text (`%z`) is applied; without one the time is UTC.
pub fn parse_timestamp(text: &str, format: Option<&str>) -> Option<i64> {
    let text = text.trim();
    let Some(f) = format else {
        return match chrono::DateTime::parse_from_rfc3339(text) {
            Ok(t) => Some(t.timestamp_micros()),
            Err(_) => ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d"]
                .iter()
                .find_map(|f| parse_timestamp(text, Some(f))),
        };
    };
    let mut p = chrono::format::Parsed::new();
    chrono::format::parse(&mut p, text, chrono::format::StrftimeItems::new(f)).ok()?;
    if p.hour_div_12().is_none() && p.hour_mod_12().is_none() {
        p.set_hour(0).ok()?;
    }
    if p.minute().is_none() {
        p.set_minute(0).ok()?;
    }
    if p.second().is_none() {
        p.set_second(0).ok()?;
    }
    if p.year().is_none() && p.year_div_100().is_none() && p.year_mod_100().is_none() {
        p.set_year(1970).ok()?;
    }
    let offset = i64::from(p.offset().unwrap_or(0));
    let local = p.to_naive_datetime_with_offset(0).ok()?;
    local
        .and_utc()
        .timestamp_micros()
        .checked_sub(offset.checked_mul(1_000_000)?)
}

/// DataFusion's `string_to_array` (alias `string_to_list`), the same in every case, but
/// splitting a column of string views on a constant delimiter into views of the same
/// buffers: a word is not copied (nor is it copied again by `unnest`, which only
/// flattens the list). Every other case goes to DataFusion's function.
#[derive(Debug, PartialEq, Eq, Hash)]
struct StringToArray {
    inner: Arc<ScalarUDF>,
}

impl ScalarUDFImpl for StringToArray {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let [ColumnarValue::Array(text), ColumnarValue::Scalar(delimiter)] = &args.args[..] {
            if let (Some(text), Some(Some(d))) = (text.as_string_view_opt(), delimiter.try_as_str())
            {
                if !d.is_empty() {
                    return Ok(ColumnarValue::Array(split_views(text, d)?));
                }
            }
        }
        self.inner.invoke_with_args(args)
    }
}

/// `string_to_array(text, delimiter)` of string views, `delimiter` not empty: an empty
/// string is an empty list, NULL is NULL, else the parts between delimiters (empty
/// ones included), as views of `text`'s buffers.
fn split_views(text: &StringViewArray, delimiter: &str) -> Result<ArrayRef> {
    let finder = memchr::memmem::Finder::new(delimiter.as_bytes());
    let mut parts = StringViewBuilder::with_capacity(text.len() * 8);
    // The text's buffers become the parts' first blocks, with the same indexes.
    for b in text.data_buffers() {
        parts.append_block(b.clone());
    }
    let mut offsets = Vec::with_capacity(text.len() + 1);
    offsets.push(0i32);
    let mut n = 0usize;
    for (i, view) in text.views().iter().enumerate() {
        if text.is_valid(i) {
            let value = text.value(i);
            // A value of more than 12 bytes lives in a buffer; a shorter one in its view.
            let place = (value.len() > 12).then(|| ByteView::from(*view));
            let mut start = 0;
            let ends = finder
                .find_iter(value.as_bytes())
                .chain(std::iter::once(value.len()));
            for end in ends.take_while(|_| !value.is_empty()) {
                match &place {
                    // Offsets within a view's buffer fit in 32 bits.
                    Some(v) => parts.try_append_view(
                        v.buffer_index,
                        v.offset + start as u32,
                        (end - start) as u32,
                    )?,
                    None => parts.append_value(&value[start..end]),
                }
                n += 1;
                start = end + delimiter.len();
            }
        }
        offsets.push(i32::try_from(n).map_err(|_| {
            datafusion::error::DataFusionError::Execution(
                "string_to_array: more than 2^31 parts in one batch".into(),
            )
        })?);
    }
    let list = ListArray::try_new(
        Arc::new(Field::new_list_field(DataType::Utf8View, true)),
        OffsetBuffer::new(offsets.into()),
        Arc::new(parts.finish()),
        text.nulls().cloned(),
    )?;
    Ok(Arc::new(list))
}

/// Every function Lockgate adds.
pub fn all() -> Vec<ScalarUDF> {
    vec![
        marker(WINDOW),
        marker(WINDOW_END),
        ScalarUDF::new_from_impl(StringToArray {
            inner: datafusion::functions_nested::string::string_to_array_udf(),
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;
    use datafusion::common::ScalarValue;
    use datafusion::config::ConfigOptions;

    #[test]
    fn string_to_array_of_views_equals_datafusions() {
        let long = "a fairly long line with words, more than twelve bytes";
        let texts: Vec<Option<&str>> = vec![
            Some(""),
            None,
            Some("one"),
            Some(" lead and trail "),
            Some("double  space"),
            Some(long),
            Some("ünïcödé wörds ünd mörë wörds"),
            Some("x::y::::z"),
        ];
        let ours = StringToArray {
            inner: datafusion::functions_nested::string::string_to_array_udf(),
        };
        for delimiter in [" ", "::", "wörds"] {
            let run = |text: ArrayRef| {
                let args = ScalarFunctionArgs {
                    args: vec![
                        ColumnarValue::Array(text.clone()),
                        ColumnarValue::Scalar(ScalarValue::Utf8(Some(delimiter.into()))),
                    ],
                    arg_fields: vec![
                        Arc::new(Field::new("t", text.data_type().clone(), true)),
                        Arc::new(Field::new("d", DataType::Utf8, true)),
                    ],
                    number_rows: text.len(),
                    return_field: Arc::new(Field::new(
                        "r",
                        ours.return_type(&[text.data_type().clone()]).expect("type"),
                        true,
                    )),
                    config_options: Arc::new(ConfigOptions::default()),
                };
                match ours.invoke_with_args(args).expect("split") {
                    ColumnarValue::Array(a) => a,
                    ColumnarValue::Scalar(s) => s.to_array().expect("array"),
                }
            };
            let views: ArrayRef = Arc::new(StringViewArray::from(texts.clone()));
            let strings: ArrayRef = Arc::new(StringArray::from(texts.clone()));
            // Ours splits the views; DataFusion's splits the strings.
            let (got, want) = (run(views), run(strings));
            let (got, want) = (got.as_list::<i32>(), want.as_list::<i32>());
            assert_eq!(got.len(), want.len());
            for (i, text) in texts.iter().enumerate() {
                assert_eq!(got.is_null(i), want.is_null(i), "row {i}");
                let g: Vec<Option<String>> = got
                    .value(i)
                    .as_string_view()
                    .iter()
                    .map(|v| v.map(str::to_string))
                    .collect();
                let w: Vec<Option<String>> = want
                    .value(i)
                    .as_string::<i32>()
                    .iter()
                    .map(|v| v.map(str::to_string))
                    .collect();
                assert_eq!(g, w, "{text:?} split on {delimiter:?}");
            }
        }
    }

    #[test]
    fn timestamps_parse_with_and_without_a_format() {
        assert_eq!(
            parse_timestamp("Fri Dec 18 00:00:10 2015", Some("%a %b %d %H:%M:%S %Y")),
            Some(1_450_396_810_000_000)
        );
        assert_eq!(
            parse_timestamp("2015-12-18 00:00:10", None),
            Some(1_450_396_810_000_000)
        );
        assert_eq!(
            parse_timestamp("2015-12-18T00:00:10Z", None),
            Some(1_450_396_810_000_000)
        );
        assert_eq!(parse_timestamp("not a time", None), None);
        // The fast layout agrees with chrono, day by day over four years.
        let apache = "%a %b %d %H:%M:%S %Y";
        let fast = TimeFormat::new(apache);
        assert!(matches!(fast, TimeFormat::Fast(_)));
        for day in 0..1461 {
            let t = chrono::DateTime::from_timestamp(
                1_420_070_400 + day * 86_400 + day * 37 % 86_400,
                0,
            )
            .expect("a time");
            for text in [
                t.format(apache).to_string(),
                t.format("%a %b %e %H:%M:%S %Y").to_string(),
                t.format("%Y-%m-%d %H:%M:%S").to_string(),
            ] {
                assert_eq!(
                    fast.parse(&text),
                    parse_timestamp(&text, Some(apache)),
                    "{text}"
                );
            }
            let iso = TimeFormat::new("%Y-%m-%d %H:%M:%S");
            let text = t.format("%Y-%m-%d %H:%M:%S").to_string();
            assert_eq!(iso.parse(&text), Some(t.timestamp_micros()), "{text}");
        }
        for bad in [
            "Thu Dec 18 00:00:10 2015",
            "Fri Dec 18 24:00:10 2015",
            "Fri Feb 30 00:00:10 2015",
            "Fri Dec 18 00:00:10 2015x",
        ] {
            assert_eq!(fast.parse(bad), None, "{bad}");
            assert_eq!(parse_timestamp(bad, Some(apache)), None, "{bad}");
        }
        assert_eq!(
            parse_timestamp("Fri Dec 32 00:00:10 2015", Some("%a %b %d %H:%M:%S %Y")),
            None
        );
        // Surrounding whitespace is trimmed as `str::trim` does, Unicode's too.
        for padded in [
            " Fri Dec 18 00:00:10 2015\t",
            "\u{b}Fri Dec 18 00:00:10 2015\r\n",
            "\u{a0}Fri Dec 18 00:00:10 2015\u{2003}",
        ] {
            assert_eq!(
                fast.parse(padded),
                Some(1_450_396_810_000_000),
                "{padded:?}"
            );
            assert_eq!(fast.parse(padded), parse_timestamp(padded, Some(apache)));
        }
    }
}
