//! `lockgate torture`: runs a real job process, kills it with SIGKILL at random moments
//! (seeded), restarts it on the same checkpoint until it finishes, and checks that its
//! merged output equals the output of an uninterrupted run, batch by batch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, ValueEnum};

use crate::generate::{generate_logs, Rng};

/// Which pipeline to torture.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Pipeline {
    /// log-errors: files in, JSON-lines files out (stateful window).
    Files,
    /// word-count: files in, JSON-lines files out (update_state_by_key).
    WordCount,
}

/// Options of `lockgate torture`.
#[derive(Args)]
pub struct TortureOpts {
    /// How many times to kill the job.
    #[arg(long, default_value_t = 20)]
    kills: u32,
    /// The pipeline.
    #[arg(long, value_enum, default_value = "files")]
    pipeline: Pipeline,
    /// Seed of the kill delays (printed; rerun with it to reproduce).
    #[arg(long)]
    seed: Option<u64>,
    /// Work directory (default: a new directory under the system's temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Every JSON row of every batch of every stream under `out`, sorted per batch.
fn read_output(out: &Path) -> Result<BTreeMap<(String, u64), Vec<String>>> {
    let mut all = BTreeMap::new();
    if !out.exists() {
        return Ok(all);
    }
    for stream in std::fs::read_dir(out)? {
        let stream = stream?;
        let sname = stream.file_name().to_string_lossy().into_owned();
        for batch in std::fs::read_dir(stream.path())? {
            let batch = batch?;
            let bname = batch.file_name().to_string_lossy().into_owned();
            let Some(id) = bname
                .strip_prefix("batch=")
                .and_then(|i| i.parse::<u64>().ok())
            else {
                continue; // a batch being written when the process died
            };
            ensure!(
                batch.path().join("_SUCCESS").exists(),
                "{} has no _SUCCESS",
                batch.path().display()
            );
            let mut rows = Vec::new();
            for part in std::fs::read_dir(batch.path())? {
                let part = part?.path();
                if part.extension().is_some_and(|e| e == "jsonl") {
                    rows.extend(std::fs::read_to_string(&part)?.lines().map(str::to_string));
                }
            }
            rows.sort();
            all.insert((sname.clone(), id), rows);
        }
    }
    Ok(all)
}

fn job_command(pipeline: Pipeline, input: &Path, out: &Path, cp: &Path) -> Result<Command> {
    let exe = std::env::current_exe().context("finding the lockgate executable")?;
    let mut c = Command::new(exe);
    let job = match pipeline {
        Pipeline::Files => "log-errors",
        Pipeline::WordCount => "word-count",
    };
    c.args([
        "run",
        job,
        "--once",
        "--quiet",
        "--max-files-per-batch",
        "1",
        "--parallelism",
        "2",
    ])
    .arg("--input")
    .arg(input)
    .arg("--output")
    .arg(out)
    .arg("--checkpoint")
    .arg(cp)
    .env("RUST_LOG", "warn")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    Ok(c)
}

/// Runs the torture test; fails with the seed when outputs differ.
pub fn run(opts: &TortureOpts) -> Result<()> {
    let seed = opts.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let tmp;
    let dir = match &opts.dir {
        Some(d) => d.clone(),
        None => {
            tmp = std::env::temp_dir()
                .join(format!("lockgate-torture-{}-{seed}", std::process::id()));
            tmp
        }
    };
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    println!(
        "torture: pipeline {:?}, {} kills, seed {seed}, dir {}",
        opts.pipeline,
        opts.kills,
        dir.display()
    );
    let input = dir.join("input");
    // Enough batches that every restart makes some progress before the next kill.
    let files = u64::from(opts.kills.max(1)) * 15;
    generate_logs(&input, files * 60, files, seed)?;

    let reference = job_command(
        opts.pipeline,
        &input,
        &dir.join("ref-out"),
        &dir.join("ref-cp"),
    )?
    .output()
    .context("running the reference job")?;
    ensure!(
        reference.status.success(),
        "the reference run failed: {}",
        String::from_utf8_lossy(&reference.stderr)
    );

    let mut rng = Rng::new(seed);
    let (out, cp) = (dir.join("out"), dir.join("cp"));
    let (mut kills, mut runs, mut reruns) = (0u32, 0u32, 0usize);
    let count_reruns = |stderr: &[u8]| {
        String::from_utf8_lossy(stderr)
            .matches("re-running a logged batch")
            .count()
    };
    let started = Instant::now();
    loop {
        runs += 1;
        let mut child = job_command(opts.pipeline, &input, &out, &cp)?
            .spawn()
            .context("starting the job")?;
        if kills < opts.kills {
            let delay = Duration::from_millis(5 + rng.below(60));
            std::thread::sleep(delay);
            if child.try_wait()?.is_none() {
                child.kill().context("killing the job")?; // SIGKILL
                let killed = child.wait_with_output()?;
                reruns += count_reruns(&killed.stderr);
                kills += 1;
                continue;
            }
        }
        let done = child.wait_with_output()?;
        reruns += count_reruns(&done.stderr);
        if !done.status.success() {
            bail!(
                "run {runs} (after {kills} kills, seed {seed}) failed: {}",
                String::from_utf8_lossy(&done.stderr)
            );
        }
        if kills >= opts.kills {
            break;
        }
        bail!(
            "the job finished after only {kills} of {} kills (seed {seed}); it is too short for \
             this many kills",
            opts.kills
        );
    }
    let (want, got) = (read_output(&dir.join("ref-out"))?, read_output(&out)?);
    if want != got {
        let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
        let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
        let differ: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
            .map(|(k, _)| k)
            .collect();
        bail!(
            "output differs from the uninterrupted run (seed {seed}, dir {}): missing batches \
             {missing:?}, extra batches {extra:?}, different batches {differ:?}",
            dir.display()
        );
    }
    println!(
        "torture passed: {kills} kills over {runs} runs in {:.1} s, {reruns} interrupted batches \
         re-run from their logged plans; {} batch outputs identical to the uninterrupted run",
        started.elapsed().as_secs_f64(),
        want.len()
    );
    if opts.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
