//! Streams as tables: lines as `lines(value)` record batches, and the decoders of
//! `--format json|csv --schema '...'` (a value that does not decode is counted and
//! skipped).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringViewArray, StringViewBuilder};
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::scalar::ScalarValue;

use lockgate_core::source::TextChunk;
use lockgate_core::SourceCounters;

use crate::error::{Error, Result};
use crate::exec::batch_of;

/// The schema of a text source: `value STRING` (held as a string view array, so the
/// lines of a file chunk, and the words `string_to_array` splits them into, point into
/// the chunk's bytes instead of being copied).
pub fn lines_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "value",
        DataType::Utf8View,
        false,
    )]))
}

fn lines_of(col: StringViewArray) -> RecordBatch {
    let col: ArrayRef = Arc::new(col);
    // One column of the schema's type: cannot fail.
    RecordBatch::try_new(lines_schema(), vec![col])
        .unwrap_or_else(|_| RecordBatch::new_empty(lines_schema()))
}

/// One `lines(value)` batch of `lines`.
pub fn lines_batch<'a>(lines: impl Iterator<Item = &'a str>, hint: usize) -> RecordBatch {
    let mut b = StringViewBuilder::with_capacity(hint);
    for l in lines {
        b.append_value(l);
    }
    lines_of(b.finish())
}

/// One `lines(value)` batch of raw lines (a file chunk's): valid UTF-8 is copied as
/// it is, invalid bytes are replaced by U+FFFD.
pub fn lines_batch_bytes<'a>(lines: impl Iterator<Item = &'a [u8]>, bytes: usize) -> RecordBatch {
    let mut b = StringViewBuilder::with_capacity(bytes / 32 + 1);
    for l in lines {
        match std::str::from_utf8(l) {
            Ok(s) => b.append_value(s),
            Err(_) => b.append_value(String::from_utf8_lossy(l)),
        }
    }
    lines_of(b.finish())
}

/// The lines of `body` that hold `f`'s needle, as byte ranges without their `\n`.
fn lines_holding<'a>(
    body: &'a [u8],
    f: &'a memchr::memmem::Finder<'_>,
) -> impl Iterator<Item = (usize, usize)> + 'a {
    let mut from = 0;
    std::iter::from_fn(move || lockgate_core::text::next_line_holding(body, f, &mut from))
}

/// A chunk's text as an Arrow buffer: the chunk's own memory, shared, not copied.
fn chunk_buffer(chunk: &TextChunk) -> Buffer {
    /// What keeps the chunk's memory alive while Arrow uses it.
    struct Owner(Arc<Vec<u8>>);
    impl AsRef<[u8]> for Owner {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }
    let (data, range) = chunk.shared();
    Buffer::from(bytes::Bytes::from_owner(Owner(data.clone())).slice(range))
}

/// One `lines(value)` batch of a file chunk's text: its lines (without `\n` or
/// `\r\n`; a last line without `\n` counts), only those containing `needle` when given
/// (found by a substring search over the whole chunk, as a filter pushed down from the
/// query). Text that is not UTF-8 has its invalid bytes replaced by U+FFFD.
///
/// Each line is a view of the chunk's memory (which the batch shares, so no text is
/// copied): only a line that is not UTF-8 is copied, and a (rare) chunk too large for
/// views' 32-bit offsets is copied line by line.
pub fn chunk_batch(chunk: &TextChunk, needle: Option<&memchr::memmem::Finder<'_>>) -> RecordBatch {
    let bytes = chunk.as_bytes();
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let trim = |l: &'_ [u8]| -> usize { l.len() - usize::from(l.ends_with(b"\r")) };
    if bytes.is_empty() {
        return lines_of(StringViewBuilder::new().finish());
    }
    if u32::try_from(bytes.len()).is_err() {
        let line = |(s, e): (usize, usize)| &body[s..s + trim(&body[s..e])];
        return match needle {
            None => lines_batch_bytes(
                body.split(|&c| c == b'\n').map(|l| &l[..trim(l)]),
                body.len(),
            ),
            Some(f) => lines_batch_bytes(lines_holding(body, f).map(line), 0),
        };
    }
    let mut b = StringViewBuilder::with_capacity(if needle.is_some() {
        0
    } else {
        body.len() / 64 + 1
    });
    let block = b.append_block(chunk_buffer(chunk));
    let mut add = |(start, end): (usize, usize)| {
        let len = trim(&body[start..end]);
        // Offsets and lengths fit in 32 bits (checked above); a line that is not UTF-8
        // is copied with its invalid bytes replaced.
        if b.try_append_view(block, start as u32, len as u32).is_err() {
            b.append_value(String::from_utf8_lossy(&body[start..start + len]));
        }
    };
    match needle {
        None => {
            let mut start = 0usize;
            for end in memchr::memchr_iter(b'\n', body).chain(std::iter::once(body.len())) {
                add((start, end));
                start = end + 1;
            }
        }
        Some(f) => lines_holding(body, f).for_each(&mut add),
    }
    lines_of(b.finish())
}

