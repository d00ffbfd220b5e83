//! Sinks: outputs that commit a batch idempotently by batch id, so a batch re-run after a
//! crash does not change what they hold.
//!
//! A sink receives the batch with its id, time and the input descriptors it was planned
//! with. File sinks write a deterministic per-batch path atomically (a re-run overwrites
//! with the same content); transactional sinks write the results and a row
//! `(app, sink, batch id, descriptors)` in one transaction and skip a batch already
//! committed (exactly-once), or write it again (at-least-once).

use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;

use rayon::prelude::*;

use crate::batch::{Batch, Data};
use crate::clock::Time;
use crate::dstream::output::write_batch_dir;
use crate::dstream::DStream;
use crate::error::{BoxError, Error};
use crate::metrics::SinkCounters;
use crate::protocol::Order;
use crate::traits::CommittedBatches;
pub use crate::types::SinkOffsets;
use crate::types::{BatchId, DeliveryMode, SourcePlan};

/// What a sink knows about the batch it commits.
#[derive(Clone, Debug)]
pub struct SinkBatch {
    /// The application's name.
    pub app: String,
    /// The batch id.
    pub id: BatchId,
    /// The batch time.
    pub time: Time,
    /// What each source read for this batch (its logged plan).
    pub inputs: Arc<Vec<SourcePlan>>,
    /// The context's delivery guarantee: an exactly-once sink skips batches it already
    /// committed, an at-least-once sink may write them again.
    pub delivery: DeliveryMode,
    /// Where the sink reports the commits it retries (logs, `/metrics`, the UI).
    pub counters: Arc<SinkCounters>,
}

impl SinkBatch {
    /// True when the sink must leave a batch it already committed as it is (exactly
    /// once); otherwise a re-run batch is written again (at least once). The protocol
    /// decides (`protocol::Order`).
    pub fn skips_committed(&self) -> bool {
        Order::of(self.delivery).sinks_skip_committed
    }
}

/// An output that commits whole batches, each atomically with its batch id.
///
/// The protocol hands a sink every batch once it has run ([`commit`](Self::commit));
/// at start it asks which batch the sink committed last
/// ([`last_committed`](Self::last_committed)) and, in exactly-once mode, does not hand
/// it the batches up to that one again when recovery re-runs them. A sink that keeps
/// its own record (a transactional database or Kafka sink) reports it; an idempotent
/// sink (files that a re-run replaces) need not.
pub trait Sink<T>: Send + Sync + 'static {
    /// A stable name (recorded with committed batches).
    fn name(&self) -> String;

    /// Writes `batch` and commits it atomically with its id (`info.id`): one
    /// transaction that also records the id, or an atomic rename. Committing a batch
    /// id that was already committed must leave the sink as if it had been committed
    /// once when [`SinkBatch::skips_committed`] says so.
    fn commit(&self, batch: &Batch<T>, info: &SinkBatch) -> Result<(), BoxError>;

    /// The last batch id this sink committed for application `app`, as the sink
    /// records it (`None`: nothing yet, or the sink keeps no record). The default keeps
    /// none.
    fn last_committed(&self, _app: &str) -> Result<Option<BatchId>, BoxError> {
        Ok(None)
    }
}

/// The protocol's view of a registered sink.
struct Registered<S, T>(Arc<S>, PhantomData<fn(T)>);

impl<T: 'static, S: Sink<T>> CommittedBatches for Registered<S, T> {
    fn name(&self) -> String {
        self.0.name()
    }

    fn last_committed(&self, app: &str) -> Result<Option<BatchId>, BoxError> {
        self.0.last_committed(app)
    }
}

impl<T: Data> DStream<T> {
    /// Writes every batch to `sink` (an output operation).
    pub fn write_to(&self, sink: impl Sink<T>) {
        let sink = Arc::new(sink);
        let graph = self.graph.clone();
        let sink_name = sink.name();
        let name = format!("sink({sink_name})");
        let op_name = name.clone();
        let counters = graph.metrics.sink(&sink_name);
        graph.add_sink(Arc::new(Registered(sink.clone(), PhantomData)));
        let app = graph.app_name();
        self.add_output_of_sink(name, Some(counters.clone()), move |batch, cx| {
            if cx.sink_holds(&sink_name) {
                tracing::info!(
                    sink = %sink_name,
                    batch_id = cx.id,
                    "the sink already committed this re-run batch; not written again"
                );
                return Ok(());
            }
            let info = SinkBatch {
                app: app.clone(),
                id: cx.id,
                time: cx.time,
                inputs: cx.plan.clone(),
                delivery: cx.delivery,
                counters: counters.clone(),
            };
            sink.commit(&batch, &info).map_err(|source| Error::Output {
                operator: op_name.clone(),
                time: cx.time,
                source,
            })
        });
    }
}

