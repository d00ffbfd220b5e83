//! End-to-end tests of the `lockgate` binary: sample data generation, the built-in jobs
//! on files (`--once`), on a real socket and on a topic of a real Kafka-protocol broker
//! (tansu, started by scripts/kafka.sh), their output layout and contents (checked
//! against an independent computation), and clear errors for bad flags.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn lockgate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lockgate"));
    c.env("RUST_LOG", "warn");
    c
}

fn run_ok(args: &[&str]) -> Output {
    let out = lockgate().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "lockgate {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `lockgate generate logs DIR --lines N --files F --seed S`.
fn generate_logs(dir: &Path, lines: u32, files: u32, seed: u32) {
    run_ok(&[
        "generate",
        "logs",
        dir.to_str().unwrap(),
        "--lines",
        &lines.to_string(),
        "--files",
        &files.to_string(),
        "--seed",
        &seed.to_string(),
    ]);
}

fn run_err(args: &[&str]) -> String {
    let out = lockgate().args(args).output().unwrap();
    assert!(
        !out.status.success(),
        "lockgate {args:?} should have failed"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The UI's address, from the line the CLI prints at start.
fn ui_address(lines: &mut impl Iterator<Item = std::io::Result<String>>) -> std::net::SocketAddr {
    let url = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(u) = line.strip_prefix("streaming UI and API at ") {
            break u.to_string();
        }
    };
    url.trim_start_matches("http://").parse().unwrap()
}

/// The whole HTTP response to `GET path` (empty if the server cannot be reached).
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::Read as _;
    let mut r = String::new();
    if let Ok(mut s) = std::net::TcpStream::connect(addr) {
        let _ = write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        );
        let _ = s.read_to_string(&mut r);
    }
    r
}

/// Sends SIGINT (Ctrl-C) to a job started by a test.
fn sigint(child: &std::process::Child) {
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "cannot send SIGINT to the job");
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// All JSON rows of `DIR/<stream>/batch=<id>/part-*.jsonl`, by batch id.
fn read_stream(out: &Path, stream: &str) -> BTreeMap<u64, Vec<serde_json::Value>> {
    lockgate_core::sink::read_json_lines(&out.join(stream))
        .unwrap()
        .into_iter()
        .map(|(id, lines)| {
            let rows = lines
                .iter()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            (id, rows)
        })
        .collect()
}

#[test]
fn generate_logs_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for d in [&a, &b] {
        generate_logs(d, 3000, 3, 7);
    }
    let fa = files_in(&a);
    assert_eq!(fa.len(), 3);
    let mut lines = 0;
    for (x, y) in fa.iter().zip(files_in(&b)) {
        let (tx, ty) = (std::fs::read(x).unwrap(), std::fs::read(&y).unwrap());
        assert_eq!(tx, ty);
        lines += tx.iter().filter(|&&c| c == b'\n').count();
    }
    assert_eq!(lines, 3000);
}

#[test]
fn log_errors_once_writes_errors_and_window_counts_per_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let out = tmp.path().join("out");
    generate_logs(&input, 6000, 6, 3);
    let stdout = run_ok(&[
        "run",
        "log-errors",
        "--input",
        input.to_str().unwrap(),
        "--once",
        "--max-files-per-batch",
        "1",
        "--output",
        out.to_str().unwrap(),
        "--parallelism",
        "2",
    ])
    .stdout;
    // Independently: the error lines of each file, file i being batch i.
    let expected: Vec<Vec<String>> = files_in(&input)
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .filter(|l| l.contains("ERROR"))
                .map(str::to_string)
                .collect()
        })
        .collect();
    let errors = read_stream(&out, "errors");
    assert_eq!(errors.len(), 6);
    for (id, rows) in &errors {
        let mut got: Vec<String> = rows
            .iter()
            .map(|r| r["line"].as_str().unwrap().to_string())
            .collect();
        got.sort();
        let mut want = expected[*id as usize].clone();
        want.sort();
        assert_eq!(got, want, "batch {id}");
    }
    // count_by_window(30s, 10s) with 10 s batches: the last three batches.
    let counts = read_stream(&out, "error_window_counts");
    for (id, rows) in &counts {
        let i = *id as usize;
        let want: usize = expected[i.saturating_sub(2)..=i].iter().map(Vec::len).sum();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0]["count"].as_u64().unwrap() as usize,
            want,
            "batch {id}"
        );
        assert_eq!(
            rows[0]["batch_time_ms"].as_i64().unwrap(),
            (i as i64 + 1) * 10_000
        );
    }
    // Spark's print format on stdout.
    let stdout = String::from_utf8(stdout).unwrap();
    assert!(stdout.contains("-------------------------------------------\nTime: 10000 ms\n-------------------------------------------\n"));
    assert!(stdout.contains("Time: 60000 ms"));
}

#[test]
fn word_count_once_emits_changed_words_with_running_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let out = tmp.path().join("out");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(input.join("1.txt"), "a b a\nc\n").unwrap();
    std::fs::write(input.join("2.txt"), "b  b\n").unwrap();
    std::fs::write(input.join("3.txt"), "d\n").unwrap();
    let run = run_ok(&[
        "run",
        "word-count",
        "--input",
        input.to_str().unwrap(),
        "--once",
        "--quiet",
        "--max-files-per-batch",
        "1",
        "--output",
        out.to_str().unwrap(),
    ]);
    // A bounded run reports its progress (plain lines when stderr is not a terminal).
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("progress: 3/3 batches"), "{stderr}");
    let got: Vec<BTreeMap<String, i64>> = read_stream(&out, "word_counts")
        .into_values()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    (
                        r["word"].as_str().unwrap().to_string(),
                        r["count"].as_i64().unwrap(),
                    )
                })
                .collect()
        })
        .collect();
    let m = |v: &[(&str, i64)]| {
        v.iter()
            .map(|(w, c)| (w.to_string(), *c))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(
        got,
        vec![
            m(&[("a", 2), ("b", 1), ("c", 1)]),
            m(&[("b", 3)]),
            m(&[("d", 1)])
        ]
    );
}

