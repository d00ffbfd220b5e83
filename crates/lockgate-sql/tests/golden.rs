//! The golden query suite: every `tests/golden/*.test` file holds cases, each a query
//! with input batches and the rows expected after each batch (in the spirit of
//! DataFusion's `.slt` files), or a query refused at start with the words its error
//! must contain.
//!
//! Each accepted query runs three ways, which must all give the expected rows per
//! batch:
//! 1. uninterrupted, over a replayable stream of the batches (`lines` as record
//!    batches, decoded by `format`/`schema` when given);
//! 2. stopped after every batch and recovered from its checkpoint for the next one;
//! 3. for text input (no `format`), over files, one per batch, read as chunks (the
//!    CLI's path, where filters and counts run fused over the chunk's text).
//!
//! The format, one directive per line (blank lines and `#` comments between them):
//!
//! ```text
//! == what the case shows                 starts a case
//! sql: SELECT ...                        the query (more `sql:` lines continue it)
//! format: csv                            optional: decode lines (json or csv) ...
//! schema: ts TIMESTAMP, n BIGINT         ... into these columns
//! watermark: ts 10 seconds               optional: the event-time column and delay
//! mode: append                           optional: the output mode (default update)
//! dialect: datafusion                    optional: DataFusion's SQL (default Spark's)
//! also: events                           optional: another stream table of the same lines
//! static: levels                         optional: a static table from the CSV below
//! | level,severity                       (content lines start with `|`)
//! batch:                                 the next input batch, its lines below
//! | a line
//! expect:                                the rows after that batch, JSON (keys in the
//!                                        query's SELECT order), rows in any order
//! | {"n":1}
//! error: joins of streams                instead of batches: refused, with these words
//! ```
//!
//! `LOCKGATE_BLESS=1 cargo test -p lockgate-sql --test golden` rewrites the files with
//! each case's actual rows as its expectations (its header comments kept, comments
//! between cases dropped): check every one by hand before keeping it. `GOLDEN=text`
//! runs only the cases whose title or file name holds `text`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lockgate_core::testing::run_checkpointed;
use lockgate_core::{parse_duration, DStream, FileStreamOptions, OutputMode, StreamingContext};
use lockgate_sql::{parse_schema, Decoder, Dialect, SqlContext};

/// One case of a golden file.
#[derive(Debug, Default)]
struct Case {
    file: String,
    line: usize,
    title: String,
    sql: String,
    format: Option<(String, String)>,
    /// The column, the delay, and the directive's text.
    watermark: Option<(String, Duration, String)>,
    mode: Option<OutputMode>,
    dialect: Option<Dialect>,
    statics: Vec<(String, Vec<String>)>,
    /// More stream tables over the same input (to show what two streams do).
    also: Vec<String>,
    batches: Vec<Vec<String>>,
    expected: Vec<Vec<serde_json::Value>>,
    error: Option<String>,
}

impl Case {
    fn at(&self) -> String {
        format!("{}:{} ({})", self.file, self.line, self.title)
    }
}

/// Reads the cases of one file.
fn parse(path: &Path) -> Vec<Case> {
    let file = path.file_name().unwrap().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(path).unwrap();
    let mut cases: Vec<Case> = Vec::new();
    // Where content lines (`| ...`) go.
    #[derive(Clone, Copy)]
    enum Into {
        Nothing,
        Static,
        Batch,
        Expect,
    }
    let mut into = Into::Nothing;
    for (i, raw) in text.lines().enumerate() {
        let at = format!("{file}:{}", i + 1);
        let line = raw.trim_end();
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(title) = line.strip_prefix("== ") {
            cases.push(Case {
                file: file.clone(),
                line: i + 1,
                title: title.to_string(),
                ..Case::default()
            });
            into = Into::Nothing;
            continue;
        }
        let case = cases
            .last_mut()
            .unwrap_or_else(|| panic!("{at}: a directive before the first `== case`"));
        if let Some(content) = line.strip_prefix('|') {
            let content = content.strip_prefix(' ').unwrap_or(content).to_string();
            match into {
                Into::Static => case.statics.last_mut().unwrap().1.push(content),
                Into::Batch => case.batches.last_mut().unwrap().push(content),
                Into::Expect => {
                    let row = serde_json::from_str(&content)
                        .unwrap_or_else(|e| panic!("{at}: expected row is not JSON: {e}"));
                    case.expected.last_mut().unwrap().push(row);
                }
                Into::Nothing => panic!("{at}: a `|` line outside static:, batch: or expect:"),
            }
            continue;
        }
        let (key, value) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("{at}: not a directive: {line}"));
        let value = value.trim();
        into = Into::Nothing;
        match key {
            "sql" => {
                if !case.sql.is_empty() {
                    case.sql.push(' ');
                }
                case.sql.push_str(value);
            }
            "format" => case.format = Some((value.to_string(), String::new())),
            "schema" => {
                case.format
                    .as_mut()
                    .unwrap_or_else(|| panic!("{at}: schema: without format:"))
                    .1 = value.to_string()
            }
            "watermark" => {
                let (col, delay) = value.split_once(' ').unwrap();
                case.watermark = Some((
                    col.to_string(),
                    parse_duration(delay).unwrap(),
                    value.to_string(),
                ));
            }
            "mode" => {
                case.mode = Some(match value {
                    "append" => OutputMode::Append,
                    "update" => OutputMode::Update,
                    other => panic!("{at}: mode {other}"),
                })
            }
            "dialect" => case.dialect = Some(value.parse().unwrap()),
            "static" => {
                case.statics.push((value.to_string(), Vec::new()));
                into = Into::Static;
            }
            "batch" => {
                case.batches.push(Vec::new());
                into = Into::Batch;
            }
            "expect" => {
                assert_eq!(
                    case.expected.len() + 1,
                    case.batches.len(),
                    "{at}: expect: must follow its batch:"
                );
                case.expected.push(Vec::new());
                into = Into::Expect;
            }
            "error" => case.error = Some(value.to_string()),
            "also" => case.also.push(value.to_string()),
            other => panic!("{at}: unknown directive `{other}`"),
        }
    }
    cases
}

