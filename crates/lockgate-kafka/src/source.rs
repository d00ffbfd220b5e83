//! The Kafka direct source: topics as a [`PartitionedLog`] for the engine's
//! [`direct_stream`](StreamingContext::direct_stream).
//!
//! The source reads one topic, a list of topics, or every topic whose name matches a
//! pattern ([`Subscription`]). Bounds come from a metadata query (the topics and their
//! partitions, asked anew for each batch: partitions and matching topics created while
//! the job runs are read from their earliest offset on) and a watermark query per
//! partition (earliest and latest offsets). One consumer reads every partition (one
//! connection and one fetch session per broker, as a plain consumer has), each partition
//! split into its own queue so the workers read theirs in parallel: a planned range
//! `[from, until)` is read from the partition's queue, sought to `from` when it is not
//! there already, until the record before `until`; consecutive batches continue where
//! the last one ended without seeking. No consumer group is joined and no offsets are committed to
//! Kafka: the positions are in the checkpoint, so correctness never depends on the
//! broker's group state.

use lockgate_core::sync::lock;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use lockgate_core::source::direct::{
    DirectStreamOptions, PartitionBounds, PartitionedLog, TopicPartition,
};
use lockgate_core::{BoxError, DStream, Data, StreamingContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::error::{Error, Result};

/// The topics a source reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subscription {
    /// These topics (Spark's `subscribe`): each must exist.
    Topics(Vec<String>),
    /// Every topic whose whole name matches this regular expression (Spark's
    /// `subscribePattern`), internal topics (`__consumer_offsets`, ...) excepted; none
    /// need exist at start.
    Pattern(String),
}

impl Subscription {
    /// The topics as a list for messages: "`a`", "`a`, `b`" or "matching `re`".
    fn label(&self) -> String {
        match self {
            Subscription::Topics(t) => t
                .iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(", "),
            Subscription::Pattern(p) => format!("matching `{p}`"),
        }
    }
}

/// Where and what to read.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// Bootstrap servers, `HOST:PORT[,HOST:PORT...]`.
    pub brokers: String,
    /// The topics.
    pub subscription: Subscription,
    /// Further librdkafka consumer properties (security, `isolation.level`, ...); they
    /// override the source's own settings.
    pub properties: Vec<(String, String)>,
    /// How long a query to the brokers or a partition read may wait.
    pub timeout: Duration,
    /// A consumer group to commit each completed batch's offsets to, for lag monitors
    /// (`kafka-consumer-groups --describe`); asynchronously, and a failed commit is
    /// logged, never fatal. Positions live in the checkpoint: correctness never depends
    /// on these offsets. `None` (the default): no commits.
    pub group: Option<String>,
    /// Only these partitions of the topics (a scale-out task reads one partition);
    /// `None` (the default): every partition.
    pub partitions: Option<Vec<u32>>,
}

impl KafkaConfig {
    /// Reads `topic` from the bootstrap servers `brokers`, with a 30 s timeout.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self::for_subscription(brokers, Subscription::Topics(vec![topic.into()]))
    }

    /// Reads several topics as one stream.
    pub fn topics<S: Into<String>>(
        brokers: impl Into<String>,
        topics: impl IntoIterator<Item = S>,
    ) -> Self {
        Self::for_subscription(
            brokers,
            Subscription::Topics(topics.into_iter().map(Into::into).collect()),
        )
    }

    /// Reads every topic whose name matches `regex`, including those created later.
    pub fn pattern(brokers: impl Into<String>, regex: impl Into<String>) -> Self {
        Self::for_subscription(brokers, Subscription::Pattern(regex.into()))
    }

    /// Reads `subscription` from the bootstrap servers `brokers`, with a 30 s timeout.
    pub fn for_subscription(brokers: impl Into<String>, subscription: Subscription) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            subscription,
            properties: Vec::new(),
            timeout: Duration::from_secs(30),
            group: None,
            partitions: None,
        }
    }

    /// The consumer settings: no group membership, no auto commit, end-of-partition
    /// events, and an error (never a silent jump) when an offset is out of range.
    /// `fetch.wait.max.ms` stays librdkafka's (500 ms): with a shorter wait some brokers
    /// (tansu) answer each fetch with less, and reading slows down as offsets grow.
    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("group.id", "lockgate-direct")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "error");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

