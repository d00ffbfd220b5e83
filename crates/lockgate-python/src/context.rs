//! [`Context`]: a streaming context for Python, built with its whole graph at once
//! (the Python `StreamingContext` records sources and operators as they are declared
//! and builds them at `start`, after `checkpoint` may have been called), recovered
//! from its checkpoint when there is one; and [`Graph`], the handle the graph is
//! built through.

use std::sync::Arc;
use std::time::Duration;

use lockgate_core::{InputQueue, StreamingContext, StreamingContextBuilder};
use pyo3::prelude::*;

use crate::call::{Failure, Failures};
use crate::stream::Stream;
use crate::value::Value;
use crate::Error;

/// A running (or ready to run) streaming context.
#[pyclass(module = "lockgate._lockgate", frozen)]
pub struct Context {
    ctx: StreamingContext,
}

/// The sources of a context being built.
#[pyclass(module = "lockgate._lockgate", frozen)]
pub struct Graph {
    ctx: StreamingContext,
    failures: Failures,
}

impl Graph {
    fn stream(&self, s: lockgate_core::DStream<Value>) -> Stream {
        Stream::new(s, &self.failures, self.ctx.parallelism())
    }
}

#[pymethods]
impl Graph {
    /// A stream of the batches given, one per batch interval (`one_at_a_time`) or all
    /// in the first; then `default` (or nothing) in each batch.
    #[pyo3(signature = (batches, one_at_a_time = true, default = None))]
    fn queue_stream(
        &self,
        batches: &Bound<'_, PyAny>,
        one_at_a_time: bool,
        default: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Stream> {
        let queue = InputQueue::new();
        for b in batches.try_iter()? {
            queue.push(values(&b?)?);
        }
        let default = default.map(values).transpose()?;
        Ok(self.stream(self.ctx.queue_stream(queue, one_at_a_time, default)))
    }

    /// The lines of the files that appear in `dir` (each file read once).
    fn text_file_stream(&self, dir: &str) -> Stream {
        self.stream(
            self.ctx
                .text_file_stream(dir)
                .map(|l| Value::Str(Arc::from(l))),
        )
    }

    /// The text lines a TCP server at `host:port` sends (written ahead to the
    /// checkpoint's log before they are processed when the context checkpoints).
    fn socket_text_stream(&self, host: &str, port: u16) -> Stream {
        self.stream(
            self.ctx
                .socket_text_stream(host, port)
                .stream()
                .map(|l| Value::Str(Arc::from(l))),
        )
    }

    /// A Kafka direct stream of `topics` at `brokers` (`properties`: librdkafka consumer
    /// settings), and the log of each batch's offset ranges. Partitions without a
    /// checkpointed position start at `from_offsets` (`(topic, partition, offset)`),
    /// else at the earliest or latest record (`latest`). Elements: `(key, value)` as
    /// text (UTF-8; other bytes fail the batch naming the record), or with `raw`
    /// `(topic, partition, offset, key, value)` with key and value as bytes.
    #[pyo3(signature = (brokers, topics, properties, latest, from_offsets, max_per_partition, group, raw))]
    #[allow(clippy::too_many_arguments)]
    fn kafka_direct_stream(
        &self,
        brokers: &str,
        topics: Vec<String>,
        properties: Vec<(String, String)>,
        latest: bool,
        from_offsets: Vec<(String, u32, i64)>,
        max_per_partition: Option<u64>,
        group: Option<String>,
        raw: bool,
    ) -> PyResult<(Stream, crate::kafka::OffsetRangesLog)> {
        crate::kafka::direct_stream(
            &self.ctx,
            brokers,
            topics,
            properties,
            latest,
            from_offsets,
            max_per_partition,
            group,
            raw,
        )
        .map(|(s, log)| (self.stream(s), log))
    }

    /// The SQL query `query` over the streams of `tables` (`(name, stream, schema)`, the
    /// schema as `name TYPE, ...`), its state named after `name`: rows in update mode
    /// (changed groups every batch) or `append` mode (a window once, when the watermark
    /// `(column, delay)` passes its end).
    #[pyo3(signature = (query, name, tables, append = false, watermark = None))]
    fn sql(
        &self,
        query: &str,
        name: &str,
        tables: Vec<(String, PyRef<'_, Stream>, String)>,
        append: bool,
        watermark: Option<(String, String)>,
    ) -> PyResult<crate::sql::SqlQuery> {
        crate::sql::stream_query(query, name, tables, append, watermark)
    }

    /// Writes every batch of `stream` to `table` (`columns`: `NAME TYPE, ...`) of the
    /// database at `url` (`sqlite:PATH` or `postgres://...`) in one transaction with
    /// the batch id: upserted by `key`, or inserted without one. `name` is the sink's
    /// (its rows in `lockgate_offsets`).
    fn save_to_database(
        &self,
        stream: PyRef<'_, Stream>,
        url: &str,
        table: &str,
        columns: &str,
        key: Vec<String>,
        name: &str,
    ) -> PyResult<()> {
        crate::sinks::to_database(&stream.s, url, table, columns, key, name)
    }

    /// Writes every batch of `stream` to the Kafka `topic` in one transaction per batch
    /// (transactional id `lockgate-<app>-<name>`); `properties`: librdkafka producer
    /// settings.
    fn save_to_kafka(
        &self,
        stream: PyRef<'_, Stream>,
        brokers: &str,
        topic: &str,
        properties: Vec<(String, String)>,
        name: &str,
    ) -> PyResult<()> {
        crate::sinks::to_kafka(&self.ctx, &stream.s, brokers, topic, properties, name)
    }

    /// The elements of all `streams` (of one slide).
    fn union(&self, streams: Vec<PyRef<'_, Stream>>) -> PyResult<Stream> {
        let streams: Vec<_> = streams.iter().map(|s| s.s.clone()).collect();
        if streams.is_empty() {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "union of no streams",
            ));
        }
        Ok(self.stream(self.ctx.union(&streams)))
    }
}

