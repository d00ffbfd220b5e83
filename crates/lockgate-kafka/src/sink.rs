//! Writing to Kafka: [`KafkaSink`], a [`Sink`] that writes each batch to a topic, exactly
//! once with one Kafka transaction per batch, or at least once with the idempotent
//! producer.
//!
//! **Exactly once**: the sink's producer has a `transactional.id` stable per
//! application and sink (`lockgate-<app>-<sink>` unless given), so the
//! `init_transactions` of a new instance fences a zombie one. Each batch is one
//! transaction: its records, then its batch id committed in the same transaction as the
//! offset of partition 0 of the output topic for the consumer group `lockgate-sink-<app>-
//! <sink>` (offset `id + 1`, metadata `lockgate-batch=<id>`). After a crash the engine
//! asks the sink for that group's committed offset ([`Sink::last_committed`]): a batch
//! that committed is not written again, one that did not is written again in a new
//! transaction, so a `read_committed` consumer sees every record exactly once. An
//! abortable error aborts the transaction and retries the batch; a fenced producer stops
//! the job with an error naming the transactional id. A batch without records opens no
//! transaction (as Kafka Streams commits only tasks that processed records): the group
//! offset then names the last batch that wrote something, and a re-run of a later empty
//! batch writes nothing again, so an idle job costs the transaction coordinator nothing.
//!
//! Every record carries the headers `lockgate-batch` (its batch id) and `lockgate-seq`
//! (its index in the batch's output, partitions in order), so a consumer can also tell
//! a record from its duplicate by itself.
//!
//! One long-lived producer per sink is shared by all workers and batches (librdkafka's
//! producer is thread-safe and batches records itself). In Spark a producer cannot be
//! shipped to the executors, so jobs create one per partition and batch; a Lockgate job
//! runs its workers in one process, so it never needs to.

use lockgate_core::sync::lock;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use lockgate_core::{Batch, BatchId, BoxError, Data, Sink, SinkBatch, Time};

use crate::error::{Error, Result};

/// One record to write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KafkaOutRecord {
    /// The key (`None`: no key; records then spread over partitions).
    pub key: Option<Vec<u8>>,
    /// The value.
    pub value: Vec<u8>,
    /// Headers besides the sink's own (`lockgate-batch`, `lockgate-seq`).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The record's timestamp in epoch milliseconds (`None`: the producer's clock).
    pub timestamp: Option<i64>,
    /// The partition (`None`: librdkafka's default partitioner, by key hash).
    pub partition: Option<i32>,
}

impl KafkaOutRecord {
    /// A record with `value` and no key.
    pub fn value(value: impl Into<Vec<u8>>) -> Self {
        KafkaOutRecord {
            value: value.into(),
            ..Default::default()
        }
    }

    /// A record with `key` and `value`.
    pub fn keyed(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        KafkaOutRecord {
            key: Some(key.into()),
            value: value.into(),
            ..Default::default()
        }
    }
}

/// Where and how a [`KafkaSink`] writes.
#[derive(Clone, Debug)]
pub struct KafkaSinkConfig {
    /// Bootstrap servers, `HOST:PORT[,HOST:PORT...]`.
    pub brokers: String,
    /// The topic written.
    pub topic: String,
    /// One transaction per batch (exactly once; the default) or the idempotent producer
    /// without transactions (at least once).
    pub transactional: bool,
    /// The `transactional.id` (default `lockgate-<app>-<sink name>`, with `-<task>`
    /// after it for a scale-out task).
    pub transactional_id: Option<String>,
    /// The scale-out task writing (e.g. `logs-3`): its own transactional id, its own
    /// group for the last committed batch, and a `lockgate-task` header on every
    /// record. `None` (the default): the job's one instance writes.
    pub task: Option<String>,
    /// Further librdkafka producer properties (security, `linger.ms`, ...); they
    /// override the sink's own settings. Values are never printed.
    pub properties: Vec<(String, String)>,
    /// How long a transaction step or a flush may take.
    pub timeout: Duration,
    /// How long a batch whose transaction failed for an abortable reason is retried.
    pub retry_timeout: Duration,
}

impl KafkaSinkConfig {
    /// Writes `topic` at `brokers`, one transaction per batch.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        KafkaSinkConfig {
            brokers: brokers.into(),
            topic: topic.into(),
            transactional: true,
            transactional_id: None,
            task: None,
            properties: Vec::new(),
            timeout: Duration::from_secs(30),
            retry_timeout: Duration::from_secs(120),
        }
    }

    /// The idempotent producer without transactions (at least once).
    pub fn at_least_once(mut self) -> Self {
        self.transactional = false;
        self
    }
}