/// Where a case's query reads its stream.
enum Input<'a> {
    /// A replayable stream of the batches' lines.
    Seq(&'a [Vec<String>]),
    /// Text files in a directory, one per batch, read as chunks.
    Files(&'a Path),
}

/// The case's query over `input` on `ctx`, its rows as JSON text.
fn build(
    case: &Case,
    ctx: &StreamingContext,
    input: Input<'_>,
    dir: &Path,
) -> lockgate_sql::Result<DStream<String>> {
    let mut sql = SqlContext::with_dialect(case.dialect.unwrap_or_default());
    if let Input::Seq(batches) = input {
        for name in &case.also {
            sql.register_lines(name, &ctx.seq_stream(batches.to_vec()))?;
        }
    }
    match (input, &case.format) {
        (Input::Seq(batches), None) => {
            sql.register_lines("lines", &ctx.seq_stream(batches.to_vec()))?
        }
        (Input::Seq(batches), Some((format, schema))) => {
            let decoder = Decoder::new(format.parse()?, parse_schema(schema)?);
            sql.register_decoded("lines", &ctx.seq_stream(batches.to_vec()), decoder)?
        }
        (Input::Files(files), _) => {
            let chunks = ctx.text_file_chunk_stream(
                files,
                FileStreamOptions {
                    max_files_per_batch: Some(1),
                    new_files_only: false,
                    // Written whole before the run: no writer to wait for.
                    min_age: std::time::Duration::ZERO,
                    ..FileStreamOptions::default()
                },
            );
            sql.register_text_chunks("lines", &chunks)?
        }
    }
    for (name, rows) in &case.statics {
        let path = dir.join(format!("{name}.csv"));
        std::fs::write(&path, rows.join("\n") + "\n").unwrap();
        sql.register_csv(name, &path)?;
    }
    if let Some((col, delay, _)) = &case.watermark {
        sql.with_watermark(col, *delay);
    }
    if let Some(mode) = case.mode {
        sql.output_mode(mode);
    }
    let q = sql.sql_named(&case.sql, "golden")?;
    let to_json = q.json_fn();
    Ok(q.rows().map(move |r| to_json(&r).to_string()))
}

/// Runs `batches` batches of the case on checkpoint `cp` from manual time `from_ms`.
fn run(
    case: &Case,
    input: Input<'_>,
    cp: &Path,
    dir: &Path,
    from_ms: i64,
    batches: usize,
) -> BTreeMap<u64, Vec<String>> {
    run_checkpointed(cp, 2, from_ms, batches, |ctx| {
        Ok(build(case, ctx, input, dir)?)
    })
    .unwrap_or_else(|e| panic!("{}: {e}", case.at()))
}

/// The rows of each batch as sorted JSON text, batches without rows included.
fn per_batch(out: BTreeMap<u64, Vec<String>>, n: usize) -> Vec<Vec<String>> {
    (0..n as u64)
        .map(|b| {
            let mut rows: Vec<String> = out.get(&b).cloned().unwrap_or_default();
            // Canonical text: the JSON re-read (keys kept in the query's order).
            rows = rows
                .iter()
                .map(|r| {
                    serde_json::from_str::<serde_json::Value>(r)
                        .unwrap()
                        .to_string()
                })
                .collect();
            rows.sort();
            rows
        })
        .collect()
}

/// Runs a case and checks it; with `bless`, returns the rows it gave instead.
fn run_case(case: &Case, bless: bool) -> Option<Vec<Vec<String>>> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    if let Some(words) = &case.error {
        let ctx = StreamingContext::builder().build().unwrap();
        let got = build(case, &ctx, Input::Seq(&case.batches), dir);
        let err = match got {
            Ok(_) => panic!(
                "{}: the query ran; expected an error with `{words}`",
                case.at()
            ),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(words.as_str()),
            "{}: the error does not say `{words}`: {err}",
            case.at()
        );
        return None;
    }
    let n = case.batches.len();
    assert!(n > 0, "{}: no batch:", case.at());
    let uninterrupted = per_batch(
        run(
            case,
            Input::Seq(&case.batches),
            &dir.join("cp-once"),
            dir,
            0,
            n,
        ),
        n,
    );
    if bless {
        return Some(uninterrupted);
    }
    let expected: Vec<Vec<String>> = case
        .expected
        .iter()
        .map(|rows| {
            let mut rows: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
            rows.sort();
            rows
        })
        .collect();
    assert_eq!(
        expected.len(),
        n,
        "{}: every batch: needs its expect:",
        case.at()
    );
    for (b, (got, want)) in uninterrupted.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "{}: batch {b}", case.at());
    }
    // Stopped after every batch and recovered from the checkpoint.
    let cp = dir.join("cp-restarts");
    let mut restarted = BTreeMap::new();
    for b in 0..n {
        let out = run(
            case,
            Input::Seq(&case.batches),
            &cp,
            dir,
            b as i64 * 1000,
            1,
        );
        restarted.extend(out);
    }
    assert_eq!(
        per_batch(restarted, n),
        uninterrupted,
        "{}: restarted from the checkpoint after every batch",
        case.at()
    );
    // Text over files read as chunks.
    if case.format.is_none() {
        let files = dir.join("in");
        std::fs::create_dir_all(&files).unwrap();
        for (b, lines) in case.batches.iter().enumerate() {
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            std::fs::write(files.join(format!("batch-{b:05}.txt")), text).unwrap();
        }
        let chunks = per_batch(
            run(case, Input::Files(&files), &dir.join("cp-files"), dir, 0, n),
            n,
        );
        assert_eq!(
            chunks,
            uninterrupted,
            "{}: over files, as chunks",
            case.at()
        );
    }
    None
}

