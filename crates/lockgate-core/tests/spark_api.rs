//! The parts of Spark Streaming's DStream API added for porting jobs, each against an
//! independent naive model: `group_by_key_and_window`, the window forms whose slide
//! defaults to the stream's (`Slide::Batch`), `transform_with`, `StreamingContext::union`
//! and `transform`, `slice` with `remember`, and `queue_stream` with its own partitions.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use lockgate_core::testing::{collect_output, run_streams, run_streams2, sorted, ManualRun};
use lockgate_core::{Batch, InputQueue, QueueStreamOptions, Slide, Time};
use proptest::prelude::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The batch index of each window's end, and the batches it covers, for `batches`
/// batches of 1 s from time 1000: a window of `len` s sliding by `slide` s emits at
/// every time that is a multiple of `slide`, covering `(t - len, t]`.
fn windows(batches: usize, len: u64, slide: u64) -> Vec<Option<std::ops::Range<usize>>> {
    (0..batches)
        .map(|i| {
            let t = i as u64 + 1;
            (t % slide == 0).then(|| (t.saturating_sub(len) as usize)..(t as usize))
        })
        .collect()
}

/// `group_by_key_and_window`, computed naively: per window, every key with its values in
/// order (oldest batch first).
fn model_group_by_window(
    input: &[Vec<(u8, i64)>],
    batches: usize,
    len: u64,
    slide: u64,
) -> Vec<Vec<(u8, Vec<i64>)>> {
    windows(batches, len, slide)
        .into_iter()
        .map(|w| {
            let mut groups: BTreeMap<u8, Vec<i64>> = BTreeMap::new();
            for b in w.into_iter().flatten() {
                for &(k, v) in input.get(b).into_iter().flatten() {
                    groups.entry(k).or_default().push(v);
                }
            }
            groups.into_iter().collect()
        })
        .collect()
}

fn input_batches() -> impl Strategy<Value = Vec<Vec<(u8, i64)>>> {
    prop::collection::vec(prop::collection::vec((0u8..6, 0i64..100), 0..10), 1..8)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn group_by_key_and_window_equals_the_model(
        input in input_batches(),
        slide in 1u64..3,
        k in 1u64..4,
        partitions in 1usize..4,
    ) {
        let len = slide * k;
        let batches = input.len() + len as usize;
        let got = run_streams(input.clone(), partitions, |s| {
            s.group_by_key_and_window(secs(len), secs(slide))
        }, batches).unwrap();
        prop_assert_eq!(sorted(got), model_group_by_window(&input, batches, len, slide));
    }

    /// Spark's one-argument forms: the slide is the stream's own (here 1 s).
    #[test]
    fn window_forms_without_a_slide_slide_by_the_batch(
        input in input_batches(),
        len in 1u64..4,
    ) {
        let batches = input.len() + len as usize;
        let grouped = run_streams(input.clone(), 2, |s| {
            s.group_by_key_and_window(secs(len), Slide::Batch)
        }, batches).unwrap();
        prop_assert_eq!(sorted(grouped), model_group_by_window(&input, batches, len, 1));
        let summed = run_streams(input.clone(), 2, |s| {
            s.reduce_by_key_and_window(|a, b| a + b, secs(len), Slide::Batch)
        }, batches).unwrap();
        let want: Vec<Vec<(u8, i64)>> = model_group_by_window(&input, batches, len, 1)
            .into_iter()
            .map(|w| w.into_iter().map(|(k, vs)| (k, vs.iter().sum())).collect())
            .collect();
        prop_assert_eq!(sorted(summed), want);
        let values = input.clone();
        let windowed = run_streams(values, 2, |s| s.window(secs(len), Slide::Batch), batches)
            .unwrap();
        let want: Vec<Vec<(u8, i64)>> = windows(batches, len, 1)
            .into_iter()
            .map(|w| {
                let mut all: Vec<(u8, i64)> = w
                    .into_iter()
                    .flatten()
                    .flat_map(|b| input.get(b).cloned().unwrap_or_default())
                    .collect();
                all.sort();
                all
            })
            .collect();
        prop_assert_eq!(sorted(windowed), want);
        let counts = run_streams(input.clone(), 2, |s| s.count_by_window(secs(len), Slide::Batch), batches)
            .unwrap();
        // As in Spark (an incremental reduce by a unit key): nothing until the first
        // element enters a window, then the count, down to 0.
        let want: Vec<Vec<i64>> = windows(batches, len, 1)
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                let seen = input.iter().take(i + 1).any(|b| !b.is_empty());
                let n: usize = w.into_iter().flatten().map(|b| input.get(b).map_or(0, Vec::len)).sum();
                if seen { vec![n as i64] } else { vec![] }
            })
            .collect();
        prop_assert_eq!(counts, want);
    }

    #[test]
    fn transform_with_sees_both_batches_of_the_same_time(
        left in prop::collection::vec(prop::collection::vec(0i64..20, 0..8), 1..6),
        right in prop::collection::vec(prop::collection::vec(0i64..20, 0..8), 1..6),
    ) {
        let n = left.len().max(right.len());
        // Each element of the left batch, paired with the right batch's sum and the time.
        let got = run_streams2(left.clone(), right.clone(), 2, |a, b| {
            a.transform_with(&b, |a: Batch<i64>, b: Batch<i64>, t: Time| {
                let sum: i64 = b.iter().sum();
                a.map(move |x| (x, sum, t.millis()))
            })
        }, n).unwrap();
        let want: Vec<Vec<(i64, i64, i64)>> = (0..n)
            .map(|i| {
                let sum: i64 = right.get(i).map_or(0, |b| b.iter().sum());
                let t = (i as i64 + 1) * 1000;
                let mut out: Vec<_> = left.get(i).into_iter().flatten().map(|&x| (x, sum, t)).collect();
                out.sort();
                out
            })
            .collect();
        prop_assert_eq!(sorted(got), want);
    }
}

