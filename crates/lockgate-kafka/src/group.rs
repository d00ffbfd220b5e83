//! Membership of a Kafka consumer group, for scale-out: a [`GroupMember`] joins the
//! group with the cooperative-sticky assignor and tells a [`Rebalancer`] which
//! partitions this instance was given and which it must give up. It reads no records:
//! every assigned partition is paused at once, because a task reads its partition
//! through its own direct stream (offset ranges logged per batch); the group is only
//! the way instances agree on who runs which task, as in Kafka Streams.
//!
//! A revocation is answered only once the [`Rebalancer`] returns (its tasks stopped,
//! their batch in flight committed or abandoned), so the next owner never starts a
//! task that is still running here. A member that stops polling (SIGSTOP, a crash)
//! loses its partitions after the group's session timeout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use lockgate_core::source::direct::TopicPartition;
use lockgate_core::sync::lock;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, TopicPartitionList};

use crate::error::{Error, Result};

/// What a group member does when the group moves partitions.
pub trait Rebalancer: Send + Sync + 'static {
    /// `partitions` were assigned to this instance (incrementally: the ones it already
    /// had are not repeated; empty when a rebalance gave it nothing new). Called on the
    /// member's thread: start the tasks without waiting for them.
    fn assigned(&self, partitions: &[TopicPartition]);

    /// `partitions` are taken from this instance (`lost`: the group already gave them
    /// to another member, e.g. after this one missed its session timeout). Return only
    /// once the tasks on them stopped.
    fn revoked(&self, partitions: &[TopicPartition], lost: bool);
}

/// How a member joins its group.
#[derive(Clone, Debug)]
pub struct GroupOptions {
    /// Bootstrap servers, `HOST:PORT[,HOST:PORT...]`.
    pub brokers: String,
    /// The consumer group (one per job).
    pub group: String,
    /// The topics whose partitions the group spreads.
    pub topics: Vec<String>,
    /// This instance's name (the member's `client.id`, in the broker's logs).
    pub instance: String,
    /// The group's session timeout: how long after its last heartbeat a member that
    /// died loses its partitions.
    pub session_timeout: Duration,
    /// Further librdkafka consumer properties (security, ...).
    pub properties: Vec<(String, String)>,
}

struct MemberContext {
    handler: Arc<dyn Rebalancer>,
    /// The partitions this member holds now.
    owned: Mutex<Vec<TopicPartition>>,
}

impl ClientContext for MemberContext {}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .filter_map(|e| {
            u32::try_from(e.partition())
                .ok()
                .map(|p| TopicPartition::new(e.topic(), p))
        })
        .collect()
}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let gone = partitions_of(tpl);
            if gone.is_empty() {
                return;
            }
            self.handler.revoked(&gone, consumer.assignment_lost());
            lock(&self.owned).retain(|p| !gone.contains(p));
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let given = partitions_of(tpl);
                // No records are read through the group: tasks read their partitions.
                if given.is_empty() {
                    // Still an answer of the group: the member is in (with nothing new).
                } else if let Err(e) = consumer.pause(tpl) {
                    tracing::warn!(error = %e, "pausing the group's partitions failed (records may be fetched and dropped)");
                }
                lock(&self.owned).extend(given.iter().cloned());
                self.handler.assigned(&given);
            }
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "consumer group rebalance failed; the group retries");
            }
            Rebalance::Revoke(_) => {}
        }
    }
}

/// A member of a consumer group (see the module docs). Leaves the group when
/// [`leave`](Self::leave) is called or it is dropped.
pub struct GroupMember {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    group: String,
}

impl GroupMember {
    /// Joins the group on a thread of its own, which serves the rebalances.
    pub fn join(options: &GroupOptions, handler: Arc<dyn Rebalancer>) -> Result<GroupMember> {
        if options.topics.is_empty() {
            return Err(Error::Config(
                "a consumer group member needs a topic".into(),
            ));
        }
        let session_ms = options.session_timeout.as_millis().max(1000);
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &options.brokers)
            .set("group.id", &options.group)
            .set("client.id", &options.instance)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", session_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (session_ms / 4).max(100).to_string(),
            )
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "latest");
        for (k, v) in &options.properties {
            c.set(k, v);
        }
        let context = MemberContext {
            handler,
            owned: Mutex::new(Vec::new()),
        };
        let consumer: BaseConsumer<MemberContext> =
            c.create_with_context(context).map_err(|e| Error::Connect {
                brokers: options.brokers.clone(),
                message: format!("creating the member of consumer group `{}`", options.group),
                cause: Some(Box::new(e)),
            })?;
        let topics: Vec<&str> = options.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| Error::Connect {
            brokers: options.brokers.clone(),
            message: format!(
                "subscribing consumer group `{}` to {}",
                options.group,
                options.topics.join(", ")
            ),
            cause: Some(Box::new(e)),
        })?;
        tracing::info!(group = %options.group, instance = %options.instance, topics = %options.topics.join(","), session_timeout_ms = session_ms as u64, "joining the consumer group (cooperative-sticky)");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            let group = options.group.clone();
            std::thread::Builder::new()
                .name("lockgate-group".into())
                .spawn(move || serve(consumer, &stop, &group))
                .map_err(|e| Error::Config(format!("cannot start the group thread: {e}")))?
        };
        Ok(GroupMember {
            stop,
            thread: Some(thread),
            group: options.group.clone(),
        })
    }

    /// Leaves the group: every partition still held is revoked (its tasks stopped by
    /// the [`Rebalancer`]) and the member closes, so the others take them at once.
    pub fn leave(mut self) {
        self.stop_serving();
    }

    fn stop_serving(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
            tracing::info!(group = %self.group, "left the consumer group");
        }
    }
}

impl Drop for GroupMember {
    fn drop(&mut self) {
        self.stop_serving();
    }
}

/// Polls the member (heartbeats run on librdkafka's threads; rebalances are served
/// here) until asked to stop; then revokes what it holds and closes.
fn serve(consumer: BaseConsumer<MemberContext>, stop: &AtomicBool, group: &str) {
    while !stop.load(Ordering::Acquire) {
        // A record fetched before its partition was paused is dropped: tasks read it.
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(200)) {
            tracing::warn!(group, error = %e, "consumer group member: {e}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // Stop the tasks first (gracefully, this instance's decision), then say goodbye.
    let held = std::mem::take(&mut *lock(&consumer.context().owned));
    if !held.is_empty() {
        consumer.context().handler.revoked(&held, false);
    }
    consumer.unsubscribe();
    drop(consumer);
}
