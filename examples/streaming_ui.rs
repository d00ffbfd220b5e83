//! The streaming UI from a library job: the page Spark users know from the Streaming tab
//! (timelines and histograms of input rate, scheduling delay, processing time and total
//! delay, and the batches), its REST API and Prometheus metrics, served by
//! `lockgate_web::UiServer` beside any `StreamingContext`.
//!
//! ```sh
//! cargo run --release --example streaming_ui          # runs 2 minutes; Ctrl-C stops it
//! # open the address it prints: http://127.0.0.1:4040/streaming/
//! ```

use std::time::Duration;

use lockgate_core::StreamingContext;
use lockgate_web::{UiConfig, UiServer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = StreamingContext::builder()
        .app_name("streaming-ui")
        .batch_interval(Duration::from_secs(1))
        .build()?;
    // 50,000 generated log-like lines a batch, deterministic per offset.
    let lines = ctx.generated_stream(50_000, None, |offsets| {
        offsets
            .map(|i| {
                let level = if i % 7 == 0 { "ERROR" } else { "INFO" };
                format!("[{level}] request {i} served by worker {}", i % 16)
            })
            .collect()
    });
    lines
        .filter(|l| l.starts_with("[ERROR]"))
        .map(|l| (l.rsplit(' ').next().unwrap_or("").to_string(), 1i64))
        .reduce_by_key_and_window(
            |a, b| a + b,
            Duration::from_secs(10),
            Duration::from_secs(5),
        )
        .print_n(3);
    let ui = UiServer::start(&ctx, &UiConfig::default())?;
    println!("streaming page: {}/streaming/", ui.url());
    ctx.start()?;
    if !ctx.await_termination_or_timeout(Duration::from_secs(120))? {
        ctx.stop(true)?;
    }
    Ok(())
}
