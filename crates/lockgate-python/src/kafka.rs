//! Kafka direct streams for `lockgate.streaming.kafka` (PySpark's
//! `KafkaUtils.createDirectStream`): the records of a batch's offset ranges as Python
//! values, and [`OffsetRangesLog`], each batch's offset ranges for the batch's
//! `rdd.offsetRanges()`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use lockgate_core::source::direct::{
    offset_ranges, DirectStreamOptions, StartingOffsets, TopicPartition,
};
use lockgate_core::sync::lock;
use lockgate_core::{Batch, DStream, StreamingContext};
use lockgate_kafka::{kafka_records, KafkaConfig, KafkaRecord};
use pyo3::prelude::*;

use crate::value::Value;

/// How many batches' offset ranges are kept (the batches a job's functions may still
/// be running are far fewer).
const KEPT: usize = 1024;

/// One batch's ranges: `(topic, partition, from, until)`.
type Ranges = Vec<(String, u32, i64, i64)>;

/// The offset ranges of a Kafka stream's recent batches, by batch time.
#[pyclass(module = "lockgate._lockgate", frozen)]
#[derive(Clone, Default)]
pub struct OffsetRangesLog {
    by_time: Arc<Mutex<BTreeMap<i64, Ranges>>>,
}

impl OffsetRangesLog {
    fn record(&self, time_ms: i64, ranges: Ranges) {
        let mut m = lock(&self.by_time);
        m.insert(time_ms, ranges);
        while m.len() > KEPT {
            m.pop_first();
        }
    }
}

#[pymethods]
impl OffsetRangesLog {
    /// The ranges `(topic, partition, from, until)` the batch of `time_ms` read (empty
    /// for a batch not kept).
    fn ranges(&self, time_ms: i64) -> Ranges {
        lock(&self.by_time)
            .get(&time_ms)
            .cloned()
            .unwrap_or_default()
    }
}

/// A record as the job sees it: `(key, value)` as text, or the raw tuple.
fn element(mut r: KafkaRecord, raw: bool, source: &str) -> lockgate_core::Result<Value> {
    let bytes = |b: Option<Vec<u8>>| b.map_or(Value::None, |b| Value::Bytes(Arc::from(b)));
    if raw {
        return Ok(Value::Tuple(Arc::from(vec![
            Value::Str(Arc::from(r.topic)),
            Value::Int(i64::from(r.partition)),
            Value::Int(r.offset),
            bytes(r.key),
            bytes(r.value),
        ])));
    }
    let text = |what: &str, b: Option<Vec<u8>>| match b {
        None => Ok(Value::None),
        Some(b) => String::from_utf8(b)
            .map(|s| Value::Str(Arc::from(s)))
            .map_err(|e| lockgate_core::Error::Source {
                source_name: source.to_string(),
                message: format!(
                    "the {what} of the record at offset {} of partition {} of `{}` is not \
                     UTF-8 ({e}): give createDirectStream a keyDecoder/valueDecoder for \
                     these bytes",
                    r.offset, r.partition, r.topic
                ),
            }),
    };
    let key = text("key", r.key.take())?;
    let value = text("value", r.value.take())?;
    Ok(Value::pair(key, value))
}

/// The stream and its offset-ranges log (see `Graph::kafka_direct_stream`).
#[allow(clippy::too_many_arguments)]
pub fn direct_stream(
    ctx: &StreamingContext,
    brokers: &str,
    topics: Vec<String>,
    properties: Vec<(String, String)>,
    latest: bool,
    from_offsets: Vec<(String, u32, i64)>,
    max_per_partition: Option<u64>,
    group: Option<String>,
    raw: bool,
) -> PyResult<(DStream<Value>, OffsetRangesLog)> {
    let mut config = KafkaConfig::topics(brokers, topics);
    config.properties = properties;
    config.group = group;
    let starting = if !from_offsets.is_empty() {
        StartingOffsets::Explicit(
            from_offsets
                .into_iter()
                .map(|(t, p, o)| (TopicPartition::new(t, p), o))
                .collect(),
        )
    } else if latest {
        StartingOffsets::Latest
    } else {
        StartingOffsets::Earliest
    };
    let opts = DirectStreamOptions {
        max_records_per_partition: max_per_partition,
        starting_offsets: starting,
        ..Default::default()
    };
    let name = ctx.next_source_name("kafka");
    let records = kafka_records(ctx, config, opts)
        .map_err(|e| crate::StreamingError::new_err(e.to_string()))?;
    let log = OffsetRangesLog::default();
    let recording = log.clone();
    let source = name.clone();
    let stream = records
        .transform_in_context(move |batch: Batch<KafkaRecord>, cx| {
            let ranges = offset_ranges(cx, &name)?.unwrap_or_default();
            recording.record(
                cx.time.millis(),
                ranges
                    .into_iter()
                    .map(|(tp, from, until)| (tp.topic, tp.partition, from, until))
                    .collect(),
            );
            Ok(batch)
        })
        .try_map_partitions(move |part| {
            part.into_iter().map(|r| element(r, raw, &source)).collect()
        });
    Ok((stream, log))
}
