//! The scheduler and lifecycle: failures surface with batch time and operator, batches
//! queue when processing falls behind (and the delays show it), stops (graceful or
//! not), bounded runs, outputs.

#![allow(clippy::unwrap_used)]

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockgate_core::testing::{collect_output, ManualRun};
use lockgate_core::Clock as _;
use lockgate_core::{
    ContextState, Error, InputQueue, ManualClock, StreamingContext, Time, Trigger,
};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn a_panicking_function_stops_the_context_with_batch_time_and_operator() {
    let run = ManualRun::new(2).unwrap();
    let q = InputQueue::from_batches(vec![vec![1, 2], vec![3, 0]]);
    run.ctx
        .queue_stream(q, true, None)
        .map(|x: i32| 10 / x)
        .name("divide")
        .foreach_batch(|_, _| ());
    run.ctx.start().unwrap();
    run.next_batch().unwrap();
    let err = run.next_batch().unwrap_err();
    match err {
        Error::Operator {
            operator,
            time,
            message,
        } => {
            assert_eq!(operator, "divide");
            assert_eq!(time, Time(2000));
            assert!(message.contains("divide by zero"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(run.ctx.state(), ContextState::Stopped);
    let info = run.ctx.metrics().completed_batches();
    assert!(info[1].failure.as_deref().unwrap_or("").contains("divide"));
}

#[test]
fn an_output_error_surfaces_from_await_termination() {
    let run = ManualRun::new(1).unwrap();
    run.ctx
        .queue_stream(InputQueue::from_batches(vec![vec![1]]), true, None)
        .foreach_batch(|_, _| Err::<(), _>("disk full"));
    run.ctx.start().unwrap();
    run.clock.advance(Duration::from_secs(1));
    let err = run.ctx.await_termination().unwrap_err();
    assert!(
        matches!(err, Error::Output { ref operator, time: Time(1000), .. } if operator == "foreach_batch-0"),
        "{err}"
    );
    assert!(err.to_string().contains("disk full"));
}

#[test]
fn batches_queue_when_processing_falls_behind_and_delays_show_it() {
    let run = ManualRun::new(1).unwrap();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let channels = Mutex::new((release_rx, entered_tx));
    let q = InputQueue::from_batches(vec![vec![1], vec![2, 3], vec![]]);
    run.ctx
        .queue_stream(q, true, None)
        .foreach_batch(move |_, b| {
            if b.id == 0 {
                // Hold the first batch until the test lets it go.
                let c = channels.lock().unwrap();
                c.1.send(()).unwrap();
                let _ = c.0.recv();
            }
        });
    let metrics = run.ctx.metrics();
    run.ctx.start().unwrap();
    run.clock.advance(Duration::from_secs(1));
    entered_rx.recv_timeout(WAIT).unwrap();
    run.clock.advance(Duration::from_secs(1));
    assert!(metrics.wait_for(WAIT, |m| m.queued.len() == 1));
    run.clock.advance(Duration::from_secs(1));
    assert!(metrics.wait_for(WAIT, |m| m.queued.len() == 2));
    release_tx.send(()).unwrap();
    assert!(metrics.wait_for_batch(Time(3000), WAIT));
    run.ctx.stop(false).unwrap();

    let b = metrics.completed_batches();
    let delays: Vec<_> = b
        .iter()
        .map(|i| {
            (
                i.batch_time.millis(),
                i.num_records(),
                i.scheduling_delay_ms(),
                i.processing_time_ms(),
                i.total_delay_ms(),
            )
        })
        .collect();
    assert_eq!(
        delays,
        vec![
            (1000, 1, Some(0), Some(2000), Some(2000)),
            (2000, 2, Some(1000), Some(0), Some(1000)),
            (3000, 0, Some(0), Some(0), Some(0)),
        ]
    );
    assert_eq!(b[0].output_ops.len(), 1);
    assert_eq!(b[0].output_ops[0].end.since(b[0].output_ops[0].start), 2000);
    assert_eq!(metrics.snapshot().total_records, 3);
}

#[test]
fn non_graceful_stop_drops_queued_batches() {
    let run = ManualRun::new(1).unwrap();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    run.ctx
        .queue_stream(InputQueue::from_batches(vec![vec![1], vec![2]]), true, None)
        .foreach_batch(move |_, b| {
            seen2.lock().unwrap().push(b.id);
            if b.id == 0 {
                let _ = release_rx.lock().unwrap().recv();
            }
        });
    let metrics = run.ctx.metrics();
    run.ctx.start().unwrap();
    run.clock.advance(Duration::from_secs(2));
    assert!(metrics.wait_for(WAIT, |m| m.running.is_some() && m.queued.len() == 1));
    let stopper = {
        let ctx = run.ctx.clone();
        std::thread::spawn(move || ctx.stop(false))
    };
    // The stop has to wait for the running batch; let it finish once the stop began.
    while !run.ctx.is_stopping() {
        std::thread::yield_now();
    }
    release_tx.send(()).unwrap();
    stopper.join().unwrap().unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![0]);
}

#[test]
fn bounded_run_stops_by_itself_with_deterministic_batch_times() {
    let clock = Arc::new(ManualClock::new(123_456));
    let ctx = StreamingContext::builder()
        .batch_interval(Duration::from_secs(10))
        .trigger(Trigger::AvailableNow)
        .start_time(Time(0))
        .clock(clock)
        .parallelism(2)
        .build()
        .unwrap();
    let q = InputQueue::from_batches(vec![vec![1], vec![2], vec![3]]);
    let out = collect_output(&ctx.queue_stream(q, true, None).map(|x| x * 2));
    let times = Arc::new(Mutex::new(Vec::new()));
    let t2 = times.clone();
    ctx.queue_stream(InputQueue::<i32>::new(), true, None)
        .foreach_batch(move |_, b| t2.lock().unwrap().push(b.time.millis()));
    ctx.start().unwrap();
    ctx.await_termination().unwrap();
    assert_eq!(*out.lock().unwrap(), vec![vec![2], vec![4], vec![6]]);
    assert_eq!(*times.lock().unwrap(), vec![10_000, 20_000, 30_000]);
    assert_eq!(ctx.state(), ContextState::Stopped);
}

#[test]
fn queue_stream_all_at_once_and_default_batch() {
    let run = ManualRun::new(2).unwrap();
    let q = InputQueue::from_batches(vec![vec![1], vec![2, 3]]);
    let all = collect_output(&run.ctx.queue_stream(q.clone(), false, Some(vec![0])));
    run.ctx.start().unwrap();
    run.next_batch().unwrap();
    q.push(vec![9]);
    run.run_batches(2).unwrap();
    run.ctx.stop(false).unwrap();
    assert_eq!(*all.lock().unwrap(), vec![vec![1, 2, 3], vec![9], vec![0]]);
}

#[test]
fn constant_input_stream_repeats() {
    let run = ManualRun::new(2).unwrap();
    let out = collect_output(&run.ctx.constant_input_stream(vec!["x", "y"]).count());
    run.ctx.start().unwrap();
    run.run_batches(2).unwrap();
    run.ctx.stop(true).unwrap();
    assert_eq!(*out.lock().unwrap(), vec![vec![2], vec![2]]);
}

#[test]
fn start_twice_and_await_before_start_are_errors() {
    let run = ManualRun::new(1).unwrap();
    assert!(matches!(
        run.ctx.await_termination(),
        Err(Error::Lifecycle(_))
    ));
    run.ctx
        .constant_input_stream(vec![1])
        .foreach_batch(|_, _| ());
    run.ctx.start().unwrap();
    assert!(matches!(run.ctx.start(), Err(Error::Lifecycle(_))));
    assert!(!run
        .ctx
        .await_termination_or_timeout(Duration::from_millis(1))
        .unwrap());
    run.ctx.stop(false).unwrap();
    assert!(run
        .ctx
        .await_termination_or_timeout(Duration::from_millis(1))
        .unwrap());
}

#[test]
fn zero_batch_interval_and_parallelism_are_config_errors() {
    let e = StreamingContext::builder()
        .batch_interval(Duration::ZERO)
        .build()
        .err();
    assert!(matches!(e, Some(Error::Config(_))));
    let e = StreamingContext::builder().parallelism(0).build().err();
    assert!(matches!(e, Some(Error::Config(_))));
}

#[test]
fn save_as_text_files_writes_one_directory_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("out/words");
    let run = ManualRun::new(2).unwrap();
    run.ctx
        .queue_stream(
            InputQueue::from_batches(vec![vec![("a", 1), ("b", 2), ("c", 3)]]),
            true,
            None,
        )
        .save_as_text_files(prefix.to_str().unwrap(), "txt");
    run.ctx.start().unwrap();
    run.run_batches(2).unwrap();
    run.ctx.stop(false).unwrap();
    let b1 = dir.path().join("out/words-1000.txt");
    let mut names: Vec<String> = std::fs::read_dir(&b1)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["_SUCCESS", "part-00000", "part-00001"]);
    let text = std::fs::read_to_string(b1.join("part-00000")).unwrap()
        + &std::fs::read_to_string(b1.join("part-00001")).unwrap();
    assert_eq!(text, "(a,1)\n(b,2)\n(c,3)\n");
    assert!(dir.path().join("out/words-2000.txt/_SUCCESS").exists());
    // No temporary directories left behind.
    let leftovers = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count();
    assert_eq!(leftovers, 0);
}

/// A clock that panics when the job runner thread asks it the time after its first
/// batch: a panic outside every operator and output (as a log write to a closed stderr
/// was, in the CLI).
struct PanickingClock {
    inner: ManualClock,
    runner_calls: std::sync::atomic::AtomicU32,
}

impl lockgate_core::Clock for PanickingClock {
    fn now(&self) -> Time {
        if std::thread::current().name() == Some("lockgate-job-runner")
            && self
                .runner_calls
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
                >= 2
        {
            panic!("the clock broke");
        }
        self.inner.now()
    }
    fn wait_until(&self, target: Time, cancel: &std::sync::atomic::AtomicBool) -> Time {
        self.inner.wait_until(target, cancel)
    }
    fn interrupt(&self) {
        self.inner.interrupt()
    }
}

/// Regression: a panic on the job runner's thread outside the operators killed the
/// thread without marking the context done: `await_termination` waited forever (a
/// benchmark child hung with its stderr closed). Now the context stops with an error
/// naming the thread.
#[test]
fn a_panic_on_the_runner_thread_stops_the_context_with_an_error() {
    let clock = Arc::new(PanickingClock {
        inner: ManualClock::new(0),
        runner_calls: std::sync::atomic::AtomicU32::new(0),
    });
    let ctx = StreamingContext::builder()
        .app_name("panic")
        .batch_interval(Duration::from_secs(1))
        .parallelism(2)
        .trigger(Trigger::AvailableNow)
        .start_time(Time(0))
        .clock(clock)
        .build()
        .unwrap();
    let q = InputQueue::from_batches(vec![vec![1], vec![2], vec![3]]);
    ctx.queue_stream(q, true, None).foreach_batch(|_, _| ());
    ctx.start().unwrap();
    let (tx, rx) = mpsc::channel();
    let waiter = ctx.clone();
    std::thread::spawn(move || {
        let _ = tx.send(waiter.await_termination());
    });
    let err = rx
        .recv_timeout(WAIT)
        .expect("await_termination returned")
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("the job runner thread panicked: the clock broke"),
        "{text}"
    );
    assert_eq!(ctx.state(), ContextState::Stopped);
}

