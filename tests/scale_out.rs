//! Scale-out (`lockgate run ... --scale-out`) with real processes, a real Kafka-protocol
//! broker (tansu, scripts/kafka.sh) and checkpoints on a real S3 server (moto,
//! scripts/s3.sh): several instances of word-count share an 8-partition topic through
//! the consumer group, through SIGKILLs and restarts, instances joining and leaving,
//! and a paused instance that is fenced when it wakes. The final count of every word
//! must equal the count of the input's words and a single-instance run's.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lockgate_kafka::testing::{consume_all, create_topic, produce, KafkaBroker};
use lockgate_object_store::testing::{S3Server, CREDENTIALS};

const PARTITIONS: i32 = 8;
const OUT_PARTITIONS: i32 = 4;

/// A small deterministic generator (xorshift), seeded per run and printed.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let seed = std::env::var("LOCKGATE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("seed {seed} (LOCKGATE_TEST_SEED={seed} repeats this run)");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A broker, an S3 server, the input topic and the running instances.
struct Cluster {
    broker: KafkaBroker,
    s3: S3Server,
    work: tempfile::TempDir,
    url: String,
    /// Lines produced so far (line number → partition), for the expected counts.
    lines: u64,
    instances: BTreeMap<String, Child>,
    started: u32,
    /// The job and its sink (after `run`).
    job: Vec<String>,
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `GET path` on the UI at `port`: the status code and the body.
fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The words of line `i`: five of 60, overlapping from line to line.
fn words_of(i: u64) -> String {
    (0..5)
        .map(|j| format!("w{}", (i * 7 + j * 13) % 60))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Cluster {
    /// A word-count cluster (Kafka → Kafka).
    fn start(name: &str) -> Cluster {
        let mut c = Cluster::bare(name);
        let sink = format!("kafka://{}/counts", c.broker.brokers);
        c.job = vec!["word-count".into(), "--sink".into(), sink];
        c
    }

    fn bare(name: &str) -> Cluster {
        // One cluster at a time: each runs several instances of many tasks.
        let guard = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let broker = KafkaBroker::start().unwrap();
        let s3 = S3Server::start().unwrap();
        create_topic(&broker.brokers, "lines", PARTITIONS).unwrap();
        create_topic(&broker.brokers, "counts", OUT_PARTITIONS).unwrap();
        let url = s3.url(name);
        Cluster {
            broker,
            s3,
            work: tempfile::tempdir().unwrap(),
            url,
            lines: 0,
            instances: BTreeMap::new(),
            started: 0,
            job: Vec::new(),
            _one_at_a_time: guard,
        }
    }

    /// Produces `n` more lines, spread over the partitions.
    fn produce(&mut self, n: u64) {
        let from = self.lines;
        let records: Vec<(i32, String)> = (from..from + n)
            .map(|i| ((i % PARTITIONS as u64) as i32, words_of(i)))
            .collect();
        produce(&self.broker.brokers, "lines", records).unwrap();
        self.lines += n;
    }

    /// The count of every word in the lines produced.
    fn expected(&self) -> BTreeMap<String, i64> {
        let mut counts = BTreeMap::new();
        for i in 0..self.lines {
            for w in words_of(i).split(' ') {
                *counts.entry(w.to_string()).or_insert(0) += 1;
            }
        }
        counts
    }

    fn log(&self, id: &str, n: u32) -> PathBuf {
        self.work.path().join(format!("{id}-{n}.log"))
    }

    /// Starts instance `id` of word-count (its log in the work directory).
    fn spawn(&mut self, id: &str, extra: &[&str]) {
        self.started += 1;
        let log = self.log(id, self.started);
        let mut c = Command::new(env!("CARGO_BIN_EXE_lockgate"));
        c.env("RUST_LOG", "info")
            .envs(CREDENTIALS)
            .arg("run")
            .args(&self.job)
            .args(["--scale-out", "--quiet"])
            .args([
                "--kafka-brokers",
                &self.broker.brokers,
                "--kafka-topic",
                "lines",
            ])
            .args(["--checkpoint", &self.url, "--instance-id", id])
            .args(["--kafka-session-timeout", "6s", "--lease-timeout", "2s"])
            .args(["--batch-interval", "500ms"])
            // The test broker makes a partition's end visible before its last record can
            // be fetched: a reader right behind the writers would skip it.
            .arg("--repartition-read-behind")
            // The test broker reports a wrong end offset after a multi-record batch.
            .args(["--kafka-sink-property", "batch.num.messages=1"])
            .args(["--kafka-sink-property", "linger.ms=0"])
            .args(extra);
        if !extra.contains(&"--ui-port") {
            c.arg("--no-ui");
        }
        for (k, v) in self.s3.settings() {
            c.arg("--checkpoint-option").arg(format!("{k}={v}"));
        }
        let child = c
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        eprintln!("started {id} (log {})", log.display());
        self.instances.insert(id.to_string(), child);
    }

    fn signal(&self, id: &str, signal: &str) {
        let pid = self.instances[id].id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} {id}");
    }

    fn sigkill(&mut self, id: &str) {
        let mut child = self.instances.remove(id).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        eprintln!("killed {id}");
    }

    /// Stops `id` with SIGTERM (a graceful stop: it leaves the group) and waits.
    fn stop(&mut self, id: &str) {
        self.signal(id, "TERM");
        let mut child = self.instances.remove(id).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "{id} did not stop cleanly: {status}");
    }