/// One record of a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaRecord {
    /// Its topic.
    pub topic: String,
    /// Its partition.
    pub partition: u32,
    /// Its offset in the partition.
    pub offset: i64,
    /// Its key, if any.
    pub key: Option<Vec<u8>>,
    /// Its value, if any.
    pub value: Option<Vec<u8>>,
    /// Its timestamp (create or log-append time), epoch milliseconds.
    pub timestamp_ms: Option<i64>,
    /// Its headers, in order (a header without a value has an empty one).
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Makes a stream element of a message.
pub type Decode<T> = fn(&BorrowedMessage<'_>) -> T;

/// A partition's queue of the shared consumer and where it will deliver next (`None`:
/// seek first).
struct PartitionReader {
    queue: rdkafka::consumer::base_consumer::PartitionQueue<ReaderContext>,
    next: Option<i64>,
}

/// The readers' client context: librdkafka's errors logged as warnings, except the end
/// of a partition, which reading expects (after a transaction's last records it comes
/// as a client-wide event) and is not worth a line.
struct ReaderContext;

impl rdkafka::ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::PartitionEOF)
        ) || matches!(error, KafkaError::PartitionEOF(_))
        {
            tracing::debug!("librdkafka: {error}: {reason}");
        } else {
            tracing::warn!("librdkafka: {error}: {reason}");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ReaderContext {}

/// Kafka topics as a [`PartitionedLog`].
pub struct KafkaLog<T> {
    config: KafkaConfig,
    /// A [`Subscription::Pattern`], compiled (anchored: the whole name must match).
    pattern: Option<regex::Regex>,
    /// For metadata and watermark queries.
    meta: BaseConsumer<ReaderContext>,
    /// Reads every partition (made when first needed), each through its reader's queue.
    consumer: Mutex<Option<Arc<BaseConsumer<ReaderContext>>>>,
    readers: Mutex<HashMap<TopicPartition, Arc<Mutex<PartitionReader>>>>,
    decode: Decode<T>,
    /// Commits completed positions to `config.group` (made when first needed),
    /// asynchronously.
    committer: Mutex<Option<BaseConsumer<CommitWatch>>>,
    /// How long the engine retries an unanswered broker (for messages).
    retry_timeout: Option<Duration>,
    /// A broker answered the last metadata query.
    answered: AtomicBool,
    /// No broker answered the quick look, and the log said so (until one answers).
    unanswered_said: AtomicBool,
}

/// Counts the asynchronous group commits still on their way, and logs failed ones.
#[derive(Default)]
struct CommitWatch {
    pending: std::sync::atomic::AtomicU64,
}

impl rdkafka::ClientContext for CommitWatch {}

impl rdkafka::consumer::ConsumerContext for CommitWatch {
    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::warn!(error = %e, "committing offsets for lag monitors failed (correctness does not depend on them)");
        }
        self.pending
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// How long dropping a log waits for its last group commits.
const COMMIT_WAIT: Duration = Duration::from_secs(2);

impl<T> Drop for KafkaLog<T> {
    /// The last asynchronous commits may still be on their way: wait for them, a
    /// little (a broker that does not answer must not hold up the process's exit).
    fn drop(&mut self) {
        let committer = self
            .committer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(consumer) = committer.take() {
            let deadline = Instant::now() + COMMIT_WAIT;
            while consumer
                .context()
                .pending
                .load(std::sync::atomic::Ordering::Acquire)
                > 0
                && Instant::now() < deadline
            {
                let _ = consumer.poll(Duration::from_millis(50));
            }
        }
    }
}

impl<T: Data> KafkaLog<T> {
    /// A log over `config.subscription`, each message made an element by `decode`.
    /// Checks the settings; the brokers are first asked when the stream starts.
    pub fn new(config: KafkaConfig, decode: Decode<T>) -> Result<Self> {
        if config.brokers.trim().is_empty() {
            return Err(Error::Config("no bootstrap servers given".into()));
        }
        let pattern = match &config.subscription {
            Subscription::Topics(topics) => {
                if topics.is_empty() || topics.iter().any(|t| t.trim().is_empty()) {
                    return Err(Error::Config("no topic given (or an empty name)".into()));
                }
                None
            }
            Subscription::Pattern(p) => {
                Some(regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                    Error::Config(format!(
                        "the topic pattern `{p}` is not a regular expression: {e}"
                    ))
                })?)
            }
        };
        let meta = Self::consumer(&config)?;
        Ok(KafkaLog {
            config,
            pattern,
            meta,
            consumer: Mutex::new(None),
            readers: Mutex::new(HashMap::new()),
            decode,
            committer: Mutex::new(None),
            retry_timeout: None,
            answered: AtomicBool::new(false),
            unanswered_said: AtomicBool::new(false),
        })
    }

    fn consumer(config: &KafkaConfig) -> Result<BaseConsumer<ReaderContext>> {
        config
            .client_config()
            .create_with_context(ReaderContext)
            .map_err(|e| {
                Error::Config(match e {
                    // librdkafka's message ends with the value, which may be a secret.
                    KafkaError::ClientConfig(_, desc, key, _) => {
                        format!("setting `{key}`: {desc}")
                    }
                    other => format!("cannot create a consumer: {other}"),
                })
            })
    }

    fn connect_err(&self, message: String, cause: KafkaError) -> Error {
        Error::Connect {
            brokers: self.config.brokers.clone(),
            message,
            cause: Some(Box::new(cause)),
        }
    }

    fn topic_err(&self, topic: &str, message: String) -> Error {
        Error::Topic {
            topic: topic.to_string(),
            brokers: self.config.brokers.clone(),
            message,
        }
    }

    fn read_err(
        &self,
        partition: &TopicPartition,
        message: String,
        cause: Option<KafkaError>,
    ) -> Error {
        Error::Read {
            topic: partition.topic.clone(),
            partition: partition.partition,
            message,
            cause: cause.map(Box::new),
        }
    }

    /// The partitions of every topic read and their offsets now.
    pub fn partition_bounds(&self) -> Result<Vec<PartitionBounds>> {
        // One topic: ask for it alone; several or a pattern: for all.
        let asked = match &self.config.subscription {
            Subscription::Topics(t) if t.len() == 1 => Some(t[0].as_str()),
            _ => None,
        };
        // A quick look first, until a broker answered and after a failure (once per
        // outage).
        if !self.answered.load(Ordering::Acquire) {
            crate::probe::warn_if_unanswered(
                self.meta.client(),
                &self.unanswered_said,
                &self.config.brokers,
                &format!(
                    "the Kafka source reading {}",
                    self.config.subscription.label()
                ),
                self.config.timeout,
                &match self.retry_timeout {
                    Some(d) => format!(
                        "it keeps retrying for up to {d:?} (--source-retry-timeout, \
                     DirectStreamOptions::retry_timeout)"
                    ),
                    None => "it keeps retrying".to_string(),
                },
            );
        }
        let md = self
            .meta
            .fetch_metadata(asked, self.config.timeout)
            .inspect(|_| {
                self.answered.store(true, Ordering::Release);
                if self.unanswered_said.swap(false, Ordering::AcqRel) {
                    tracing::info!(
                        "a Kafka broker at {} answers: reading {}",
                        self.config.brokers,
                        self.config.subscription.label()
                    );
                }
            })
            .map_err(|e| {
                self.answered.store(false, Ordering::Release);
                self.connect_err(
                    format!(
                        "no metadata within {:?} ({e}): is a broker listening there?",
                        self.config.timeout
                    ),
                    e,
                )
            })?;
        let mut topics = Vec::new();
        if let Some(pattern) = &self.pattern {
            // Topics being created (no leader yet, ...) are read once they are whole.
            topics.extend(md.topics().iter().filter(|t| {
                !t.name().starts_with("__")
                    && pattern.is_match(t.name())
                    && t.error().is_none()
                    && !t.partitions().is_empty()
            }));
        } else if let Subscription::Topics(names) = &self.config.subscription {
            for name in names {
                let t = md
                    .topics()
                    .iter()
                    .find(|t| t.name() == name)
                    .ok_or_else(|| {
                        self.topic_err(
                            name,
                            "the topic does not exist: create it, or check the name".into(),
                        )
                    })?;
                if let Some(code) = t.error() {
                    let code = RDKafkaErrorCode::from(code);
                    return Err(self.topic_err(
                        name,
                        if code == RDKafkaErrorCode::UnknownTopicOrPartition {
                            "the topic does not exist: create it, or check the name".into()
                        } else {
                            code.to_string()
                        },
                    ));
                }
                if t.partitions().is_empty() {
                    return Err(
                        self.topic_err(name, "the topic has no partitions (does it exist?)".into())
                    );
                }
                topics.push(t);
            }
        }
        let mut bounds = Vec::new();
        for t in topics {
            for p in t.partitions() {
                let wanted = match &self.config.partitions {
                    Some(only) => u32::try_from(p.id()).is_ok_and(|id| only.contains(&id)),
                    None => true,
                };
                if !wanted {
                    continue;
                }
                let partition = TopicPartition::new(
                    t.name(),
                    u32::try_from(p.id()).map_err(|_| {
                        self.topic_err(t.name(), format!("partition id {}", p.id()))
                    })?,
                );
                let (earliest, latest) = self
                    .meta
                    .fetch_watermarks(t.name(), p.id(), self.config.timeout)
                    .map_err(|e| self.connect_err(format!("offsets of {partition}: {e}"), e))?;
                bounds.push(PartitionBounds {
                    partition,
                    earliest,
                    latest,
                });
            }
        }
        Ok(bounds)
    }

    /// The shared consumer and `partition`'s reader; a partition read for the first time
    /// gets its queue and joins the consumer's assignment at `from`.
    fn reader(
        &self,
        partition: &TopicPartition,
        id: i32,
        from: i64,
    ) -> Result<(
        Arc<BaseConsumer<ReaderContext>>,
        Arc<Mutex<PartitionReader>>,
    )> {
        let consumer = {
            let mut c = lock(&self.consumer);
            match &*c {
                Some(c) => c.clone(),
                None => c.insert(Arc::new(Self::consumer(&self.config)?)).clone(),
            }
        };
        let mut readers = lock(&self.readers);
        if let Some(r) = readers.get(partition) {
            return Ok((consumer, r.clone()));
        }
        // Split before assigning, so that no record of it lands on the main queue.
        let queue = consumer
            .split_partition_queue(&partition.topic, id)
            .ok_or_else(|| self.read_err(partition, "no queue for the partition".into(), None))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&partition.topic, id, Offset::Offset(from))
            .map_err(|e| self.read_err(partition, e.to_string(), Some(e)))?;
        consumer
            .incremental_assign(&tpl)
            .map_err(|e| self.read_err(partition, format!("assign at {from}: {e}"), Some(e)))?;
        let r = Arc::new(Mutex::new(PartitionReader {
            queue,
            next: Some(from),
        }));
        readers.insert(partition.clone(), r.clone());
        Ok((consumer, r))
    }

    /// The records at `offsets` of `partition`.
    pub fn read_range(&self, partition: &TopicPartition, offsets: Range<i64>) -> Result<Vec<T>> {
        let (from, until) = (offsets.start, offsets.end);
        let mut out = Vec::with_capacity(usize::try_from(until - from).unwrap_or(0));
        if from >= until {
            return Ok(out);
        }
        let topic = partition.topic.as_str();
        let id = i32::try_from(partition.partition)
            .map_err(|_| self.read_err(partition, "partition number too large".into(), None))?;
        let (consumer, reader) = self.reader(partition, id, from)?;
        let mut r = lock(&reader);
        if r.next != Some(from) {
            // Records fetched before the seek are discarded by librdkafka.
            consumer
                .seek(topic, id, Offset::Offset(from), self.config.timeout)
                .map_err(|e| self.read_err(partition, format!("seek to {from}: {e}"), Some(e)))?;
        }
        // Until a read ends cleanly, the next one seeks.
        r.next = None;
        let deadline = Instant::now() + self.config.timeout;
        let mut position = from;
        loop {
            // The main queue serves the consumer's events (its partitions' records and
            // errors are in their own queues).
            if let Some(Ok(m)) = consumer.poll(Duration::ZERO) {
                tracing::debug!(
                    partition = m.partition(),
                    offset = m.offset(),
                    "a record on the main queue (ignored)"
                );
            }
            match r.queue.poll(Duration::from_millis(100)) {
                // This reader's consumer is assigned to this partition only.
                Some(Ok(m)) => {
                    if m.offset() < position {
                        continue; // fetched before the last seek
                    }
                    if m.offset() >= until {
                        // Offsets before `until` had no records (markers, compaction);
                        // this one was consumed, so the next read seeks.
                        return Ok(out);
                    }
                    out.push((self.decode)(&m));
                    position = m.offset() + 1;
                    if position == until {
                        r.next = Some(until);
                        return Ok(out);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    // At the end of the partition: done if the consumer is past the
                    // range (offsets without records at its end); else the event is
                    // left over from before, or the log ends early: keep polling.
                    let at = consumer.position().ok().and_then(|tpl| {
                        match tpl.find_partition(topic, id)?.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        }
                    });
                    if at.is_some_and(|o| o >= until) {
                        return Ok(out);
                    }
                }
                Some(Err(e)) => {
                    return Err(self.read_err(
                        partition,
                        format!("offsets [{from}, {until}) at {position}: {e}"),
                        Some(e),
                    ))
                }
                None => {}
            }
            if Instant::now() >= deadline {
                return Err(self.read_err(
                    partition,
                    format!(
                        "offsets [{from}, {until}): no record at offset {position} within \
                         {:?} (is the broker up? have the offsets expired?)",
                        self.config.timeout
                    ),
                    None,
                ));
            }
        }
    }
}

