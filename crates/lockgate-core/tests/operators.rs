//! Golden tests of the narrow and keyed operators: input per batch in, expected output
//! per batch out, on the manual clock; each also with 1 and 8 partitions.

#![allow(clippy::unwrap_used)]

use lockgate_core::testing::{run_streams, run_streams2, sorted};
use lockgate_core::Batch;

fn s(x: &str) -> String {
    x.to_string()
}

fn words() -> Vec<Vec<String>> {
    vec![vec![s("a b"), s("b c")], vec![], vec![s("c c c"), s("a")]]
}

#[test]
fn map_flat_map_filter() {
    for p in [1, 3, 8] {
        let out = run_streams(words(), p, |l| l.map(|x| x.len()), 3).unwrap();
        assert_eq!(out, vec![vec![3, 3], vec![], vec![5, 1]]);

        let out = run_streams(
            words(),
            p,
            |l| l.flat_map(|x| x.split(' ').map(str::to_string).collect::<Vec<_>>()),
            3,
        )
        .unwrap();
        assert_eq!(
            out,
            vec![
                vec![s("a"), s("b"), s("b"), s("c")],
                vec![],
                vec![s("c"), s("c"), s("c"), s("a")]
            ]
        );

        let out = run_streams(words(), p, |l| l.filter(|x| x.contains('a')), 3).unwrap();
        assert_eq!(out, vec![vec![s("a b")], vec![], vec![s("a")]]);
    }
}

#[test]
fn map_partitions_and_glom_see_partitions() {
    let input = vec![(1..=8).collect::<Vec<i32>>()];
    let out = run_streams(input.clone(), 4, |x| x.glom(), 1).unwrap();
    assert_eq!(out[0], vec![vec![1, 2], vec![3, 4], vec![5, 6], vec![7, 8]]);
    let out = run_streams(
        input,
        2,
        |x| x.map_partitions(|p| vec![p.iter().sum::<i32>()]),
        1,
    )
    .unwrap();
    assert_eq!(out[0], vec![10, 26]);
}

#[test]
fn union_transform_repartition() {
    let out = run_streams2(
        vec![vec![1, 2], vec![3]],
        vec![vec![10], vec![]],
        2,
        |a, b| a.union(&b),
        2,
    )
    .unwrap();
    assert_eq!(sorted(out), vec![vec![1, 2, 10], vec![3]]);

    let out = run_streams(
        vec![vec![1, 2, 3], vec![4]],
        2,
        |x| x.transform(|b, t| Batch::from_vec(vec![(t.millis(), b.len())], 1)),
        2,
    )
    .unwrap();
    assert_eq!(out, vec![vec![(1000, 3)], vec![(2000, 1)]]);

    let out = run_streams(
        vec![(0..10).collect::<Vec<i32>>()],
        1,
        |x| x.repartition(5).glom(),
        1,
    )
    .unwrap();
    assert_eq!(out[0].len(), 5);
    assert_eq!(out[0].concat(), (0..10).collect::<Vec<_>>());
}

#[test]
fn count_reduce_count_by_value() {
    for p in [1, 8] {
        let input = vec![vec![1, 2, 3], vec![], vec![5, 5]];
        let out = run_streams(input.clone(), p, |x| x.count(), 3).unwrap();
        assert_eq!(out, vec![vec![3], vec![0], vec![2]]);
        let out = run_streams(input.clone(), p, |x| x.reduce(|a, b| a + b), 3).unwrap();
        assert_eq!(out, vec![vec![6], vec![], vec![10]]);
        let out = run_streams(input, p, |x| x.count_by_value(), 3).unwrap();
        assert_eq!(
            sorted(out),
            vec![vec![(1, 1), (2, 1), (3, 1)], vec![], vec![(5, 2)]]
        );
    }
}

fn pairs() -> Vec<Vec<(String, i32)>> {
    vec![
        vec![(s("a"), 1), (s("b"), 2), (s("a"), 3)],
        vec![(s("b"), 4)],
        vec![],
    ]
}

#[test]
fn map_values_flat_map_values() {
    let out = run_streams(pairs(), 2, |x| x.map_values(|v| v * 2), 3).unwrap();
    assert_eq!(out[0], vec![(s("a"), 2), (s("b"), 4), (s("a"), 6)]);
    let out = run_streams(pairs(), 2, |x| x.flat_map_values(|v| 0..v.min(2)), 3).unwrap();
    assert_eq!(out[1], vec![(s("b"), 0), (s("b"), 1)]);
}

