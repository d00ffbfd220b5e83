//! A throwaway Kafka-protocol broker for tests and demos, started by the repository's
//! `scripts/kafka.sh` (tansu, installed on first use) and stopped when dropped, if asked
//! behind a proxy that can cut it off from its clients for a while; and helpers to
//! create topics, produce records and read them all back with a real client.

use lockgate_core::sync::lock;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::error::{Error, Result};

/// The repository's broker script.
pub fn script() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/kafka.sh"
    ))
}

/// A running broker; stopped on drop.
pub struct KafkaBroker {
    dir: tempfile::TempDir,
    /// Its bootstrap address, `127.0.0.1:PORT`.
    pub brokers: String,
    /// The proxy its clients reach it through, if started so.
    proxy: Option<Proxy>,
}

impl KafkaBroker {
    fn run(&self, cmd: &str) -> Result<String> {
        let dir = self.dir.path().join("kafka");
        let mut env = vec![("LOCKGATE_KAFKA_DIR", dir.as_os_str())];
        if let Some(p) = &self.proxy {
            env.push(("LOCKGATE_KAFKA_ADVERTISED", p.address.as_ref()));
        }
        lockgate_core::testing::run_service_script_with(&script(), cmd, &env)
            .map_err(Error::Harness)
    }

    /// The broker's process id.
    pub fn pid(&self) -> Result<u32> {
        let path = self.dir.path().join("kafka").join("pid");
        std::fs::read_to_string(&path)
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| Error::Harness(format!("no pid in {}", path.display())))
    }

    /// Freezes the broker (SIGSTOP): it holds its connections and answers nothing, as
    /// a broker in a long GC pause or on a hung machine.
    pub fn freeze(&self) -> Result<()> {
        self.signal("-STOP")
    }

    /// Lets a frozen broker go on (SIGCONT).
    pub fn thaw(&self) -> Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, sig: &str) -> Result<()> {
        let pid = self.pid()?.to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .map_err(|e| Error::Harness(format!("kill {sig} {pid}: {e}")))?
            .success();
        if ok {
            Ok(())
        } else {
            Err(Error::Harness(format!("kill {sig} {pid} failed")))
        }
    }

    /// Starts a new broker.
    pub fn start() -> Result<Self> {
        Self::start_with(None)
    }

    /// Starts a new broker that its clients reach through a proxy (its advertised
    /// address), so that [`outage`](Self::outage) can cut them off.
    pub fn start_behind_proxy() -> Result<Self> {
        Self::start_with(Some(Proxy::listen()?))
    }

    fn start_with(proxy: Option<Proxy>) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("lockgate-kafka-")
            .tempdir()
            .map_err(|e| Error::Harness(format!("temp dir: {e}")))?;
        let mut b = KafkaBroker {
            dir,
            brokers: String::new(),
            proxy,
        };
        b.brokers = b.run("start")?;
        if let Some(p) = &b.proxy {
            let port = std::fs::read_to_string(b.dir.path().join("kafka").join("port"))
                .map_err(|e| Error::Harness(format!("the broker's port file: {e}")))?;
            p.forward_to(format!("127.0.0.1:{}", port.trim()));
        }
        Ok(b)
    }

    /// As a broker restart looks to its clients: every connection through the proxy is
    /// cut, and new ones are refused for `down` (the broker keeps its data and state, so
    /// this is a restart without loss; tansu keeps them in memory only, so a real restart
    /// would lose them). Returns how many connections were cut; an error if the broker
    /// was not started behind a proxy.
    pub fn outage(&self, down: Duration) -> Result<usize> {
        let p = self
            .proxy
            .as_ref()
            .ok_or_else(|| Error::Harness("the broker has no proxy (start_behind_proxy)".into()))?;
        Ok(p.cut(down))
    }

    /// How many client connections through the proxy are open now (0 without a proxy):
    /// an outage cuts these.
    pub fn connections(&self) -> usize {
        self.proxy
            .as_ref()
            .map_or(0, |p| p.live.load(Ordering::Acquire))
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        if let Some(p) = &self.proxy {
            p.stop.store(true, Ordering::Release);
            p.cut(Duration::ZERO);
        }
        let _ = self.run("stop");
    }
}

