//! The direct stream over a partitioned log (the engine side of the Kafka source), on
//! the in-memory log: offset ranges per batch, bounded runs up to the end offsets at
//! start, exact replay after a restart, starting offsets, new partitions, and the
//! policy for expired offsets.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use lockgate_core::metrics::SourceCounters;
use lockgate_core::source::direct::{
    offset_ranges, DirectStreamOptions, MemoryLog, OnExpiredOffsets, PartitionedLog,
    StartingOffsets, TopicPartition,
};
use lockgate_core::testing::{
    bounded_context, collect_batches, run_bounded, run_checkpointed, ManualRun,
};
use lockgate_core::Batch;

/// Records named by partition and offset: `p<partition>-<offset>`.
fn fill(log: &MemoryLog<String>, partition: u32, offsets: std::ops::Range<i64>) {
    log.append(partition, offsets.map(|o| format!("p{partition}-{o}")));
}

/// Partition `n` of the memory log (whose one topic has no name).
fn tp(n: u32) -> TopicPartition {
    TopicPartition::new("", n)
}

fn limited(n: u64) -> DirectStreamOptions {
    DirectStreamOptions {
        max_records_per_partition: Some(n),
        ..Default::default()
    }
}

#[test]
fn a_bounded_run_reads_up_to_the_end_offsets_at_start_in_limited_ranges() {
    let log = MemoryLog::new(2);
    fill(&log, 0, 0..25);
    fill(&log, 1, 0..7);
    let out = run_bounded(2, |ctx| {
        let stream = ctx.direct_stream("memory", log.clone(), limited(10));
        // Records appended while the run goes on are not part of it.
        let appender = log.clone();
        stream.foreach_batch(move |_, b| {
            if b.id == 0 {
                fill(&appender, 0, 25..40);
            }
        });
        stream
    })
    .unwrap();
    assert_eq!(out.len(), 3, "{out:?}");
    for batch in out.values() {
        for p in ["p0-", "p1-"] {
            assert!(batch.iter().filter(|r| r.starts_with(p)).count() <= 10);
        }
    }
    let mut all: Vec<String> = out.into_values().flatten().collect();
    all.sort();
    let mut expected: Vec<String> = (0..25).map(|o| format!("p0-{o}")).collect();
    expected.extend((0..7).map(|o| format!("p1-{o}")));
    expected.sort();
    assert_eq!(all, expected);
}

#[test]
fn each_batch_knows_the_offset_ranges_it_read() {
    let log = MemoryLog::new(2);
    fill(&log, 0, 0..25);
    fill(&log, 1, 0..7);
    let out = run_bounded(2, |ctx| {
        let name = ctx.next_source_name("memory");
        ctx.direct_stream("memory", log.clone(), limited(10))
            .transform_in_context(move |_, cx| {
                let ranges = offset_ranges(cx, &name)?.unwrap_or_default();
                assert_eq!(offset_ranges(cx, "no-such-source")?, None);
                Ok(Batch::from_vec(ranges, 1))
            })
    })
    .unwrap();
    let ranges: Vec<_> = out.into_values().collect();
    assert_eq!(
        ranges,
        vec![
            vec![(tp(0), 0, 10), (tp(1), 0, 7)],
            vec![(tp(0), 10, 20), (tp(1), 7, 7)],
            vec![(tp(0), 20, 25), (tp(1), 7, 7)],
        ]
    );
}

#[test]
fn reading_behind_takes_what_the_previous_plan_saw() {
    let log = MemoryLog::new(1);
    fill(&log, 0, 0..3);
    let opts = DirectStreamOptions {
        read_behind: true,
        ..Default::default()
    };
    let appender = log.clone();
    let (out, error, _) = run_live(log, opts, 4, move |i| {
        if i == 2 {
            fill(&appender, 0, 3..5);
        }
    });
    assert_eq!(error, None);
    let batches: Vec<Vec<String>> = out.into_values().collect();
    // Batch 0 reads what the start saw; records 3 and 4, appended before batch 2, are
    // seen by its plan and read by batch 3.
    assert_eq!(
        batches,
        vec![
            vec!["p0-0".to_string(), "p0-1".into(), "p0-2".into()],
            vec![],
            vec![],
            vec!["p0-3".to_string(), "p0-4".into()],
        ]
    );
}

/// The memory log's records, 4 per partition per batch, with a checkpoint in `dir`.
fn run_memory_job(
    dir: &Path,
    log: &Arc<MemoryLog<String>>,
    start_ms: i64,
    batches: usize,
) -> BTreeMap<u64, Vec<String>> {
    run_checkpointed(dir, 2, start_ms, batches, |ctx| {
        Ok(ctx.direct_stream("memory", log.clone(), limited(4)))
    })
    .unwrap()
}