/// Remembers the first failed delivery of the records in flight.
#[derive(Default)]
struct Deliveries {
    failed: Mutex<Option<KafkaError>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            let mut failed = lock(&self.failed);
            failed.get_or_insert_with(|| e.clone());
        }
    }
}

/// A sink writing each batch's elements to a Kafka topic (see the module docs).
pub struct KafkaSink<T> {
    name: String,
    app: String,
    config: KafkaSinkConfig,
    transactional_id: String,
    group: String,
    producer: ThreadedProducer<Deliveries>,
    /// A consumer of `group`, for the group metadata each transaction commits the batch
    /// id with, and to read the last one back.
    group_consumer: BaseConsumer,
    to_record: Arc<dyn Fn(&T, Time) -> KafkaOutRecord + Send + Sync>,
}

impl<T: Data> KafkaSink<T> {
    /// A sink named `name` of application `app` (the transactional id and the sink's
    /// consumer group are made from both), turning elements (with their batch time)
    /// into records with `to_record`. Connects and, when transactional, initialises the transactions:
    /// an older instance with the same transactional id is fenced from now on.
    pub fn new(
        name: &str,
        app: &str,
        config: KafkaSinkConfig,
        to_record: impl Fn(&T, Time) -> KafkaOutRecord + Send + Sync + 'static,
    ) -> Result<Self> {
        if config.brokers.trim().is_empty() {
            return Err(Error::Config("no bootstrap servers given".into()));
        }
        if config.topic.trim().is_empty() {
            return Err(Error::Config("no output topic given".into()));
        }
        let task_suffix = config
            .task
            .as_deref()
            .map(|t| format!("-{t}"))
            .unwrap_or_default();
        let transactional_id = config
            .transactional_id
            .clone()
            .unwrap_or_else(|| format!("lockgate-{app}-{name}{task_suffix}"));
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5");
        if config.transactional {
            c.set("transactional.id", &transactional_id)
                .set("transaction.timeout.ms", "60000");
        }
        for (k, v) in &config.properties {
            c.set(k, v);
        }
        let producer: ThreadedProducer<Deliveries> = c
            .create_with_context(Deliveries::default())
            .map_err(|e| config_err(e, "producer"))?;
        let group = format!("lockgate-sink-{app}-{name}{task_suffix}");
        let group_consumer = group_consumer(&config, &group)?;
        let sink = KafkaSink {
            name: name.to_string(),
            app: app.to_string(),
            group,
            transactional_id,
            producer,
            group_consumer,
            to_record: Arc::new(to_record),
            config,
        };
        crate::probe::warn_if_unanswered(
            sink.producer.client(),
            &std::sync::atomic::AtomicBool::new(false),
            &sink.config.brokers,
            &format!("the Kafka sink `{name}`"),
            sink.config.timeout,
            &format!(
                "it keeps retrying for up to {:?} (--sink-retry-timeout, \
                 KafkaSinkConfig::retry_timeout)",
                sink.config.retry_timeout
            ),
        );
        if sink.config.transactional {
            let deadline = Instant::now() + sink.config.retry_timeout;
            sink.resuming("initialising transactions", deadline, || {
                sink.producer.init_transactions(sink.config.timeout)
            })?;
        }
        Ok(sink)
    }

    /// Calls `op` again while it fails with a retriable error (librdkafka's "retry call
    /// to resume": a transaction coordinator that did not answer in time, or is busy
    /// ending the transaction of an instance this one fences), with back-off from 100 ms
    /// to 2 s, until `deadline`.
    fn resuming(
        &self,
        what: &str,
        deadline: Instant,
        mut op: impl FnMut() -> rdkafka::error::KafkaResult<()>,
    ) -> Result<()> {
        let mut wait = Duration::from_millis(100);
        loop {
            let e = match op() {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let retriable = matches!(&e, KafkaError::Transaction(t) if t.is_retriable());
            if retriable && Instant::now() + wait < deadline {
                tracing::warn!(sink = %self.name, error = %e, "{what}: calling again");
                // A busy coordinator may answer at once: do not spin on it.
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(2));
                continue;
            }
            return Err(match self.write_err(what, e) {
                Error::Write {
                    topic,
                    message,
                    cause,
                } if retriable => Error::Write {
                    topic,
                    message: format!(
                        "{message} (still failing when the sink's retry timeout ran out: \
                         the brokers are down or overloaded, or another instance with \
                         transactional.id `{}` took over this sink's transactions)",
                        self.transactional_id
                    ),
                    cause,
                },
                other => other,
            });
        }
    }