/// A TCP proxy on 127.0.0.1: each connection accepted is forwarded to the broker by two
/// copying threads; during an outage connections are cut and new ones closed at once.
struct Proxy {
    /// Where it listens, `127.0.0.1:PORT`.
    address: String,
    listener: Mutex<Option<TcpListener>>,
    /// Until when new connections are refused.
    down_until: Arc<Mutex<Option<Instant>>>,
    /// Both ends of every open connection.
    open: Arc<Mutex<Vec<TcpStream>>>,
    /// How many connections are open (their client side not closed).
    live: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn listen() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| Error::Harness(format!("proxy listener: {e}")))?;
        let address = listener
            .local_addr()
            .map_err(|e| Error::Harness(format!("proxy address: {e}")))?
            .to_string();
        Ok(Proxy {
            address,
            listener: Mutex::new(Some(listener)),
            down_until: Arc::default(),
            open: Arc::default(),
            live: Arc::default(),
            stop: Arc::default(),
        })
    }

    /// Starts accepting, forwarding to `target`.
    fn forward_to(&self, target: String) {
        let Some(listener) = lock(&self.listener).take() else {
            return;
        };
        let (down_until, open, live, stop) = (
            self.down_until.clone(),
            self.open.clone(),
            self.live.clone(),
            self.stop.clone(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::Acquire) {
                    return;
                }
                let Ok(client) = client else { continue };
                let down = lock(&down_until).is_some_and(|t| Instant::now() < t);
                if down {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let clones = (|| {
                    std::io::Result::Ok((
                        client.try_clone()?,
                        server.try_clone()?,
                        client.try_clone()?,
                        server.try_clone()?,
                    ))
                })();
                let Ok((to_client, to_server, client_end, server_end)) = clones else {
                    continue;
                };
                lock(&open).extend([client_end, server_end]);
                live.fetch_add(1, Ordering::AcqRel);
                pipe(client, to_server, Some(live.clone()));
                pipe(server, to_client, None);
            }
        });
    }

    /// Cuts every open connection and refuses new ones for `down`; returns how many
    /// client connections were open.
    fn cut(&self, down: Duration) -> usize {
        *lock(&self.down_until) = Some(Instant::now() + down);
        let mut cut = 0;
        // Both ends of each connection are kept: client end first.
        for (i, s) in lock(&self.open).drain(..).enumerate() {
            // A connection both of whose sides closed already fails here.
            if s.shutdown(Shutdown::Both).is_ok() && i % 2 == 0 {
                cut += 1;
            }
        }
        if self.stop.load(Ordering::Acquire) {
            // Wakes the accepting thread so it sees the stop.
            let _ = TcpStream::connect(&self.address);
        }
        cut
    }
}

/// Copies `from` to `to` on a thread of its own until either end closes; then counts
/// the connection closed in `live`, if given.
fn pipe(mut from: TcpStream, mut to: TcpStream, live: Option<Arc<AtomicUsize>>) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
        if let Some(live) = live {
            live.fetch_sub(1, Ordering::AcqRel);
        }
    });
}

fn client_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

/// Creates `topic` with `partitions` partitions (an existing topic is an error).
pub fn create_topic(brokers: &str, topic: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers)
        .create()
        .map_err(|e| Error::Harness(format!("admin client: {e}")))?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = crate::admin::block_on(admin.create_topics(
        &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
        &opts,
    ))
    .map_err(|e| Error::Harness(format!("create topic {topic}: {e}")))?;
    for r in results {
        r.map_err(|(t, code)| Error::Harness(format!("create topic {t}: {code}")))?;
    }
    Ok(())
}

