//! # lockgate-sql
//!
//! Streaming SQL on Lockgate, in the model of Spark's Structured Streaming: a stream is
//! an unbounded table, and a query over it is evaluated incrementally, one micro-batch
//! at a time, exactly once with a checkpoint.
//!
//! [DataFusion](https://datafusion.apache.org) parses, plans and evaluates the SQL over
//! Arrow record batches. Lockgate cuts the plan at its aggregation (module `plan`): the
//! stateless parts (projections, filters, DataFusion's scalar functions, `unnest`,
//! joins with static tables) run as DataFusion plans on each batch partition; the
//! aggregation runs as Lockgate operators whose state — partial aggregates per group,
//! and per event-time window with a watermark — is checkpointed under stable names and
//! recovered exactly once like all state.
//!
//! ```
//! use std::time::Duration;
//! use lockgate_core::{InputQueue, StreamingContext, Time, Trigger};
//! use lockgate_sql::SqlContext;
//!
//! let ctx = StreamingContext::builder()
//!     .batch_interval(Duration::from_secs(1))
//!     .trigger(Trigger::AvailableNow)
//!     .start_time(Time(0))
//!     .build()?;
//! let lines = ctx.queue_stream(
//!     InputQueue::from_batches(vec![vec!["a b".to_string(), "b".to_string()]]),
//!     true,
//!     None,
//! );
//! let mut sql = SqlContext::new();
//! sql.register_lines("lines", &lines)?;
//! let counts = sql.sql(
//!     "SELECT word, count(*) AS n FROM \
//!      (SELECT unnest(string_to_array(value, ' ')) AS word FROM lines) GROUP BY word",
//! )?;
//! let to_json = counts.json_fn();
//! counts.rows().foreach_batch(move |batch, _| {
//!     let mut got: Vec<String> = batch.collect().iter().map(|r| to_json(r).to_string()).collect();
//!     got.sort();
//!     assert_eq!(got, [r#"{"word":"a","n":1}"#, r#"{"word":"b","n":2}"#]);
//! });
//! ctx.start()?;
//! ctx.await_termination()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

// The modules in layers (each imports only the layers before it; scripts/module-dag.py
// checks it): `error`, `value`, `udf` → `spark` → `rewrite`, `slot`, `shape`, `exec`, `input` →
// `plan` → `count`, `split`, `steps` (fused operators) → `tables`, `streams` →
// `stateless`, `aggregate` → `groups`, `windows` → `stream` → `context`.
mod aggregate;
mod context;
mod count;
mod error;
mod exec;
mod groups;
mod input;
mod plan;
mod rewrite;
mod shape;
mod slot;
mod spark;
mod split;
mod stateless;
mod steps;
mod stream;
mod streams;
mod tables;
#[cfg(test)]
mod testing;
mod udf;
mod value;
mod windows;

/// The DataFusion this crate is built on (for Arrow types and scalars in row values).
pub use datafusion;

pub use context::{tables_read, SqlContext};
pub use error::{Error, Result};
pub use exec::{FromValue, Row};
pub use input::{parse_schema, Decoder, Format};
pub use spark::Dialect;
pub use stream::SqlStream;
pub use tables::StaticReader;
pub use value::to_json;