    /// Fails when an instance exited by itself.
    fn check_alive(&mut self) {
        let exited = self
            .instances
            .iter_mut()
            .find_map(|(id, child)| child.try_wait().unwrap().map(|s| (id.clone(), s)));
        if let Some((id, status)) = exited {
            panic!(
                "instance {id} exited by itself ({status}):\n{}",
                self.all_logs()
            );
        }
    }

    fn all_logs(&self) -> String {
        let mut text = String::new();
        for e in std::fs::read_dir(self.work.path()).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "log") {
                let body = std::fs::read_to_string(&p).unwrap_or_default();
                // What moved where, then how it ended.
                text.push_str(&format!(
                    "== {} (rebalances, recoveries, errors)\n",
                    p.display()
                ));
                let key = [
                    "rebalance",
                    "recovered from",
                    "ERROR",
                    "fenced",
                    "last committed",
                ];
                for l in body
                    .lines()
                    .filter(|l| key.iter().any(|k| l.contains(k)))
                    .take(60)
                {
                    text.push_str(l);
                    text.push('\n');
                }
                let tail: Vec<&str> = body.lines().rev().take(40).collect();
                text.push_str(&format!("== {} (last lines)\n", p.display()));
                for l in tail.into_iter().rev() {
                    text.push_str(l);
                    text.push('\n');
                }
            }
        }
        text
    }

    /// Waits (up to 3 minutes) until the JSON output under `dir` (one directory per
    /// task) holds the input's final counts.
    fn converge_json(&mut self, dir: &Path) {
        let want = self.expected();
        // A batch directory being renamed into place can fail one read.
        self.wait_for_values("the JSON output's counts", &want, || {
            json_counts(dir).unwrap_or_default()
        });
    }

    /// Waits until the JSON output under `out` holds the input's final counts, then
    /// checks what the output topic's committed view holds: each record once, no count
    /// ahead of the input.
    ///
    /// Exact in the JSON output (the engine's own exactly-once sink, one directory per
    /// task), not in the topic: the test broker marks a transaction committed only once
    /// every transaction overlapping it on its partitions is prepared too, so with many
    /// transactional writers on the same partitions its last stable offset can stay
    /// behind for minutes, or for good once the input stops and no later transaction on
    /// those partitions ends to complete it (seen in about one run in ten of the
    /// join/leave and pause tests under CPU load, every batch already in the JSON
    /// output).
    fn converge_exactly(&mut self, out: &Path) -> Vec<lockgate_kafka::testing::Consumed> {
        self.converge_json(&out.join("word_counts"));
        let want = self.expected();
        let records = consume_all(&self.broker.brokers, "counts", OUT_PARTITIONS, 0).unwrap();
        check_identities(&records);
        for (word, count) in final_counts(&records) {
            assert!(
                count <= want[&word],
                "{word}: {count} in the topic, {} in the input",
                want[&word]
            );
        }
        records
    }

    /// Waits (up to 3 minutes, the instances alive) until `read()` gives `want`; fails
    /// naming what still differs and with the instances' logs.
    fn wait_for_values<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
        &mut self,
        what: &str,
        want: &BTreeMap<K, V>,
        mut read: impl FnMut() -> BTreeMap<K, V>,
    ) {
        let until = Instant::now() + Duration::from_secs(180);
        loop {
            self.check_alive();
            let got = read();
            if &got == want {
                return;
            }
            if Instant::now() > until {
                let wrong: Vec<_> = want
                    .iter()
                    .filter(|(k, v)| got.get(*k) != Some(v))
                    .map(|(k, v)| format!("{k:?}: want {v:?}, got {:?}", got.get(k)))
                    .take(10)
                    .collect();
                panic!(
                    "{what} never matched the input: {wrong:?}\n{}",
                    self.all_logs()
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Waits (up to 90 s) until instance `id` (its `n`th start) was given tasks.
    fn wait_for_tasks(&mut self, id: &str, n: u32) {
        let log = self.log(id, n);
        let until = Instant::now() + Duration::from_secs(90);
        loop {
            self.check_alive();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("rebalance: partitions assigned to this instance") {
                return;
            }
            assert!(
                Instant::now() < until,
                "{id} was never given a task:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn stop_all(&mut self) {
        let ids: Vec<String> = self.instances.keys().cloned().collect();
        for id in ids {
            self.stop(&id);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The logs of a failed run stay for a look.
            let dir = std::mem::replace(&mut self.work, tempfile::tempdir().unwrap());
            eprintln!("the logs are kept in {}", dir.keep().display());
        }
        for child in self.instances.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last count of each word in the output topic (a word's records are all in one
/// partition, written by the one task that owns the word, in batch order).
fn final_counts(records: &[lockgate_kafka::testing::Consumed]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for r in records {
        let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        out.insert(
            v["word"].as_str().unwrap().to_string(),
            v["count"].as_i64().unwrap(),
        );
    }
    out
}

/// Every (stream, task, batch, seq) in the output topic names one record: a record
/// written twice (an aborted attempt and its re-run, which the test broker does not
/// filter) is the same record both times.
fn check_identities(records: &[lockgate_kafka::testing::Consumed]) {
    let mut seen: HashMap<(String, String, String, String), &[u8]> = HashMap::new();
    for r in records {
        let id = (
            r.header("lockgate-stream").unwrap(),
            r.header("lockgate-task")
                .expect("a scale-out record names its task"),
            r.header("lockgate-batch").unwrap(),
            r.header("lockgate-seq").unwrap(),
        );
        if let Some(before) = seen.insert(id.clone(), &r.value) {
            assert_eq!(before, &r.value[..], "{id:?} names two different records");
        }
    }
}

/// One process, no scale-out, running `job` (its flags) over the same topic with
/// `--once`: the directory of its JSON output.
fn single_instance(cluster: &Cluster, job: &[&str]) -> PathBuf {
    let out = cluster.work.path().join("single-out");
    let ok = Command::new(env!("CARGO_BIN_EXE_lockgate"))
        .arg("run")
        .args(job)
        .args(["--once", "--quiet", "--no-ui"])
        .args(["--kafka-brokers", &cluster.broker.brokers])
        .args(["--kafka-topic", "lines"])
        .arg("--output")
        .arg(&out)
        .env("RUST_LOG", "warn")
        .status()
        .unwrap()
        .success();
    assert!(ok);
    out
}

/// The last count of each word in a JSON-lines output directory (`batch=<id>/` in
/// batch order; under `task=<task>/` directories too).
fn json_final_counts(dir: &Path) -> BTreeMap<String, i64> {
    json_counts(dir).unwrap()
}

/// [`json_final_counts`], or the error of a directory not there (yet).
fn json_counts(dir: &Path) -> std::io::Result<BTreeMap<String, i64>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![dir.to_path_buf()];
    let mut tasks = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("task=")
        {
            tasks.push(p);
        }
    }
    if !tasks.is_empty() {
        dirs = tasks;
    }
    for d in dirs {
        let batches = lockgate_core::sink::read_json_lines(&d).map_err(std::io::Error::other)?;
        for (_, rows) in batches {
            for row in rows {
                let v: serde_json::Value = serde_json::from_str(&row).unwrap();
                out.insert(
                    v["word"].as_str().unwrap().to_string(),
                    v["count"].as_i64().unwrap(),
                );
            }
        }
    }
    Ok(out)
}

#[test]
fn three_instances_count_words_exactly_through_sigkills() {
    let kills: u64 = std::env::var("LOCKGATE_SCALE_OUT_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let mut rng = Rng::seeded();
    let mut c = Cluster::start("wc-kills");
    let out = c.work.path().join("out");
    let out_arg = out.to_str().unwrap().to_string();
    c.produce(400);
    for id in ["a", "b", "c"] {
        c.spawn(id, &["--output", &out_arg]);
    }
    for round in 0..kills {
        std::thread::sleep(Duration::from_millis(500 + rng.below(2500)));
        c.check_alive();
        let id = ["a", "b", "c"][rng.below(3) as usize];
        eprintln!("round {round}: SIGKILL {id}");
        c.sigkill(id);
        c.produce(100 + rng.below(200));
        c.spawn(id, &["--output", &out_arg]);
    }
    let records = c.converge_exactly(&out);
    let want = c.expected();
    c.stop_all();
    let single = json_final_counts(&single_instance(&c, &["word-count"]).join("word_counts"));
    assert_eq!(single, want, "a single instance's counts");
    eprintln!(
        "{kills} SIGKILLs: {} words, {} lines, {} output records",
        want.len(),
        c.lines,
        records.len()
    );
}

/// On a loaded machine the test broker (tansu 0.6) can hand a reader of the repartition
/// topic a partition's next record while an earlier one (another writer's, offset
/// assigned, not stored yet) is still missing, and the reader moves past it (a run
/// ended one record short twice in about fifteen before `--repartition-read-behind`,
/// which every instance here runs with: second-stage tasks read only what their
/// previous plan saw).
#[test]
fn instances_join_and_leave_and_the_counts_stay_exact() {
    let mut c = Cluster::start("wc-scale");
    let out = c.work.path().join("out");
    let out_arg = out.to_str().unwrap().to_string();
    c.produce(500);
    let port = free_port().to_string();
    c.spawn("a", &["--output", &out_arg, "--ui-port", &port]);
    c.wait_for_tasks("a", 1);
    // Its UI shows each task as an application, metrics per task, and the probes.
    let port: u16 = port.parse().unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while http_get(port, "/ready").0 != 200 {
        assert!(
            Instant::now() < until,
            "a never became ready: {:?}",
            http_get(port, "/ready")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(http_get(port, "/health").0, 200);
    let (_, apps) = http_get(port, "/api/v1/applications");
    let apps: serde_json::Value = serde_json::from_str(&apps).unwrap();
    let tasks: Vec<&str> = apps
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["lockgateTask"].as_str().unwrap())
        .collect();
    assert!(tasks.contains(&"lines-0"), "{tasks:?}");
    let id = apps[0]["id"].as_str().unwrap();
    let (code, receivers) = http_get(
        port,
        &format!("/api/v1/applications/{id}/streaming/receivers"),
    );
    assert_eq!(code, 200, "{receivers}");
    let (_, metrics) = http_get(port, "/metrics");
    assert!(
        metrics.contains("lockgate_batches_completed_total{task=\"lines-0\""),
        "{metrics}"
    );
    assert_eq!(
        metrics
            .matches("# TYPE lockgate_batches_completed_total ")
            .count(),
        1,
        "one header per metric"
    );
    c.produce(300);
    c.spawn("b", &["--output", &out_arg]);
    c.wait_for_tasks("b", 2);
    c.produce(300);
    c.spawn("c", &["--output", &out_arg]);
    c.wait_for_tasks("c", 3);
    c.produce(300);
    // One leaves gracefully, one dies: the last one ends up with every task.
    c.stop("b");
    c.produce(300);
    std::thread::sleep(Duration::from_secs(2));
    c.sigkill("a");
    c.produce(300);
    let _ = c.converge_exactly(&out);
    c.stop_all();
    // The JSON output: DIR/word_counts/task=<task>/batch=<id>/part-<n>.jsonl.
    let layout: Vec<String> = std::fs::read_dir(out.join("word_counts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        layout
            .iter()
            .all(|t| t.starts_with("task=lockgate-word-count-word_counts-repartition-")),
        "{layout:?}"
    );
    assert_eq!(json_final_counts(&out.join("word_counts")), c.expected());
}

#[test]
fn a_paused_instance_is_fenced_when_it_wakes() {
    let mut c = Cluster::start("wc-pause");
    let out = c.work.path().join("out");
    let out_arg = out.to_str().unwrap().to_string();
    c.produce(400);
    c.spawn("a", &["--output", &out_arg]);
    c.spawn("b", &["--output", &out_arg]);
    std::thread::sleep(Duration::from_secs(8));
    let b_log = c.log("b", 2);
    let takeovers = |log: &Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("took over the checkpoint's lease")
            .count()
    };
    let before = takeovers(&b_log);
    c.signal("a", "STOP");
    c.produce(400);
    // b takes a's partitions after the session timeout, and its tasks after their
    // leases ran out.
    let until = Instant::now() + Duration::from_secs(90);
    loop {
        let text = std::fs::read_to_string(&b_log).unwrap_or_default();
        if takeovers(&b_log) > before {
            break;
        }
        assert!(
            Instant::now() < until,
            "b never took over a's tasks:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    c.signal("a", "CONT");
    let mut a = c.instances.remove("a").unwrap();
    let status = a.wait().unwrap();
    let a_log = std::fs::read_to_string(c.log("a", 1)).unwrap();
    assert!(!status.success(), "a woke and went on:\n{a_log}");
    assert!(
        a_log.contains("lost partitions") || a_log.contains("took over"),
        "a's error does not name the takeover:\n{a_log}"
    );
    c.produce(200);
    let _ = c.converge_exactly(&out);
    c.stop_all();
}

/// Line `i` of the event-time input: 50 lines per second of event time from
/// 2015-12-18 00:00:00 UTC, every third one an ERROR.
fn log_line(i: u64) -> String {
    let t = i / 50;
    let level = if i % 3 == 0 { "ERROR" } else { "INFO" };
    format!(
        "[Fri Dec 18 {:02}:{:02}:{:02} 2015] [{level}] request {i}",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// Every (window stream, start) → count of the ERROR lines `0..n` (both windows of
/// log-errors --event-time: tumbling 30 s, sliding 30 s by 10 s), as window_counts holds
/// them.
fn expected_windows(n: u64) -> BTreeMap<(String, i64), i64> {
    const BASE: i64 = 1_450_396_800; // 2015-12-18 00:00:00 UTC
    let mut out = BTreeMap::new();
    for i in (0..n).filter(|i| i % 3 == 0) {
        let t = BASE + (i / 50) as i64;
        *out.entry(("tumbling_30s".to_string(), t - t.rem_euclid(30)))
            .or_insert(0) += 1;
        let last = t - t.rem_euclid(10);
        for start in [last, last - 10, last - 20] {
            *out.entry(("sliding_30s_10s".to_string(), start))
                .or_insert(0) += 1;
        }
    }
    out
}

fn pg_windows(url: &str) -> BTreeMap<(String, i64), i64> {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let Ok(rows) = c.query("SELECT stream, start, count FROM window_counts", &[]) else {
        return BTreeMap::new();
    };
    rows.iter()
        .map(|r| {
            (
                (r.get::<_, String>(0), r.get::<_, i64>(1)),
                r.get::<_, i64>(2),
            )
        })
        .collect()
}

#[test]
fn event_time_windows_to_postgres_stay_exact_through_sigkills() {
    let kills: u64 = std::env::var("LOCKGATE_SCALE_OUT_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let mut rng = Rng::seeded();
    let pg = lockgate_sql_sinks::testing::PgServer::start().unwrap();
    let mut c = Cluster::bare("event-kills");
    c.job = vec![
        "log-errors".into(),
        "--event-time".into(),
        "--sink".into(),
        pg.url.clone(),
    ];
    let mut produced = 0u64;
    let mut produce = |c: &mut Cluster, n: u64| {
        let records: Vec<(i32, String)> = (produced..produced + n)
            .map(|i| ((i % PARTITIONS as u64) as i32, log_line(i)))
            .collect();
        produce(&c.broker.brokers, "lines", records).unwrap();
        produced += n;
    };
    produce(&mut c, 300);
    for id in ["a", "b", "c"] {
        c.spawn(id, &[]);
    }
    for round in 0..kills {
        std::thread::sleep(Duration::from_millis(500 + rng.below(2500)));
        c.check_alive();
        let id = ["a", "b", "c"][rng.below(3) as usize];
        eprintln!("round {round}: SIGKILL {id}");
        c.sigkill(id);
        // At most 6 s of event time per round: nothing is ever behind the watermark.
        produce(&mut c, 100 + rng.below(200));
        c.spawn(id, &[]);
    }
    let want = expected_windows(produced);
    c.wait_for_values("window_counts", &want, || pg_windows(&pg.url));
    // lockgate_offsets holds each task's batches once, in order, from 0.
    let mut db = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    let rows = db
        .query(
            "SELECT task, count(*), min(batch_id), max(batch_id) FROM lockgate_offsets \
             WHERE sink = 'window_counts' GROUP BY task",
            &[],
        )
        .unwrap();
    assert_eq!(
        rows.len(),
        PARTITIONS as usize,
        "one writer per second-stage task"
    );
    for r in rows {
        let (task, n, min, max): (String, i64, i64, i64) = (r.get(0), r.get(1), r.get(2), r.get(3));
        assert!(
            task.starts_with("lockgate-log-errors-window_counts-repartition-"),
            "{task}"
        );
        assert_eq!((min, max), (0, n - 1), "{task}: batches 0..{n} each once");
    }
    c.stop_all();
    // A single instance over the same topic (`--once`) agrees.
    let out = single_instance(&c, &["log-errors", "--event-time"]);
    let mut single = BTreeMap::new();
    for stream in ["tumbling_30s", "sliding_30s_10s"] {
        for (_, rows) in lockgate_core::sink::read_json_lines(&out.join(stream)).unwrap() {
            for row in rows {
                let v: serde_json::Value = serde_json::from_str(&row).unwrap();
                single.insert(
                    (stream.to_string(), v["start"].as_i64().unwrap()),
                    v["count"].as_i64().unwrap(),
                );
            }
        }
    }
    assert_eq!(single, want, "a single instance's windows");
    eprintln!(
        "{kills} SIGKILLs: {} windows of {produced} lines exact",
        want.len()
    );
}
