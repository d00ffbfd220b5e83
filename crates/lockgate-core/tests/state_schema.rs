//! State identity: checkpoints record each state type's codec name and version (its
//! schema), never Rust's type path. A state type moved to another module recovers its
//! checkpoint; a version bump migrates the older version's data; another type, or a
//! version newer than the code's, is reported by operator name.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockgate_core::codec::{Codec, CodecError};
use lockgate_core::testing::ManualRun;
use lockgate_core::{
    CheckpointConfig, Data, Error, ManualClock, StateUpgrade, StreamingContext, UpgradeStatus,
};

/// Version 1 of the job's state type, `Tally`: defined the same way in both modules
/// below, so that only its Rust path differs.
macro_rules! tally_version_1 {
    () => {
        #[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
        pub struct Tally {
            pub seen: i64,
        }

        impl Codec for Tally {
            const NAME: &'static str = "Tally";
            fn encode(&self, out: &mut Vec<u8>) {
                self.seen.encode(out);
            }
            fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
                Ok(Tally {
                    seen: Codec::decode_stored(input)?,
                })
            }
        }
    };
}

/// The first home of the job's state type.
mod first_home {
    use super::*;
    tally_version_1!();
}

/// The same type after a refactor moved it (Rust's type path changed; its codec name
/// did not).
mod moved {
    pub mod elsewhere {
        use super::super::*;
        tally_version_1!();
    }
}

/// Version 2 of `Tally`: a new field, and a migration from version 1.
mod second_version {
    use super::*;

    #[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
    pub struct Tally {
        pub seen: i64,
        pub batches: u32,
    }

    impl Codec for Tally {
        const NAME: &'static str = "Tally";
        const VERSION: u32 = 2;
        fn encode(&self, out: &mut Vec<u8>) {
            self.seen.encode(out);
            self.batches.encode(out);
        }
        fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
            Ok(Tally {
                seen: Codec::decode_stored(input)?,
                batches: Codec::decode_stored(input)?,
            })
        }
        fn decode_version(version: u32, input: &mut &[u8]) -> Result<Self, CodecError> {
            match version {
                // Version 1 did not count batches: start counting from the migration.
                1 => Ok(Tally {
                    seen: Codec::decode_stored(input)?,
                    batches: 0,
                }),
                v => Err(CodecError::new(Self::NAME, format!("no version {v}"))),
            }
        }
    }
}

/// Another type with another name.
mod other {
    use super::*;

    #[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
    pub struct Visits(pub i64);

    impl Codec for Visits {
        const NAME: &'static str = "Visits";
        fn encode(&self, out: &mut Vec<u8>) {
            self.0.encode(out);
        }
        fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
            Ok(Visits(Codec::decode_stored(input)?))
        }
    }
}

fn words() -> Vec<Vec<String>> {
    (0..6)
        .map(|b| (0..12).map(|i| format!("w{}", (i + b) % 4)).collect())
        .collect()
}

type Out<S> = Arc<Mutex<Vec<Vec<(String, S)>>>>;

/// The job: per word, a state of type `S` updated by `update`; each batch's states are
/// collected (sorted by word).
fn job<S: Data + Codec + Ord + std::fmt::Debug>(
    dir: &Path,
    clock: Arc<ManualClock>,
    upgrade: StateUpgrade,
    update: fn(&[i64], Option<S>) -> Option<S>,
) -> lockgate_core::Result<(StreamingContext, Out<S>)> {
    let out: Out<S> = Arc::default();
    let sink = out.clone();
    let ctx = StreamingContext::get_or_create(dir, move |b| {
        let ctx = b
            .app_name("tallies")
            .batch_interval(Duration::from_secs(1))
            .parallelism(2)
            .clock(clock)
            .checkpoint(CheckpointConfig {
                sync_interval: Duration::ZERO,
                ..CheckpointConfig::new(dir)
            })
            .state_upgrade(upgrade)
            .build()?;
        let sink = sink.clone();
        ctx.seq_stream(words())
            .map(|w| (w, 1i64))
            .update_state_by_key(update)
            .name("tallies")
            .foreach_batch(move |b, _| {
                let mut rows = b.collect();
                rows.sort();
                sink.lock().unwrap().push(rows);
            });
        Ok(ctx)
    })?;
    Ok((ctx, out))
}

/// Runs `batches` batches from manual time `from_ms`; returns what they output.
fn run<S: Data + Codec + Ord + std::fmt::Debug>(
    dir: &Path,
    from_ms: i64,
    batches: usize,
    update: fn(&[i64], Option<S>) -> Option<S>,
) -> Vec<Vec<(String, S)>> {
    let clock = Arc::new(ManualClock::new(from_ms));
    let (ctx, out) = job(dir, clock.clone(), StateUpgrade::Fail, update).unwrap();
    let run = ManualRun { ctx, clock };
    run.ctx.start().unwrap();
    run.run_batches(batches).unwrap();
    run.ctx.stop(false).unwrap();
    let got = out.lock().unwrap().clone();
    got
}

fn tally_v1(v: &[i64], s: Option<first_home::Tally>) -> Option<first_home::Tally> {
    Some(first_home::Tally {
        seen: s.unwrap_or_default().seen + v.iter().sum::<i64>(),
    })
}