/// How values are decoded into columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per value; fields by column name, missing ones null.
    Json,
    /// Comma-separated fields in the schema's order (double quotes around fields that
    /// hold commas or quotes; `""` is a quote).
    Csv,
}

impl std::str::FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            other => Err(Error::Config(format!(
                "--format {other}: expected json or csv (text is the default)"
            ))),
        }
    }
}

/// Parses `ts TIMESTAMP, level STRING, n BIGINT` into a schema.
pub fn parse_schema(text: &str) -> Result<SchemaRef> {
    let mut fields = Vec::new();
    for col in text.split(',') {
        let mut parts = col.split_whitespace();
        let (Some(name), Some(ty), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::Config(format!(
                "--schema: `{}` is not `NAME TYPE` (e.g. 'ts TIMESTAMP, level STRING')",
                col.trim()
            )));
        };
        let dt = match ty.to_ascii_uppercase().as_str() {
            "STRING" | "TEXT" | "VARCHAR" => DataType::Utf8,
            "INT" | "INTEGER" | "BIGINT" | "LONG" => DataType::Int64,
            "DOUBLE" | "FLOAT" | "REAL" => DataType::Float64,
            "BOOLEAN" | "BOOL" => DataType::Boolean,
            "TIMESTAMP" => DataType::Timestamp(TimeUnit::Microsecond, None),
            "DATE" => DataType::Date32,
            other => {
                return Err(Error::Config(format!(
                    "--schema: type {other} of `{name}` (use STRING, BIGINT, DOUBLE, BOOLEAN, \
                     TIMESTAMP or DATE)"
                )))
            }
        };
        if fields.iter().any(|f: &Field| f.name() == name) {
            return Err(Error::Config(format!("--schema: column `{name}` twice")));
        }
        fields.push(Field::new(name, dt, true));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// Why a value did not decode: a short reason (the label of
/// `lockgate_source_skipped_values_total`) and the detail.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Skip {
    reason: &'static str,
    detail: String,
}

impl Skip {
    fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Skip {
            reason,
            detail: detail.into(),
        }
    }
}

/// How many skipped values a decoder logs one by one (with their text and location);
/// after that, one line per batch sums them up.
const LOGGED_ONE_BY_ONE: u64 = 5;

/// At most `max` bytes of `text` (on a character boundary), with `…` when cut.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Decodes values into rows of a schema. A value that does not decode is skipped,
/// counted with its reason (in the source's counters when given: `/metrics` and the
/// streaming page show them), and the first few are logged with their text and where
/// they came from.
#[derive(Clone, Debug)]
pub struct Decoder {
    format: Format,
    schema: SchemaRef,
    skipped: Arc<AtomicU64>,
    counters: Option<Arc<SourceCounters>>,
}

impl Decoder {
    /// A decoder of `format` into `schema`.
    pub fn new(format: Format, schema: SchemaRef) -> Self {
        Decoder {
            format,
            schema,
            skipped: Arc::new(AtomicU64::new(0)),
            counters: None,
        }
    }

    /// The same decoder, counting what it skips in a source's counters too.
    pub fn counting_in(mut self, counters: Arc<SourceCounters>) -> Self {
        self.counters = Some(counters);
        self
    }

    /// The schema decoded into.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// How many values did not decode (skipped) so far.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// The handle of the skip count.
    pub fn skipped_counter(&self) -> Arc<AtomicU64> {
        self.skipped.clone()
    }