    /// The consumer group whose committed offset records the last committed batch.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The producer's transactional id.
    pub fn transactional_id(&self) -> &str {
        &self.transactional_id
    }

    fn write_err(&self, what: &str, e: KafkaError) -> Error {
        let fencing = |code| {
            matches!(
                code,
                RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
            )
        };
        // A fencing found while sending surfaces as a generic fatal error: the client
        // keeps the fatal error's own code.
        let fenced = e.rdkafka_error_code().is_some_and(fencing)
            || self
                .producer
                .client()
                .fatal_error()
                .is_some_and(|(code, _)| fencing(code));
        if fenced {
            Error::Fenced {
                transactional_id: self.transactional_id.clone(),
                cause: Box::new(e),
            }
        } else {
            Error::Write {
                topic: self.config.topic.clone(),
                message: format!("{what}: {e}"),
                cause: Some(Box::new(e)),
            }
        }
    }

    /// Sends every element of `batch`, with the sink's headers — `lockgate-stream` (the
    /// sink's name: the output stream), `lockgate-batch` (the batch id) and
    /// `lockgate-seq` (the record's number within the stream's batch): the three
    /// identify a record, so a reader can drop a duplicate of an at-least-once sink or of
    /// a `read_uncommitted` read; waits until librdkafka
    /// has taken them all (a full queue is waited out).
    fn send_all(&self, batch: &Batch<T>, id: BatchId, time: Time) -> Result<()> {
        let mut starts = Vec::with_capacity(batch.partitions().len());
        let mut n = 0usize;
        for p in batch.partitions() {
            starts.push(n);
            n += p.len();
        }
        let topic = self.config.topic.as_str();
        let batch_id = id.to_string();
        batch
            .partitions()
            .par_iter()
            .zip(starts)
            .try_for_each(|(part, start)| {
                for (i, e) in part.iter().enumerate() {
                    let r = (self.to_record)(e, time);
                    let seq = (start + i).to_string();
                    let mut headers = OwnedHeaders::new_with_capacity(r.headers.len() + 4)
                        .insert(Header {
                            key: "lockgate-stream",
                            value: Some(self.name.as_bytes()),
                        })
                        .insert(Header {
                            key: "lockgate-batch",
                            value: Some(batch_id.as_bytes()),
                        })
                        .insert(Header {
                            key: "lockgate-seq",
                            value: Some(seq.as_bytes()),
                        });
                    if let Some(task) = &self.config.task {
                        headers = headers.insert(Header {
                            key: "lockgate-task",
                            value: Some(task.as_bytes()),
                        });
                    }
                    for (k, v) in &r.headers {
                        headers = headers.insert(Header {
                            key: k,
                            value: Some(v),
                        });
                    }
                    let mut rec: BaseRecord<'_, [u8], [u8]> =
                        BaseRecord::to(topic).payload(&r.value[..]).headers(headers);
                    if let Some(k) = &r.key {
                        rec = rec.key(&k[..]);
                    }
                    if let Some(p) = r.partition {
                        rec = rec.partition(p);
                    }
                    if let Some(ts) = r.timestamp {
                        rec = rec.timestamp(ts);
                    }
                    let mut rec = rec;
                    loop {
                        match self.producer.send(rec) {
                            Ok(()) => break,
                            Err((
                                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                                back,
                            )) => {
                                rec = back;
                                std::thread::sleep(Duration::from_millis(1));
                            }
                            Err((e, _)) => return Err(self.write_err("sending a record", e)),
                        }
                    }
                }
                Ok(())
            })
    }

    /// The delivery failure of a record sent since the last call, if any.
    fn take_delivery_failure(&self) -> Option<KafkaError> {
        let ctx = self.producer.context();
        let mut failed = lock(&ctx.failed);
        failed.take()
    }

    /// One batch in one transaction: begin, send, commit the batch id with it, commit.
    fn transaction(
        &self,
        batch: &Batch<T>,
        id: BatchId,
        time: Time,
        deadline: Instant,
    ) -> Result<()> {
        let t = self.config.timeout;
        self.producer
            .begin_transaction()
            .map_err(|e| self.write_err("beginning a transaction", e))?;
        self.send_all(batch, id, time)?;
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(&self.config.topic, 0, Offset::Offset(id as i64 + 1))
            .map_err(|e| self.write_err("recording the batch id", e))?;
        if let Some(mut elem) = offsets.find_partition(&self.config.topic, 0) {
            elem.set_metadata(format!("lockgate-batch={id};app={}", self.app));
        }
        let group = self
            .group_consumer
            .group_metadata()
            .ok_or_else(|| Error::Write {
                topic: self.config.topic.clone(),
                message: format!("no group metadata for consumer group `{}`", self.group),
                cause: None,
            })?;
        self.resuming(
            "committing the batch id with the transaction",
            deadline,
            || {
                self.producer
                    .send_offsets_to_transaction(&offsets, &group, t)
            },
        )?;
        self.resuming("committing the transaction", deadline, || {
            self.producer.commit_transaction(t)
        })?;
        // A record whose delivery failed fails the commit; clear what it left behind.
        let _ = self.take_delivery_failure();
        Ok(())
    }