/// The case in the file format, with `rows` as its expectations.
fn blessed(case: &Case, rows: Option<&[Vec<String>]>) -> String {
    let mut out = format!("== {}\n", case.title);
    out += &format!("sql: {}\n", case.sql);
    if let Some((format, schema)) = &case.format {
        out += &format!("format: {format}\nschema: {schema}\n");
    }
    if let Some((_, _, text)) = &case.watermark {
        out += &format!("watermark: {text}\n");
    }
    match case.mode {
        Some(OutputMode::Append) => out += "mode: append\n",
        Some(OutputMode::Update) => out += "mode: update\n",
        None => {}
    }
    if case.dialect == Some(Dialect::DataFusion) {
        out += "dialect: datafusion\n";
    }
    for a in &case.also {
        out += &format!("also: {a}\n");
    }
    for (name, lines) in &case.statics {
        out += &format!("static: {name}\n");
        out.extend(lines.iter().map(|l| format!("| {l}\n")));
    }
    if let Some(e) = &case.error {
        out += &format!("error: {e}\n");
    }
    for (b, lines) in case.batches.iter().enumerate() {
        out += "batch:\n";
        out.extend(lines.iter().map(|l| format!("| {l}\n")));
        if let Some(rows) = rows {
            out += "expect:\n";
            out.extend(rows[b].iter().map(|r| format!("| {r}\n")));
        }
    }
    out
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn cases() -> Vec<Case> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "test"))
        .collect();
    files.sort();
    files.iter().flat_map(|f| parse(f)).collect()
}

#[test]
fn golden_queries() {
    let bless = std::env::var_os("LOCKGATE_BLESS").is_some();
    let cases = cases();
    let filter = std::env::var("GOLDEN").ok();
    assert!(
        !(bless && filter.is_some()),
        "LOCKGATE_BLESS rewrites whole files: run it without GOLDEN"
    );
    let mut ran = 0;
    let mut files: BTreeMap<&str, String> = BTreeMap::new();
    for case in &cases {
        if filter
            .as_deref()
            .is_some_and(|f| !case.title.contains(f) && !case.file.contains(f))
        {
            continue;
        }
        let rows = run_case(case, bless);
        if bless {
            let text = files.entry(&case.file).or_default();
            text.push('\n');
            text.push_str(&blessed(case, rows.as_deref()));
        }
        ran += 1;
    }
    for (file, cases) in files {
        // The file's header comments, then its cases with their actual rows.
        let path = golden_dir().join(file);
        let old = std::fs::read_to_string(&path).unwrap();
        let header: String = old
            .lines()
            .take_while(|l| !l.starts_with("== "))
            .filter(|l| l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&path, header + &cases).unwrap();
        println!("blessed {}: check every expect: by hand", path.display());
    }
    let accepted = cases.iter().filter(|c| c.error.is_none()).count();
    let refused = cases.len() - accepted;
    println!("golden: {ran} cases run ({accepted} accepted queries, {refused} refusals)");
    assert!(
        filter.is_some() || (accepted >= 40 && refused >= 15),
        "the suite covers {accepted} accepted queries and {refused} refusals"
    );
}
