//! Delivery modes under a crash in the middle of a batch (an output fails after another
//! output of the same batch already wrote): exactly-once and at-least-once re-run the
//! batch after recovery (an appending sink sees it twice, an idempotent one once);
//! at-most-once does not re-run it, so its records are lost.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockgate_core::testing::{collect_batches, ManualRun};
use lockgate_core::{DStream, DeliveryMode, ManualClock, StreamingContext};

type Appended = Arc<Mutex<Vec<(u64, i64)>>>;

/// Runs `batches` batches of the test job (4 batches of three equal elements, counted)
/// on the checkpoint `dir` from `start_ms`; `outputs` registers the outputs on the
/// counts, in order. With `fail_at`, a last output fails at that batch (a crash after
/// the other outputs of the batch wrote).
fn run_counts(
    dir: &Path,
    mode: DeliveryMode,
    start_ms: i64,
    fail_at: Option<u64>,
    batches: usize,
    outputs: impl FnOnce(&DStream<i64>),
) {
    let clock = Arc::new(ManualClock::new(start_ms));
    let ctx = StreamingContext::get_or_create(dir, |b| {
        let ctx = b
            .app_name("d")
            .batch_interval(Duration::from_secs(1))
            .parallelism(1)
            .clock(clock.clone())
            .delivery(mode)
            .build()?;
        let counts = ctx
            .seq_stream((0..4).map(|i| vec![i; 3]).collect::<Vec<Vec<i64>>>())
            .count();
        outputs(&counts);
        counts.foreach_batch(move |_, r| {
            if Some(r.id) == fail_at {
                Err("simulated crash")
            } else {
                Ok(())
            }
        });
        Ok(ctx)
    })
    .unwrap();
    let run = ManualRun { ctx, clock };
    run.ctx.start().unwrap();
    let _ = run.run_batches(batches);
    let _ = run.ctx.stop(false);
}

/// Runs 4 batches of counts; when `fail_at` is set, the second output fails at that
/// batch (a crash mid-batch). Returns what an appending sink saw and the idempotent
/// per-batch output.
fn run(
    dir: &Path,
    mode: DeliveryMode,
    start_ms: i64,
    fail_at: Option<u64>,
    batches: usize,
    appended: &Appended,
) -> Vec<u64> {
    let mut idempotent = None;
    run_counts(dir, mode, start_ms, fail_at, batches, |counts| {
        let app = appended.clone();
        counts.foreach_batch(move |b, r| {
            for c in b.iter() {
                app.lock().unwrap().push((r.id, *c));
            }
        });
        idempotent = Some(collect_batches(counts));
    });
    let ids = idempotent
        .unwrap()
        .lock()
        .unwrap()
        .keys()
        .copied()
        .collect();
    ids
}

fn scenario(mode: DeliveryMode) -> (Vec<(u64, i64)>, Vec<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let appended: Appended = Arc::default();
    // First run: batches 0 and 1 complete, batch 2 fails after its first output wrote.
    run(dir.path(), mode, 0, Some(2), 3, &appended);
    // Restart: recovery, then the rest.
    let ids = run(dir.path(), mode, 3000, None, 1, &appended);
    let mut seen = appended.lock().unwrap().clone();
    seen.sort();
    (seen, ids)
}

#[test]
fn exactly_once_and_at_least_once_rerun_the_interrupted_batch() {
    for mode in [DeliveryMode::ExactlyOnce, DeliveryMode::AtLeastOnce] {
        let (seen, rerun) = scenario(mode);
        // Batch 2 was written by the appending sink before the crash and again on re-run.
        assert_eq!(
            seen,
            vec![(0, 3), (1, 3), (2, 3), (2, 3), (3, 3)],
            "{mode:?}"
        );
        // The restart re-ran batch 2 and ran batch 3.
        assert_eq!(rerun, vec![2, 3], "{mode:?}");
    }
}

#[test]
fn at_most_once_loses_the_interrupted_batch() {
    let (seen, rerun) = scenario(DeliveryMode::AtMostOnce);
    // Batch 2 counted as done before it ran: it is not re-run.
    assert_eq!(rerun, vec![3]);
    assert_eq!(seen, vec![(0, 3), (1, 3), (2, 3), (3, 3)]);
}

/// A sink that records which batches it was handed and reports the highest as its last
/// committed batch (as a transactional sink reads it from its own table).
struct RecordingSink(Arc<Mutex<Vec<u64>>>);

impl lockgate_core::Sink<i64> for RecordingSink {
    fn name(&self) -> String {
        "recording".into()
    }

    fn commit(
        &self,
        _batch: &lockgate_core::Batch<i64>,
        info: &lockgate_core::SinkBatch,
    ) -> Result<(), lockgate_core::BoxError> {
        self.0.lock().unwrap().push(info.id);
        Ok(())
    }

    fn last_committed(&self, app: &str) -> Result<Option<u64>, lockgate_core::BoxError> {
        assert_eq!(app, "d", "the sink is asked for this application's batches");
        Ok(self.0.lock().unwrap().iter().copied().max())
    }
}

/// Batch 2 fails after the sink committed it; recovery re-runs it. In exactly-once mode
/// the protocol asks the sink for its last committed batch and does not hand it batch 2
/// again; in at-least-once mode it does.
#[test]
fn a_sink_is_not_handed_a_batch_it_reports_committed_again_in_exactly_once_mode() {
    for (mode, expected) in [
        (DeliveryMode::ExactlyOnce, vec![0, 1, 2, 3]),
        (DeliveryMode::AtLeastOnce, vec![0, 1, 2, 2, 3]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let handed: Arc<Mutex<Vec<u64>>> = Arc::default();
        for (start_ms, fail_at, batches) in [(0, Some(2), 3), (3000, None, 1)] {
            run_counts(dir.path(), mode, start_ms, fail_at, batches, |counts| {
                counts.write_to(RecordingSink(handed.clone()));
            });
        }
        assert_eq!(*handed.lock().unwrap(), expected, "{mode:?}");
    }
}

/// A sink that holds batches of an earlier run (its checkpoint was started anew, so
/// batch ids start again) is handed every new batch: only re-run batches are skipped.
#[test]
fn a_new_checkpoint_hands_a_sink_every_batch_whatever_it_reports() {
    let dir = tempfile::tempdir().unwrap();
    let handed: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(vec![0, 1, 2, 3, 4, 5]));
    run_counts(
        dir.path(),
        DeliveryMode::ExactlyOnce,
        0,
        None,
        2,
        |counts| {
            counts.write_to(RecordingSink(handed.clone()));
        },
    );
    assert_eq!(*handed.lock().unwrap(), vec![0, 1, 2, 3, 4, 5, 0, 1]);
}