    /// One batch, transactional: retried after an abortable error until the retry
    /// timeout.
    fn commit_exactly_once(&self, batch: &Batch<T>, info: &SinkBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + self.config.retry_timeout;
        let mut delay = Duration::from_millis(100);
        loop {
            match self.transaction(batch, info.id, info.time, deadline) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let abortable = matches!(
                        &e,
                        Error::Write { cause: Some(c), .. }
                            if matches!(&**c, KafkaError::Transaction(t) if t.txn_requires_abort())
                    );
                    if !abortable || Instant::now() + delay > deadline {
                        let _ = self.producer.abort_transaction(self.config.timeout);
                        return Err(e);
                    }
                    tracing::warn!(sink = %self.name, batch = info.id, error = %e, "Kafka transaction failed; aborting it and writing the batch again");
                    info.counters.retrying(&e.to_string());
                    self.producer
                        .abort_transaction(self.config.timeout)
                        .map_err(|e| self.write_err("aborting a transaction", e))?;
                    let _ = self.take_delivery_failure();
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One batch, at least once: send, flush, check every delivery.
    fn commit_at_least_once(&self, batch: &Batch<T>, info: &SinkBatch) -> Result<()> {
        self.send_all(batch, info.id, info.time)?;
        self.producer
            .flush(self.config.timeout)
            .map_err(|e| self.write_err("flushing", e))?;
        match self.take_delivery_failure() {
            Some(e) => Err(self.write_err("delivering a record", e)),
            None => Ok(()),
        }
    }

    /// The last batch this sink committed, from its group's committed offset.
    pub fn last_committed_batch(&self) -> Result<Option<BatchId>> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.config.topic, 0);
        let committed = self
            .group_consumer
            .committed_offsets(tpl, self.config.timeout)
            .map_err(|e| Error::Connect {
                brokers: self.config.brokers.clone(),
                message: format!(
                    "reading the committed offset of group `{}`: {e}",
                    self.group
                ),
                cause: Some(Box::new(e)),
            })?;
        let Some(elem) = committed.find_partition(&self.config.topic, 0) else {
            return Ok(None);
        };
        match elem.offset() {
            Offset::Offset(o) if o > 0 => {
                let id = u64::try_from(o - 1).unwrap_or(0);
                let meta = elem.metadata();
                if !meta.is_empty() && !meta.starts_with(&format!("lockgate-batch={id};")) {
                    tracing::warn!(group = %self.group, metadata = %meta, offset = o, "the sink's group offset has unexpected metadata");
                }
                Ok(Some(id))
            }
            _ => Ok(None),
        }
    }
}

/// A consumer of the sink's `group` (its group metadata; reading its offsets).
fn group_consumer(config: &KafkaSinkConfig, group: &str) -> Result<BaseConsumer> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false");
    for (k, v) in &config.properties {
        // Security settings apply to the consumer too; producer-only ones do not.
        if k.starts_with("security.") || k.starts_with("sasl.") || k.starts_with("ssl.") {
            c.set(k, v);
        }
    }
    c.create().map_err(|e| config_err(e, "consumer"))
}

fn config_err(e: KafkaError, what: &str) -> Error {
    Error::Config(match e {
        // librdkafka's message ends with the value, which may be a secret.
        KafkaError::ClientConfig(_, desc, key, _) => format!("setting `{key}`: {desc}"),
        other => format!("cannot create a {what}: {other}"),
    })
}

impl<T: Data> Sink<T> for KafkaSink<T> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn commit(&self, batch: &Batch<T>, info: &SinkBatch) -> std::result::Result<(), BoxError> {
        let r = if self.config.transactional {
            self.commit_exactly_once(batch, info)
        } else {
            self.commit_at_least_once(batch, info)
        };
        r.map_err(BoxError::from)
    }

    /// The batch id committed with the sink's last transaction (at least once: none).
    fn last_committed(&self, _app: &str) -> std::result::Result<Option<BatchId>, BoxError> {
        if !self.config.transactional {
            return Ok(None);
        }
        Ok(self.last_committed_batch()?)
    }
}
