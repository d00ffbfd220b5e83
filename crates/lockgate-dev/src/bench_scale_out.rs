//! `lockgate-dev bench scale-out`: word count on an 8-partition topic, read by real
//! `lockgate` processes on a throwaway broker (scripts/kafka.sh), in the same run:
//!
//! - **single process**: today's `lockgate run word-count` (one process, no repartition);
//! - **scale-out, 1 instance**: `--scale-out`, both stages in one process (the cost of
//!   the repartition topic);
//! - **scale-out, 2 instances**: two processes sharing the topic through the group.
//!
//! Every configuration runs with the same `--parallelism` (the instance's worker threads,
//! shared by its tasks) and checkpoints in a local directory. The lines are produced
//! first (one record per request, as the test broker needs; not timed), then the
//! processes start together and the clock runs from their start until the output holds
//! every word's final count (startup and the group's first assignment included, the
//! same for every configuration). A fresh broker per run keeps runs apart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use lockgate_kafka::testing::{create_topic, produce, KafkaBroker};

/// Options of `bench scale-out`.
#[derive(Args)]
pub struct ScaleOutBenchOpts {
    /// Lines produced to the input topic (ten words each, of 1,000).
    #[arg(long, default_value_t = 400_000)]
    lines: u64,
    /// Partitions of the input topic (and of the repartition topic).
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Worker threads of each process.
    #[arg(long, default_value_t = 1)]
    parallelism: usize,
    /// Runs of each configuration (the median is reported).
    #[arg(long, default_value_t = 2)]
    repeat: usize,
    /// The `lockgate` executable (default: the one beside this program).
    #[arg(long, value_name = "PATH")]
    lockgate: Option<PathBuf>,
}

/// The words of line `i`.
fn line(i: u64) -> String {
    (0..10)
        .map(|j| format!("w{}", (i * 31 + j * 97) % 1000))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One job process, its UI port and its log.
struct Process {
    child: Child,
    port: u16,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split(' ').nth(1)?.parse().ok()?;
    Some((code, text.split_once("\r\n\r\n")?.1.to_string()))
}

/// The number of applications (tasks) a process's UI shows, once it is ready.
fn ready_tasks(port: u16) -> Option<usize> {
    let (code, _) = http_get(port, "/ready")?;
    if code != 200 {
        return None;
    }
    let (_, apps) = http_get(port, "/api/v1/applications")?;
    let apps: serde_json::Value = serde_json::from_str(&apps).ok()?;
    Some(apps.as_array()?.len())
}

/// The sum of every word's last count under `dir` (`word_counts/[task=*/]batch=*/`).
fn total_of(dir: &Path) -> Result<i64> {
    let root = dir.join("word_counts");
    if !root.exists() {
        return Ok(0);
    }
    // Scale-out: `task=<task>/` directories; one process: batches right under it.
    let mut dirs = Vec::new();
    for e in std::fs::read_dir(&root)? {
        let p = e?.path();
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("task="))
        {
            dirs.push(p);
        }
    }
    if dirs.is_empty() {
        dirs.push(root);
    }
    let mut last: HashMap<String, i64> = HashMap::new();
    for d in dirs {
        for (_, rows) in lockgate_core::sink::read_json_lines(&d)? {
            for row in rows {
                let v: serde_json::Value = serde_json::from_str(&row)?;
                if let (Some(w), Some(c)) = (v["word"].as_str(), v["count"].as_i64()) {
                    last.insert(w.to_string(), c);
                }
            }
        }
    }
    Ok(last.values().sum())
}

/// One run of a configuration (`instances` processes; 0: the single-process job):
/// the seconds from the first line produced to the last count written.
fn run_once(opts: &ScaleOutBenchOpts, exe: &Path, instances: usize) -> Result<f64> {
    let broker = KafkaBroker::start().context("starting the test broker")?;
    create_topic(&broker.brokers, "lines", opts.partitions)?;
    let records: Vec<(i32, String)> = (0..opts.lines)
        .map(|i| ((i % opts.partitions as u64) as i32, line(i)))
        .collect();
    produce(&broker.brokers, "lines", records)?;
    let work = tempfile::tempdir()?;
    let start = Instant::now();
    let out = work.path().join("out");
    let mut procs = Vec::new();
    for i in 0..instances.max(1) {
        let port = free_port()?;
        let mut c = Command::new(exe);
        c.env("RUST_LOG", "warn")
            .args(["run", "word-count", "--quiet", "--batch-interval", "500ms"])
            .args(["--kafka-brokers", &broker.brokers, "--kafka-topic", "lines"])
            .arg("--checkpoint")
            .arg(work.path().join("checkpoint"))
            .arg("--output")
            .arg(&out)
            .args(["--parallelism", &opts.parallelism.to_string()])
            .args(["--ui-port", &port.to_string()])
            .args(["--max-records-per-partition", "100000"]);
        if instances > 0 {
            c.args(["--scale-out", "--instance-id", &format!("bench-{i}")])
                .args(["--kafka-session-timeout", "6s"])
                .args(["--kafka-sink-property", "batch.num.messages=1"])
                .args(["--kafka-sink-property", "linger.ms=0"]);
        }
        let child = c
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.path().join(format!("{i}.log")))?)
            .spawn()
            .context("starting lockgate")?;
        procs.push(Process { child, port });
    }
    let words = opts.lines as i64 * 10;
    let mut joined: Vec<Option<f64>> = vec![None; procs.len()];
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        for (i, p) in procs.iter_mut().enumerate() {
            if joined[i].is_none() && ready_tasks(p.port).is_some_and(|n| n > 0) {
                joined[i] = Some(start.elapsed().as_secs_f64());
            }
            if let Some(status) = p.child.try_wait()? {
                let log = std::fs::read_to_string(work.path().join(format!("{i}.log")))?;
                bail!("lockgate exited ({status}):\n{log}");
            }
        }
        if total_of(&out)? == words {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the output did not reach {words} words in 15 minutes"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let elapsed = start.elapsed().as_secs_f64();
    eprintln!(
        "  {} process(es) running tasks from {:?} s after start",
        procs.len(),
        joined
            .iter()
            .map(|j| j.map(|s| (s * 10.0).round() / 10.0))
            .collect::<Vec<_>>()
    );
    Ok(elapsed)
}

/// Runs the benchmark and prints its table.
pub fn run(opts: &ScaleOutBenchOpts) -> Result<()> {
    let exe = crate::torture::find_lockgate(opts.lockgate.as_deref())?;
    let configs = [
        (0usize, "single process (no scale-out)"),
        (1, "scale-out, 1 instance"),
        (2, "scale-out, 2 instances"),
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    for r in 0..opts.repeat.max(1) {
        for (i, (instances, name)) in configs.iter().enumerate() {
            let s = run_once(opts, &exe, *instances)?;
            eprintln!("run {r}: {name}: {s:.2} s");
            times[i].push(s);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let medians: Vec<f64> = times.iter_mut().map(median).collect();
    println!(
        "word count, {} lines x 10 words, {} partitions, --parallelism {} per process, median of {}:",
        opts.lines,
        opts.partitions,
        opts.parallelism,
        opts.repeat.max(1)
    );
    for ((_, name), s) in configs.iter().zip(&medians) {
        println!(
            "  {name:32} {s:7.2} s  {:>10.0} lines/s (start to last count)",
            opts.lines as f64 / s
        );
    }
    println!(
        "  2 instances / 1 instance: {:.2}x; scale-out 1 instance / single process: {:.1}%",
        medians[1] / medians[2],
        100.0 * medians[0] / medians[1]
    );
    Ok(())
}