#[test]
fn a_restart_re_runs_the_unfinished_batch_with_its_logged_ranges_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = MemoryLog::new(2);
    fill(&log, 0, 0..6);
    fill(&log, 1, 0..3);
    let first = run_memory_job(dir.path(), &log, 0, 2);
    // Batch 1 ran but its commit is lost: it must run again, reading the same ranges
    // although the log has grown since.
    std::fs::remove_file(dir.path().join("commits/1")).unwrap();
    fill(&log, 0, 6..9);
    fill(&log, 1, 3..12);
    let second = run_memory_job(dir.path(), &log, 2000, 3);
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(sorted(second[&1].clone()), sorted(first[&1].clone()));
    let mut merged = first;
    merged.extend(second);
    let all = sorted(merged.values().flatten().cloned().collect());
    let mut expected: Vec<String> = (0..9).map(|o| format!("p0-{o}")).collect();
    expected.extend((0..12).map(|o| format!("p1-{o}")));
    assert_eq!(
        all,
        sorted(expected),
        "every record exactly once: {merged:?}"
    );
}

/// Runs `batches` batches of a direct stream over `log` with `opts`; returns the output
/// per batch and the context's error, if it failed.
fn run_live(
    log: Arc<MemoryLog<String>>,
    opts: DirectStreamOptions,
    batches: usize,
    between: impl Fn(usize) + Send + 'static,
) -> (
    BTreeMap<u64, Vec<String>>,
    Option<String>,
    Arc<SourceCounters>,
) {
    let run = ManualRun::new(2).unwrap();
    let stream = run.ctx.direct_stream("memory", log, opts);
    let out = collect_batches(&stream);
    run.ctx.start().unwrap();
    let mut error = None;
    for i in 0..batches {
        between(i);
        if let Err(e) = run.next_batch() {
            error = Some(e.to_string());
            break;
        }
    }
    let _ = run.ctx.stop(false);
    let counters = run.ctx.metrics().source("memory-0");
    let out = out.lock().unwrap().clone();
    (out, error, counters)
}

#[test]
fn latest_starting_offsets_skip_what_was_there_and_new_partitions_start_at_their_beginning() {
    let log = MemoryLog::new(1);
    fill(&log, 0, 0..5);
    let feeder = log.clone();
    let opts = DirectStreamOptions {
        starting_offsets: StartingOffsets::Latest,
        ..Default::default()
    };
    let (out, error, _) = run_live(log, opts, 3, move |i| match i {
        0 => fill(&feeder, 0, 5..7),
        1 => {
            feeder.add_partition();
            fill(&feeder, 1, 0..2);
        }
        _ => {}
    });
    assert_eq!(error, None);
    let mut all: Vec<String> = out.into_values().flatten().collect();
    all.sort();
    assert_eq!(all, vec!["p0-5", "p0-6", "p1-0", "p1-1"]);
}