/// A wall clock that can be stepped, over a manual monotonic clock: `now()` is the
/// monotonic time plus an offset the test sets.
struct SteppedClock {
    mono: ManualClock,
    offset_ms: std::sync::atomic::AtomicI64,
}

impl SteppedClock {
    fn new(start_ms: i64) -> Arc<Self> {
        Arc::new(SteppedClock {
            mono: ManualClock::new(start_ms),
            offset_ms: std::sync::atomic::AtomicI64::new(0),
        })
    }
    /// Steps the wall clock by `ms` (negative: back).
    fn step(&self, ms: i64) {
        self.offset_ms
            .fetch_add(ms, std::sync::atomic::Ordering::AcqRel);
        self.mono.interrupt();
    }
    /// Time passes: both clocks move by `d`.
    fn advance(&self, d: Duration) {
        self.mono.advance(d);
    }
}

impl lockgate_core::Clock for SteppedClock {
    fn now(&self) -> Time {
        self.mono
            .now()
            .plus_ms(self.offset_ms.load(std::sync::atomic::Ordering::Acquire))
    }
    fn wait_until(&self, target: Time, cancel: &std::sync::atomic::AtomicBool) -> Time {
        let offset = self.offset_ms.load(std::sync::atomic::Ordering::Acquire);
        self.mono
            .wait_until(target.plus_ms(-offset), cancel)
            .plus_ms(offset)
    }
    fn interrupt(&self) {
        self.mono.interrupt()
    }
    fn mono(&self) -> Time {
        self.mono.now()
    }
    fn wait_until_mono(&self, target: Time, cancel: &std::sync::atomic::AtomicBool) -> Time {
        self.mono.wait_until(target, cancel)
    }
}