#[test]
fn context_union_and_transform_take_a_list_of_streams() {
    let run = ManualRun::new(2).unwrap();
    let inputs = [
        vec![vec![1, 2], vec![3]],
        vec![vec![10], vec![]],
        vec![vec![], vec![100]],
    ];
    let streams: Vec<_> = inputs
        .iter()
        .map(|b| {
            run.ctx
                .queue_stream(InputQueue::from_batches(b.clone()), true, None)
        })
        .collect();
    let union = collect_output(&run.ctx.union(&streams));
    // Per batch: each stream's element count, in the order given, and the batch time.
    let sizes = collect_output(&run.ctx.transform(&streams, |batches, t| {
        let sizes: Vec<usize> = batches.iter().map(Batch::len).collect();
        Batch::from_vec(vec![(sizes, t.millis())], 1)
    }));
    run.ctx.start().unwrap();
    run.next_batch().unwrap();
    run.next_batch().unwrap();
    assert_eq!(
        union.lock().unwrap().clone(),
        vec![vec![1, 2, 10], vec![3, 100]]
    );
    assert_eq!(
        sizes.lock().unwrap().clone(),
        vec![vec![(vec![2, 1, 0], 1000)], vec![(vec![1, 0, 1], 2000)]]
    );
}

#[test]
fn a_union_of_no_streams_or_of_different_slides_is_refused_at_start() {
    let run = ManualRun::new(1).unwrap();
    run.ctx.union::<i32>(&[]).foreach_batch(|_, _| ());
    let err = run.ctx.start().unwrap_err();
    assert!(
        err.to_string().contains("needs at least one stream"),
        "{err}"
    );

    let run = ManualRun::new(1).unwrap();
    let a = run.ctx.queue_stream(InputQueue::<i32>::new(), true, None);
    let b = a.window(secs(2), secs(2));
    run.ctx.union(&[a, b]).foreach_batch(|_, _| ());
    let err = run.ctx.start().unwrap_err();
    assert!(err.to_string().contains("different slides"), "{err}");
}

