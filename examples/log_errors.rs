//! The log-event processor: print the lines containing `ERROR` of every batch and count
//! them over a 30 s window sliding every 10 s.
//!
//! ```text
//! cargo run --release -- generate logs /tmp/logs --lines 100000 --files 10
//! cargo run --release --example log_errors -- /tmp/logs        # a directory: its files, then stop
//! cargo run --release --example log_errors -- localhost:9999   # or a socket, until Ctrl-C
//! ```

use std::time::Duration;

use lockgate_core::{FileStreamOptions, StreamingContext, Time, Trigger};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let source = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "localhost:9999".into());
    let socket = source
        .rsplit_once(':')
        .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h.to_string(), p)));

    let mut builder = StreamingContext::builder()
        .app_name("log-errors")
        .batch_interval(Duration::from_secs(10));
    if socket.is_none() {
        // A directory is bounded: run its files one per batch, then stop.
        builder = builder.trigger(Trigger::AvailableNow).start_time(Time(0));
    }
    let ctx = builder.build()?;
    let lines = match &socket {
        Some((host, port)) => ctx.socket_text_stream(host, *port).stream(),
        None => ctx.text_file_stream_with(
            &source,
            FileStreamOptions {
                max_files_per_batch: Some(1),
                new_files_only: false,
                ..Default::default()
            },
        ),
    };
    let errors = lines.filter(|l| l.contains("ERROR"));
    errors.print();
    errors
        .count_by_window(Duration::from_secs(30), Duration::from_secs(10))
        .print();
    // Ctrl-C stops it gracefully (planned batches finish first), as the CLI does.
    ctx.stop_gracefully_on_shutdown()?;
    ctx.start()?;
    ctx.await_termination()?;
    Ok(())
}