impl<T: Data> PartitionedLog<T> for KafkaLog<T> {
    fn describe(&self) -> String {
        let topics = match &self.config.subscription {
            Subscription::Topics(t) if t.len() == 1 => "topic",
            _ => "topics",
        };
        format!(
            "Kafka {topics} {} at {}",
            self.config.subscription.label(),
            self.config.brokers
        )
    }

    fn single_topic(&self) -> Option<String> {
        match &self.config.subscription {
            Subscription::Topics(t) if t.len() == 1 => Some(t[0].clone()),
            _ => None,
        }
    }

    // The engine's messages name the log (and partition): the errors say the rest.
    fn bounds(&self) -> std::result::Result<Vec<PartitionBounds>, BoxError> {
        self.partition_bounds()
            .map_err(|e| Box::new(Detail(e)) as BoxError)
    }

    fn read(
        &self,
        partition: &TopicPartition,
        offsets: Range<i64>,
    ) -> std::result::Result<Vec<T>, BoxError> {
        self.read_range(partition, offsets)
            .map_err(|e| Box::new(Detail(e)) as BoxError)
    }

    /// The configured group's committed offsets (`StartingOffsets::Group`).
    fn committed(
        &self,
    ) -> std::result::Result<std::collections::BTreeMap<TopicPartition, i64>, BoxError> {
        let group = self.config.group.as_deref().ok_or_else(|| {
            Box::new(Error::Config(
                "starting from the group's offsets needs a consumer group (KafkaConfig::group, \
                 --kafka-group)"
                    .into(),
            )) as BoxError
        })?;
        let bounds = self
            .partition_bounds()
            .map_err(|e| Box::new(Detail(e)) as BoxError)?;
        let mut c = self.config.client_config();
        c.set("group.id", group);
        let consumer: BaseConsumer = c.create().map_err(|e| Box::new(e) as BoxError)?;
        let mut tpl = TopicPartitionList::new();
        for b in &bounds {
            tpl.add_partition(
                &b.partition.topic,
                i32::try_from(b.partition.partition).unwrap_or(i32::MAX),
            );
        }
        let committed = consumer
            .committed_offsets(tpl, self.config.timeout)
            .map_err(|e| {
                Box::new(self.connect_err(format!("committed offsets of group `{group}`: {e}"), e))
                    as BoxError
            })?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((
                    TopicPartition::new(e.topic(), u32::try_from(e.partition()).ok()?),
                    o,
                )),
                _ => None,
            })
            .collect())
    }

    /// Commits `positions` to the configured group, asynchronously (lag monitors only).
    fn completed(&self, positions: &[(TopicPartition, i64)]) {
        let Some(group) = &self.config.group else {
            return;
        };
        let mut committer = lock(&self.committer);
        if committer.is_none() {
            let mut c = self.config.client_config();
            c.set("group.id", group);
            match c.create_with_context::<_, BaseConsumer<CommitWatch>>(CommitWatch::default()) {
                Ok(consumer) => *committer = Some(consumer),
                Err(e) => {
                    tracing::warn!(group = %group, error = %e, "cannot create the consumer that commits offsets for lag monitors");
                    return;
                }
            }
        }
        let Some(consumer) = committer.as_ref() else {
            return;
        };
        // Results of earlier asynchronous commits (failures are logged).
        let _ = consumer.poll(Duration::ZERO);
        let mut tpl = TopicPartitionList::new();
        for (partition, next) in positions {
            let (Ok(p), true) = (i32::try_from(partition.partition), *next >= 0) else {
                continue;
            };
            if let Err(e) = tpl.add_partition_offset(&partition.topic, p, Offset::Offset(*next)) {
                tracing::warn!(group = %group, error = %e, "cannot commit offsets for lag monitors");
                return;
            }
        }
        let pending = &consumer.context().pending;
        pending.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            pending.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            tracing::warn!(group = %group, error = %e, "committing offsets for lag monitors failed (correctness does not depend on them)");
        }
    }

    /// Brokers that do not answer may come back; a topic that is missing or has no
    /// partitions, or a rejected setting, stays so.
    fn is_passing(&self, error: &(dyn std::error::Error + 'static)) -> bool {
        !matches!(
            error.downcast_ref::<Detail>(),
            Some(Detail(Error::Topic { .. } | Error::Config(_)))
        )
    }
}

