//! Progress of a run with a known backlog (`--once`): a progress bar on a terminal,
//! plain lines every few seconds otherwise.

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

/// Done and total batches, and records so far.
fn counts(ctx: &StreamingContext) -> (u64, u64, u64) {
    let m = ctx.metrics().snapshot();
    let active = m.queued.len() as u64 + u64::from(m.running.is_some());
    let pending = ctx.pending_batches().unwrap_or(0);
    (
        m.total_completed,
        m.total_completed + active + pending,
        m.total_records,
    )
}

impl Progress {
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
                    eprintln!(
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
