//! A word count over the files of a directory that survives crashes: kill it at any
//! moment and start it again on the same checkpoint directory — every file is counted
//! exactly once and the totals go on where they were.
//!
//! ```text
//! cargo run --release -- generate logs /tmp/wc-in --lines 20000 --files 20
//! cargo run --release --example word_count_exactly_once -- /tmp/wc-in /tmp/wc-checkpoint /tmp/wc-out
//! ```
//! Output: `/tmp/wc-out/counts-<batch time>.txt/part-NNNNN`, one directory per batch,
//! each written atomically (a re-run batch replaces its directory with the same content).

use std::time::Duration;

use lockgate_core::{FileStreamOptions, StreamingContext};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let input = args.next().unwrap_or_else(|| "/tmp/wc-in".into());
    let checkpoint = args.next().unwrap_or_else(|| "/tmp/wc-checkpoint".into());
    let output = args.next().unwrap_or_else(|| "/tmp/wc-out".into());

    let ctx = StreamingContext::get_or_create(&checkpoint, |builder| {
        let ctx = builder
            .app_name("word-count-exactly-once")
            .batch_interval(Duration::from_secs(1))
            .build()?;
        let opts = FileStreamOptions {
            new_files_only: false,
            max_files_per_batch: Some(2),
            ..Default::default()
        };
        ctx.text_file_stream_with(&input, opts)
            .flat_map(|l| l.split(' ').map(str::to_string).collect::<Vec<_>>())
            .filter(|w| !w.is_empty())
            .map(|w| (w, 1i64))
            .update_state_by_key(|new: &[i64], n: Option<i64>| {
                Some(n.unwrap_or(0) + new.iter().sum::<i64>())
            })
            // Checkpointed state is stored under this name: keep it across upgrades.
            .name("word_counts")
            .save_as_text_files(&format!("{output}/counts"), "txt");
        Ok(ctx)
    })?;
    // Ctrl-C stops it gracefully (planned batches finish first), as the CLI does.
    ctx.stop_gracefully_on_shutdown()?;
    ctx.start()?;
    ctx.await_termination()?;
    Ok(())
}