/// A Kafka error as the engine shows it: its detail only (the engine's message names
/// the log and partition already), the whole error kept as its source.
#[derive(Debug)]
struct Detail(Error);

impl std::fmt::Display for Detail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.detail())
    }
}

impl std::error::Error for Detail {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// A stream of a topic's messages, each made an element by `decode`: a direct stream
/// (per-partition offset ranges per batch, exactly once with a checkpoint).
pub fn kafka_stream<T: Data>(
    ctx: &StreamingContext,
    config: KafkaConfig,
    opts: DirectStreamOptions,
    decode: Decode<T>,
) -> Result<DStream<T>> {
    let mut log = KafkaLog::new(config, decode)?;
    log.retry_timeout = Some(opts.retry_timeout);
    Ok(ctx.direct_stream("kafka", Arc::new(log), opts))
}

/// A topic's records with key, value, timestamp, partition and offset.
pub fn kafka_records(
    ctx: &StreamingContext,
    config: KafkaConfig,
    opts: DirectStreamOptions,
) -> Result<DStream<KafkaRecord>> {
    kafka_stream(ctx, config, opts, |m| KafkaRecord {
        topic: m.topic().to_string(),
        partition: u32::try_from(m.partition()).unwrap_or(0),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        timestamp_ms: m.timestamp().to_millis(),
        headers: m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// A topic's values as text lines, one line per message (a message without a value is
/// an empty line), under the line policy of every text source: invalid UTF-8 is
/// replaced by U+FFFD and counted, a line longer than
/// [`DEFAULT_MAX_LINE_BYTES`](lockgate_core::source::DEFAULT_MAX_LINE_BYTES) is cut
/// and counted (in the source's `invalid_utf8_lines` and `truncated_lines`).
pub fn kafka_lines(
    ctx: &StreamingContext,
    config: KafkaConfig,
    opts: DirectStreamOptions,
) -> Result<DStream<String>> {
    let name = ctx.next_source_name("kafka");
    let raw = kafka_stream(ctx, config, opts, |m| {
        m.payload().unwrap_or_default().to_vec()
    })?;
    let counters = ctx.metrics().source(&name);
    let decode = move |bytes: &[u8]| {
        lockgate_core::source::decode_text_line(
            bytes,
            lockgate_core::source::DEFAULT_MAX_LINE_BYTES,
            &counters,
        )
    };
    // A valid, short line keeps its buffer; others go through the policy.
    Ok(raw.map(move |bytes| match String::from_utf8(bytes) {
        Ok(s) if s.len() <= lockgate_core::source::DEFAULT_MAX_LINE_BYTES && !s.ends_with('\r') => {
            s
        }
        Ok(s) => decode(s.as_bytes()),
        Err(e) => decode(e.as_bytes()),
    }))
}
