//! Stateful operators: update_state_by_key and map_with_state (timeouts, snapshots).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use lockgate_core::testing::{collect_output, run_streams, sorted, ManualRun};
use lockgate_core::{Error, InputQueue, State, StateSpec};

fn running_sum(values: &[i32], state: Option<i32>) -> Option<i32> {
    Some(state.unwrap_or(0) + values.iter().sum::<i32>())
}

#[test]
fn update_state_by_key_keeps_running_totals() {
    let input = vec![vec![('a', 1), ('b', 1)], vec![('a', 2)], vec![]];
    for p in [1, 8] {
        let out = run_streams(input.clone(), p, |s| s.update_state_by_key(running_sum), 3).unwrap();
        assert_eq!(
            sorted(out),
            vec![
                vec![('a', 1), ('b', 1)],
                vec![('a', 3), ('b', 1)],
                vec![('a', 3), ('b', 1)]
            ]
        );
    }
}

#[test]
fn update_state_by_key_with_initial_state_and_removal() {
    let input = vec![vec![('a', 1)], vec![('b', -5)]];
    let out = run_streams(
        input,
        2,
        |s| {
            s.update_state_by_key_with(
                |vs: &[i32], st: Option<i32>| {
                    let n = st.unwrap_or(0) + vs.iter().sum::<i32>();
                    (n > 0).then_some(n)
                },
                vec![('b', 3), ('c', 7)],
                4,
            )
        },
        2,
    )
    .unwrap();
    assert_eq!(
        sorted(out),
        vec![vec![('a', 1), ('b', 3), ('c', 7)], vec![('a', 1), ('c', 7)]]
    );
}

#[test]
fn map_with_state_emits_per_record_and_snapshots() {
    let run = ManualRun::new(3).unwrap();
    let q = InputQueue::from_batches(vec![vec![('a', 1), ('a', 2), ('b', 5)], vec![('b', 1)]]);
    let s = run.ctx.queue_stream(q, true, None);
    let mapped = s.map_with_state(StateSpec::function(
        |k: &char, v: Option<i32>, st: &mut State<i32>| {
            let total = st.get().copied().unwrap_or(0) + v.unwrap_or(0);
            st.update(total);
            (k.to_string(), total)
        },
    ));
    let out = collect_output(&mapped.stream());
    let snaps = collect_output(&mapped.state_snapshots());
    run.ctx.start().unwrap();
    run.run_batches(2).unwrap();
    run.ctx.stop(false).unwrap();
    let out = sorted(out.lock().unwrap().clone());
    assert_eq!(
        out,
        vec![
            vec![("a".into(), 1), ("a".into(), 3), ("b".into(), 5)],
            vec![("b".to_string(), 6)]
        ]
    );
    let snaps = sorted(snaps.lock().unwrap().clone());
    assert_eq!(
        snaps,
        vec![vec![('a', 3), ('b', 5)], vec![('a', 3), ('b', 6)]]
    );
}

#[test]
fn map_with_state_times_out_idle_keys() {
    let run = ManualRun::new(2).unwrap();
    let q = InputQueue::from_batches(vec![
        vec![('a', 1), ('b', 1)],
        vec![('a', 1)],
        vec![('a', 1)],
        vec![],
    ]);
    let s = run.ctx.queue_stream(q, true, None);
    let mapped = s.map_with_state(
        StateSpec::function(|k: &char, v: Option<i32>, st: &mut State<i32>| {
            if st.is_timing_out() {
                return format!("{k} timed out at {}", st.get().copied().unwrap_or(-1));
            }
            let n = st.get().copied().unwrap_or(0) + v.unwrap_or(0);
            st.update(n);
            format!("{k}={n}")
        })
        .timeout(Duration::from_millis(1500)),
    );
    let out = collect_output(&mapped.stream());
    let snaps = collect_output(&mapped.state_snapshots());
    run.ctx.start().unwrap();
    run.run_batches(4).unwrap();
    run.ctx.stop(false).unwrap();
    let out = sorted(out.lock().unwrap().clone());
    // b was last seen at 1000 ms; at 3000 ms it has been idle for 2000 ms > 1500 ms.
    assert_eq!(out[0], vec!["a=1", "b=1"]);
    assert_eq!(out[1], vec!["a=2"]);
    assert_eq!(out[2], vec!["a=3", "b timed out at 1"]);
    // a was last seen at 3000 ms: not yet idle long enough at 4000 ms.
    assert!(out[3].is_empty());
    let snaps = sorted(snaps.lock().unwrap().clone());
    assert_eq!(snaps[2], vec![('a', 3)]);
}

#[test]
fn map_with_state_remove_and_initial_state() {
    let input = vec![vec![('a', 0), ('c', 1)]];
    let out = run_streams(
        input,
        2,
        |s| {
            s.map_with_state(
                StateSpec::function(|k: &char, _v: Option<i32>, st: &mut State<i32>| {
                    let existed = st.exists();
                    if existed {
                        st.remove();
                    }
                    (k.to_string(), existed, st.exists())
                })
                .initial_state(vec![('a', 10)])
                .num_partitions(3),
            )
            .stream()
        },
        1,
    )
    .unwrap();
    assert_eq!(
        sorted(out)[0],
        vec![
            ("a".to_string(), true, false),
            ("c".to_string(), false, false)
        ]
    );
}

#[test]
fn updating_a_timing_out_state_fails_the_batch_with_the_operator_name() {
    let run = ManualRun::new(1).unwrap();
    let q = InputQueue::from_batches(vec![vec![('a', 1)]]);
    let s = run.ctx.queue_stream(q, true, None);
    let mapped = s.map_with_state(
        StateSpec::function(|_k: &char, v: Option<i32>, st: &mut State<i32>| {
            st.update(v.unwrap_or(0));
        })
        .timeout(Duration::from_millis(500)),
    );
    mapped.stream().foreach_batch(|_, _| ());
    run.ctx.start().unwrap();
    run.next_batch().unwrap();
    let err = run.next_batch().unwrap_err();
    match err {
        Error::Operator {
            operator,
            time,
            message,
        } => {
            assert!(operator.starts_with("map_with_state"), "{operator}");
            assert_eq!(time.millis(), 2000);
            assert!(message.contains("timing out"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
}
