//! Progress of a run with a known backlog: a `--once` run, or a streaming job catching up
//! after downtime (several batches queued at once). A progress bar on a terminal, plain
//! lines every few seconds otherwise.

use crate::term::say;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use lockgate_core::StreamingContext;

/// A running progress display; finished when dropped.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Done and total batches, and records so far. A bounded run's total is fixed when it
/// starts; otherwise it is estimated from what is queued and pending now.
fn counts(ctx: &StreamingContext) -> (u64, u64, u64) {
    let m = ctx.metrics().snapshot();
    let total = ctx.bounded_total_batches().unwrap_or_else(|| {
        let active = m.queued.len() as u64 + u64::from(m.running.is_some());
        m.total_completed + active + ctx.pending_batches().unwrap_or(0)
    });
    (
        m.total_completed,
        total.max(m.total_completed),
        m.total_records,
    )
}

impl Progress {
    /// Watches a streaming job: whenever batches queue up (a catch-up after downtime or a
    /// slow patch), shows how the backlog drains, and says when it has caught up.
    pub fn catch_up(ctx: &StreamingContext) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let (ctx, flag) = (ctx.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let terminal = std::io::stderr().is_terminal();
            // (batches done when the backlog appeared, when, the bar)
            let mut showing: Option<(u64, Instant, ProgressBar)> = None;
            let mut last_line = Instant::now();
            while !flag.load(Ordering::Acquire) && !ctx.is_stopping() {
                let m = ctx.metrics().snapshot();
                let waiting = m.queued.len() as u64;
                let done = m.total_completed;
                match &mut showing {
                    None if waiting >= 2 => {
                        let bar = if terminal {
                            ProgressBar::new(0)
                        } else {
                            ProgressBar::hidden()
                        };
                        say!("catching up: {waiting} batches queued");
                        showing = Some((done, Instant::now(), bar));
                    }
                    Some((done0, since, bar)) => {
                        let caught = done - *done0;
                        if waiting == 0 {
                            bar.finish_and_clear();
                            say!(
                                "caught up: {caught} batches in {:.1} s",
                                since.elapsed().as_secs_f64()
                            );
                            showing = None;
                        } else if terminal {
                            bar.set_length(caught + waiting);
                            bar.set_position(caught);
                        } else if last_line.elapsed() >= Duration::from_secs(2) {
                            say!("catching up: {caught} done, {waiting} queued");
                            last_line = Instant::now();
                        }
                    }
                    None => {}
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            if let Some((_, _, bar)) = showing {
                bar.finish_and_clear();
            }
        });
        Progress {
            stop,
            thread: Some(thread),
        }
    }

    /// Starts showing the progress of `ctx` (a started bounded run).
    pub fn start(ctx: &StreamingContext) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let (ctx, flag) = (ctx.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let terminal = std::io::stderr().is_terminal();
            let bar = if terminal {
                let b = ProgressBar::new(0);
                b.set_style(
                    ProgressStyle::with_template("{bar:40} {pos}/{len} batches  {msg}  ETA {eta}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b
            } else {
                ProgressBar::hidden()
            };
            let mut last_line = Instant::now();
            loop {
                let finished = flag.load(Ordering::Acquire) || ctx.is_stopping();
                let (done, total, records) = counts(&ctx);
                let secs = started.elapsed().as_secs_f64().max(1e-3);
                let rate = records as f64 / secs;
                if terminal {
                    bar.set_length(total);
                    bar.set_position(done);
                    bar.set_message(format!("{records} records, {rate:.0} records/s"));
                } else if finished || last_line.elapsed() >= Duration::from_secs(2) {
                    let eta = if done > 0 {
                        format!("{:.0} s", secs * (total - done) as f64 / done as f64)
                    } else {
                        "?".into()
                    };
                    say!(
                        "progress: {done}/{total} batches, {records} records, {rate:.0} records/s, ETA {eta}"
                    );
                    last_line = Instant::now();
                }
                if finished {
                    bar.finish_and_clear();
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Progress {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
