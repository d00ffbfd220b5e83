//! Network word count (Spark's `NetworkWordCount`): counts the words of the lines a TCP
//! server sends, per 1 s batch and in total.
//!
//! ```text
//! nc -lk 9999                                   # terminal 1: type lines here
//! cargo run --release --example word_count -- localhost 9999   # terminal 2
//! ```
//! Stop with Ctrl-C.

use std::time::Duration;

use lockgate_core::StreamingContext;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "localhost".into());
    let port: u16 = args.next().map_or(Ok(9999), |p| p.parse())?;

    let ctx = StreamingContext::builder()
        .app_name("word-count")
        .batch_interval(Duration::from_secs(1))
        .build()?;
    let lines = ctx.socket_text_stream(&host, port);
    let pairs = lines
        .flat_map(|l| l.split(' ').map(str::to_string).collect::<Vec<_>>())
        .filter(|w| !w.is_empty())
        .map(|w| (w, 1i64));
    // Words of this batch.
    pairs.reduce_by_key(|a, b| a + b).print();
    // Running totals since start.
    pairs
        .update_state_by_key(|new: &[i64], total: Option<i64>| {
            Some(total.unwrap_or(0) + new.iter().sum::<i64>())
        })
        .name("word_totals")
        .print();

    // Ctrl-C stops it gracefully (planned batches finish first), as the CLI does.
    ctx.stop_gracefully_on_shutdown()?;
    ctx.start()?;
    ctx.await_termination()?;
    Ok(())
}