#[test]
fn slice_returns_the_remembered_batches_of_a_time_range() {
    let run = ManualRun::new(2).unwrap();
    run.ctx.remember(secs(3));
    let q = InputQueue::from_batches((1..=5).map(|i| vec![i]).collect::<Vec<_>>());
    let doubled = run.ctx.queue_stream(q, true, None).map(|x: i32| x * 2);
    let windowed = doubled.window(secs(2), secs(2));
    windowed.foreach_batch(|_, _| ());
    run.ctx.start().unwrap();
    let slice = |s: &lockgate_core::DStream<i32>, from: i64, to: i64| -> Vec<(i64, Vec<i32>)> {
        s.slice(Time(from), Time(to))
            .unwrap()
            .into_iter()
            .map(|(t, b)| {
                let mut v = b.collect();
                v.sort();
                (t.millis(), v)
            })
            .collect()
    };
    for _ in 0..5 {
        run.next_batch().unwrap();
    }
    // At batch 5000, 3 s are remembered: batches 3000, 4000 and 5000.
    assert_eq!(
        slice(&doubled, 0, 5000),
        vec![(3000, vec![6]), (4000, vec![8]), (5000, vec![10])]
    );
    assert_eq!(slice(&doubled, 4000, 4000), vec![(4000, vec![8])]);
    // The windowed stream has batches at its slide only.
    assert_eq!(slice(&windowed, 2000, 4000), vec![(4000, vec![6, 8])]);
    // A time between its batch times moves back to the batch time before it (Spark).
    assert_eq!(slice(&windowed, 3000, 4500), vec![(4000, vec![6, 8])]);
    assert!(doubled.slice(Time(4000), Time(3000)).is_err());
}

#[test]
fn without_remember_a_stream_keeps_no_batch_once_it_ran() {
    let run = ManualRun::new(1).unwrap();
    let q = InputQueue::from_batches(vec![vec![1], vec![2]]);
    let s = run.ctx.queue_stream(q, true, None).map(|x: i32| x + 1);
    s.foreach_batch(|_, _| ());
    run.ctx.start().unwrap();
    run.next_batch().unwrap();
    run.next_batch().unwrap();
    assert!(s.slice(Time(0), Time(2000)).unwrap().is_empty());
}

#[test]
fn queue_stream_cuts_its_batches_into_its_own_partition_count() {
    let run = ManualRun::new(2).unwrap();
    let q = InputQueue::from_batches(vec![(1..=7).collect::<Vec<i32>>()]);
    let parts = collect_output(
        &run.ctx
            .queue_stream_with(q, QueueStreamOptions::new().partitions(4))
            .glom(),
    );
    run.ctx.start().unwrap();
    run.next_batch().unwrap();
    // Spark's parallelize(1 to 7, 4): [1], [2, 3], [4, 5], [6, 7].
    assert_eq!(
        parts.lock().unwrap()[0],
        vec![vec![1], vec![2, 3], vec![4, 5], vec![6, 7]]
    );
}

/// The named options of `queue_stream_with` do what Spark's positional
/// `queueStream(queue, oneAtATime, defaultRDD)` does.
#[test]
fn queue_stream_with_named_options_matches_the_positional_form() {
    let run_with = |named: bool| {
        let run = ManualRun::new(2).unwrap();
        let q = InputQueue::from_batches(vec![vec![1, 2], vec![3]]);
        let s = if named {
            run.ctx.queue_stream_with(
                q.clone(),
                QueueStreamOptions::new()
                    .all_at_once()
                    .default_batch(vec![0]),
            )
        } else {
            run.ctx.queue_stream(q.clone(), false, Some(vec![0]))
        };
        let out = collect_output(&s);
        run.ctx.start().unwrap();
        run.next_batch().unwrap();
        run.next_batch().unwrap();
        q.push(vec![9]);
        run.next_batch().unwrap();
        let got: Vec<Vec<i32>> = out
            .lock()
            .unwrap()
            .iter()
            .map(|b| {
                let mut b = b.clone();
                b.sort();
                b
            })
            .collect();
        got
    };
    let named = run_with(true);
    assert_eq!(named, run_with(false));
    // Everything queued at once, then the default while empty, then what came.
    assert_eq!(named, vec![vec![1, 2, 3], vec![0], vec![9]]);
}