fn values(batch: &Bound<'_, PyAny>) -> PyResult<Vec<Value>> {
    batch
        .try_iter()?
        .map(|x| Value::from_py(&x?))
        .collect::<PyResult<Vec<_>>>()
}

fn engine(e: lockgate_core::Error) -> PyErr {
    Error::Engine(e).into()
}

#[pymethods]
impl Context {
    /// Builds the context: `build(graph)` declares the sources, operators and outputs.
    /// With `checkpoint`, the context checkpoints there and, when the location holds a
    /// checkpoint, recovers from it: state restored, unfinished batches re-run.
    #[new]
    #[pyo3(signature = (app_name, batch_ms, build, parallelism = None, checkpoint = None, remember_ms = None))]
    fn new(
        py: Python<'_>,
        app_name: &str,
        batch_ms: i64,
        build: &Bound<'_, PyAny>,
        parallelism: Option<usize>,
        checkpoint: Option<String>,
        remember_ms: Option<i64>,
    ) -> PyResult<Context> {
        crate::logging::init();
        let failures = Failures::default();
        let mut raised: Option<PyErr> = None;
        let mut make = |b: StreamingContextBuilder| -> lockgate_core::Result<StreamingContext> {
            let mut b = b
                .app_name(app_name)
                .batch_interval(Duration::from_millis(batch_ms.max(1) as u64));
            if let Some(n) = parallelism {
                b = b.parallelism(n.max(1));
            }
            let ctx = b.build()?;
            if let Some(r) = remember_ms {
                ctx.remember(Duration::from_millis(r.max(0) as u64));
            }
            let graph = Graph {
                ctx: ctx.clone(),
                failures: failures.clone(),
            };
            if let Err(e) = build.call1((graph,)) {
                let failure = Failure::from_py(py, "the graph's setup", &e);
                raised = Some(e);
                return Err(failure.into_engine());
            }
            Ok(ctx)
        };
        let built = match &checkpoint {
            Some(location) => StreamingContext::get_or_create(location.as_str(), make),
            None => make(StreamingContext::builder()),
        };
        match built {
            Ok(ctx) => Ok(Context { ctx }),
            Err(e) => Err(raised.unwrap_or_else(|| engine(e))),
        }
    }

    /// Starts the batches (recovery's re-runs first); the GIL is released meanwhile.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.ctx.start()).map_err(engine)
    }

    /// Waits until the context stops (or `timeout_ms` passed: then `False`). Raises the
    /// error that stopped it, with the Python traceback of a failed function. Ctrl-C
    /// stops the context gracefully (the batch in flight completes), then raises
    /// `KeyboardInterrupt`.
    #[pyo3(signature = (timeout_ms = None))]
    fn await_termination(&self, py: Python<'_>, timeout_ms: Option<i64>) -> PyResult<bool> {
        let until =
            timeout_ms.map(|t| std::time::Instant::now() + Duration::from_millis(t.max(0) as u64));
        loop {
            let step = Duration::from_millis(200);
            let step = until.map_or(step, |u| {
                step.min(u.saturating_duration_since(std::time::Instant::now()))
            });
            let done = py
                .detach(|| self.ctx.await_termination_or_timeout(step))
                .map_err(engine)?;
            if done {
                return Ok(true);
            }
            if let Err(interrupt) = py.check_signals() {
                tracing::warn!("interrupted: stopping gracefully (the batch in flight completes)");
                let _ = py.detach(|| self.ctx.stop(true));
                return Err(interrupt);
            }
            if until.is_some_and(|u| std::time::Instant::now() >= u) {
                return Ok(false);
            }
        }
    }

    /// Stops the context: `graceful` lets the batches already planned complete.
    fn stop(&self, py: Python<'_>, graceful: bool) -> PyResult<()> {
        py.detach(|| self.ctx.stop(graceful)).map_err(engine)
    }

    /// The context's parallelism.
    #[getter]
    fn parallelism(&self) -> usize {
        self.ctx.parallelism()
    }
}
