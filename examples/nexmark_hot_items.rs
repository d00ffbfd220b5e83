//! Nexmark q5 ("hot items"): the auctions with the most bids in each 10 s window sliding
//! by 2 s, over a million generated auction events, with a checkpoint so that a rerun
//! resumes where the last one stopped.
//!
//! ```text
//! cargo run --release --example nexmark_hot_items
//! ```

use std::time::Duration;

use lockgate_core::{StreamingContext, Time, Trigger};
use lockgate_nexmark::{nexmark_stream, q5, EVENTS_PER_SECOND};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join("lockgate-example-nexmark-q5");
    let ctx = StreamingContext::get_or_create(&dir, |b| {
        let ctx = b
            .app_name("nexmark-hot-items")
            .batch_interval(Duration::from_secs(1))
            .trigger(Trigger::AvailableNow)
            .start_time(Time(0))
            .build()?;
        let events = nexmark_stream(&ctx, 1_000_000, 100_000, EVENTS_PER_SECOND);
        q5(&events).print_n(5);
        Ok(ctx)
    })?;
    // Ctrl-C stops it gracefully (planned batches finish first), as the CLI does.
    ctx.stop_gracefully_on_shutdown()?;
    ctx.start()?;
    ctx.await_termination()?;
    println!("checkpoint in {} (delete it to start over)", dir.display());
    Ok(())
}
