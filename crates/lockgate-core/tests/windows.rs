//! Window operations on the manual clock, and a property test of the incremental
//! (inverse-function) window against a naive recomputation.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use lockgate_core::testing::{run_streams, sorted, ManualRun};
use lockgate_core::{Error, InputQueue, InverseWindowOpts};
use proptest::prelude::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn counting(n: i32) -> Vec<Vec<i32>> {
    (1..=n).map(|i| vec![i]).collect()
}

#[test]
fn window_slides_every_batch() {
    let out = run_streams(counting(4), 2, |s| s.window(secs(2), secs(1)), 5).unwrap();
    assert_eq!(
        out,
        vec![vec![1], vec![1, 2], vec![2, 3], vec![3, 4], vec![4]]
    );
}

#[test]
fn window_with_longer_slide_emits_at_slide_times_only() {
    let out = run_streams(counting(6), 2, |s| s.window(secs(4), secs(2)), 6).unwrap();
    assert_eq!(
        out,
        vec![
            vec![],
            vec![1, 2],
            vec![],
            vec![1, 2, 3, 4],
            vec![],
            vec![3, 4, 5, 6]
        ]
    );
}

#[test]
fn window_of_window() {
    let out = run_streams(
        counting(6),
        1,
        |s| s.window(secs(2), secs(2)).window(secs(4), secs(4)),
        4,
    )
    .unwrap();
    assert_eq!(out[3], vec![1, 2, 3, 4]);
}

#[test]
fn count_by_window_keeps_counting_down_to_zero() {
    let input = vec![vec!["a"; 2], vec!["b"], vec![], vec![]];
    let out = run_streams(input, 2, |s| s.count_by_window(secs(2), secs(1)), 4).unwrap();
    assert_eq!(out, vec![vec![2], vec![3], vec![1], vec![0]]);
}

#[test]
fn reduce_by_window_with_and_without_inverse() {
    let input = counting(5);
    let plain = run_streams(
        input.clone(),
        2,
        |s| s.reduce_by_window(|a, b| a + b, secs(3), secs(1)),
        5,
    )
    .unwrap();
    assert_eq!(plain, vec![vec![1], vec![3], vec![6], vec![9], vec![12]]);
    let inv = run_streams(
        input,
        2,
        |s| s.reduce_by_window_inv(|a, b| a + b, |a, b| a - b, secs(3), secs(1)),
        5,
    )
    .unwrap();
    assert_eq!(inv, plain);
}

#[test]
fn reduce_by_key_and_window_both_ways_and_filter() {
    let input = vec![
        vec![('a', 1), ('b', 1)],
        vec![('a', 1)],
        vec![],
        vec![('b', 5)],
    ];
    let plain = run_streams(
        input.clone(),
        3,
        |s| s.reduce_by_key_and_window(|a, b| a + b, secs(2), secs(1)),
        4,
    )
    .unwrap();
    assert_eq!(
        sorted(plain),
        vec![
            vec![('a', 1), ('b', 1)],
            vec![('a', 2), ('b', 1)],
            vec![('a', 1)],
            vec![('b', 5)]
        ]
    );
    let inv = run_streams(
        input.clone(),
        3,
        |s| {
            s.reduce_by_key_and_window_inv(
                |a, b| a + b,
                |a, b| a - b,
                secs(2),
                secs(1),
                InverseWindowOpts::default(),
            )
        },
        4,
    )
    .unwrap();
    // Without a filter, keys whose value fell to zero stay (Spark's behaviour).
    assert_eq!(
        sorted(inv),
        vec![
            vec![('a', 1), ('b', 1)],
            vec![('a', 2), ('b', 1)],
            vec![('a', 1), ('b', 0)],
            vec![('a', 0), ('b', 5)]
        ]
    );
    let filtered = run_streams(
        input,
        3,
        |s| {
            s.shuffle_partitions(2).reduce_by_key_and_window_inv(
                |a, b| a + b,
                |a, b| a - b,
                secs(2),
                secs(1),
                InverseWindowOpts::default().filter(|(_, v)| *v != 0),
            )
        },
        4,
    )
    .unwrap();
    assert_eq!(
        sorted(filtered),
        vec![
            vec![('a', 1), ('b', 1)],
            vec![('a', 2), ('b', 1)],
            vec![('a', 1)],
            vec![('b', 5)]
        ]
    );
}

#[test]
fn count_by_value_and_window_drops_zero_counts() {
    let input = vec![vec!['x', 'y', 'x'], vec!['y'], vec![]];
    let out = run_streams(
        input,
        2,
        |s| s.count_by_value_and_window(secs(2), secs(1), None),
        3,
    )
    .unwrap();
    assert_eq!(
        sorted(out),
        vec![
            vec![('x', 2), ('y', 1)],
            vec![('x', 2), ('y', 2)],
            vec![('y', 1)]
        ]
    );
}

#[test]
fn window_not_multiple_of_interval_is_a_graph_error_naming_the_operator() {
    let run = ManualRun::new(1).unwrap();
    let s = run.ctx.queue_stream(InputQueue::<i32>::new(), true, None);
    s.window(Duration::from_millis(1500), secs(1)).print();
    match run.ctx.start() {
        Err(Error::Graph { operator, reason }) => {
            assert_eq!(operator, "window");
            assert!(reason.contains("1500 ms"), "{reason}");
        }
        other => panic!("expected a graph error, got {other:?}"),
    }
}

#[test]
fn starting_without_outputs_is_an_error() {
    let run = ManualRun::new(1).unwrap();
    let _ = run
        .ctx
        .queue_stream(InputQueue::<i32>::new(), true, None)
        .map(|x| x + 1);
    let err = run.ctx.start().unwrap_err();
    assert!(err.to_string().contains("no output operations"), "{err}");
}

fn naive_and_incremental(
    input: Vec<Vec<(u8, i64)>>,
    len: u64,
    slide: u64,
    partitions: usize,
) -> (Vec<Vec<(u8, i64)>>, Vec<Vec<(u8, i64)>>) {
    let batches = input.len() + len as usize + 1;
    let naive = run_streams(
        input.clone(),
        partitions,
        |s| s.reduce_by_key_and_window(|a, b| a + b, secs(len), secs(slide)),
        batches,
    )
    .unwrap();
    let incremental = run_streams(
        input,
        partitions,
        |s| {
            s.reduce_by_key_and_window_inv(
                |a, b| a + b,
                |a, b| a - b,
                secs(len),
                secs(slide),
                InverseWindowOpts::default().filter(|(_, v)| *v != 0),
            )
        },
        batches,
    )
    .unwrap();
    (sorted(naive), sorted(incremental))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Spark's incremental window algorithm equals recomputing every window.
    #[test]
    fn inverse_window_equals_naive_recompute(
        input in prop::collection::vec(prop::collection::vec((0u8..6, 1i64..5), 0..12), 1..9),
        slide in 1u64..3,
        k in 1u64..4,
        partitions in 1usize..5,
    ) {
        let len = slide * k;
        let (naive, incremental) = naive_and_incremental(input, len, slide, partitions);
        prop_assert_eq!(naive, incremental);
    }
}