    /// One batch of the values that decode (values without a location: see
    /// [`decode_at`](Self::decode_at)).
    pub fn decode<'a>(&self, values: impl Iterator<Item = &'a str>) -> Result<RecordBatch> {
        self.decode_at(values, |_| None)
    }

    /// One batch of the values that decode; `locate(i)` says where the `i`-th value
    /// came from (`file `a.json` line 3`, `topic t partition 0 offset 12`), asked only
    /// of the values skipped.
    pub fn decode_at<'a>(
        &self,
        values: impl Iterator<Item = &'a str>,
        locate: impl Fn(usize) -> Option<String>,
    ) -> Result<RecordBatch> {
        let mut rows = Vec::new();
        let (mut bad, mut unlogged, mut last) = (0u64, 0u64, None);
        for (i, v) in values.enumerate() {
            if v.trim().is_empty() {
                continue;
            }
            let skip = match self.decode_one(v) {
                Ok(r) => {
                    rows.push(r);
                    continue;
                }
                Err(skip) => skip,
            };
            bad += 1;
            let at = locate(i).unwrap_or_else(|| "a value of a stream without locations".into());
            let detail = format!("{} at {at}", skip.detail);
            let n = self.skipped.fetch_add(1, Ordering::Relaxed) + 1;
            if n <= LOGGED_ONE_BY_ONE {
                tracing::warn!(
                    reason = skip.reason,
                    value = %cut(v, 120),
                    "SQL input: a value that does not decode as {:?} with the schema is \
                     skipped (counted in skipped_values): {detail}{}",
                    self.format,
                    if n == LOGGED_ONE_BY_ONE {
                        "; further skipped values are summed up per batch"
                    } else {
                        ""
                    }
                );
            } else {
                unlogged += 1;
            }
            if let Some(c) = &self.counters {
                c.skipped_value(skip.reason, detail.clone());
            }
            last = Some(detail);
        }
        if unlogged > 0 {
            tracing::warn!(
                skipped = bad,
                total = self.skipped(),
                "SQL input: {unlogged} more value(s) of this batch do not decode as {:?} with \
                 the schema and were skipped (counted in skipped_values); the last: {}",
                self.format,
                last.unwrap_or_default()
            );
        }
        batch_of(&self.schema, &rows)
    }

    fn decode_one(&self, v: &str) -> std::result::Result<Vec<ScalarValue>, Skip> {
        let wrong = |f: &Field, shown: &str| {
            Skip::new(
                "wrong type",
                format!(
                    "column `{}` ({}): `{}` does not convert",
                    f.name(),
                    f.data_type(),
                    cut(shown, 40)
                ),
            )
        };
        let null = |f: &Field| ScalarValue::try_from(f.data_type()).map_err(|_| wrong(f, "null"));
        match self.format {
            Format::Json => {
                let value: serde_json::Value = serde_json::from_str(v)
                    .map_err(|e| Skip::new("not JSON", format!("not JSON ({e})")))?;
                let serde_json::Value::Object(obj) = value else {
                    return Err(Skip::new("not a JSON object", "not a JSON object"));
                };
                self.schema
                    .fields()
                    .iter()
                    .map(|f| {
                        let got = match obj.get(f.name()) {
                            None | Some(serde_json::Value::Null) => return null(f),
                            Some(serde_json::Value::String(s)) => from_text(s, f.data_type()),
                            Some(serde_json::Value::Bool(b)) => match f.data_type() {
                                DataType::Boolean => Some(ScalarValue::Boolean(Some(*b))),
                                DataType::Utf8 => Some(ScalarValue::Utf8(Some(b.to_string()))),
                                _ => None,
                            },
                            Some(serde_json::Value::Number(n)) => match f.data_type() {
                                DataType::Int64 => n.as_i64().map(|x| ScalarValue::Int64(Some(x))),
                                DataType::Float64 => {
                                    n.as_f64().map(|x| ScalarValue::Float64(Some(x)))
                                }
                                DataType::Utf8 => Some(ScalarValue::Utf8(Some(n.to_string()))),
                                // Numbers as timestamps are epoch seconds, as in Spark.
                                DataType::Timestamp(_, _) => n.as_f64().map(|s| {
                                    ScalarValue::TimestampMicrosecond(Some((s * 1e6) as i64), None)
                                }),
                                _ => None,
                            },
                            Some(other) => match f.data_type() {
                                DataType::Utf8 => Some(ScalarValue::Utf8(Some(other.to_string()))),
                                _ => None,
                            },
                        };
                        got.ok_or_else(|| {
                            wrong(
                                f,
                                &obj.get(f.name())
                                    .map(ToString::to_string)
                                    .unwrap_or_default(),
                            )
                        })
                    })
                    .collect()
            }
            Format::Csv => {
                let fields = split_csv(v)
                    .ok_or_else(|| Skip::new("unclosed quote", "a quote is not closed"))?;
                if fields.len() != self.schema.fields().len() {
                    return Err(Skip::new(
                        "wrong field count",
                        format!(
                            "{} field(s), the schema has {}",
                            fields.len(),
                            self.schema.fields().len()
                        ),
                    ));
                }
                self.schema
                    .fields()
                    .iter()
                    .zip(fields)
                    .map(|(f, s)| {
                        if s.is_empty() && f.data_type() != &DataType::Utf8 {
                            null(f)
                        } else {
                            from_text(&s, f.data_type()).ok_or_else(|| wrong(f, &s))
                        }
                    })
                    .collect()
            }
        }
    }
}