/// A context on `clock` counting the elements of a queue stream, and its batch times.
fn stepped_job(
    clock: Arc<SteppedClock>,
    checkpoint: Option<&std::path::Path>,
) -> (StreamingContext, InputQueue<i64>, Arc<Mutex<Vec<Time>>>) {
    let mut b = StreamingContext::builder()
        .app_name("stepped")
        .batch_interval(Duration::from_secs(1))
        .parallelism(1)
        .clock(clock);
    if let Some(dir) = checkpoint {
        b = b.checkpoint_dir(dir);
    }
    let ctx = b.build().unwrap();
    let q = InputQueue::new();
    let times = Arc::new(Mutex::new(Vec::new()));
    let seen = times.clone();
    // A checkpointed job needs a replayable source: two batches of one record.
    let input = match checkpoint {
        None => ctx.queue_stream(q.clone(), true, None),
        Some(_) => ctx.seq_stream(vec![vec![1i64], vec![2]]),
    };
    input.foreach_batch(move |_, b| seen.lock().unwrap().push(b.time));
    (ctx, q, times)
}

/// Regression (outside tester): with the wall clock stepped back 1 h the job planned no
/// batch for the rest of the test. Batches are paced on the monotonic clock: the next one
/// comes one interval later, its time after the last one's, and the step is logged.
#[test]
fn a_wall_clock_stepped_back_neither_stalls_nor_reuses_batch_times() {
    let clock = SteppedClock::new(0);
    let (ctx, _q, times) = stepped_job(clock.clone(), None);
    ctx.start().unwrap();
    for _ in 0..2 {
        clock.advance(Duration::from_secs(1));
        assert!(ctx.metrics().wait_for(WAIT, |m| m.total_completed >= 1));
    }
    assert!(ctx.metrics().wait_for(WAIT, |m| m.total_completed == 2));
    clock.step(-3_600_000);
    for n in 3..=5 {
        clock.advance(Duration::from_secs(1));
        assert!(
            ctx.metrics().wait_for(WAIT, |m| m.total_completed == n),
            "batch {n} after the step back"
        );
    }
    ctx.stop(false).unwrap();
    let times = times.lock().unwrap().clone();
    assert_eq!(times, (1..=5).map(|s| Time(s * 1000)).collect::<Vec<_>>());
}

