//! Fault tests: a checkpoint disk that fills up stops the job with a clear error naming
//! the file, and a restart once there is space again loses and repeats nothing.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use lockgate_core::testing::{collect_batches, ManualRun};
use lockgate_core::{Clock, ManualClock, StreamingContext};

fn input() -> Vec<Vec<String>> {
    // Every batch brings new keys, so the state (and its snapshots) keeps growing.
    (0..40)
        .map(|b| {
            (0..300)
                .map(|i| format!("key-{b}-{i}-{}", "x".repeat(40)))
                .collect()
        })
        .collect()
}

type Out = Arc<std::sync::Mutex<BTreeMap<u64, Vec<(String, i64)>>>>;

fn job(cp: &Path, start_ms: i64) -> (ManualRun, Out) {
    let clock = Arc::new(ManualClock::new(start_ms));
    let mut out = None;
    let ctx = StreamingContext::get_or_create(cp, |b| {
        let ctx = b
            .app_name("full")
            .batch_interval(Duration::from_secs(1))
            .parallelism(2)
            .clock(clock.clone())
            .build()?;
        let counts = ctx
            .seq_stream(input())
            .map(|k| (k, 1i64))
            .update_state_by_key(|v: &[i64], s: Option<i64>| Some(s.unwrap_or(0) + v.len() as i64));
        out = Some(collect_batches(&counts.filter(|(k, _)| {
            k.ends_with("-0-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx") || k.starts_with("key-1-")
        })));
        Ok(ctx)
    })
    .unwrap();
    (ManualRun { ctx, clock }, out.unwrap())
}

fn mount(dir: &Path, size: &str, remount: bool) -> bool {
    let mut c = Command::new("mount");
    if remount {
        c.args(["-o", &format!("remount,size={size}")]).arg(dir);
    } else {
        c.args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir);
    }
    c.status().map(|s| s.success()).unwrap_or(false)
}

#[test]
fn a_full_checkpoint_disk_is_a_clear_error_and_a_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Reference: the same job on an ordinary disk.
    let (run, reference) = job(&dir.path().join("ref"), 0);
    run.ctx.start().unwrap();
    run.run_batches(40).unwrap();
    run.ctx.stop(false).unwrap();

    let cp = dir.path().join("cp");
    std::fs::create_dir(&cp).unwrap();
    if !mount(&cp, "600k", false) {
        // Mounting needs root (as on CI machines here); elsewhere say so plainly.
        eprintln!(
            "SKIPPED: cannot mount a small tmpfs (not root?); the disk-full test did not run"
        );
        return;
    }
    let (run, first) = job(&cp, 0);
    run.ctx.start().unwrap();
    let err = run.run_batches(40).expect_err("the disk should fill up");
    let _ = run.ctx.stop(false);
    let msg = err.to_string();
    assert!(
        msg.contains("No space left on device") && msg.contains(cp.to_str().unwrap()),
        "{msg}"
    );
    let done = first.lock().unwrap().len();
    assert!(done < 40, "the disk never filled");
    // The clock goes on where it was (batch times are wall-clock times).
    let stopped_at = run.clock.now();

    // Space again: the restart recovers from the last good commit and finishes.
    assert!(mount(&cp, "64m", true));
    let (run, second) = job(&cp, stopped_at.0);
    run.ctx.start().unwrap();
    // Replays (if any) run on their own; then new batches follow the clock.
    let mut batches = 0;
    while second.lock().unwrap().keys().max().copied().unwrap_or(0) < 39 {
        run.clock.advance(Duration::from_secs(1));
        assert!(run
            .ctx
            .metrics()
            .wait_for_batch(run.clock.now(), Duration::from_secs(30)));
        batches += 1;
        assert!(batches <= 40);
    }
    run.ctx.stop(false).unwrap();
    let mut merged = first.lock().unwrap().clone();
    merged.extend(second.lock().unwrap().clone());
    let sort = |m: BTreeMap<u64, Vec<(String, i64)>>| -> BTreeMap<u64, Vec<(String, i64)>> {
        m.into_iter()
            .map(|(k, mut v)| {
                v.sort();
                (k, v)
            })
            .collect()
    };
    let _ = Command::new("umount").arg(&cp).status();
    assert_eq!(sort(merged), sort(reference.lock().unwrap().clone()));
}