/// Spark's explicit starting offsets: an offset, -2 (earliest) or -1 (latest) per
/// partition, unlisted partitions from the earliest; an offset past the end is an error
/// naming the partition.
#[test]
fn explicit_starting_offsets_start_each_partition_where_given() {
    let log = MemoryLog::new(3);
    for p in 0..3 {
        fill(&log, p, 0..6);
    }
    let opts = DirectStreamOptions {
        starting_offsets: StartingOffsets::Explicit(BTreeMap::from([(tp(0), 4), (tp(1), -1)])),
        ..Default::default()
    };
    let out = run_bounded(2, |ctx| {
        ctx.direct_stream("memory", log.clone(), opts.clone())
    })
    .unwrap();
    let mut all: Vec<String> = out.into_values().flatten().collect();
    all.sort();
    let mut want = vec!["p0-4".to_string(), "p0-5".to_string()];
    want.extend((0..6).map(|o| format!("p2-{o}")));
    assert_eq!(all, want);

    let past_end = DirectStreamOptions {
        starting_offsets: StartingOffsets::Explicit(BTreeMap::from([(tp(2), 7)])),
        ..Default::default()
    };
    let err = run_bounded(2, |ctx| {
        ctx.direct_stream("memory", log.clone(), past_end.clone())
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("starting offset 7 of partition 2") && err.contains("-1 for the latest"),
        "{err}"
    );
}

#[test]
fn expired_offsets_fail_by_default_naming_the_partition_and_the_lost_range() {
    let log = MemoryLog::new(2);
    fill(&log, 0, 0..10);
    fill(&log, 1, 0..10);
    let feeder = log.clone();
    let (out, error, _) = run_live(log, limited(4), 3, move |i| {
        if i == 1 {
            // Retention deletes offsets 4..8 of partition 1 before they were read.
            feeder.delete_before(1, 8);
        }
    });
    let error = error.expect("the run fails");
    assert!(
        error.contains("offsets [4, 8) of partition 1") && error.contains("4 records lost"),
        "{error}"
    );
    assert!(error.contains("--on-expired-offsets earliest"), "{error}");
    assert_eq!(out.len(), 1, "nothing after the loss is processed: {out:?}");
}

#[test]
fn expired_offsets_are_skipped_and_counted_with_the_earliest_policy() {
    let log = MemoryLog::new(2);
    fill(&log, 0, 0..10);
    fill(&log, 1, 0..10);
    let feeder = log.clone();
    let opts = DirectStreamOptions {
        on_expired_offsets: OnExpiredOffsets::Earliest,
        ..limited(4)
    };
    let (out, error, counters) = run_live(log, opts, 4, move |i| {
        if i == 1 {
            feeder.delete_before(1, 8);
        }
    });
    assert_eq!(error, None);
    assert_eq!(SourceCounters::get(&counters.lost_records), 4);
    let p1: Vec<String> = out
        .into_values()
        .flatten()
        .filter(|r| r.starts_with("p1-"))
        .collect();
    let mut p1 = p1;
    p1.sort();
    let expected: Vec<String> = [0, 1, 2, 3, 8, 9]
        .iter()
        .map(|o| format!("p1-{o}"))
        .collect();
    let mut expected = expected;
    expected.sort();
    assert_eq!(p1, expected);
}

/// The ranges lost to expiry are logged with the batch's plan (what `checkpoint
/// inspect` and the batch page show): the log, the partition and the offsets.
#[test]
fn lost_ranges_are_recorded_in_the_batch_plan() {
    let log = MemoryLog::new(2);
    fill(&log, 0, 0..10);
    fill(&log, 1, 0..10);
    let run = ManualRun::new(1).unwrap();
    let opts = DirectStreamOptions {
        on_expired_offsets: OnExpiredOffsets::Earliest,
        ..limited(4)
    };
    let _out = collect_batches(&run.ctx.direct_stream("memory", log.clone(), opts));
    run.ctx.start().unwrap();
    run.next_batch().unwrap();
    // Retention deletes offsets 4..8 of partition 1 before the job reads them.
    log.delete_before(1, 8);
    run.next_batch().unwrap();
    let batches = run.ctx.metrics().completed_batches();
    let description = &batches[1].inputs[0].description;
    assert!(
        description.contains("lost before they were read")
            && description.contains(&log.describe())
            && description.contains("partition 1 [4, 8)"),
        "{description}"
    );
    assert!(!batches[0].inputs[0].description.contains("lost"));
    let _ = run.ctx.stop(false);
}

#[test]
fn a_range_that_expires_between_plan_and_read_follows_the_policy_too() {
    // Planned with offsets [0, 10) present, deleted before the batch reads them.
    struct Expiring {
        log: Arc<MemoryLog<String>>,
    }
    impl PartitionedLog<String> for Expiring {
        fn describe(&self) -> String {
            "the expiring log".into()
        }
        fn bounds(
            &self,
        ) -> Result<Vec<lockgate_core::source::direct::PartitionBounds>, lockgate_core::BoxError>
        {
            self.log.bounds()
        }
        fn read(
            &self,
            partition: &lockgate_core::source::direct::TopicPartition,
            offsets: std::ops::Range<i64>,
        ) -> Result<Vec<String>, lockgate_core::BoxError> {
            self.log.delete_before(partition.partition, 6);
            self.log.read(partition, offsets)
        }
    }
    let log = MemoryLog::new(1);
    fill(&log, 0, 0..10);
    let opts = DirectStreamOptions {
        on_expired_offsets: OnExpiredOffsets::Earliest,
        ..Default::default()
    };
    let (out, error, counters) = run_live_log(Arc::new(Expiring { log }), opts);
    assert_eq!(error, None);
    assert_eq!(SourceCounters::get(&counters.lost_records), 6);
    assert_eq!(out[&0], vec!["p0-6", "p0-7", "p0-8", "p0-9"]);
}

fn run_live_log(
    log: Arc<dyn PartitionedLog<String>>,
    opts: DirectStreamOptions,
) -> (
    BTreeMap<u64, Vec<String>>,
    Option<String>,
    Arc<SourceCounters>,
) {
    let run = ManualRun::new(1).unwrap();
    let out = collect_batches(&run.ctx.direct_stream("memory", log, opts));
    run.ctx.start().unwrap();
    let error = run.next_batch().err().map(|e| e.to_string());
    let _ = run.ctx.stop(false);
    let counters = run.ctx.metrics().source("memory-0");
    let out = out.lock().unwrap().clone();
    (out, error, counters)
}

/// Regression: the progress of a bounded Kafka run counted to a total that wobbled
/// (193, 194, 198, 199 of 200): the total is known when the run starts, and stays.
#[test]
fn a_bounded_run_knows_its_batch_count_at_start() {
    let log = MemoryLog::new(2);
    fill(&log, 0, 0..95);
    fill(&log, 1, 0..40);
    let ctx = bounded_context(2).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (c, s) = (ctx.clone(), seen.clone());
    ctx.direct_stream("memory", log.clone(), limited(10))
        .foreach_batch(move |_, _| s.lock().unwrap().push(c.bounded_total_batches()));
    assert_eq!(ctx.bounded_total_batches(), None, "not started yet");
    ctx.start().unwrap();
    ctx.await_termination().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 10);
    assert!(seen.iter().all(|t| *t == Some(10)), "{seen:?}");
}

