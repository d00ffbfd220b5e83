//! Streaming SQL mixed with DStream code: ERROR lines of a directory of log files
//! counted per 30 s event-time window and per level with SQL (a watermark of 10 s,
//! checkpointed, exactly once), then the rows handled as a DStream — here, printed as
//! JSON and kept only when a window's count passes a threshold.
//!
//! ```text
//! cargo run -- generate logs /tmp/logs --lines 20000 --files 4
//! cargo run --release --example sql_error_windows -- /tmp/logs /tmp/sql-cp
//! ```
//! Without arguments it generates a few sample lines in a temporary directory. It stops
//! when it has read the files present at start (`Trigger::AvailableNow`).

use std::path::PathBuf;
use std::time::Duration;

use lockgate_core::{FileStreamOptions, StreamingContext, Time, Trigger};
use lockgate_sql::SqlContext;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let tmp = tempfile::tempdir()?;
    let input = match args.next() {
        Some(d) => PathBuf::from(d),
        None => {
            let dir = tmp.path().join("logs");
            std::fs::create_dir_all(&dir)?;
            let lines: String = (0..120)
                .map(|i| {
                    let level = if i % 3 == 0 { "ERROR" } else { "INFO" };
                    format!(
                        "[Fri Dec 18 00:{:02}:{:02} 2015] [{level}] line {i}\n",
                        i / 60,
                        i % 60
                    )
                })
                .collect();
            std::fs::write(dir.join("a.log"), lines)?;
            dir
        }
    };
    let checkpoint = args
        .next()
        .map_or_else(|| tmp.path().join("cp"), PathBuf::from);
    let ctx = StreamingContext::get_or_create(&checkpoint, |b| {
        let ctx = b
            .app_name("sql-error-windows")
            .batch_interval(Duration::from_secs(10))
            .trigger(Trigger::AvailableNow)
            .start_time(Time(0))
            .build()?;
        let chunks = ctx.text_file_chunk_stream(
            &input,
            FileStreamOptions {
                new_files_only: false,
                ..Default::default()
            },
        );
        // lockgate_sql's errors convert into the engine's: `?` works here.
        let mut sql = SqlContext::new();
        sql.register_text_chunks("lines", &chunks)?;
        sql.with_watermark("ts", Duration::from_secs(10));
        let query = sql.sql_named(
            "SELECT window.start, window.end, count(*) AS errors \
             FROM (SELECT to_timestamp(substr(value, 2, 24), 'EEE MMM dd HH:mm:ss yyyy') \
                   AS ts FROM lines WHERE value LIKE '%ERROR%') AS e \
             GROUP BY window(ts, '30 seconds')",
            "error_windows",
        )?;
        // The rows are a DStream: filter, map, print, write them as any other; a row's
        // values are read by column name, typed.
        query
            .rows()
            .filter(|r| {
                r.get::<i64>("errors")
                    .ok()
                    .flatten()
                    .is_some_and(|n| n >= 5)
            })
            .map(|r| r.to_json().to_string())
            .print();
        Ok(ctx)
    })?;
    ctx.start()?;
    ctx.await_termination()?;
    Ok(())
}
