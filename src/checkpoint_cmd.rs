//! `lockgate checkpoint inspect DIR|URL` and `lockgate checkpoint check-upgrade DIR|URL`.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use lockgate_core::checkpoint::log::CheckpointLog;
use lockgate_core::checkpoint::store::StateStore;

use crate::{job_config, JobName, RunOpts};

/// Checkpoint commands.
#[derive(Subcommand)]
pub enum CheckpointCmd {
    /// Show batches planned and committed, their input descriptors, and the operators
    /// with state (files and bytes per partition).
    Inspect {
        /// The checkpoint: a directory or an object store's URL (s3://BUCKET/PREFIX).
        dir: String,
        /// An object-store setting (as `run --checkpoint-option`); repeat for several.
        #[arg(long, value_name = "KEY=VALUE")]
        checkpoint_option: Vec<String>,
    },
    /// Report which operator state a built-in job (with the given flags) keeps, starts
    /// empty or drops when started on DIR. Exits with status 2 if any state would not be
    /// kept.
    CheckUpgrade {
        /// The checkpoint: a directory or an object store's URL (with
        /// --checkpoint-option settings).
        dir: String,
        /// The job that will run on it.
        #[arg(long, value_enum, default_value = "log-errors")]
        job: JobName,
        #[command(flatten)]
        opts: Box<RunOpts>,
    },
}

/// Runs a checkpoint command.
pub fn run(cmd: CheckpointCmd) -> Result<()> {
    match cmd {
        CheckpointCmd::Inspect {
            dir,
            checkpoint_option,
        } => inspect(crate::open_location(
            &dir,
            &checkpoint_option,
            lockgate_object_store::Options::default(),
        )?),
        CheckpointCmd::CheckUpgrade { dir, job, mut opts } => {
            let location = crate::open_checkpoint(&dir, &opts)?;
            // Build the graph only: no checkpoint of its own, no recovery.
            opts.checkpoint = None;
            opts.checkpoint_option.clear();
            let cfg = job_config(&opts)?;
            let ctx = cfg.build(job.into())?;
            let report = ctx.check_upgrade(location)?;
            print!("{report}");
            if report.is_compatible() {
                println!("all operator state is kept");
                Ok(())
            } else {
                println!("some operator state would not be kept (see above)");
                std::process::exit(2);
            }
        }
    }
}

fn inspect(location: lockgate_core::storage::CheckpointLocation) -> Result<()> {
    let storage = location.0;
    let dir = storage.location().to_string();
    let log = CheckpointLog::new(storage.clone());
    let meta = log
        .read_metadata()?
        .with_context(|| format!("{dir} holds no checkpoint (no metadata file)"))?;
    println!("checkpoint {dir}");
    println!("  application   {}", meta.app_name);
    println!(
        "  batch interval {} ms, zero time {} ms, first batch id {}",
        meta.interval_ms, meta.zero_ms, meta.base_id
    );
    for (k, v) in &meta.config {
        println!("  {k:<14} {}", lockgate_core::redact(k, v));
    }
    let commits = log.commit_ids()?;
    let plans = log.plan_ids()?;
    // Commits may be grouped: a commit covers every batch up to it.
    let last_commit = commits.last().copied();
    println!(
        "batches: {} planned ({}), committed through {}",
        plans.len(),
        range(&plans),
        last_commit.map_or_else(|| "none".to_string(), |c| format!("batch {c}"))
    );
    let mut unreadable = Vec::new();
    for (id, plan) in &log.read_plans(&plans) {
        match plan {
            Ok(p) => {
                let state = if last_commit.is_some_and(|c| *id <= c) {
                    "committed"
                } else {
                    "PENDING (re-run on restart)"
                };
                println!("  batch {id} at {} ms: {state}", p.batch_time_ms);
                for s in &p.sources {
                    println!("    {}: {} records; {}", s.source, s.records, s.description);
                }
            }
            Err(e) => {
                println!("  batch {id}: UNREADABLE: {e}");
                unreadable.push(match e {
                    lockgate_core::Error::Checkpoint { path, .. } => path.clone(),
                    _ => log.plan_path(*id),
                });
            }
        }
    }
    let store = StateStore::new(storage);
    println!("operators with state:");
    for (name, ty, parts) in &meta.operators {
        println!("  {name} ({ty}), {parts} partition(s)");
        for p in 0..usize::try_from(*parts).unwrap_or(0) {
            let files = store.files(name, p)?;
            let bytes: u64 = files.iter().map(|f| f.bytes).sum();
            let versions: Vec<String> = files
                .iter()
                .map(|f| format!("{}{}", f.version, if f.snapshot { "s" } else { "d" }))
                .collect();
            println!(
                "    partition {p}: {} files, {bytes} bytes [{}]",
                files.len(),
                versions.join(" ")
            );
        }
    }
    unreadable.dedup(); // a group of plans is one file
    if !unreadable.is_empty() {
        let files: Vec<String> = unreadable.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "{} unreadable plan file(s): {}; a restart skips an unreadable plan of a committed \
             batch that a state snapshot covers and says what to do about any other",
            files.len(),
            files.join(", ")
        );
    }
    Ok(())
}

fn range(ids: &[u64]) -> String {
    match (ids.first(), ids.last()) {
        (Some(a), Some(b)) => format!("{a}..={b}"),
        _ => "none".into(),
    }
}
