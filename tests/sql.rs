//! End-to-end tests of `lockgate sql`: the issue's examples on files, the built-in jobs
//! written as SQL (same rows, batch by batch, with late and malformed lines), decoded
//! formats, static tables, append mode, restarts on a checkpoint, a SQLite sink, Kafka's
//! table on a real broker (scripts/kafka.sh), and clear errors at start.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use lockgate_jobs::sql::{log_errors_sql, LOG_ERRORS_WATERMARK, WORD_COUNT_SQL};

fn lockgate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lockgate"));
    c.env("RUST_LOG", "warn");
    c
}

fn run(args: &[&str]) -> Output {
    lockgate().args(args).output().unwrap()
}

fn run_ok(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "lockgate {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `lockgate sql --once --quiet --no-ui --input IN --output OUT EXTRA... QUERY`.
fn sql(input: &Path, out: &Path, extra: &[&str], query: &str) -> Output {
    let mut args = vec![
        "sql",
        "--once",
        "--quiet",
        "--no-ui",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push(query);
    run_ok(&args)
}

/// Rows of every batch of stream `name` under `out`, sorted per batch, by batch id.
fn batches(out: &Path, name: &str) -> BTreeMap<u64, Vec<serde_json::Value>> {
    let dir = out.join(name);
    assert!(dir.exists(), "{} does not exist", dir.display());
    lockgate_core::sink::read_json_lines(&dir)
        .unwrap()
        .into_iter()
        .map(|(id, lines)| {
            let mut rows: Vec<serde_json::Value> = lines
                .iter()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            rows.sort_by_key(|r| r.to_string());
            (id, rows)
        })
        .collect()
}

/// The last row of each key (its row in the highest batch id).
fn finals(out: &Path, name: &str, key: &[&str]) -> BTreeMap<String, serde_json::Value> {
    let mut last = BTreeMap::new();
    for rows in batches(out, name).into_values() {
        for r in rows {
            let k: Vec<String> = key.iter().map(|k| r[*k].to_string()).collect();
            last.insert(k.join(","), r);
        }
    }
    last
}

fn write_files(dir: &Path, files: &[&[&str]]) {
    std::fs::create_dir_all(dir).unwrap();
    for (i, lines) in files.iter().enumerate() {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(dir.join(format!("f-{i:03}.log")), text).unwrap();
    }
}

fn generate(dir: &Path, lines: u32, files: u32) {
    run_ok(&[
        "generate",
        "logs",
        dir.to_str().unwrap(),
        "--lines",
        &lines.to_string(),
        "--files",
        &files.to_string(),
    ]);
}

/// The issue's two examples: the count of ERROR lines and the word count, checked
/// against counts made here from the files.
#[test]
fn the_examples_count_errors_and_words_like_a_direct_count() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    generate(&input, 3000, 3);
    let out = tmp.path().join("out");
    sql(
        &input,
        &out,
        &["--name", "errors"],
        "SELECT count(*) AS errors FROM lines WHERE value LIKE '%ERROR%'",
    );
    let mut text = String::new();
    for f in std::fs::read_dir(&input).unwrap() {
        text.push_str(&std::fs::read_to_string(f.unwrap().path()).unwrap());
    }
    let errors = text.lines().filter(|l| l.contains("ERROR")).count();
    let b = batches(&out, "errors");
    assert_eq!(b.len(), 1, "one batch: {b:?}");
    assert_eq!(b[&0], vec![serde_json::json!({ "errors": errors })]);

    sql(
        &input,
        &out,
        &["--name", "words", "--max-files-per-batch", "1"],
        "SELECT word, count(*) AS count FROM (SELECT unnest(string_to_array(value, ' ')) AS word \
         FROM lines) AS t WHERE word <> '' GROUP BY word",
    );
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for w in text
        .lines()
        .flat_map(|l| l.split(' '))
        .filter(|w| !w.is_empty())
    {
        *want.entry(w.to_string()).or_default() += 1;
    }
    let got: BTreeMap<String, i64> = finals(&out, "words", &["word"])
        .into_values()
        .map(|r| {
            (
                r["word"].as_str().unwrap().to_string(),
                r["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(batches(&out, "words").len(), 3, "one batch per file");

    // Without --name the output is `result`.
    sql(&input, &out, &[], "SELECT count(*) AS n FROM lines");
    assert_eq!(
        batches(&out, "result")[&0],
        vec![serde_json::json!({ "n": 3000 })]
    );
}

/// Word count and log-errors' event-time windows written as SQL give the built-in
/// jobs' rows batch by batch (update mode), with late lines (behind the 10 s
/// watermark) and malformed timestamps skipped alike.
#[test]
fn the_built_in_jobs_as_sql_give_their_rows_batch_by_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    write_files(
        &input,
        &[
            &[
                "[Fri Dec 18 00:00:05 2015] [ERROR] a b",
                "[Fri Dec 18 00:00:35 2015] [ERROR] b  c",
                "[Fri Dec 18 00:00:40 2015] [INFO] c",
                "[Fri Dec 18 00:0x:00 2015] [ERROR] malformed",
                "no timestamp ERROR at all",
            ],
            &[
                // Behind the watermark (35 - 10 = 25): late.
                "[Fri Dec 18 00:00:20 2015] [ERROR] late",
                "[Fri Dec 18 00:00:29 2015] [ERROR] in time",
                "[Fri Dec 18 00:01:10 2015] [ERROR] d",
            ],
            &[
                "[Fri Dec 18 00:00:50 2015] [ERROR] late again",
                "[Fri Dec 18 00:01:05 2015] [ERROR] e",
                "[Fri Dec 18 00:03:00 2015] [WARN] moves the watermark? no: not an ERROR",
            ],
        ],
    );
    let builtin = tmp.path().join("builtin");
    let dir_args = |out: &Path| {
        vec![
            "--once".to_string(),
            "--quiet".into(),
            "--no-ui".into(),
            "--max-files-per-batch".into(),
            "1".into(),
            "--input".into(),
            input.to_str().unwrap().into(),
            "--output".into(),
            out.to_str().unwrap().into(),
        ]
    };
    let args = |head: &[&str], out: &Path| {
        let mut a: Vec<String> = head.iter().map(|s| s.to_string()).collect();
        a.extend(dir_args(out));
        a
    };
    let a = args(&["run", "log-errors", "--event-time"], &builtin);
    run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let a = args(&["run", "word-count"], &builtin);
    run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let out = tmp.path().join("sql");
    let once = ["--max-files-per-batch", "1"];
    for (name, query, stream) in [
        (
            "tumbling",
            log_errors_sql("30 seconds", None),
            "tumbling_30s",
        ),
        (
            "sliding",
            log_errors_sql("30 seconds", Some("10 seconds")),
            "sliding_30s_10s",
        ),
    ] {
        let mut extra = vec!["--name", name, "--watermark", LOG_ERRORS_WATERMARK];
        extra.extend(once);
        sql(&input, &out, &extra, &query);
        let (want, got) = (batches(&builtin, stream), batches(&out, name));
        assert_eq!(got, want, "{name} vs the built-in {stream}");
        assert!(want.values().any(|b| !b.is_empty()));
    }
    let mut extra = vec!["--name", "words"];
    extra.extend(once);
    sql(&input, &out, &extra, WORD_COUNT_SQL);
    assert_eq!(batches(&out, "words"), batches(&builtin, "word_counts"));
}

/// Append mode emits each window once, when the watermark passes its end (or at the
/// end of the bounded run), with its final count; per-key windows, a HAVING filter,
/// Flink's tumble() and an INTERVAL literal.
#[test]
fn append_mode_emits_each_window_once_with_its_final_value() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    write_files(
        &input,
        &[
            &[
                "[Fri Dec 18 00:00:01 2015] [ERROR] x",
                "[Fri Dec 18 00:00:02 2015] [WARN] x",
                "[Fri Dec 18 00:00:03 2015] [ERROR] x",
            ],
            &[
                "[Fri Dec 18 00:00:04 2015] [ERROR] x",
                "[Fri Dec 18 00:00:15 2015] [WARN] x",
            ],
            &["[Fri Dec 18 00:00:40 2015] [INFO] x"],
            &["[Fri Dec 18 00:01:40 2015] [ERROR] x"],
        ],
    );
    let out = tmp.path().join("out");
    let query = "SELECT window.start, window.end, level, count(*) AS n FROM \
                 (SELECT try_to_timestamp(substr(value, 2, 24), '%a %b %d %H:%M:%S %Y') AS ts, \
                 substr(value, 29, position(']' IN substr(value, 29)) - 1) AS level FROM lines) AS l \
                 GROUP BY level, tumble(ts, INTERVAL '30' SECOND) HAVING count(*) > 1";
    sql(
        &input,
        &out,
        &[
            "--name",
            "levels",
            "--max-files-per-batch",
            "1",
            "--watermark",
            "ts 5s",
            "--output-mode",
            "append",
        ],
        query,
    );
    let b = batches(&out, "levels");
    let rows: Vec<(u64, String)> = b
        .iter()
        .flat_map(|(id, rows)| rows.iter().map(move |r| (*id, r.to_string())))
        .collect();
    // Columns in the query's SELECT order.
    assert_eq!(
        rows,
        vec![
            // The first window [0, 30) closes when the watermark (40 - 5) passes 30.
            (2, r#"{"start":"2015-12-18T00:00:00","end":"2015-12-18T00:00:30","level":"ERROR","n":3}"#.to_string()),
            (2, r#"{"start":"2015-12-18T00:00:00","end":"2015-12-18T00:00:30","level":"WARN","n":2}"#.to_string()),
        ],
        "{b:?}"
    );
}

/// JSON and CSV values decode into the schema's columns; values that do not decode are
/// counted, reported and skipped; a static CSV table joins the stream.
#[test]
fn decoded_formats_and_a_static_table_join() {
    let tmp = tempfile::tempdir().unwrap();
    let json_in = tmp.path().join("json");
    write_files(
        &json_in,
        &[&[
            r#"{"ts": "2015-12-18 00:00:01", "level": "ERROR", "bytes": 10}"#,
            r#"{"ts": "2015-12-18 00:00:02", "level": "INFO", "bytes": 5}"#,
            "not json",
            r#"{"ts": "2015-12-18 00:00:03", "level": "ERROR", "bytes": "many"}"#,
            r#"{"ts": "2015-12-18 00:00:04", "level": "ERROR", "bytes": 7}"#,
        ]],
    );
    let levels = tmp.path().join("levels.csv");
    std::fs::write(&levels, "level,severity\nERROR,3\nINFO,1\n").unwrap();
    let out = tmp.path().join("out");
    let table = format!("levels={}", levels.display());
    let o = sql(
        &json_in,
        &out,
        &[
            "--name",
            "by_level",
            "--format",
            "json",
            "--schema",
            "ts TIMESTAMP, level STRING, bytes BIGINT",
            "--table",
            &table,
        ],
        "SELECT l.level, s.severity, count(*) AS n, sum(bytes) AS bytes, avg(bytes) AS mean, \
         max(ts) AS last FROM lines AS l JOIN levels AS s ON l.level = s.level GROUP BY l.level, s.severity",
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("2 value(s) did not decode"), "{stderr}");
    // Each skipped value named with its reason, its file and line, and its text.
    let file = json_in.join("f-000.log").display().to_string();
    let warned = |needle: &str| {
        stderr
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no warning with `{needle}`:\n{stderr}"))
            .to_string()
    };
    let not_json = warned("not JSON (");
    assert!(
        not_json.contains(&format!("at file `{file}` line 3")),
        "{not_json}"
    );
    assert!(not_json.contains("reason=\"not JSON\""), "{not_json}");
    assert!(not_json.contains("value=not json"), "{not_json}");
    let wrong = warned("column `bytes` (Int64): `\"many\"` does not convert");
    assert!(
        wrong.contains(&format!("at file `{file}` line 4")),
        "{wrong}"
    );
    assert_eq!(
        batches(&out, "by_level")[&0],
        vec![
            serde_json::json!({"level": "ERROR", "severity": 3, "n": 2, "bytes": 17, "mean": 8.5, "last": "2015-12-18T00:00:04"}),
            serde_json::json!({"level": "INFO", "severity": 1, "n": 1, "bytes": 5, "mean": 5.0, "last": "2015-12-18T00:00:02"}),
        ]
    );
    let csv_in = tmp.path().join("csv");
    write_files(
        &csv_in,
        &[&["1,ERROR,\"a, b\"", "2,INFO,c", "x,ERROR,d", "3,ERROR"]],
    );
    sql(
        &csv_in,
        &out,
        &[
            "--name",
            "csv",
            "--format",
            "csv",
            "--schema",
            "id BIGINT, level STRING, msg STRING",
        ],
        "SELECT id, upper(msg) AS msg FROM lines WHERE level = 'ERROR'",
    );
    assert_eq!(
        batches(&out, "csv")[&0],
        vec![serde_json::json!({"id": 1, "msg": "A, B"})]
    );
}

/// A query stopped and restarted on its checkpoint with new files continues its counts
/// (state recovered), equal to one run over all files; the SQLite sink holds the final
/// rows, upserted by the group key.
#[test]
fn a_restart_on_the_checkpoint_continues_the_state_and_the_sqlite_table() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    generate(&input, 2000, 4);
    let all = tmp.path().join("all");
    sql(&input, &all, &["--name", "words"], WORD_COUNT_SQL);
    // The same files, two now and two later.
    let part = tmp.path().join("part");
    std::fs::create_dir_all(&part).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&input)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let (cp, out, db) = (
        tmp.path().join("cp"),
        tmp.path().join("out"),
        tmp.path().join("w.db"),
    );
    let sink = format!("sqlite:{}", db.display());
    let extra = [
        "--name",
        "words",
        "--checkpoint",
        cp.to_str().unwrap(),
        "--sink",
        &sink,
    ];
    for half in files.chunks(2) {
        for f in half {
            std::fs::copy(f, part.join(f.file_name().unwrap())).unwrap();
        }
        sql(&part, &out, &extra, WORD_COUNT_SQL);
    }
    assert_eq!(batches(&out, "words").len(), 2, "one batch per run");
    let want = finals(&all, "words", &["word"]);
    assert_eq!(finals(&out, "words", &["word"]), want);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut stmt = conn.prepare("SELECT word, count FROM words").unwrap();
    let rows: BTreeMap<String, serde_json::Value> = stmt
        .query_map([], |r| {
            let (w, c): (String, i64) = (r.get(0)?, r.get(1)?);
            Ok((
                serde_json::Value::from(w.as_str()).to_string(),
                serde_json::json!({ "word": w, "count": c }),
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows, want);
}

/// Unsupported constructs, bad flags and bad SQL are clear errors at start, naming the
/// construct, before any batch runs (no output is written).
#[test]
fn unsupported_queries_are_refused_at_start_naming_the_construct() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    write_files(&input, &[&["a b", "c"]]);
    let out = tmp.path().join("out");
    let base = |q: &str, extra: &[&str]| {
        let mut a = vec![
            "sql".to_string(),
            "--once".into(),
            "--no-ui".into(),
            "--input".into(),
            input.to_str().unwrap().into(),
            "--output".into(),
            out.to_str().unwrap().into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a.push(q.to_string());
        let o = lockgate().args(&a).output().unwrap();
        assert!(!o.status.success(), "{q} should fail");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    for (q, extra, says) in [
        (
            "SELECT value FROM lines ORDER BY value",
            &[][..],
            "ORDER BY",
        ),
        ("SELECT value FROM lines LIMIT 3", &[], "LIMIT"),
        ("SELECT DISTINCT value FROM lines", &[], "DISTINCT"),
        (
            "SELECT count(DISTINCT value) FROM lines",
            &[],
            "count(DISTINCT",
        ),
        (
            "SELECT a.value FROM lines a JOIN lines b ON a.value = b.value",
            &[],
            "more than once",
        ),
        (
            "SELECT value, row_number() OVER () FROM lines",
            &[],
            "window functions",
        ),
        ("SELECT median(length(value)) FROM lines", &[], "median"),
        ("SELECT nope FROM lines", &[], "nope"),
        ("SELEC value FROM lines", &[], "SELEC"),
        ("DELETE FROM lines", &[], "only SELECT"),
        (
            "SELECT value, count(*) FROM lines GROUP BY value",
            &["--output-mode", "append"],
            "append mode",
        ),
        (
            "SELECT value, count(*) FROM lines GROUP BY value",
            &["--watermark", "value 10s"],
            "watermark",
        ),
        (
            "SELECT count(*) FROM lines GROUP BY window(value, '10 seconds')",
            &[],
            "TIMESTAMP",
        ),
        (
            "SELECT count(*) FROM lines",
            &["--watermark", "ts"],
            "COLUMN DELAY",
        ),
        (
            "SELECT window.start, count(*) FROM (SELECT try_to_timestamp(value) AS ts FROM \
             lines) GROUP BY window(ts, '10 seconds')",
            &["--watermark", "tx 10s"],
            "--watermark names the column `tx`",
        ),
        (
            "SELECT count(*) FROM lines",
            &["--format", "xml", "--schema", "a STRING"],
            "json or csv",
        ),
        (
            "SELECT count(*) FROM lines",
            &["--format", "json", "--schema", "a WHATEVER"],
            "WHATEVER",
        ),
        (
            "SELECT count(*) FROM lines",
            &["--table", "t=missing.csv"],
            "missing.csv",
        ),
        ("SELECT count(*) FROM lines", &["--name", "a/b"], "--name"),
    ] {
        let err = base(q, extra);
        assert!(
            err.contains(says),
            "{q} {extra:?}: expected `{says}` in:\n{err}"
        );
    }
    assert!(!out.exists(), "a refused query wrote output");
}

/// Kafka's table (key, value, topic, partition, offset, timestamp, headers) on a real
/// broker, and Kafka values read as `lines`; invalid UTF-8 in the table's values is
/// replaced and counted (it was replaced silently), and a value that does not decode
/// with `--format` is named by topic, partition and offset.
#[test]
fn the_kafka_table_has_the_record_columns() {
    use lockgate_kafka::testing::{create_topic, produce, KafkaBroker};
    let tmp = tempfile::tempdir().unwrap();
    let broker = KafkaBroker::start().unwrap();
    create_topic(&broker.brokers, "events", 2).unwrap();
    produce(
        &broker.brokers,
        "events",
        [
            (0, b"a ERROR".to_vec()),
            (0, b"b".to_vec()),
            (1, b"c ERROR".to_vec()),
            (1, b"d ERROR".to_vec()),
            (1, b"e".to_vec()),
            (0, b"f \xff ERROR".to_vec()),
        ],
    )
    .unwrap();
    let out = tmp.path().join("out");
    let kafka = [
        "--kafka-brokers",
        &broker.brokers,
        "--kafka-topic",
        "events",
    ];
    let mut args = vec![
        "sql",
        "--once",
        "--quiet",
        "--no-ui",
        "--output",
        out.to_str().unwrap(),
        "--name",
        "parts",
    ];
    args.extend(kafka);
    args.push(
        "SELECT topic, partition, count(*) AS n, max(offset) AS last, \
         count(timestamp) AS stamped FROM kafka WHERE value LIKE '%ERROR%' GROUP BY topic, partition",
    );
    let o = run_ok(&args);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("1 with invalid UTF-8 replaced"), "{e}");
    assert_eq!(
        finals(&out, "parts", &["partition"])
            .into_values()
            .collect::<Vec<_>>(),
        vec![
            serde_json::json!({"topic": "events", "partition": 0, "n": 2, "last": 2, "stamped": 2}),
            serde_json::json!({"topic": "events", "partition": 1, "n": 2, "last": 1, "stamped": 2}),
        ]
    );
    let mut args = vec![
        "sql",
        "--once",
        "--quiet",
        "--no-ui",
        "--output",
        out.to_str().unwrap(),
        "--name",
        "values",
    ];
    args.extend(kafka);
    args.push("SELECT count(*) AS n FROM lines WHERE value LIKE '%ERROR%'");
    run_ok(&args);
    assert_eq!(
        finals(&out, "values", &[])
            .into_values()
            .collect::<Vec<_>>(),
        vec![serde_json::json!({"n": 4})]
    );

    create_topic(&broker.brokers, "json", 1).unwrap();
    produce(
        &broker.brokers,
        "json",
        [(0, r#"{"n": 1}"#), (0, "oops"), (0, r#"{"n": 2}"#)],
    )
    .unwrap();
    let mut args = vec![
        "sql",
        "--once",
        "--quiet",
        "--no-ui",
        "--output",
        out.to_str().unwrap(),
        "--name",
        "decoded",
        "--format",
        "json",
        "--schema",
        "n BIGINT",
        "--kafka-brokers",
        &broker.brokers,
        "--kafka-topic",
        "json",
    ];
    args.push("SELECT sum(n) AS total FROM lines");
    let o = run_ok(&args);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.lines().any(|l| l.contains("not JSON (")
            && l.contains("at topic `json` partition 0 offset 1")
            && l.contains("value=oops")),
        "{e}"
    );
    assert_eq!(
        finals(&out, "decoded", &[])
            .into_values()
            .collect::<Vec<_>>(),
        vec![serde_json::json!({"total": 3})]
    );
}

/// Session windows per key, a LEFT JOIN keeping the stream's rows against a Parquet
/// table, and an inner join with a PostgreSQL table (a real server, scripts/postgres.sh).
#[test]
fn sessions_and_joins_with_parquet_and_postgres_tables() {
    use lockgate_sql::datafusion::arrow::array::{ArrayRef, StringArray};
    use lockgate_sql::datafusion::arrow::datatypes::{DataType, Field, Schema};
    use lockgate_sql::datafusion::arrow::record_batch::RecordBatch;
    use std::sync::Arc;
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let ev = |t: u32, user: &str, page: &str| {
        format!(r#"{{"ts": "2015-12-18 00:00:{t:02}", "user": "{user}", "page": "{page}"}}"#)
    };
    let (a, b): (Vec<String>, Vec<String>) = (
        vec![
            ev(0, "ann", "home"),
            ev(2, "bob", "home"),
            ev(5, "ann", "cart"),
        ],
        vec![ev(30, "ann", "home"), ev(31, "cyd", "cart")],
    );
    write_files(
        &input,
        &[
            &a.iter().map(String::as_str).collect::<Vec<_>>(),
            &b.iter().map(String::as_str).collect::<Vec<_>>(),
        ],
    );
    // users.parquet: ann and bob have names; cyd does not.
    let users = tmp.path().join("users.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("user", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec!["ann", "bob"])),
        Arc::new(StringArray::from(vec!["Ann A.", "Bob B."])),
    ];
    let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
    let mut w = lockgate_sql::datafusion::parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&users).unwrap(),
        schema,
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let json = [
        "--format",
        "json",
        "--schema",
        "ts TIMESTAMP, user STRING, page STRING",
    ];
    let out = tmp.path().join("out");
    let users_table = format!("users={}", users.display());
    let mut extra = vec![
        "--name",
        "sessions",
        "--max-files-per-batch",
        "1",
        "--watermark",
        "ts 1 minute",
    ];
    extra.extend(json);
    extra.extend(["--table", &users_table]);
    sql(
        &input,
        &out,
        &extra,
        "SELECT e.user, u.name, window.start, window.end, count(*) AS clicks FROM lines AS e \
         LEFT JOIN users AS u ON e.user = u.user \
         GROUP BY e.user, u.name, session_window(ts, '10 seconds')",
    );
    let got: Vec<serde_json::Value> = finals(&out, "sessions", &["user", "start"])
        .into_values()
        .collect();
    let row = |user: &str, name: Option<&str>, from: u32, to: u32, clicks: i64| {
        serde_json::json!({
            "user": user, "name": name, "clicks": clicks,
            "start": format!("2015-12-18T00:00:{from:02}"), "end": format!("2015-12-18T00:00:{to:02}"),
        })
    };
    assert_eq!(
        got,
        vec![
            row("ann", Some("Ann A."), 0, 15, 2),
            row("ann", Some("Ann A."), 30, 40, 1),
            row("bob", Some("Bob B."), 2, 12, 1),
            row("cyd", None, 31, 41, 1),
        ]
    );

    let pg = lockgate_sql_sinks::testing::PgServer::start().unwrap();
    let mut c = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    c.batch_execute(
        "CREATE TABLE pages (page TEXT, title TEXT, weight INT); \
         INSERT INTO pages VALUES ('home', 'Home', 1), ('cart', 'Cart', 5)",
    )
    .unwrap();
    let pages = format!("pages={}#pages", pg.url);
    let mut extra = vec!["--name", "weights", "--table", &pages];
    extra.extend(json);
    sql(
        &input,
        &out,
        &extra,
        "SELECT p.title, sum(p.weight) AS weight FROM lines AS e JOIN pages AS p ON e.page = p.page \
         GROUP BY p.title",
    );
    assert_eq!(
        finals(&out, "weights", &["title"])
            .into_values()
            .collect::<Vec<_>>(),
        vec![
            serde_json::json!({"title": "Cart", "weight": 10}),
            serde_json::json!({"title": "Home", "weight": 3}),
        ]
    );
    let bad = format!("pages={}#missing_table", pg.url);
    let o = run(&[
        "sql",
        "--once",
        "--no-ui",
        "--input",
        input.to_str().unwrap(),
        "--table",
        &bad,
        "SELECT count(*) FROM lines",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("missing_table"),
        "{err}"
    );
}