fn from_text(s: &str, dt: &DataType) -> Option<ScalarValue> {
    Some(match dt {
        DataType::Utf8 => ScalarValue::Utf8(Some(s.to_string())),
        DataType::Int64 => ScalarValue::Int64(Some(s.trim().parse().ok()?)),
        DataType::Float64 => ScalarValue::Float64(Some(s.trim().parse().ok()?)),
        DataType::Boolean => {
            ScalarValue::Boolean(Some(match s.trim().to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => return None,
            }))
        }
        DataType::Timestamp(_, _) => {
            ScalarValue::TimestampMicrosecond(Some(crate::udf::parse_timestamp(s, None)?), None)
        }
        DataType::Date32 => {
            let d = chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()?;
            let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
            ScalarValue::Date32(Some(i32::try_from((d - epoch).num_days()).ok()?))
        }
        _ => return None,
    })
}

/// The fields of a CSV line (`None` for an unclosed quote).
fn split_csv(line: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.trim_end_matches(['\r', '\n']).chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.is_empty() => quoted = true,
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    if quoted {
        return None;
    }
    out.push(cur);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_lines_and_pushed_down_filters_match_a_line_by_line_filter() {
        use datafusion::arrow::array::AsArray;
        let chunks: [&[u8]; 5] = [
            b"a ERROR b\nno\r\nERROR\n\nx ERROR\r\nlast ERROR",
            b"ERROR at start\nend\n",
            b"",
            b"bad \xff ERROR\nok\n",
            b"ERRORERROR\nERR\nOR\n",
        ];
        for chunk in chunks {
            let lines: Vec<String> = if chunk.is_empty() {
                Vec::new()
            } else {
                let body = chunk.strip_suffix(b"\n").unwrap_or(chunk);
                body.split(|&b| b == b'\n')
                    .map(|l| {
                        String::from_utf8_lossy(l.strip_suffix(b"\r").unwrap_or(l)).into_owned()
                    })
                    .collect()
            };
            let f = memchr::memmem::Finder::new("ERROR");
            for (needle, want) in [
                (None, lines.clone()),
                (
                    Some(&f),
                    lines
                        .iter()
                        .filter(|l| l.contains("ERROR"))
                        .cloned()
                        .collect(),
                ),
            ] {
                let b = chunk_batch(&TextChunk::from_bytes(chunk.to_vec()), needle);
                let got: Vec<String> = b
                    .column(0)
                    .as_string_view()
                    .iter()
                    .map(|v| v.unwrap_or_default().to_string())
                    .collect();
                assert_eq!(got, want, "{:?}", String::from_utf8_lossy(chunk));
            }
        }
    }

    #[test]
    fn values_decode_and_bad_ones_are_counted() {
        let schema = parse_schema("ts TIMESTAMP, level STRING, n BIGINT").expect("schema");
        let json = Decoder::new(Format::Json, schema.clone());
        let b = json
            .decode(
                [
                    r#"{"ts": "2015-12-18 00:00:10", "level": "ERROR", "n": 3}"#,
                    r#"{"level": "INFO"}"#,
                    "not json",
                    r#"{"ts": "yesterday", "level": "x"}"#,
                    r#"{"n": "three"}"#,
                ]
                .into_iter(),
            )
            .expect("decodes");
        assert_eq!(b.num_rows(), 2);
        assert_eq!(json.skipped(), 3);
        let csv = Decoder::new(Format::Csv, schema);
        let b = csv
            .decode(
                [
                    "2015-12-18 00:00:10,\"a, \"\"b\"\"\",1",
                    "x,y",
                    "2015-12-18 00:00:10,,",
                ]
                .into_iter(),
            )
            .expect("decodes");
        assert_eq!(b.num_rows(), 2);
        assert_eq!(csv.skipped(), 1);
        assert_eq!(
            ScalarValue::try_from_array(b.column(1), 0).expect("a value"),
            ScalarValue::Utf8(Some("a, \"b\"".into()))
        );
        for bad in ["ts", "ts WHATEVER", "a INT, a INT"] {
            assert!(parse_schema(bad).is_err(), "{bad}");
        }
    }
}