/// Writes every batch as JSON lines to `DIR/batch=<batch id>/part-<n>.jsonl`, one object
/// per element, one file per partition, the batch directory committed atomically (a
/// re-run batch replaces it with the same content: idempotent, so it reports no
/// committed batch). The CLI's `--output` writes each output stream through one.
pub struct JsonLinesSink<T> {
    dir: PathBuf,
    #[allow(clippy::type_complexity)]
    to_json: Box<dyn Fn(&T, Time) -> serde_json::Value + Send + Sync>,
}

impl<T> JsonLinesSink<T> {
    /// A sink writing under `dir`, turning each element (with its batch time) into a
    /// JSON value.
    pub fn new(
        dir: impl Into<PathBuf>,
        to_json: impl Fn(&T, Time) -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        JsonLinesSink {
            dir: dir.into(),
            to_json: Box::new(to_json),
        }
    }

    /// The directory of batch `id`.
    pub fn batch_dir(&self, id: BatchId) -> PathBuf {
        self.dir.join(format!("batch={id}"))
    }
}

impl<T: Data> Sink<T> for JsonLinesSink<T> {
    fn name(&self) -> String {
        format!("json:{}", self.dir.display())
    }

    fn commit(&self, batch: &Batch<T>, info: &SinkBatch) -> Result<(), BoxError> {
        let files = batch.partitions().par_iter().enumerate().map(|(i, part)| {
            let mut buf = Vec::with_capacity(part.len() * 64);
            for e in part.iter() {
                // Serializing a Value into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut buf, &(self.to_json)(e, info.time));
                buf.push(b'\n');
            }
            (format!("part-{i}.jsonl"), buf)
        });
        write_batch_dir(&self.batch_dir(info.id), files).map_err(BoxError::from)
    }
}

/// Reads back what a [`JsonLinesSink`] wrote to `dir`: each committed batch's lines (its
/// `batch=<id>/part-<n>.jsonl` files, sorted), by batch id. A batch directory still
/// being written (its temporary name starts with `.`) is skipped; a `batch=` directory
/// without its `_SUCCESS` marker, or holding other files, is an error naming it. A
/// missing `dir` holds no batch.
///
/// ```
/// # use lockgate_core::sink::read_json_lines;
/// let dir = tempfile::tempdir()?;
/// std::fs::create_dir_all(dir.path().join("batch=3"))?;
/// std::fs::write(dir.path().join("batch=3/part-0.jsonl"), "{\"n\":2}\n{\"n\":1}\n")?;
/// std::fs::write(dir.path().join("batch=3/_SUCCESS"), "")?;
/// let batches = read_json_lines(dir.path())?;
/// assert_eq!(batches[&3], [r#"{"n":1}"#, r#"{"n":2}"#]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_json_lines(
    dir: &std::path::Path,
) -> crate::Result<std::collections::BTreeMap<BatchId, Vec<String>>> {
    use std::io::{Error as IoError, ErrorKind};
    let mut out = std::collections::BTreeMap::new();
    if !dir.exists() {
        return Ok(out);
    }
    let entries = |d: &std::path::Path| -> crate::Result<Vec<std::path::PathBuf>> {
        let mut paths = std::fs::read_dir(d)
            .map_err(|e| Error::io("list output directory", d, e))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::io("list output directory", d, e))?;
        paths.sort();
        Ok(paths)
    };
    let bad = |path: &std::path::Path, why: &str| {
        Error::io(
            "read JSON-lines output",
            path,
            IoError::new(ErrorKind::InvalidData, why.to_string()),
        )
    };
    for batch in entries(dir)? {
        let name = batch
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.') {
            continue; // a batch being written (renamed into place when complete)
        }
        let id: BatchId = name
            .strip_prefix("batch=")
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| bad(&batch, "not a batch=<id> directory"))?;
        if !batch.join("_SUCCESS").exists() {
            return Err(bad(&batch, "no _SUCCESS marker: the batch is incomplete"));
        }
        let mut lines = Vec::new();
        for part in entries(&batch)? {
            let file = part
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if file == "_SUCCESS" {
                continue;
            }
            if !(file.starts_with("part-") && file.ends_with(".jsonl")) {
                return Err(bad(&part, "not a part-<n>.jsonl file"));
            }
            let text = std::fs::read_to_string(&part)
                .map_err(|e| Error::io("read JSON-lines output", &part, e))?;
            lines.extend(text.lines().map(str::to_string));
        }
        lines.sort();
        out.insert(id, lines);
    }
    Ok(out)
}
