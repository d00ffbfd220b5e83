//! Topic administration the engine needs by itself: a scale-out job creates its
//! repartition topics on start and reads its input's partition count.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use crate::error::{Error, Result};

/// Runs a future to completion on this thread (the admin client's futures are driven by
/// librdkafka's own threads).
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

fn config(brokers: &str, properties: &[(String, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in properties {
        // Security settings apply to every client; producer or consumer ones do not.
        if k.starts_with("security.") || k.starts_with("sasl.") || k.starts_with("ssl.") {
            c.set(k, v);
        }
    }
    c
}

/// The number of partitions of `topic`, or `None` when it does not exist.
pub fn partition_count(
    brokers: &str,
    topic: &str,
    properties: &[(String, String)],
    timeout: Duration,
) -> Result<Option<u32>> {
    let connect = |message: String, e| Error::Connect {
        brokers: brokers.to_string(),
        message,
        cause: Some(Box::new(e)),
    };
    let consumer: BaseConsumer = config(brokers, properties)
        .create()
        .map_err(|e| connect("creating a client".into(), e))?;
    let md = consumer.fetch_metadata(Some(topic), timeout).map_err(|e| {
        connect(
            format!("no metadata of `{topic}` within {timeout:?} ({e})"),
            e,
        )
    })?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .and_then(|t| u32::try_from(t.partitions().len()).ok())
        .filter(|n| *n > 0))
}

/// Creates `topic` with `partitions` partitions unless it exists; returns its
/// partition count (an existing topic keeps its own: the caller says whether it fits).
pub fn ensure_topic(
    brokers: &str,
    topic: &str,
    partitions: u32,
    properties: &[(String, String)],
    timeout: Duration,
) -> Result<u32> {
    if let Some(n) = partition_count(brokers, topic, properties, timeout)? {
        return Ok(n);
    }
    let admin: AdminClient<DefaultClientContext> =
        config(brokers, properties)
            .create()
            .map_err(|e| Error::Connect {
                brokers: brokers.to_string(),
                message: "creating an admin client".into(),
                cause: Some(Box::new(e)),
            })?;
    let opts = AdminOptions::new().operation_timeout(Some(timeout));
    let wanted = i32::try_from(partitions)
        .map_err(|_| Error::Config(format!("{partitions} partitions for `{topic}`")))?;
    let results = block_on(admin.create_topics(
        &[NewTopic::new(topic, wanted, TopicReplication::Fixed(-1))],
        &opts,
    ))
    .map_err(|e| Error::Connect {
        brokers: brokers.to_string(),
        message: format!("creating topic `{topic}`"),
        cause: Some(Box::new(e)),
    })?;
    for r in results {
        match r {
            Ok(_) => tracing::info!(topic, partitions, "created the topic"),
            // Another instance created it first.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(Error::Topic {
                    topic: t,
                    brokers: brokers.to_string(),
                    message: format!("cannot create it: {code}"),
                })
            }
        }
    }
    // Metadata may lag the creation a little.
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(n) = partition_count(brokers, topic, properties, timeout)? {
            return Ok(n);
        }
        if std::time::Instant::now() > deadline {
            return Err(Error::Topic {
                topic: topic.to_string(),
                brokers: brokers.to_string(),
                message: "created, but the brokers' metadata does not show it".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