#[test]
fn reduce_group_combine_by_key() {
    for p in [1, 8] {
        let out = run_streams(pairs(), p, |x| x.reduce_by_key(|a, b| a + b), 3).unwrap();
        assert_eq!(
            sorted(out),
            vec![vec![(s("a"), 4), (s("b"), 2)], vec![(s("b"), 4)], vec![]]
        );

        let out = run_streams(
            pairs(),
            p,
            |x| {
                x.group_by_key().map_values(|mut v| {
                    v.sort();
                    v
                })
            },
            3,
        )
        .unwrap();
        assert_eq!(
            sorted(out)[0],
            vec![(s("a"), vec![1, 3]), (s("b"), vec![2])]
        );

        // Average per key with (sum, count) combiners.
        let out = run_streams(
            pairs(),
            p,
            |x| {
                x.combine_by_key(
                    |v| (v, 1),
                    |(s, c), v| (s + v, c + 1),
                    |(a, b), (c, d)| (a + c, b + d),
                    3,
                )
                .map_values(|(sum, n)| sum / n)
            },
            3,
        )
        .unwrap();
        assert_eq!(sorted(out)[0], vec![(s("a"), 2), (s("b"), 2)]);
    }
}

#[test]
fn shuffle_partitions_sets_the_partition_count_of_keyed_operations() {
    let out = run_streams(
        pairs(),
        2,
        |x| x.shuffle_partitions(5).reduce_by_key(|a, b| a + b).glom(),
        1,
    )
    .unwrap();
    assert_eq!(out[0].len(), 5);
    // The hint belongs to the handle: the stream a keyed operation returns shuffles into
    // the context's parallelism again.
    let out = run_streams(
        pairs(),
        2,
        |x| {
            x.shuffle_partitions(5)
                .reduce_by_key(|a, b| a + b)
                .group_by_key()
                .glom()
        },
        1,
    )
    .unwrap();
    assert_eq!(out[0].len(), 2);
}

#[test]
fn joins_and_cogroup() {
    let left = vec![vec![(1, 'a'), (1, 'b'), (2, 'c')]];
    let right = vec![vec![(1, "x"), (3, "y")]];
    for p in [1, 8] {
        let out = run_streams2(left.clone(), right.clone(), p, |a, b| a.join(&b), 1).unwrap();
        assert_eq!(sorted(out)[0], vec![(1, ('a', "x")), (1, ('b', "x"))]);

        let out = run_streams2(
            left.clone(),
            right.clone(),
            p,
            |a, b| a.left_outer_join(&b),
            1,
        )
        .unwrap();
        assert_eq!(
            sorted(out)[0],
            vec![
                (1, ('a', Some("x"))),
                (1, ('b', Some("x"))),
                (2, ('c', None))
            ]
        );

        let out = run_streams2(
            left.clone(),
            right.clone(),
            p,
            |a, b| a.right_outer_join(&b),
            1,
        )
        .unwrap();
        assert_eq!(
            sorted(out)[0],
            vec![
                (1, (Some('a'), "x")),
                (1, (Some('b'), "x")),
                (3, (None, "y"))
            ]
        );

        let out = run_streams2(
            left.clone(),
            right.clone(),
            p,
            |a, b| a.full_outer_join(&b),
            1,
        )
        .unwrap();
        assert_eq!(
            sorted(out)[0],
            vec![
                (1, (Some('a'), Some("x"))),
                (1, (Some('b'), Some("x"))),
                (2, (Some('c'), None)),
                (3, (None, Some("y")))
            ]
        );

        let out = run_streams2(
            left.clone(),
            right.clone(),
            p,
            |a, b| a.shuffle_partitions(3).full_outer_join(&b).glom(),
            1,
        )
        .unwrap();
        assert_eq!(out[0].len(), 3);

        let out = run_streams2(left.clone(), right.clone(), p, |a, b| a.cogroup(&b), 1).unwrap();
        assert_eq!(
            sorted(out)[0],
            vec![
                (1, (vec!['a', 'b'], vec!["x"])),
                (2, (vec!['c'], vec![])),
                (3, (vec![], vec!["y"]))
            ]
        );
    }
}

/// The same word-count job gives the same result with 1 and 8 partitions.
#[test]
fn results_do_not_depend_on_parallelism() {
    let input: Vec<Vec<String>> = (0..5)
        .map(|b| {
            (0..200)
                .map(|i| format!("w{} w{} x", (i * 7 + b) % 13, i % 5))
                .collect()
        })
        .collect();
    let job = |l: lockgate_core::DStream<String>| {
        l.flat_map(|x| x.split(' ').map(str::to_string).collect::<Vec<_>>())
            .map(|w| (w, 1i64))
            .reduce_by_key(|a, b| a + b)
            .update_state_by_key(|vs: &[i64], st: Option<i64>| {
                Some(st.unwrap_or(0) + vs.iter().sum::<i64>())
            })
    };
    let one = sorted(run_streams(input.clone(), 1, job, 6).unwrap());
    let eight = sorted(run_streams(input, 8, job, 6).unwrap());
    assert_eq!(one, eight);
    assert!(one[4].contains(&(s("x"), 1000)));
}
