//! Event time: clicks per user session (a session ends after 30 s without a click) and
//! clicks per minute, from click events that carry their own timestamps and may arrive
//! out of order. A watermark 10 s behind the latest click decides when a window is
//! complete (append mode emits it once, then); clicks older than the watermark are late,
//! dropped and counted.
//!
//! ```text
//! cargo run --release --example user_sessions_event_time
//! ```

use std::time::Duration;

use lockgate_core::{OutputMode, StreamingContext, Time, Trigger, WindowSpec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = StreamingContext::builder()
        .app_name("user-sessions")
        .batch_interval(Duration::from_secs(10))
        .trigger(Trigger::AvailableNow)
        .start_time(Time(0))
        .build()?;
    // (user, event time in seconds): three batches, a little out of order.
    let clicks = ctx.seq_stream(vec![
        vec![("ada", 0), ("bob", 5), ("ada", 20), ("ada", 12)],
        vec![("bob", 40), ("ada", 75), ("bob", 50)],
        vec![("ada", 90), ("bob", 3), ("bob", 130)], // bob@3 s is late by then
    ]);
    let events = clicks.with_watermark(
        |c: &(&str, i64)| Some(Time(c.1 * 1000)),
        Duration::from_secs(10),
    );
    events
        .window(WindowSpec::session(Duration::from_secs(30)))
        .key_by(|c| c.0.to_string())
        .output_mode(OutputMode::Append)
        .count()
        .name("sessions")
        .print();
    events
        .window(WindowSpec::tumbling(Duration::from_secs(60)))
        .count()
        .name("clicks_per_minute")
        .print();
    // Ctrl-C stops it gracefully (planned batches finish first), as the CLI does.
    ctx.stop_gracefully_on_shutdown()?;
    ctx.start()?;
    ctx.await_termination()?;
    let late = ctx.metrics().event_time("sessions");
    println!(
        "late clicks dropped: {}",
        late.late_records.load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(())
}