/// Produces `(partition, value)` records to `topic` and waits until all are acknowledged.
///
/// Each record goes in a record batch of its own: the tansu broker answers a query for a
/// partition's end offset with the last batch's first offset + 1 (Kafka: the last
/// record's offset + 1), so with larger batches it would hide records from a reader.
pub fn produce<V: AsRef<[u8]>>(
    brokers: &str,
    topic: &str,
    records: impl IntoIterator<Item = (i32, V)>,
) -> Result<()> {
    let producer: BaseProducer = client_config(brokers)
        .set("batch.num.messages", "1")
        .set("linger.ms", "0")
        .create()
        .map_err(|e| Error::Harness(format!("producer: {e}")))?;
    for (partition, value) in records {
        let mut record = BaseRecord::<(), [u8]>::to(topic)
            .partition(partition)
            .payload(value.as_ref());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(Error::Harness(format!("produce to {topic}: {e}"))),
            }
        }
    }
    // One record per request is slow on a busy machine: wait as long as the broker
    // keeps taking records, and give up only when it stops for a minute.
    let mut left = producer.in_flight_count();
    let mut progress = std::time::Instant::now();
    loop {
        match producer.flush(Duration::from_secs(5)) {
            Ok(()) => return Ok(()),
            Err(e) => {
                let now = producer.in_flight_count();
                if now < left {
                    left = now;
                    progress = std::time::Instant::now();
                } else if progress.elapsed() > Duration::from_secs(60) {
                    return Err(Error::Harness(format!(
                        "flush to {topic}: {e} ({now} records not delivered, none for 60 s)"
                    )));
                }
            }
        }
    }
}

/// A record read back by [`consume_all`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Consumed {
    /// Its partition.
    pub partition: i32,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub value: Vec<u8>,
    /// Its headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Consumed {
    /// The value of header `name`, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// Every record of `topic`'s `partitions` from the beginning (committed or not: the
/// test broker does not filter aborted transactions), read until at least `expected`
/// have come and then two seconds more (to see any extra one); gives up after a minute.
pub fn consume_all(
    brokers: &str,
    topic: &str,
    partitions: i32,
    expected: usize,
) -> Result<Vec<Consumed>> {
    let consumer: BaseConsumer = client_config(brokers)
        .set("group.id", "lockgate-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| Error::Harness(format!("consumer: {e}")))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| Error::Harness(format!("assign {topic}/{p}: {e}")))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| Error::Harness(format!("assign {topic}: {e}")))?;
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let settle_for = Duration::from_secs(2);
    let mut settle = (expected == 0).then(|| std::time::Instant::now() + settle_for);
    while std::time::Instant::now() < deadline
        && settle.is_none_or(|s| std::time::Instant::now() < s)
    {
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.map_err(|e| Error::Harness(format!("read {topic}: {e}")))?;
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        out.push(Consumed {
            partition: m.partition(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().unwrap_or_default().to_vec(),
            headers,
        });
        if out.len() >= expected && settle.is_none() {
            settle = Some(std::time::Instant::now() + settle_for);
        }
    }
    Ok(out)
}

/// The offsets consumer group `group` has committed for `topic`'s `partitions` (`-1`
/// where it has none), as a lag monitor reads them.
pub fn committed_offsets(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Result<Vec<i64>> {
    let consumer: BaseConsumer = client_config(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| Error::Harness(format!("consumer: {e}")))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .map_err(|e| Error::Harness(format!("committed offsets of {group}: {e}")))?;
    Ok((0..partitions)
        .map(
            |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            },
        )
        .collect())
}

/// `n` sample Apache-style log lines for demos, `(partition, line)` over 2 partitions:
/// `[Fri Dec 18 00:MM:SS 2015] [LEVEL] request i`, one second apart, every seventh an
/// `ERROR`.
pub fn sample_log_lines(n: usize) -> impl Iterator<Item = (i32, String)> {
    (0..n).map(|i| {
        let level = if i % 7 == 0 { "ERROR" } else { "INFO" };
        let line = format!(
            "[Fri Dec 18 00:{:02}:{:02} 2015] [{level}] request {i}",
            i / 60 % 60,
            i % 60
        );
        (i32::from(i % 2 == 1), line)
    })
}