/// Regression (outside tester): a wall clock a day ahead made the job run 19,541 empty
/// batches in 21 s. Now batch times skip ahead to the wall clock when no input waits:
/// one batch, not 86,400; input that waits is not skipped over.
#[test]
fn a_wall_clock_jumping_forward_skips_ahead_without_a_storm_of_empty_batches() {
    let clock = SteppedClock::new(0);
    let (ctx, q, times) = stepped_job(clock.clone(), None);
    ctx.start().unwrap();
    q.push(vec![1, 2]);
    clock.advance(Duration::from_secs(1));
    assert!(ctx.metrics().wait_for(WAIT, |m| m.total_completed == 1));
    clock.step(86_400_000);
    clock.advance(Duration::from_secs(1));
    assert!(ctx.metrics().wait_for(WAIT, |m| m.total_completed == 2));
    q.push(vec![3]);
    clock.advance(Duration::from_secs(1));
    assert!(ctx.metrics().wait_for(WAIT, |m| m.total_completed == 3));
    ctx.stop(false).unwrap();
    let times = times.lock().unwrap().clone();
    assert_eq!(
        times,
        vec![Time(1000), Time(86_402_000), Time(86_403_000)],
        "one batch at the new wall time, then one per interval"
    );
    assert_eq!(ctx.metrics().snapshot().total_records, 3);
}

