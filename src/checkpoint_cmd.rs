//! `lockgate checkpoint inspect DIR|URL` and `lockgate checkpoint check-upgrade DIR|URL`.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use lockgate_core::checkpoint::assess::assess;
use lockgate_core::checkpoint::log::CheckpointLog;
use lockgate_core::checkpoint::store::StateStore;

use crate::term::outln;
use crate::{job_config, JobName, RunOpts};

/// Checkpoint commands.
#[derive(Subcommand)]
pub enum CheckpointCmd {
    /// Show batches planned and committed, their input descriptors, the operators with
    /// state (files and bytes per partition), and what `run` would do on it: the batch it
    /// would resume after and the batches it would re-run, or why it would refuse to
    /// start (then the exit status is 1, with the advice `run` would give).
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
            outln!("{}", report.to_string().trim_end());
            if report.is_compatible() {
                outln!("all operator state is kept");
                Ok(())
            } else {
                outln!("some operator state would not be kept (see above)");
                std::process::exit(2);
            }
        }
    }
}

fn inspect(location: lockgate_core::storage::CheckpointLocation) -> Result<()> {
    let storage = location.0;
    let dir = storage.location().to_string();
    let log = CheckpointLog::new(storage.clone());
    let assessment = assess(storage.clone())?
        .with_context(|| format!("{dir} holds no checkpoint (no metadata file)"))?;
    let meta = match (log.read_metadata(), &assessment.refusal) {
        (Ok(Some(meta)), _) => meta,
        (_, Some(refusal)) => bail!("`run` would refuse this checkpoint: {refusal}"),
        (Ok(None), None) => bail!("{dir} holds no checkpoint (no metadata file)"),
        (Err(e), None) => return Err(e.into()),
    };
    outln!("checkpoint {dir}");
    outln!("  application   {}", meta.app_name);
    outln!(
        "  batch interval {} ms, zero time {} ms, first batch id {}",
        meta.interval_ms,
        meta.zero_ms,
        meta.base_id
    );
    for (k, v) in &meta.config {
        outln!("  {k:<14} {}", lockgate_core::redact(k, v));
    }
    let commits = log.commit_ids()?;
    let plans = log.plan_ids()?;
    // Commits may be grouped: a commit covers every batch up to it.
    let last_commit = assessment.start_after;
    outln!(
        "batches: {} planned ({}), {} commit file(s) ({}), committed through {}",
        plans.len(),
        range(&plans),
        commits.len(),
        range(&commits),
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
                outln!("  batch {id} at {} ms: {state}", p.batch_time_ms);
                for s in &p.sources {
                    // A plan knows the records of a queue or an offset range; of files,
                    // the files and their sizes (lines are counted when read).
                    match (s.records, s.description.as_str()) {
                        (0, "") => outln!("    {}: nothing", s.source),
                        (0, d) => outln!("    {}: {d}", s.source),
                        (n, d) => outln!("    {}: {n} records; {d}", s.source),
                    }
                }
            }
            Err(e) => {
                outln!("  batch {id}: UNREADABLE: {e}");
                unreadable.push(match e {
                    lockgate_core::Error::Checkpoint { path, .. } => path.clone(),
                    _ => log.plan_path(*id),
                });
            }
        }
    }
    let store = StateStore::new(storage);
    outln!("operators with state:");
    for (name, ty, parts) in &meta.operators {
        outln!("  {name} ({ty}), {parts} partition(s)");
        for p in 0..usize::try_from(*parts).unwrap_or(0) {
            let files = store.files(name, p)?;
            let bytes: u64 = files.iter().map(|f| f.bytes).sum();
            let versions: Vec<String> = files
                .iter()
                .map(|f| format!("{}{}", f.version, if f.snapshot { "s" } else { "d" }))
                .collect();
            outln!(
                "    partition {p}: {} files, {bytes} bytes [{}]",
                files.len(),
                versions.join(" ")
            );
        }
    }
    outln!("run would:");
    const SHOWN: usize = 3;
    for (id, e) in assessment.passed_over.iter().take(SHOWN) {
        outln!("  pass over the commit of batch {id}: {e}");
    }
    if assessment.passed_over.len() > SHOWN {
        outln!(
            "  pass over {} older commit(s) as well",
            assessment.passed_over.len() - SHOWN
        );
    }
    if let Some(refusal) = assessment.refusal {
        outln!("  REFUSE to start");
        bail!("`run` would refuse this checkpoint: {refusal}");
    }
    match assessment.start_after {
        Some(c) => outln!("  resume after batch {c}"),
        None => outln!("  start before every logged plan"),
    }
    if !assessment.dropped.is_empty() {
        outln!(
            "  drop the plans after a gap ({}): their input is planned again",
            range(&assessment.dropped)
        );
    }
    if !assessment.replays.is_empty() {
        outln!(
            "  re-run batches {} from their logged plans",
            range(&assessment.replays)
        );
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