/// Regression (the outside tester's case): on the CLI jobs' path 200 lines of invalid
/// UTF-8 and a copied binary left the count at 0, and a long line was processed whole.
/// Both jobs count the same and the summary line names the counts.
#[test]
fn the_cli_jobs_count_invalid_utf8_and_cut_long_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let mut bad = Vec::new();
    for i in 0..400 {
        bad.extend_from_slice(format!("2026-01-01 ERROR line {i} caf").as_bytes());
        // Every other line: invalid UTF-8; the rest valid `café`.
        bad.extend_from_slice(if i % 2 == 0 { b"\xe9\n" } else { b"\xc3\xa9\n" });
    }
    std::fs::write(input.join("1-bad.log"), &bad).unwrap();
    let mut long = b"a short line\n".to_vec();
    long.extend(std::iter::repeat_n(b"word ".as_slice(), 600_000).flatten());
    long.extend_from_slice(b"\nend\n");
    std::fs::write(input.join("2-long.log"), &long).unwrap();
    for job in ["word-count", "log-errors"] {
        let out = tmp.path().join(format!("out-{job}"));
        let run = run_ok(&[
            "run",
            job,
            "--input",
            input.to_str().unwrap(),
            "--once",
            "--quiet",
            "--output",
            out.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            stderr.contains("403 input records (200 with invalid UTF-8 replaced, 1 cut at 1 MiB)"),
            "{job}: {stderr}"
        );
    }
    // A copied binary: its invalid lines are counted (how many depends on the binary).
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::copy(std::env::current_exe().unwrap(), bin.join("copy.log")).unwrap();
    let run = run_ok(&[
        "run",
        "word-count",
        "--input",
        bin.to_str().unwrap(),
        "--once",
        "--quiet",
        "--output",
        tmp.path().join("out-bin").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("with invalid UTF-8 replaced"), "{stderr}");
}

#[test]
fn bad_flags_get_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let e = run_err(&[
        "run",
        "log-errors",
        "--input",
        dir,
        "--once",
        "--window",
        "15s",
    ]);
    assert!(
        e.contains(
            "--window 15s and --slide 10s must be positive multiples of --batch-interval 10s"
        ),
        "the flags, with their values: {e}"
    );
    let e = run_err(&[
        "run",
        "log-errors",
        "--input",
        dir,
        "--once",
        "--window",
        "7s",
        "--slide",
        "3s",
        "--batch-interval",
        "2s",
    ]);
    assert!(
        e.contains("--window 7s and --slide 3s must be positive multiples of --batch-interval 2s")
            && e.contains("e.g. --window 6s --slide 2s"),
        "{e}"
    );
    let e = run_err(&["run", "log-errors", "--socket", "localhost:9999", "--once"]);
    assert!(e.contains("--once needs a bounded input"), "{e}");
    let e = run_err(&["run", "log-errors", "--input", "/nonexistent/dir", "--once"]);
    assert!(e.contains("/nonexistent/dir"), "{e}");
    let e = run_err(&["run", "log-errors", "--socket", "localhost"]);
    assert!(e.contains("HOST:PORT"), "{e}");
    let e = run_err(&["run", "log-errors", "--batch-interval", "ten"]);
    assert!(e.contains("--batch-interval"), "{e}");
    let e = run_err(&["run", "word-count", "--event-time", "--no-ui"]);
    assert!(e.contains("--event-time applies to log-errors only"), "{e}");
    let e = run_err(&[
        "run",
        "log-errors",
        "--input",
        dir,
        "--max-records-per-partition",
        "5",
    ]);
    assert!(e.contains("applies to Kafka input"), "{e}");
    let kafka = ["--kafka-brokers", "127.0.0.1:9", "--kafka-topic", "t"];
    let e = run_err(
        &[
            &["run", "log-errors", "--max-files-per-batch", "1"],
            &kafka[..],
        ]
        .concat(),
    );
    assert!(e.contains("--max-records-per-partition"), "{e}");
    let e = run_err(&["run", "log-errors", "--kafka-brokers", "127.0.0.1:9"]);
    assert!(e.contains("--kafka-topic"), "{e}");
    let e = run_err(
        &[
            &["run", "log-errors", "--kafka-property", "s3cret"],
            &kafka[..],
        ]
        .concat(),
    );
    assert!(e.contains("KEY=VALUE") && !e.contains("s3cret"), "{e}");
    let e = run_err(
        &[
            &[
                "run",
                "log-errors",
                "--kafka-property",
                "no.such.thing=s3cret",
            ],
            &kafka[..],
        ]
        .concat(),
    );
    assert!(e.contains("no.such.thing") && !e.contains("s3cret"), "{e}");
    // Regression: a file given as the checkpoint printed the OS error twice.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let e = run_err(&[
        "run",
        "word-count",
        "--input",
        dir,
        "--once",
        "--no-ui",
        "--checkpoint",
        file.to_str().unwrap(),
    ]);
    assert!(
        e.contains("is a file, not a directory") && !e.contains("os error"),
        "{e}"
    );
    let e = run_err(&["run", "log-errors", "--input", "/tmp", "--quiet", "--no-ui"]);
    assert!(
        e.contains("--quiet with neither --output nor --sink") && e.contains("drop --quiet"),
        "{e}"
    );
}