/// Regression (outside tester): restarted with the wall clock a day behind its
/// checkpoint, the job ran no batch at all. Batch times go on after the last logged
/// one, one interval apart; restarted a day later (downtime), they skip ahead instead of
/// running a day of empty batches — and the skip survives the next restart.
#[test]
fn restarts_with_the_wall_clock_behind_or_ahead_go_on_from_the_last_batch() {
    let dir = tempfile::tempdir().unwrap();
    let clock = SteppedClock::new(1_000_000);
    let (ctx, _q, _) = stepped_job(clock.clone(), Some(dir.path()));
    ctx.start().unwrap();
    for n in 1..=3 {
        clock.advance(Duration::from_secs(1));
        assert!(ctx.metrics().wait_for(WAIT, |m| m.total_completed == n));
    }
    ctx.stop(false).unwrap();
    // A day behind.
    let behind = SteppedClock::new(1_000_000 - 86_400_000);
    let (ctx, _q, times) = stepped_job(behind.clone(), Some(dir.path()));
    ctx.start().unwrap();
    behind.advance(Duration::from_secs(1));
    assert!(ctx.metrics().wait_for(WAIT, |m| m.total_completed == 1));
    ctx.stop(false).unwrap();
    assert_eq!(*times.lock().unwrap(), vec![Time(1_004_000)]);
    // A day ahead (downtime): one batch at the wall clock's time, then on from there.
    let ahead = SteppedClock::new(1_004_000 + 86_400_000);
    let (ctx, _q, times) = stepped_job(ahead.clone(), Some(dir.path()));
    ctx.start().unwrap();
    assert!(ctx.metrics().wait_for(WAIT, |m| m.total_completed == 1));
    ahead.advance(Duration::from_secs(1));
    assert!(ctx.metrics().wait_for(WAIT, |m| m.total_completed == 2));
    ctx.stop(false).unwrap();
    assert_eq!(
        *times.lock().unwrap(),
        vec![Time(87_404_000), Time(87_405_000)]
    );
    // The skip was recorded: the next start goes on after it.
    let later = SteppedClock::new(87_405_000);
    let (ctx, _q, times) = stepped_job(later.clone(), Some(dir.path()));
    ctx.start().unwrap();
    later.advance(Duration::from_secs(1));
    assert!(ctx.metrics().wait_for(WAIT, |m| m.total_completed == 1));
    ctx.stop(false).unwrap();
    assert_eq!(*times.lock().unwrap(), vec![Time(87_406_000)]);
}

/// A window drains before batch times skip ahead: batches without input run for the
/// window's look-back (its data leaves, the incremental count goes back to 0), then the
/// times skip; the counts are never stale.
#[test]
fn a_window_drains_before_batch_times_skip_ahead() {
    let clock = SteppedClock::new(0);
    let ctx = StreamingContext::builder()
        .app_name("window-skip")
        .batch_interval(Duration::from_secs(1))
        .parallelism(1)
        .clock(clock.clone())
        .build()
        .unwrap();
    let q = InputQueue::new();
    let counts = collect_output(
        &ctx.queue_stream(q.clone(), true, None)
            .count_by_window(Duration::from_secs(3), Duration::from_secs(1)),
    );
    let times = Arc::new(Mutex::new(Vec::new()));
    let seen = times.clone();
    ctx.queue_stream(InputQueue::<i64>::new(), true, None)
        .foreach_batch(move |_, b| seen.lock().unwrap().push(b.time));
    ctx.start().unwrap();
    q.push(vec![1i64, 2]);
    clock.advance(Duration::from_secs(1));
    assert!(ctx.metrics().wait_for(WAIT, |m| m.total_completed == 1));
    clock.step(86_400_000);
    clock.advance(Duration::from_secs(1));
    // Look-back 3 s + 1 s: four batches without input, then the skip and one batch.
    assert!(ctx.metrics().wait_for(WAIT, |m| m.total_completed == 6));
    q.push(vec![3]);
    clock.advance(Duration::from_secs(1));
    assert!(ctx.metrics().wait_for(WAIT, |m| m.total_completed == 7));
    ctx.stop(false).unwrap();
    let times = times.lock().unwrap().clone();
    assert_eq!(
        times,
        [1000, 2000, 3000, 4000, 5000, 86_402_000, 86_403_000]
            .map(Time)
            .to_vec()
    );
    let counts: Vec<i64> = counts
        .lock()
        .unwrap()
        .iter()
        .map(|b| b.iter().sum())
        .collect();
    assert_eq!(counts, vec![2, 2, 2, 0, 0, 0, 1]);
}

/// `slice` before `start` is an error, as in Spark ("has not been initialized"), not an
/// empty answer.
#[test]
fn slice_before_start_is_an_error() {
    let run = ManualRun::new(1).unwrap();
    let s = run.ctx.queue_stream(InputQueue::<i64>::new(), true, None);
    s.foreach_batch(|_, _| ());
    let err = s.slice(Time(0), Time(1000)).unwrap_err();
    assert!(err.to_string().contains("has not started"), "{err}");
    run.ctx.start().unwrap();
    run.next_batch().unwrap();
    assert!(s.slice(Time(1000), Time(1000)).is_ok());
    run.ctx.stop(false).unwrap();
}
