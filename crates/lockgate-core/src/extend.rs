//! Extension points: the traits a new sink, source or state type implements, in one
//! place (each defined beside the code that calls it, re-exported here).
//!
//! | to add | implement | register with |
//! |---|---|---|
//! | an output that commits whole batches (a database, a queue, a file format) | [`Sink`] | [`DStream::write_to`](crate::DStream::write_to) |
//! | a replayable source of offset-addressed records (as Kafka's) | [`PartitionedLog`] | [`StreamingContext::direct_stream`](crate::StreamingContext::direct_stream) |
//! | a push source (a socket, a callback API), made durable by the WAL | [`Receiver`] | [`StreamingContext::receiver_stream`](crate::StreamingContext::receiver_stream) |
//! | a type kept in checkpointed state | [`Codec`] (its stable name and version) | any stateful operation |
//! | a key-to-partition rule for keyed state | [`Partitioner`] | `shuffle_partitions` / `partition_by` |
//! | a source of time (tests use [`ManualClock`](crate::ManualClock)) | [`Clock`] | [`StreamingContextBuilder::clock`](crate::StreamingContextBuilder::clock) |
//!
//! Each trait's page has a compiled example; the three below also run. The engine's
//! own operators and sources implement internal traits (`Operator`, `InputSource`,
//! `Stateful`), gathered in the crate's `traits` module and described in
//! docs/architecture.md.
//!
//! # A sink
//!
//! A transactional sink writes a batch and its id in one transaction and reports the
//! last id it committed, so that recovery does not hand it a batch twice:
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use lockgate_core::extend::Sink;
//! use lockgate_core::testing::ManualRun;
//! use lockgate_core::{Batch, BatchId, BoxError, InputQueue, SinkBatch};
//!
//! /// A "table" of (batch id, sum) rows, committed with the last batch id.
//! #[derive(Clone, Default)]
//! struct SumTable(Arc<Mutex<(Vec<(BatchId, i64)>, Option<BatchId>)>>);
//!
//! impl Sink<i64> for SumTable {
//!     fn name(&self) -> String {
//!         "sums".into()
//!     }
//!     fn commit(&self, batch: &Batch<i64>, info: &SinkBatch) -> Result<(), BoxError> {
//!         let mut t = self.0.lock().map_err(|e| e.to_string())?;
//!         if info.skips_committed() && t.1.is_some_and(|last| last >= info.id) {
//!             return Ok(()); // committed before a crash: exactly once
//!         }
//!         let sum = batch.collect().iter().sum();
//!         t.0.push((info.id, sum)); // rows and id in one "transaction"
//!         t.1 = Some(info.id);
//!         Ok(())
//!     }
//!     fn last_committed(&self, _app: &str) -> Result<Option<BatchId>, BoxError> {
//!         Ok(self.0.lock().map_err(|e| e.to_string())?.1)
//!     }
//! }
//!
//! let run = ManualRun::new(2)?;
//! let table = SumTable::default();
//! let numbers = InputQueue::from_batches(vec![vec![1, 2], vec![3, 4]]);
//! run.ctx.queue_stream(numbers, true, None).write_to(table.clone());
//! run.ctx.start()?;
//! run.run_batches(2)?;
//! run.ctx.stop(false)?;
//! assert_eq!(table.0.lock().unwrap().0, vec![(0, 3), (1, 7)]);
//! # Ok::<(), lockgate_core::Error>(())
//! ```
//!
//! # A replayable source
//!
//! A [`PartitionedLog`] answers two questions, the offsets each partition holds and
//! the records of an offset range; the engine plans, logs and replays the ranges:
//!
//! ```
//! use std::ops::Range;
//! use std::sync::Arc;
//! use lockgate_core::extend::PartitionedLog;
//! use lockgate_core::source::direct::{DirectStreamOptions, PartitionBounds, TopicPartition};
//! use lockgate_core::testing::{collect_output, ManualRun};
//! use lockgate_core::BoxError;
//!
//! /// Two partitions of fixed records.
//! struct Fixed(Vec<Vec<String>>);
//!
//! impl PartitionedLog<String> for Fixed {
//!     fn describe(&self) -> String {
//!         "the fixed log".into()
//!     }
//!     fn bounds(&self) -> Result<Vec<PartitionBounds>, BoxError> {
//!         Ok((0..self.0.len())
//!             .map(|p| PartitionBounds {
//!                 partition: TopicPartition::new("", p as u32),
//!                 earliest: 0,
//!                 latest: self.0[p].len() as i64,
//!             })
//!             .collect())
//!     }
//!     fn read(&self, tp: &TopicPartition, offsets: Range<i64>) -> Result<Vec<String>, BoxError> {
//!         let records = &self.0[tp.partition as usize];
//!         Ok(records[offsets.start as usize..offsets.end as usize].to_vec())
//!     }
//! }
//!
//! let run = ManualRun::new(2)?;
//! let log = Fixed(vec![vec!["a".into(), "b".into()], vec!["c".into()]]);
//! let opts = DirectStreamOptions {
//!     max_records_per_partition: Some(1),
//!     ..DirectStreamOptions::default()
//! };
//! let records = run.ctx.direct_stream("fixed", Arc::new(log), opts);
//! let out = collect_output(&records);
//! run.ctx.start()?;
//! run.run_batches(2)?;
//! run.ctx.stop(false)?;
//! let mut batches = out.lock().unwrap().clone();
//! batches.iter_mut().for_each(|b| b.sort());
//! assert_eq!(batches, vec![vec!["a", "c"], vec!["b"]]);
//! # Ok::<(), lockgate_core::Error>(())
//! ```
//!
//! # A receiver
//!
//! A [`Receiver`] runs on its own thread and stores records until it is stopped; with
//! a checkpoint they reach the write-ahead log before they count as received:
//!
//! ```no_run
//! use std::io::BufRead;
//! use lockgate_core::extend::Receiver;
//! use lockgate_core::{BoxError, ReceiverContext};
//!
//! /// Lines of a child process's output.
//! struct CommandLines(String);
//!
//! impl Receiver<String> for CommandLines {
//!     fn name(&self) -> String {
//!         "command".into()
//!     }
//!     fn receive(&mut self, ctx: &ReceiverContext<String>) -> Result<(), BoxError> {
//!         let child = std::process::Command::new(&self.0)
//!             .stdout(std::process::Stdio::piped())
//!             .spawn()?;
//!         let lines = std::io::BufReader::new(child.stdout.ok_or("no stdout")?).lines();
//!         for line in lines {
//!             if ctx.is_stopped() {
//!                 break;
//!             }
//!             ctx.store(line?);
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let ctx = lockgate_core::StreamingContext::builder().build()?;
//! ctx.receiver_stream(CommandLines("vmstat".into())).print();
//! # Ok::<(), lockgate_core::Error>(())
//! ```

pub use crate::clock::Clock;
pub use crate::codec::Codec;
pub use crate::operator::shuffle::Partitioner;
pub use crate::sink::{Sink, SinkBatch};
pub use crate::source::direct::PartitionedLog;
pub use crate::source::receiver::{Receiver, ReceiverContext};