fn tally_moved(v: &[i64], s: Option<moved::elsewhere::Tally>) -> Option<moved::elsewhere::Tally> {
    Some(moved::elsewhere::Tally {
        seen: s.unwrap_or_default().seen + v.iter().sum::<i64>(),
    })
}

fn tally_v2(v: &[i64], s: Option<second_version::Tally>) -> Option<second_version::Tally> {
    let s = s.unwrap_or_default();
    Some(second_version::Tally {
        seen: s.seen + v.iter().sum::<i64>(),
        batches: s.batches + 1,
    })
}

fn visits(v: &[i64], s: Option<other::Visits>) -> Option<other::Visits> {
    Some(other::Visits(s.unwrap_or_default().0 + v.len() as i64))
}

/// The counts per word after `batches` batches of `words()`.
fn seen_after(batches: usize) -> Vec<(String, i64)> {
    let mut counts = std::collections::BTreeMap::new();
    for b in words().into_iter().take(batches) {
        for w in b {
            *counts.entry(w).or_insert(0) += 1;
        }
    }
    counts.into_iter().collect()
}

#[test]
fn a_state_type_moved_to_another_module_recovers_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let first = run(dir.path(), 0, 2, tally_v1);
    assert_eq!(first.len(), 2);
    // The metadata records the codec's name, not Rust's path of either module.
    let metadata = std::fs::read(dir.path().join("metadata")).unwrap();
    let text = String::from_utf8_lossy(&metadata);
    assert!(text.contains("string -> Tally"), "{text}");
    assert!(!text.contains("first_home"), "{text}");
    // Recompiled with the type in another module: the state continues.
    let after = run(dir.path(), 2000, 2, tally_moved);
    let last: Vec<(String, i64)> = after
        .last()
        .unwrap()
        .iter()
        .map(|(w, t)| (w.clone(), t.seen))
        .collect();
    assert_eq!(last, seen_after(4));
}

#[test]
fn a_version_bump_migrates_the_older_versions_state() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), 0, 2, tally_v1);
    // The upgrade report says the state migrates.
    let probe = StreamingContext::builder().parallelism(2).build().unwrap();
    probe
        .seq_stream(words())
        .map(|w| (w, 1i64))
        .update_state_by_key(tally_v2)
        .name("tallies")
        .foreach_batch(|_, _| ());
    let report = probe.check_upgrade(dir.path()).unwrap();
    assert!(report.is_compatible(), "{report}");
    assert!(
        report.operators.iter().any(|(n, s)| n == "tallies"
            && *s
                == UpgradeStatus::Migrated {
                    old: "string -> Tally".into(),
                    new: "string -> Tally@2".into()
                }),
        "{report}"
    );
    // Version 2 reads version 1's snapshot and deltas, then writes its own.
    let after = run(dir.path(), 2000, 2, tally_v2);
    let last = after.last().unwrap();
    let seen: Vec<(String, i64)> = last.iter().map(|(w, t)| (w.clone(), t.seen)).collect();
    assert_eq!(seen, seen_after(4));
    // Every word was seen in both batches since the migration.
    assert!(last.iter().all(|(_, t)| t.batches == 2), "{last:?}");
    // A restart of version 2 reads the mixed checkpoint (version 1 snapshot, version 2
    // deltas or snapshots) and goes on.
    let again = run(dir.path(), 4000, 1, tally_v2);
    let seen: Vec<(String, i64)> = again[0].iter().map(|(w, t)| (w.clone(), t.seen)).collect();
    assert_eq!(seen, seen_after(5));
    // Version 1's code cannot read version 2's checkpoint: an error naming the operator.
    let clock = Arc::new(ManualClock::new(5000));
    let reason = mismatch_of_tallies(job(dir.path(), clock, StateUpgrade::Fail, tally_v1));
    assert!(
        reason.contains("Tally@2") && reason.contains("StateUpgrade"),
        "{reason}"
    );
}

/// The reason of a recovery refused for the state of operator `tallies`.
fn mismatch_of_tallies<T>(recovered: lockgate_core::Result<T>) -> String {
    match recovered.err() {
        Some(Error::StateMismatch { operator, reason }) => {
            assert_eq!(operator, "tallies");
            reason
        }
        Some(other) => panic!("unexpected {other}"),
        None => panic!("recovered, though the state does not fit"),
    }
}

#[test]
fn another_state_type_is_reported_by_operator_name() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), 0, 2, tally_v1);
    let clock = Arc::new(ManualClock::new(2000));
    let reason = mismatch_of_tallies(job(dir.path(), clock.clone(), StateUpgrade::Fail, visits));
    assert!(
        reason.contains("`string -> Tally`") && reason.contains("`string -> Visits`"),
        "{reason}"
    );
    // Allowed to start empty, it does.
    let (ctx, out) = job(dir.path(), clock.clone(), StateUpgrade::StartEmpty, visits).unwrap();
    let run = ManualRun { ctx, clock };
    run.ctx.start().unwrap();
    run.run_batches(1).unwrap();
    run.ctx.stop(false).unwrap();
    let first = out.lock().unwrap()[0].clone();
    assert!(first.iter().all(|(_, v)| v.0 == 3), "{first:?}");
}