/// A log whose brokers fail to answer a few times: the source retries (showing as
/// retrying), then reads everything once; past the retry timeout the job fails.
#[test]
fn passing_log_failures_are_retried_until_the_retry_timeout() {
    struct Flaky {
        log: Arc<MemoryLog<String>>,
        failures: std::sync::atomic::AtomicU32,
        seen_retrying: Arc<std::sync::Mutex<Option<Arc<SourceCounters>>>>,
        retrying_seen: std::sync::atomic::AtomicBool,
    }
    impl Flaky {
        fn fail(&self) -> Result<(), lockgate_core::BoxError> {
            if let Some(c) = &*self.seen_retrying.lock().unwrap() {
                if c.status().retrying_since_ms.is_some() {
                    self.retrying_seen
                        .store(true, std::sync::atomic::Ordering::Release);
                }
            }
            let left = self.failures.load(std::sync::atomic::Ordering::Acquire);
            if left > 0 {
                self.failures
                    .store(left - 1, std::sync::atomic::Ordering::Release);
                return Err("broker does not answer".into());
            }
            Ok(())
        }
    }
    impl PartitionedLog<String> for Flaky {
        fn describe(&self) -> String {
            "the flaky log".into()
        }
        fn bounds(
            &self,
        ) -> Result<Vec<lockgate_core::source::direct::PartitionBounds>, lockgate_core::BoxError>
        {
            self.fail()?;
            self.log.bounds()
        }
        fn read(
            &self,
            partition: &lockgate_core::source::direct::TopicPartition,
            offsets: std::ops::Range<i64>,
        ) -> Result<Vec<String>, lockgate_core::BoxError> {
            self.fail()?;
            self.log.read(partition, offsets)
        }
    }
    for (failures, timeout, ok) in [(3, 60_000, true), (1000, 300, false)] {
        let log = MemoryLog::new(1);
        fill(&log, 0, 0..10);
        let flaky = Arc::new(Flaky {
            log,
            failures: std::sync::atomic::AtomicU32::new(0),
            seen_retrying: Arc::default(),
            retrying_seen: Default::default(),
        });
        let ctx = bounded_context(1).unwrap();
        let opts = DirectStreamOptions {
            retry_timeout: std::time::Duration::from_millis(timeout),
            ..Default::default()
        };
        let out = collect_batches(&ctx.direct_stream("flaky", flaky.clone(), opts));
        *flaky.seen_retrying.lock().unwrap() = Some(ctx.metrics().source("flaky-0"));
        // Fail from the first plan on.
        flaky
            .failures
            .store(failures, std::sync::atomic::Ordering::Release);
        let result = ctx.start().and_then(|()| ctx.await_termination());
        let status = ctx.metrics().source("flaky-0").status();
        assert_eq!(status.retrying_since_ms, None, "settled");
        assert!(status
            .last_error
            .unwrap()
            .0
            .contains("broker does not answer"));
        if ok {
            result.unwrap();
            assert!(flaky
                .retrying_seen
                .load(std::sync::atomic::Ordering::Acquire));
            let all: Vec<String> = out.lock().unwrap().values().flatten().cloned().collect();
            assert_eq!(all.len(), 10);
        } else {
            let e = result.unwrap_err().to_string();
            assert!(e.contains("still failing after retrying"), "{e}");
        }
    }
}