#[test]
fn word_count_on_a_socket_stops_gracefully_on_sigint() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut child = lockgate()
        .args([
            "run",
            "word-count",
            "--socket",
            &format!("127.0.0.1:{port}"),
            "--batch-interval",
            "200ms",
            "--quiet",
            "--output",
            out.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    conn.write_all(b"to be or not to be\n").unwrap();
    // Wait (bounded) until the counts show up, then stop the job.
    let deadline = Instant::now() + Duration::from_secs(60);
    let totals = loop {
        let mut totals: BTreeMap<String, i64> = BTreeMap::new();
        if out.join("word_counts").exists() {
            for rows in read_stream(&out, "word_counts").into_values() {
                for r in rows {
                    totals.insert(
                        r["word"].as_str().unwrap().into(),
                        r["count"].as_i64().unwrap(),
                    );
                }
            }
        }
        if totals.len() == 4 || Instant::now() > deadline {
            break totals;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    sigint(&child);
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    // It says it stopped gracefully, and how many batches it drained (not
    // "graceful=true" and then "graceful=false").
    assert!(
        stderr.contains("stopped gracefully") && stderr.contains("drained"),
        "{stderr}"
    );
    assert!(!stderr.contains("graceful=false"), "{stderr}");
    let want: BTreeMap<String, i64> = [("be", 2), ("not", 1), ("or", 1), ("to", 2)]
        .iter()
        .map(|(w, c)| (w.to_string(), *c))
        .collect();
    assert_eq!(totals, want);
}

#[test]
fn checkpointed_run_resumes_and_checkpoint_commands_report_it() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let (out, cp) = (tmp.path().join("out"), tmp.path().join("cp"));
    generate_logs(&input, 900, 3, 5);
    let args = |extra: &[&str]| {
        let mut v: Vec<String> = [
            "run",
            "word-count",
            "--input",
            input.to_str().unwrap(),
            "--once",
            "--quiet",
            "--max-files-per-batch",
            "1",
            "--output",
            out.to_str().unwrap(),
            "--checkpoint",
            cp.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let a = args(&[]);
    run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(read_stream(&out, "word_counts").len(), 3);
    // New files after a completed run: the restart takes only those.
    generate_logs(&tmp.path().join("more"), 100, 1, 9);
    std::fs::rename(
        tmp.path().join("more/logs-00000.log"),
        input.join("zz-new.log"),
    )
    .unwrap();
    run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let batches = read_stream(&out, "word_counts");
    assert_eq!(
        batches.keys().copied().collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );

    let inspect = run_ok(&["checkpoint", "inspect", cp.to_str().unwrap()]);
    let text = String::from_utf8(inspect.stdout).unwrap();
    assert!(text.contains("application   word-count"), "{text}");
    // Each batch shows what it read: its files and their bytes (not "0 records").
    let size = std::fs::metadata(input.join("zz-new.log")).unwrap().len();
    assert!(
        text.contains(&format!("1 file, {size} bytes: ")) && !text.contains(": 0 records"),
        "{text}"
    );
    // Regression: an unreadable plan was listed, and inspect exited 0.
    {
        let plan = cp.join("offsets/0");
        let good = std::fs::read(&plan).unwrap();
        std::fs::write(&plan, b"LKGT garbage").unwrap();
        let bad = lockgate()
            .args(["checkpoint", "inspect", cp.to_str().unwrap()])
            .output()
            .unwrap();
        std::fs::write(&plan, good).unwrap();
        let out = String::from_utf8_lossy(&bad.stdout);
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(!bad.status.success(), "{out}");
        assert!(out.contains("batch 0: UNREADABLE"), "{out}");
        assert!(err.contains("1 unreadable plan file(s)"), "{err}");
    }
    assert!(text.contains("committed through batch 3"), "{text}");
    assert!(text.contains("zz-new.log"), "{text}");
    assert!(text.contains("word_counts_state"), "{text}");
    // Settings are recorded, so a restart with other ones is logged.
    assert!(
        text.contains(&format!("output         {}", out.display())),
        "{text}"
    );

    let check_upgrade = |job: &str| {
        lockgate()
            .args([
                "checkpoint",
                "check-upgrade",
                cp.to_str().unwrap(),
                "--job",
                job,
            ])
            .args(["--input", input.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let same = check_upgrade("word-count");
    assert!(
        same.status.success(),
        "{}",
        String::from_utf8_lossy(&same.stdout)
    );
    let other = check_upgrade("log-errors");
    assert_eq!(other.status.code(), Some(2));
    let report = String::from_utf8_lossy(&other.stdout);
    assert!(
        report.contains("removed   word_counts_state") && report.contains("new"),
        "{report}"
    );
}

#[test]
fn the_cli_serves_the_api_and_metrics_while_it_runs() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    generate_logs(&input, 500, 2, 1);
    let mut child = lockgate()
        .args([
            "run",
            "log-errors",
            "--input",
            input.to_str().unwrap(),
            "--batch-interval",
            "100ms",
            "--window",
            "300ms",
            "--slide",
            "100ms",
            "--quiet",
            "--ui-port",
            "0",
        ])
        .arg("--output")
        .arg(tmp.path().join("out"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = ui_address(&mut lines);
    assert!(addr.ip().is_loopback());
    let get = |path: &str| http_get(addr, path);
    let apps = get("/api/v1/applications");
    assert!(apps.contains("\"name\":\"log-errors\""), "{apps}");
    // Wait (bounded) until a batch with input has completed, then read the metrics.
    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let m = get("/metrics");
        if m.contains("lockgate_records_in_total{app=\"log-errors\"} 500")
            || Instant::now() > deadline
        {
            break m;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        metrics.contains("lockgate_records_in_total{app=\"log-errors\"} 500"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lockgate_total_delay_seconds_count"),
        "{metrics}"
    );
    sigint(&child);
    assert!(child.wait().unwrap().success());
}

/// Epoch seconds of `[Www Mmm dd hh:mm:ss yyyy]` in the generated logs (Dec 2015 only),
/// computed independently of the job's parser.
fn generated_time(line: &str) -> Option<i64> {
    let inner = line.strip_prefix('[')?.split(']').next()?;
    let f: Vec<&str> = inner.split_whitespace().collect();
    if f.len() != 5 || f[1] != "Dec" || f[4] != "2015" {
        return None;
    }
    let day: i64 = f[2].parse().ok()?;
    let hms: Vec<i64> = f[3]
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // 2015-12-01T00:00:00Z = 1448928000.
    Some(1_448_928_000 + (day - 1) * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2])
}

#[test]
fn log_errors_event_time_counts_errors_per_event_time_window() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let out = tmp.path().join("out");
    generate_logs(&input, 4000, 4, 5);
    // A file of bad lines: a malformed timestamp, no timestamp, and a line so late (an
    // hour before everything else) that the watermark has passed it. Named to sort last.
    std::fs::write(
        input.join("zz-bad.log"),
        "[Fri Dec 99 00:00:00 2015] [ERROR] bad day\n\
         ERROR without a timestamp\n\
         [Thu Dec 17 23:00:00 2015] [ERROR] an hour late\n",
    )
    .unwrap();
    let mut stderr = String::new();
    let o = run_ok(&[
        "run",
        "log-errors",
        "--event-time",
        "--input",
        input.to_str().unwrap(),
        "--once",
        "--max-files-per-batch",
        "1",
        "--output",
        out.to_str().unwrap(),
        "--quiet",
        "--no-ui",
    ]);
    stderr.push_str(&String::from_utf8_lossy(&o.stderr));
    // Independently: every ERROR line's time from the good files.
    let mut times = Vec::new();
    for f in files_in(&input)
        .iter()
        .filter(|f| !f.ends_with("zz-bad.log"))
    {
        for l in std::fs::read_to_string(f).unwrap().lines() {
            if l.contains("ERROR") {
                times.push(generated_time(l).unwrap());
            }
        }
    }
    for (stream, size, slide) in [("tumbling_30s", 30, 30), ("sliding_30s_10s", 30, 10)] {
        let mut want: BTreeMap<i64, i64> = BTreeMap::new();
        for t in &times {
            let mut start = t - t.rem_euclid(slide);
            while start > t - size {
                *want.entry(start).or_default() += 1;
                start -= slide;
            }
        }
        let batches = read_stream(&out, stream);
        assert_eq!(batches.len(), 5, "{stream}: one batch per file");
        // Update mode: a window's final count is its row in the highest batch id.
        let mut got: BTreeMap<i64, i64> = BTreeMap::new();
        for rows in batches.values() {
            for r in rows {
                let start = r["start"].as_i64().unwrap();
                assert_eq!(r["end"].as_i64().unwrap(), start + size, "{r}");
                got.insert(start, r["count"].as_i64().unwrap());
            }
        }
        assert_eq!(got, want, "{stream}");
    }
    assert!(
        stderr.contains("1 late") && stderr.contains("2 without a readable timestamp"),
        "{stderr}"
    );
}

/// The same log lines from files (one file per batch) and from a one-partition Kafka
/// topic (one file's worth of records per batch) give identical output, batch by batch;
/// a missing topic is a clear error.
#[test]
fn log_errors_event_time_over_kafka_matches_the_same_lines_from_files() {
    use lockgate_kafka::testing::{create_topic, produce, KafkaBroker};
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    generate_logs(&input, 4000, 4, 11);
    let files = files_in(&input);
    let texts: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let per_file = texts[0].lines().count();
    assert!(texts.iter().all(|t| t.lines().count() == per_file));
    let broker = KafkaBroker::start().unwrap();
    create_topic(&broker.brokers, "logs", 1).unwrap();
    produce(
        &broker.brokers,
        "logs",
        texts.iter().flat_map(|t| t.lines()).map(|l| (0, l)),
    )
    .unwrap();
    let run = |out: &Path, source: &[&str]| {
        let args = [
            &[
                "run",
                "log-errors",
                "--event-time",
                "--once",
                "--quiet",
                "--no-ui",
            ],
            source,
            &["--output", out.to_str().unwrap()],
        ]
        .concat();
        run_ok(&args);
    };
    let (from_files, from_kafka) = (tmp.path().join("files"), tmp.path().join("kafka"));
    run(
        &from_files,
        &[
            "--input",
            input.to_str().unwrap(),
            "--max-files-per-batch",
            "1",
        ],
    );
    let per_batch = per_file.to_string();
    run(
        &from_kafka,
        &[
            "--kafka-brokers",
            &broker.brokers,
            "--kafka-topic",
            "logs",
            "--max-records-per-partition",
            &per_batch,
        ],
    );
    for stream in ["tumbling_30s", "sliding_30s_10s"] {
        let (want, got) = (
            read_stream(&from_files, stream),
            read_stream(&from_kafka, stream),
        );
        assert_eq!(want.len(), 4, "{stream}: one batch per file");
        assert_eq!(got, want, "{stream}");
    }
    // The completed batches' offsets went to the job's consumer group, for lag tools.
    let lines = texts.iter().map(|t| t.lines().count()).sum::<usize>() as i64;
    let committed = lockgate_kafka::testing::committed_offsets(
        &broker.brokers,
        "lockgate-log-errors",
        "logs",
        1,
    )
    .unwrap();
    assert_eq!(
        committed,
        vec![lines],
        "the group's offset is the end of the topic"
    );
    let e = run_err(&[
        "run",
        "log-errors",
        "--once",
        "--no-ui",
        "--kafka-brokers",
        &broker.brokers,
        "--kafka-topic",
        "no-such-topic",
    ]);
    assert!(
        e.contains("no-such-topic") && e.contains("does not exist"),
        "{e}"
    );
}

/// The final count of each word in a word-count output (its row in the highest batch).
fn final_word_counts(out: &Path) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for rows in read_stream(out, "word_counts").into_values() {
        for r in rows {
            counts.insert(
                r["word"].as_str().unwrap().to_string(),
                r["count"].as_i64().unwrap(),
            );
        }
    }
    counts
}

/// `--kafka-topic a,b` and `--kafka-topic-pattern REGEX` read several topics as one
/// stream: the counts are those of all their lines; topics the pattern does not match
/// are not read; a bad pattern is a clear error.
#[test]
fn the_cli_reads_several_kafka_topics_by_list_and_by_pattern() {
    use lockgate_kafka::testing::{create_topic, produce, KafkaBroker};
    let tmp = tempfile::tempdir().unwrap();
    let broker = KafkaBroker::start().unwrap();
    for (topic, word, n) in [
        ("web-a", "alpha", 30),
        ("web-b", "beta", 20),
        ("db", "gamma", 5),
    ] {
        create_topic(&broker.brokers, topic, 1).unwrap();
        let lines = (0..n).map(|i| (0, format!("{word} all {i}")));
        produce(&broker.brokers, topic, lines).unwrap();
    }
    let run = |out: &str, source: &[&str]| {
        let out = tmp.path().join(out);
        let args = [
            &["run", "word-count", "--once", "--quiet", "--no-ui"][..],
            &["--kafka-brokers", &broker.brokers],
            source,
            &["--output", out.to_str().unwrap()],
        ]
        .concat();
        run_ok(&args);
        final_word_counts(&out)
    };
    let listed = run("listed", &["--kafka-topic", "web-a,web-b"]);
    assert_eq!(
        (listed["alpha"], listed["beta"], listed["all"]),
        (30, 20, 50)
    );
    assert!(!listed.contains_key("gamma"));
    assert_eq!(run("matched", &["--kafka-topic-pattern", "web-.*"]), listed);
    let e = run_err(&[
        "run",
        "word-count",
        "--once",
        "--no-ui",
        "--kafka-brokers",
        &broker.brokers,
        "--kafka-topic-pattern",
        "web-(",
    ]);
    assert!(
        e.contains("web-(") && e.contains("not a regular expression"),
        "{e}"
    );
}

/// Zombie fencing: a second instance of a job with the same application and Kafka sink
/// (as on another machine after a failover; here on another checkpoint directory, since
/// the directory's lock keeps two processes of one machine off one) takes over the
/// sink's `transactional.id`; the first instance's next commit is refused and it stops
/// with an error naming the fencing, while the second goes on writing. (When the first
/// is ending a transaction just as the second starts, Kafka answers it PRODUCER_FENCED;
/// the test broker, tansu, never answers, so that instance stops at its sink's retry
/// timeout, with an error that names the transactional id and the takeover.)
#[test]
fn a_second_instance_with_the_same_kafka_sink_fences_the_first_which_stops_clearly() {
    use lockgate_kafka::testing::{consume_all, create_topic, KafkaBroker};
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    generate_logs(&input, 20_000, 40, 5);
    let broker = KafkaBroker::start().unwrap();
    create_topic(&broker.brokers, "counts", 1).unwrap();
    let sink = format!("kafka://{}/counts", broker.brokers);
    // Each instance's stderr goes to a file (a pipe nobody reads could fill and block it).
    let log = |checkpoint: &str| tmp.path().join(format!("{checkpoint}.log"));
    let start = |checkpoint: &str| {
        lockgate()
            .args(["run", "word-count", "--input", input.to_str().unwrap()])
            .args(["--max-files-per-batch", "1", "--batch-interval", "300ms"])
            .args(["--sink", &sink, "--sink-retry-timeout", "10s"])
            .args(["--no-ui", "--quiet", "--checkpoint"])
            .arg(tmp.path().join(checkpoint))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log(checkpoint)).unwrap())
            .spawn()
            .unwrap()
    };
    // How many batches an instance committed (its highest commit file's id + 1; older
    // commit files are deleted as it goes).
    let committed = |checkpoint: &str| {
        std::fs::read_dir(tmp.path().join(checkpoint).join("commits"))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
                    .map(|id| id + 1)
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    };
    let wait_until = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !done() {
            assert!(
                Instant::now() < deadline,
                "never: {what}; the second instance logged:\n{}",
                std::fs::read_to_string(log("cp-second")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut first = start("cp-first");
    wait_until("the first instance commits 2 batches", &|| {
        committed("cp-first") >= 2
    });
    let mut second = start("cp-second");
    let status = first.wait().unwrap();
    let err = std::fs::read_to_string(log("cp-first")).unwrap();
    assert!(!status.success(), "the fenced instance went on");
    assert!(
        err.contains("transactional.id `lockgate-word-count-")
            && (err.contains("was fenced: another instance of this job")
                || err.contains("took over this sink's transactions")),
        "{err}"
    );
    // The second goes on: its batches reach the topic.
    let seen = committed("cp-second");
    wait_until("the second instance commits 2 more batches", &|| {
        committed("cp-second") >= seen + 2
    });
    second.kill().unwrap();
    second.wait().unwrap();
    // Its checkpoint commits follow its sink's: those transactions were not refused.
    assert!(!consume_all(&broker.brokers, "counts", 1, 1)
        .unwrap()
        .is_empty());
}

/// A second process on a checkpoint directory in use is refused, naming the first.
#[test]
fn a_second_job_on_a_checkpoint_directory_in_use_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = tmp.path().join("cp");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let socket = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let args = |socket: &str| {
        [
            "run",
            "word-count",
            "--socket",
            socket,
            "--no-ui",
            "--checkpoint",
            cp.to_str().unwrap(),
        ]
        .map(String::from)
    };
    // Starts a job and waits (bounded) until it holds the directory: its pid in the lock.
    let start_holding = || {
        let child = lockgate()
            .args(args(&socket))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id().to_string();
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::fs::read_to_string(cp.join("lock")).map_or(true, |p| p.trim() != pid) {
            assert!(Instant::now() < deadline, "job {pid} never took the lock");
            std::thread::sleep(Duration::from_millis(20));
        }
        (child, pid)
    };
    let (mut first, pid) = start_holding();
    let e = run_err(&args(&socket).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        e.contains(&format!("another process (pid {pid}) is running a job")),
        "{e}"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    // Once it is gone, the directory can be used again (SIGKILL released the lock).
    let (mut again, _) = start_holding();
    again.kill().unwrap();
    again.wait().unwrap();
}

/// Regression: with a low file-descriptor limit, a crowd of idle UI connections made
/// the UI's accept loop panic ("timers are disabled") and the job fail to create its
/// output files. Connections are capped well below the limit and idle ones closed.
#[test]
fn a_crowd_of_idle_ui_connections_leaves_the_job_its_files() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let out = tmp.path().join("out");
    let exe = env!("CARGO_BIN_EXE_lockgate");
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -n 128 && exec {exe} run word-count --input {} --output {} --quiet \
             --batch-interval 100ms --ui-port 0",
            input.display(),
            out.display()
        ))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = ui_address(&mut lines);
    // More idle connections than the process has descriptors to spare.
    let idle: Vec<std::net::TcpStream> = (0..120)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    // The job still opens its input and writes its output.
    std::fs::write(tmp.path().join("w.txt"), "alpha beta\n").unwrap();
    std::fs::rename(tmp.path().join("w.txt"), input.join("w.txt")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !out.join("word_counts").exists() || read_stream(&out, "word_counts").is_empty() {
        assert!(Instant::now() < deadline, "the job wrote no output");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(idle);
    // And the UI answers once the crowd is gone.
    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let r = http_get(addr, "/metrics");
        if r.contains("lockgate_records_in_total") || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(metrics.contains("lockgate_records_in_total"), "{metrics}");
    sigint(&child);
    let rest: Vec<String> = lines.map_while(|l| l.ok()).collect();
    assert!(child.wait().unwrap().success(), "{rest:?}");
    assert!(!rest.iter().any(|l| l.contains("panicked")), "{rest:?}");
}

/// Regression: a batch of thousands of files (a backlog after downtime) opened every file
/// at once; with 50,000 files it ran out of descriptors and crawled through retries of
/// "Too many open files" (848 s, 30,000 warnings). Files are now opened as they are read:
/// 3,000 files under `ulimit -n 64` are one quick batch, every line counted, no retry.
#[test]
fn a_batch_of_thousands_of_files_opens_a_few_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    for i in 0..3000 {
        std::fs::write(
            input.join(format!("f{i:04}.txt")),
            format!("w{} common\n", i % 7),
        )
        .unwrap();
    }
    let out = tmp.path().join("out");
    let exe = env!("CARGO_BIN_EXE_lockgate");
    let done = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -n 64 && exec {exe} run word-count --input {} --output {} --once --quiet",
            input.display(),
            out.display()
        ))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{stderr}");
    assert!(!stderr.contains("retrying"), "{stderr}");
    let counts = final_word_counts(&out);
    assert_eq!(counts["common"], 3000);
    assert_eq!((0..7).map(|k| counts[&format!("w{k}")]).sum::<i64>(), 3000);
}

/// Regression: with the broker frozen (SIGSTOP), the job reported a timeout but the
/// process exited only when the broker came back, holding the checkpoint lock all that
/// time. The source now retries up to --source-retry-timeout, then the process exits
/// promptly with an error naming the broker.
#[test]
fn a_frozen_broker_fails_the_job_after_the_retry_timeout_and_the_process_exits() {
    use lockgate_kafka::testing::{create_topic, produce, KafkaBroker};
    let tmp = tempfile::tempdir().unwrap();
    let broker = KafkaBroker::start().unwrap();
    create_topic(&broker.brokers, "words", 1).unwrap();
    produce(
        &broker.brokers,
        "words",
        (0..50).map(|i| (0, format!("w{i}"))),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let cp = tmp.path().join("cp");
    let job = |extra: &[&str]| {
        let mut c = lockgate();
        c.args(["run", "word-count", "--kafka-brokers", &broker.brokers])
            .args(["--kafka-topic", "words", "--quiet", "--no-ui"])
            .args(extra)
            .arg("--output")
            .arg(&out)
            .arg("--checkpoint")
            .arg(&cp);
        c
    };
    let mut child = job(&["--batch-interval", "200ms", "--source-retry-timeout", "3s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !out.join("word_counts").exists() {
        assert!(Instant::now() < deadline, "no output before the freeze");
        std::thread::sleep(Duration::from_millis(50));
    }
    broker.freeze().unwrap();
    let frozen = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if frozen.elapsed() > Duration::from_secs(90) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    broker.thaw().unwrap();
    let waited = frozen.elapsed();
    let Some(status) = status else {
        let _ = child.kill();
        panic!("the job did not exit within 90 s of the broker freezing");
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("retrying"),
        "the source said it retries: {err}"
    );
    assert!(err.contains(&broker.brokers), "{err}");
    eprintln!("exited {:.1} s after the freeze", waited.as_secs_f64());
    // The checkpoint is free again: a new run on it starts and reads the rest.
    produce(
        &broker.brokers,
        "words",
        (50..60).map(|i| (0, format!("w{i}"))),
    )
    .unwrap();
    let again = job(&["--once"]).output().unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let words: std::collections::BTreeSet<String> = read_stream(&out, "word_counts")
        .into_values()
        .flatten()
        .map(|v| v["word"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(words.len(), 60);
}

/// The README's main command: the demo streams its sample logs (about a minute, with
/// the UI), and Ctrl-C stops it gracefully.
#[test]
fn the_demo_streams_its_sample_logs_until_ctrl_c() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let mut child = lockgate()
        .current_dir(tmp.path())
        .args(["run", "log-errors", "--quiet", "--ui-port", "0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.starts_with("streaming UI and API at http://127.0.0.1:"),
        "{first}"
    );
    let out = tmp.path().join("lockgate-demo/output");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let batches = if out.join("errors").exists() {
            read_stream(&out, "errors").len()
        } else {
            0
        };
        if batches >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the demo made no batches");
        std::thread::sleep(Duration::from_millis(100));
    }
    sigint(&child);
    let rest: Vec<String> = lines.map_while(|l| l.ok()).collect();
    assert!(child.wait().unwrap().success(), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("stopped gracefully")),
        "{rest:?}"
    );
}

/// A demo run starts afresh: it deletes the previous demo run's output, and says so.
#[test]
fn the_demo_says_it_deletes_the_previous_demo_output() {
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("lockgate-demo/output/errors/batch=0");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("part-0.jsonl"), "{}\n").unwrap();
    let out = lockgate()
        .current_dir(tmp.path())
        .args(["run", "log-errors", "--once", "--quiet", "--ui-port", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("deleting the previous demo run's output lockgate-demo/output")
            && err.contains("--output DIR"),
        "{err}"
    );
    let part = std::fs::read_to_string(old.join("part-0.jsonl")).unwrap_or_default();
    assert_ne!(part, "{}\n", "the old output is gone");
}

/// Copies directory `from` to `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

const SQL_WORD_COUNT: &str = "SELECT word, count(*) AS count FROM (SELECT unnest(string_to_array(value, ' ')) AS word FROM lines) AS t WHERE word <> '' GROUP BY word";
const SQL_ERROR_WINDOWS: &str = "SELECT to_unixtime(window.start) AS start, to_unixtime(window.end) AS end, count(*) AS count FROM (SELECT try_to_timestamp(substr(value, 2, 24), '%a %b %d %H:%M:%S %Y') AS ts FROM lines WHERE value LIKE '%ERROR%') AS e GROUP BY window(ts, '30 seconds', '10 seconds')";

/// Checkpoints made by earlier binaries recover with today's: Lockgate 0.1
/// (tests/fixtures/checkpoint-0.1, made by commit 4e037ae, before the batch protocol
/// moved into its own module) and commit 6d920f3 (tests/fixtures/checkpoint-6d920f3, the
/// last before state schemas: its state records Rust's type paths), the built-in jobs
/// and SQL queries with keyed and windowed state. As left (committed through batch 2),
/// their state is restored and a new file makes batch 3; with the commit removed (as if
/// the process died before it), their three logged plans are re-run first. Either way
/// every batch written equals what a fresh run on the same files writes for it.
#[test]
fn checkpoints_written_by_earlier_binaries_recover() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let run_job = |job: &'static str, flags: &'static [&'static str]| {
        let mut args = vec!["run", job];
        args.extend_from_slice(flags);
        args
    };
    type Case = (
        &'static str,
        Vec<&'static str>,
        &'static str,
        &'static [&'static str],
    );
    let mut cases: Vec<Case> = Vec::new();
    for set in ["checkpoint-0.1", "checkpoint-6d920f3"] {
        cases.push((
            set,
            run_job("word-count", &[]),
            "word-count",
            &["word_counts"],
        ));
        cases.push((
            set,
            run_job("log-errors", &["--event-time"]),
            "log-errors-event-time",
            &["tumbling_30s", "sliding_30s_10s"],
        ));
    }
    cases.push((
        "checkpoint-6d920f3",
        vec!["sql", "--name", "words", SQL_WORD_COUNT],
        "sql-word-count",
        &["words"],
    ));
    cases.push((
        "checkpoint-6d920f3",
        vec![
            "sql",
            "--name",
            "errors",
            "--watermark",
            "ts 10 seconds",
            SQL_ERROR_WINDOWS,
        ],
        "sql-error-windows",
        &["errors"],
    ));
    for (set, command, checkpoint, streams) in cases {
        for committed in [true, false] {
            let tmp = tempfile::tempdir().unwrap();
            let d = tmp.path();
            // The fixture's input (its plans name the files relative to the working
            // directory: the first three files of this generation are its three files),
            // plus a fourth file it has not seen, with later event times.
            generate_logs(&d.join("input"), 800, 4, 4);
            copy_dir(&fixtures.join(set).join(checkpoint), &d.join(checkpoint));
            if !committed {
                std::fs::remove_file(d.join(checkpoint).join("commits/2")).unwrap();
            }
            let run = |checkpoint: &str, output: &str| {
                // The query (the last word of a SQL command) goes last.
                let (head, query) = match command[0] {
                    "sql" => command.split_at(command.len() - 1),
                    _ => (&command[..], &[][..]),
                };
                let mut args = head.to_vec();
                args.extend_from_slice(&[
                    "--input",
                    "input",
                    "--once",
                    "--max-files-per-batch",
                    "1",
                    "--parallelism",
                    "2",
                    "--checkpoint",
                    checkpoint,
                    "--output",
                    output,
                    "--no-ui",
                    "--quiet",
                ]);
                args.extend_from_slice(query);
                let out = lockgate().current_dir(d).args(&args).output().unwrap();
                assert!(
                    out.status.success(),
                    "{set}/{checkpoint}: lockgate {args:?} failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            run(checkpoint, "out");
            run("fresh-checkpoint", "fresh-out");
            assert_recovered_like_a_fresh_run(
                d,
                &format!("{set}/{checkpoint}"),
                streams,
                committed,
            );
        }
    }
}

/// The batches a run recovered from a fixture (committed through batch 2, or with
/// that commit removed) wrote to `d/out`: 3 alone, or 0 to 3; each equal to what a
/// fresh run wrote to `d/fresh-out` for it.
fn assert_recovered_like_a_fresh_run(d: &Path, job: &str, streams: &[&str], committed: bool) {
    let expected: Vec<u64> = if committed { vec![3] } else { vec![0, 1, 2, 3] };
    for stream in streams {
        let recovered = read_stream(&d.join("out"), stream);
        let fresh = read_stream(&d.join("fresh-out"), stream);
        assert_eq!(
            recovered.keys().copied().collect::<Vec<_>>(),
            expected,
            "{job} {stream} (committed: {committed}): the batches the recovered run writes"
        );
        for id in &expected {
            let mut a = recovered[id].clone();
            let mut b = fresh[id].clone();
            a.sort_by_key(|v| v.to_string());
            b.sort_by_key(|v| v.to_string());
            assert_eq!(
                a, b,
                "{job} {stream}: batch {id} differs from a fresh run's"
            );
        }
        assert!(
            !recovered[&3].is_empty(),
            "{job} {stream}: batch 3 wrote nothing"
        );
    }
}

/// A Kafka checkpoint of Lockgate 0.1 (tests/fixtures/checkpoint-0.1/kafka-word-count:
/// offsets by partition number, before partitions were named by topic) recovers on a
/// broker holding the same records and more: its positions and logged plans are taken
/// as the partitions of the one topic it reads; every batch written equals a fresh
/// run's. Reading several topics, it is a clear error.
#[test]
fn a_kafka_checkpoint_written_by_lockgate_0_1_recovers() {
    use lockgate_kafka::testing::{create_topic, produce, sample_log_lines, KafkaBroker};
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/checkpoint-0.1/kafka-word-count");
    let broker = KafkaBroker::start().unwrap();
    create_topic(&broker.brokers, "logs", 2).unwrap();
    create_topic(&broker.brokers, "more-logs", 1).unwrap();
    // The fixture's 300 records, then 100 it has not seen (batch 3).
    produce(&broker.brokers, "logs", sample_log_lines(400)).unwrap();
    let run = |d: &Path, topics: &str, checkpoint: &str, output: &str| {
        lockgate()
            .current_dir(d)
            .args(["run", "word-count", "--kafka-brokers", &broker.brokers])
            .args([
                "--kafka-topic",
                topics,
                "--once",
                "--max-records-per-partition",
                "50",
            ])
            .args([
                "--parallelism",
                "2",
                "--checkpoint",
                checkpoint,
                "--output",
                output,
            ])
            .args(["--no-ui", "--quiet"])
            .output()
            .unwrap()
    };
    for committed in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        copy_dir(&fixture, &d.join("checkpoint"));
        if !committed {
            std::fs::remove_file(d.join("checkpoint/commits/2")).unwrap();
        }
        let several = run(d, "logs,more-logs", "checkpoint", "out");
        let err = String::from_utf8_lossy(&several.stderr);
        assert!(
            !several.status.success()
                && err.contains("Lockgate 0.1")
                && err.contains("new checkpoint directory"),
            "reading several topics: {err}"
        );
        for (checkpoint, output) in [("checkpoint", "out"), ("fresh-checkpoint", "fresh-out")] {
            let out = run(d, "logs", checkpoint, output);
            assert!(
                out.status.success(),
                "{checkpoint}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_recovered_like_a_fresh_run(d, "word-count", &["word_counts"], committed);
    }
}

/// `--sink kafka://B/TOPIC`: both jobs write every output row to the topic as its JSON
/// line (as `--output` writes it) plus `"stream"`, keyed by the row's key, each record
/// once with its batch id and index in the batch's output (headers), in one transaction
/// per batch with a checkpoint.
#[test]
fn the_cli_jobs_write_their_output_rows_to_a_kafka_topic() {
    use lockgate_kafka::testing::{consume_all, create_topic, KafkaBroker};
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    generate_logs(&input, 3000, 3, 17);
    let broker = KafkaBroker::start().unwrap();
    let jobs: [(&str, &[&str], &[&str], &str); 2] = [
        (
            "log-errors",
            &["--event-time"],
            &["tumbling_30s", "sliding_30s_10s"],
            "start",
        ),
        ("word-count", &[], &["word_counts"], "word"),
    ];
    for (job, flags, streams, key_field) in jobs {
        let topic = format!("out-{job}");
        create_topic(&broker.brokers, &topic, 2).unwrap();
        let out = tmp.path().join(format!("out-{job}"));
        let sink = format!("kafka://{}/{topic}", broker.brokers);
        let checkpoint = tmp.path().join(format!("cp-{job}"));
        let mut args = vec!["run", job];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[
            "--input",
            input.to_str().unwrap(),
            "--once",
            "--max-files-per-batch",
            "1",
            "--checkpoint",
            checkpoint.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--sink",
            &sink,
            // The test broker hides the tail of multi-record batches from readers.
            "--kafka-sink-property",
            "batch.num.messages=1",
            "--kafka-sink-property",
            "linger.ms=0",
            "--quiet",
            "--no-ui",
        ]);
        run_ok(&args);
        // What --output wrote, as (stream, batch id, row) with "stream" added.
        let mut want: Vec<(u64, String)> = Vec::new();
        for stream in streams {
            for (id, rows) in read_stream(&out, stream) {
                for mut row in rows {
                    row["stream"] = serde_json::Value::from(*stream);
                    want.push((id, row.to_string()));
                }
            }
        }
        want.sort();
        assert!(!want.is_empty(), "{job} wrote no rows");
        let records = consume_all(&broker.brokers, &topic, 2, want.len()).unwrap();
        let mut got: Vec<(u64, String)> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for r in &records {
            let value: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
            let batch: u64 = r.header("lockgate-batch").unwrap().parse().unwrap();
            let seq = r.header("lockgate-seq").unwrap();
            let stream = value["stream"].as_str().unwrap().to_string();
            assert!(
                seen.insert((stream, batch, seq)),
                "{job}: a record twice: {value}"
            );
            let key = String::from_utf8(r.key.clone().unwrap()).unwrap();
            let field = &value[key_field];
            let expected_key = field
                .as_str()
                .map_or_else(|| field.to_string(), str::to_string);
            assert_eq!(key, expected_key, "{job}: the key is the row's {key_field}");
            got.push((batch, value.to_string()));
        }
        got.sort();
        assert_eq!(
            got, want,
            "{job}: the topic holds exactly the rows --output wrote"
        );
    }
}

#[test]
fn a_bad_kafka_sink_address_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    generate_logs(&tmp.path().join("in"), 10, 1, 1);
    let input = tmp.path().join("in");
    for (url, says) in [
        ("kafka://localhost:9092", "no topic after the brokers"),
        ("kafka:///topic", "every broker needs HOST:PORT"),
        ("kafka://localhost:9092/a/b", "the topic is one name"),
    ] {
        let err = run_err(&[
            "run",
            "word-count",
            "--input",
            input.to_str().unwrap(),
            "--once",
            "--no-ui",
            "--sink",
            url,
        ]);
        assert!(
            err.contains(says) && err.contains("kafka://HOST:PORT"),
            "{url}: {err}"
        );
    }
}

/// `--starting-offsets` as Spark's JSON (per partition an offset, -1 latest) and `group`
/// (where `--kafka-group` committed: the previous run's end, since each completed
/// batch's offsets are committed there).
#[test]
fn kafka_starting_offsets_explicit_and_from_the_group() {
    use lockgate_kafka::testing::{create_topic, produce, KafkaBroker};
    let tmp = tempfile::tempdir().unwrap();
    let broker = KafkaBroker::start().unwrap();
    create_topic(&broker.brokers, "words", 2).unwrap();
    let word = |p: i32, i: usize| (p, format!("p{p}w{i}"));
    produce(
        &broker.brokers,
        "words",
        (0..50).flat_map(|i| [word(0, i), word(1, i)]),
    )
    .unwrap();
    // The distinct words a run counted (every word is new: one row per word).
    let run = |out: &Path, extra: &[&str]| -> Vec<String> {
        let mut args = vec![
            "run",
            "word-count",
            "--once",
            "--quiet",
            "--no-ui",
            "--kafka-brokers",
            &broker.brokers,
            "--kafka-topic",
            "words",
            "--kafka-group",
            "starting-test",
            "--output",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run_ok(&args);
        let mut words: Vec<String> = read_stream(out, "word_counts")
            .into_values()
            .flatten()
            .map(|r| r["word"].as_str().unwrap().to_string())
            .collect();
        words.sort();
        words
    };
    let explicit = run(
        &tmp.path().join("explicit"),
        &["--starting-offsets", r#"{"words":{"0":40,"1":-1}}"#],
    );
    let mut want: Vec<String> = (40..50).map(|i| format!("p0w{i}")).collect();
    want.sort();
    assert_eq!(
        explicit, want,
        "partition 0 from offset 40, partition 1 from its end"
    );
    // That run committed both partitions' ends to the group: a run from the group's
    // offsets reads only what came since.
    produce(&broker.brokers, "words", [word(0, 50), word(1, 50)]).unwrap();
    let from_group = run(&tmp.path().join("group"), &["--starting-offsets", "group"]);
    assert_eq!(from_group, vec!["p0w50".to_string(), "p1w50".to_string()]);
    let err = run_err(&[
        "run",
        "word-count",
        "--once",
        "--no-ui",
        "--kafka-brokers",
        &broker.brokers,
        "--kafka-topic",
        "words",
        "--starting-offsets",
        r#"{"other":{"0":1}}"#,
    ]);
    assert!(err.contains("names topic `other`"), "{err}");
}

/// Appends `words` copies of `word` (one per line) to `path`.
fn append_words(path: &Path, word: &str, words: usize) {
    let mut f = std::fs::File::options()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(format!("{word}\n").repeat(words).as_bytes())
        .unwrap();
}

/// Waits (up to 60 s) until `word` has a count in a word-count output.
fn wait_for_word(out: &Path, word: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(out.join("word_counts").exists() && final_word_counts(out).contains_key(word)) {
        assert!(Instant::now() < deadline, "`{word}` never counted");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Regression (outside tester): files written in place were read partially and nothing
/// said so (350 of 2,000 words counted, `changed_files_total` 0), and a restart never
/// noticed the rest. Now, with the default minimum file age, a writer that appends
/// slowly or flushes in halves a moment apart has its file read whole; a file that
/// changes after its batch read it (a second half much later, a rewrite, a truncation)
/// is named in a warning, counted, and summed up at the end; a restart names a file
/// that grew while the job was down.
#[test]
fn files_written_in_place_are_read_whole_or_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, out, ck) = (
        tmp.path().join("in"),
        tmp.path().join("out"),
        tmp.path().join("ck"),
    );
    std::fs::create_dir_all(&input).unwrap();
    let log = tmp.path().join("stderr.log");
    let args = |once: bool| {
        let mut a = vec![
            "run".to_string(),
            "word-count".into(),
            "--input".into(),
            input.display().to_string(),
            "--output".into(),
            out.display().to_string(),
            "--checkpoint".into(),
            ck.display().to_string(),
            "--batch-interval".into(),
            "200ms".into(),
            "--quiet".into(),
        ];
        if once {
            a.push("--once".into());
        }
        a
    };
    let mut job = lockgate()
        .args(args(false))
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stderr = || std::fs::read_to_string(&log).unwrap();
    let file = |name: &str| input.join(name);
    std::thread::scope(|s| {
        // Written over 2 s, 50 words every 50 ms: still being written at every listing.
        s.spawn(|| {
            for _ in 0..40 {
                append_words(&file("slow.txt"), "slow", 50);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        // Flushed in halves 200 ms apart: within the minimum age.
        s.spawn(|| {
            append_words(&file("quick.txt"), "quick", 1000);
            std::thread::sleep(Duration::from_millis(200));
            append_words(&file("quick.txt"), "quick", 1000);
        });
        // Flushed in halves with the job's batch of the first half in between.
        s.spawn(|| {
            append_words(&file("halves.txt"), "early", 1000);
            wait_for_word(&out, "early");
            append_words(&file("halves.txt"), "late", 1000);
        });
        // Rewritten (same size) and truncated after they were read.
        s.spawn(|| {
            append_words(&file("rewrite.txt"), "first", 500);
            wait_for_word(&out, "first");
            std::fs::write(file("rewrite.txt"), "other\n".repeat(500)).unwrap();
        });
        s.spawn(|| {
            append_words(&file("truncate.txt"), "whole", 500);
            wait_for_word(&out, "whole");
            let f = std::fs::File::options()
                .write(true)
                .open(file("truncate.txt"))
                .unwrap();
            f.set_len(3 * 250).unwrap();
        });
    });
    wait_for_word(&out, "slow");
    let deadline = Instant::now() + Duration::from_secs(60);
    while ["halves.txt", "rewrite.txt", "truncate.txt"]
        .iter()
        .any(|f| !stderr().contains(f))
    {
        assert!(
            Instant::now() < deadline,
            "changes not reported:\n{}",
            stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    sigint(&job);
    assert!(job.wait().unwrap().success(), "{}", stderr());
    let counts = final_word_counts(&out);
    let expected: BTreeMap<String, i64> = [
        ("slow", 2000),
        ("quick", 2000),
        ("early", 1000),
        ("first", 500),
        ("whole", 500),
    ]
    .into_iter()
    .map(|(w, n)| (w.to_string(), n))
    .collect();
    assert_eq!(counts, expected, "{}", stderr());
    let e = stderr();
    let line_of = |name: &str| {
        e.lines()
            .find(|l| l.contains(name) && l.contains("changed after it was planned"))
            .unwrap_or_else(|| panic!("no warning names {name}:\n{e}"))
            .to_string()
    };
    assert!(
        line_of("halves.txt").contains("the 5000 bytes written after its plan are not read"),
        "{e}"
    );
    assert!(
        line_of("rewrite.txt").contains("modified after it was planned (same size)"),
        "{e}"
    );
    assert!(
        line_of("truncate.txt").contains("shrank from 3000 bytes"),
        "{e}"
    );
    assert!(!e.contains("slow.txt") && !e.contains("quick.txt"), "{e}");
    assert!(
        e.contains("3 file(s) changed after they were planned, not read whole"),
        "summed up at the end:\n{e}"
    );

    // Appended to while the job is down: the next start names it.
    append_words(&file("slow.txt"), "slow", 10);
    let again = lockgate().args(args(true)).output().unwrap();
    let e = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{e}");
    assert!(
        e.lines()
            .any(|l| l.contains("slow.txt") && l.contains("grew from 10000 bytes")),
        "{e}"
    );
}

/// Regression (outside tester): a symlink to a regular file in the input directory,
/// present at start or renamed in later, was skipped without a word (12,648 words
/// unread). Symlinks to files are read; a dangling link, a directory and a FIFO are
/// named, counted and summed up, and nothing hangs.
#[test]
fn symlinked_files_are_read_and_other_entries_named() {
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().unwrap();
    let (input, out, store) = (
        tmp.path().join("in"),
        tmp.path().join("out"),
        tmp.path().join("store"),
    );
    std::fs::create_dir_all(&input).unwrap();
    std::fs::create_dir_all(&store).unwrap();
    append_words(&store.join("a.txt"), "linked", 300);
    symlink(store.join("a.txt"), input.join("a.txt")).unwrap();
    append_words(&input.join("plain.txt"), "plain", 20);
    symlink(store.join("missing.txt"), input.join("dangling.txt")).unwrap();
    std::fs::create_dir(input.join("subdir")).unwrap();
    assert!(Command::new("mkfifo")
        .arg(input.join("pipe"))
        .status()
        .unwrap()
        .success());
    let done = lockgate()
        .args(["run", "word-count", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&out)
        .args(["--once", "--quiet", "--file-min-age", "0"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{e}");
    let counts = final_word_counts(&out);
    assert_eq!(counts["linked"], 300, "{e}");
    assert_eq!(counts["plain"], 20, "{e}");
    for (name, what) in [
        ("dangling.txt", "a dangling symlink"),
        ("subdir", "a directory"),
        ("pipe", "a FIFO"),
    ] {
        assert!(
            e.lines().any(|l| l.contains(name) && l.contains(what)),
            "{name} not named as {what}:\n{e}"
        );
    }
    assert!(
        e.contains("3 directory entr(ies) not regular files skipped"),
        "{e}"
    );
}

/// Regression (outside tester): with every commit file truncated, `checkpoint inspect`
/// exited 0 saying "committed through batch 299" while `run` refused without advice, and
/// `inspect | head` panicked (exit 101). Inspect now reports what run would do — the
/// commits it passes over, where it resumes, what it re-runs — and exits 1 with run's
/// own refusal and advice where run refuses; a closed pipe ends its output quietly.
#[test]
fn checkpoint_inspect_reports_what_run_would_do() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, out, ck) = (
        tmp.path().join("in"),
        tmp.path().join("out"),
        tmp.path().join("ck"),
    );
    std::fs::create_dir_all(&input).unwrap();
    for i in 0..150 {
        std::fs::write(input.join(format!("f{i:03}.txt")), format!("w{i} common\n")).unwrap();
    }
    let run = |extra: &[&str]| {
        let mut c = lockgate();
        c.args(["run", "word-count", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&out)
            .arg("--checkpoint")
            .arg(&ck)
            .args(["--once", "--quiet", "--file-min-age", "0"])
            .args(extra);
        c.output().unwrap()
    };
    // 150 batches: retention keeps the last 100 plans; commits are grouped.
    assert!(run(&["--max-files-per-batch", "1"]).status.success());
    let commits: Vec<PathBuf> = files_in(&ck.join("commits"));
    assert!(commits.len() >= 2, "{commits:?}");
    let inspect = || {
        lockgate()
            .args(["checkpoint", "inspect"])
            .arg(&ck)
            .output()
            .unwrap()
    };
    let ok = inspect();
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{text}");
    assert!(
        text.contains("run would:\n  resume after batch 149\n"),
        "{text}"
    );

    // The newest commit damaged: run falls back to the one before and re-runs the rest.
    let mut ids: Vec<u64> = commits
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().parse().unwrap())
        .collect();
    ids.sort();
    let (newest, before) = (ids[ids.len() - 1], ids[ids.len() - 2]);
    std::fs::write(ck.join("commits").join(newest.to_string()), b"").unwrap();
    let fallback = inspect();
    let text = String::from_utf8_lossy(&fallback.stdout);
    assert!(fallback.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "  pass over the commit of batch {newest}: checkpoint file"
        )) && text.contains("truncated (0 bytes)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("  resume after batch {before}\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "  re-run batches {}..={newest} from their logged plans",
            before + 1
        )),
        "{text}"
    );

    // Every commit damaged, the first plans gone: run refuses, and so does inspect.
    for id in &ids {
        std::fs::write(ck.join("commits").join(id.to_string()), b"").unwrap();
    }
    let refused = inspect();
    let text = String::from_utf8_lossy(&refused.stdout);
    let why = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{text}{why}");
    assert!(text.contains("  REFUSE to start"), "{text}");
    let advice = "so recovery cannot tell what input the state held. Restore the commit and \
                  state files from a backup; or move the whole checkpoint";
    assert!(why.contains(advice), "{why}");
    let ran = run(&[]);
    assert!(!ran.status.success());
    let run_why = String::from_utf8_lossy(&ran.stderr);
    assert!(
        run_why.contains(advice),
        "run gives the same advice:\n{run_why}"
    );

    // A reader that stops early: no panic, run's verdict still in the exit status.
    let exe = env!("CARGO_BIN_EXE_lockgate");
    let piped = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{exe} checkpoint inspect {} | head -1; exit ${{PIPESTATUS[0]}}",
            ck.display()
        ))
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&piped.stderr);
    assert_eq!(piped.status.code(), Some(1), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    assert_eq!(String::from_utf8_lossy(&piped.stdout).lines().count(), 1);

    // A damaged metadata file: both refuse, saying what to restore or move away.
    std::fs::write(ck.join("metadata"), b"").unwrap();
    let refused = inspect();
    let why = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{why}");
    let advice = "recovery needs it (the application, the batch timing and the operators' \
                  state schemas). Restore it from a backup; or move the whole checkpoint";
    assert!(why.contains(advice), "{why}");
    let run_why = String::from_utf8_lossy(&run(&[]).stderr).into_owned();
    assert!(run_why.contains(advice), "{run_why}");
}

/// Refusals that advise `StateUpgrade::StartEmpty` name the CLI's way too, and the flag
/// works: log-errors switched to event time on a checkpoint of its processing-time
/// variant is refused, then starts with `--state-upgrade start-empty-and-drop-old`.
#[test]
fn a_changed_job_is_refused_with_the_flag_that_lets_it_start() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, ck) = (tmp.path().join("in"), tmp.path().join("ck"));
    generate_logs(&input, 2000, 4, 1);
    let run = |extra: &[&str]| {
        lockgate()
            .args(["run", "log-errors", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(tmp.path().join("out"))
            .arg("--checkpoint")
            .arg(&ck)
            .args(["--once", "--quiet"])
            .args(extra)
            .output()
            .unwrap()
    };
    assert!(run(&[]).status.success());
    let refused = run(&["--event-time"]);
    let e = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(e.contains("(CLI: --state-upgrade start-empty)"), "{e}");
    let upgraded = run(&[
        "--event-time",
        "--state-upgrade",
        "start-empty-and-drop-old",
    ]);
    let e = String::from_utf8_lossy(&upgraded.stderr);
    assert!(upgraded.status.success(), "{e}");
}

/// Decode failures on every path follow one policy: each skipped value is counted by
/// reason in `/metrics`, and the streaming page's API shows the counts and the last
/// reason with its location (file and line).
#[test]
fn skipped_values_are_counted_by_reason_in_metrics_and_on_the_streaming_page() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(
        input.join("a.csv"),
        "1,x\n2,y,extra\n\"open,z\nthree,w\n4,v\n",
    )
    .unwrap();
    let mut child = lockgate()
        .args([
            "sql",
            "--batch-interval",
            "100ms",
            "--quiet",
            "--ui-port",
            "0",
            "--file-min-age",
            "0",
            "--format",
            "csv",
            "--schema",
            "id BIGINT, tag STRING",
            "--input",
        ])
        .arg(&input)
        .arg("--output")
        .arg(tmp.path().join("out"))
        .arg("SELECT sum(id) AS total FROM lines")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = ui_address(&mut lines);
    // The rest of the log is drained so that the job never waits on a full pipe.
    let log = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    let get = |path: &str| http_get(addr, path);
    let deadline = Instant::now() + Duration::from_secs(60);
    let metric = "lockgate_source_skipped_values_total{app=\"sql-result\",source=\"files-0\",reason=\"wrong type\"} 1";
    let metrics = loop {
        let m = get("/metrics");
        if m.contains(metric) || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(metrics.contains(metric), "{metrics}");
    for reason in ["wrong field count", "unclosed quote"] {
        let m = format!(
            "lockgate_source_skipped_values_total{{app=\"sql-result\",source=\"files-0\",reason=\"{reason}\"}} 1"
        );
        assert!(metrics.contains(&m), "{metrics}");
    }
    let apps: serde_json::Value = serde_json::from_str(
        get("/api/v1/applications")
            .split("\r\n\r\n")
            .nth(1)
            .unwrap(),
    )
    .unwrap();
    let id = apps[0]["id"].as_str().unwrap().to_string();
    let body = get(&format!("/api/v1/applications/{id}/streaming/receivers"));
    let sources: serde_json::Value =
        serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let skipped = &sources[0]["skipped"];
    assert_eq!(skipped["skippedValues"], 3, "{body}");
    let last = skipped["lastSkipped"].as_str().unwrap();
    let file = input.join("a.csv").display().to_string();
    assert!(
        last.contains(&format!("at file `{file}` line 4")) && last.contains("column `id`"),
        "{last}"
    );
    sigint(&child);
    assert!(child.wait().unwrap().success());
    let log = log.join().unwrap().join("\n");
    assert!(log.contains("a quote is not closed at file"), "{log}");
}

/// A port nothing listens on (bound, then released).
fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn an_unanswered_broker_address_is_named_at_once_with_the_retry_flag() {
    // The source: the first lines say that no broker answers and until when the job
    // retries, before the first call's whole timeout has passed.
    let brokers = format!("127.0.0.1:{}", dead_port());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let err = run_err(&[
        "run",
        "log-errors",
        "--kafka-brokers",
        &brokers,
        "--kafka-topic",
        "events",
        "--source-retry-timeout",
        "12s",
        "--once",
        "--quiet",
        "--ui-port",
        "0",
        "--output",
        out.to_str().unwrap(),
    ]);
    let warned = err
        .lines()
        .position(|l| {
            l.contains(&format!("no Kafka broker answers at {brokers} within 3s"))
                && l.contains("keeps retrying for up to 12s (--source-retry-timeout")
        })
        .unwrap_or_else(|| panic!("no early warning: {err}"));
    // It precedes the engine's retries and the final error.
    let retried = err
        .lines()
        .position(|l| l.contains("lockgate_core::source::direct: retrying"));
    assert!(retried.is_some(), "{err}");
    // Once per outage, not at every retry.
    assert_eq!(err.matches("no Kafka broker answers").count(), 1, "{err}");
    assert!(retried.is_some_and(|r| warned < r), "{err}");
    assert!(err.contains("is a broker listening there"), "{err}");

    // The sink: said at start, naming its own flag.
    let input = tmp.path().join("in");
    generate_logs(&input, 100, 1, 1);
    let err = run_err(&[
        "run",
        "log-errors",
        "--input",
        input.to_str().unwrap(),
        "--sink",
        &format!("kafka://{brokers}/errors"),
        "--sink-retry-timeout",
        "6s",
        "--once",
        "--quiet",
        "--ui-port",
        "0",
    ]);
    assert!(
        err.contains(&format!("no Kafka broker answers at {brokers} within 2s"))
            && err.contains("(--sink-retry-timeout"),
        "{err}"
    );
}
