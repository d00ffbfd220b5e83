//! Scale-out: many instances of one job share a Kafka topic through a consumer group
//! (`lockgate run ... --scale-out`).
//!
//! Every instance started with the same job, `--checkpoint` and `--kafka-group` joins
//! the group (cooperative-sticky assignment) and runs one **task** per partition it is
//! given. A task is a whole streaming context of its own: its plan log, commits and
//! state under `CHECKPOINT/tasks/<topic>-<partition>/` (fenced by that location's lease:
//! a zombie that lost the partition cannot write there), its own batch ids, its own
//! sinks (JSON under `DIR/<stream>/task=<task>/`, a Kafka transactional id per task).
//! So each task is exactly once by the engine's own protocol, and a partition that
//! moves carries its task along: the new owner recovers it from the store.
//!
//! Jobs whose state is per key across the whole topic run in two stages, as in Kafka
//! Streams: first-stage tasks (the input's partitions) write partial results to a
//! repartition topic ([`lockgate_kafka::repartition`]) — word count `(word, count)` to
//! `lockgate-<app>-word_counts-repartition`, `log-errors --event-time` `(window,
//! count)` and their watermarks to `lockgate-<app>-window_counts-repartition` — and
//! second-stage tasks (that topic's partitions, in the same group) keep the results
//! (the `stages` module). Stateless jobs (log-errors' error lines and its per-task
//! processing-time windows) run one stage.
//!
//! Rebalances: revoked partitions' tasks stop before the revocation is answered (the
//! batch in flight finishes and commits; queued batches stay logged for the next
//! owner); assigned partitions' tasks start on threads of their own, each waiting for
//! its checkpoint's lease like a standby (the previous owner released it, or died and
//! its lease runs out).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use lockgate_core::source::direct::{DirectStreamOptions, TopicPartition};
use lockgate_core::storage::CheckpointLocation;
use lockgate_core::sync::lock;
use lockgate_core::StreamingContext;
use lockgate_kafka::group::{GroupMember, GroupOptions, Rebalancer};
use lockgate_kafka::repartition::{self, RepartitionTarget};
use lockgate_kafka::{KafkaSinkConfig, Subscription};

use crate::{stages, Error, Input, Job, JobConfig, Result, Rows};

/// The keyed operator of word count, named in its repartition topic.
pub const WORD_COUNT_OPERATOR: &str = "word_counts";

/// The keyed operator of `log-errors --event-time` (its event-time windows), named in
/// its repartition topic.
pub const EVENT_WINDOWS_OPERATOR: &str = "window_counts";

/// Opens the checkpoint location of a task (`CHECKPOINT/tasks/<task>`).
#[derive(Clone)]
pub struct TaskCheckpoint(
    pub Arc<dyn Fn(&str) -> lockgate_core::Result<CheckpointLocation> + Send + Sync>,
);

impl std::fmt::Debug for TaskCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TaskCheckpoint(..)")
    }
}

/// How an instance takes part in a scaled-out job.
#[derive(Clone, Debug)]
pub struct ScaleOut {
    /// The consumer group every instance of the job joins (`--kafka-group`; default
    /// `lockgate-<app>`).
    pub group: Option<String>,
    /// This instance's name in logs and the group (`--instance-id`).
    pub instance: String,
    /// The group's session timeout (`--kafka-session-timeout`).
    pub session_timeout: Duration,
    /// Partitions of a repartition topic created on start (`--repartition-partitions`;
    /// default: the input's).
    pub repartition_partitions: Option<u32>,
    /// Second-stage tasks read a repartition partition only up to what their previous
    /// plan saw (`--repartition-read-behind`; `DirectStreamOptions::read_behind`).
    pub repartition_read_behind: bool,
    /// Where tasks keep their checkpoints.
    pub checkpoint: TaskCheckpoint,
}

impl ScaleOut {
    /// The default session timeout: 10 s.
    pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
}

/// What a task runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Reads an input partition (the whole job when it is stateless).
    Input,
    /// Reads a repartition topic's partition.
    Shuffled,
}

/// A running task: its context once built, and the thread that runs it.
struct Task {
    stage: Stage,
    slot: Arc<Mutex<Slot>>,
    thread: JoinHandle<()>,
}

enum Slot {
    /// Being built (waiting for its checkpoint's lease, recovering).
    Starting,
    /// Running.
    Running(StreamingContext),
    /// Revoked: stop as soon as it is built.
    Cancelled,
}

/// The instance's tasks, started and stopped by rebalances.
struct Tasks {
    cfg: JobConfig,
    job: Job,
    scale: ScaleOut,
    input_topic: String,
    /// The input topic's partitions: the first-stage tasks a second-stage task hears.
    input_partitions: u32,
    repartition: Option<(String, u32)>,
    running: Mutex<BTreeMap<String, Task>>,
    /// The group answered at least once (the instance is in).
    joined: AtomicBool,
    /// The first task failure, which stops the instance.
    failure: Mutex<Option<Error>>,
    stop: (Mutex<bool>, Condvar),
}

fn task_name(tp: &TopicPartition) -> String {
    format!("{}-{}", tp.topic, tp.partition)
}

impl Tasks {
    fn stage_of(&self, tp: &TopicPartition) -> Option<Stage> {
        if tp.topic == self.input_topic {
            Some(Stage::Input)
        } else if self
            .repartition
            .as_ref()
            .is_some_and(|(t, _)| *t == tp.topic)
        {
            Some(Stage::Shuffled)
        } else {
            None
        }
    }

    fn fail(&self, e: Error) {
        lock(&self.failure).get_or_insert(e);
        *lock(&self.stop.0) = true;
        self.stop.1.notify_all();
    }

    fn names(&self) -> Vec<String> {
        lock(&self.running).keys().cloned().collect()
    }

    /// Builds and runs the task of `tp` (on its own thread).
    fn run_task(self: &Arc<Self>, tp: &TopicPartition, stage: Stage, slot: &Arc<Mutex<Slot>>) {
        let name = task_name(tp);
        let ctx = match self.build_task(tp, stage) {
            Ok(ctx) => ctx,
            Err(e) => {
                if matches!(*lock(slot), Slot::Cancelled) {
                    return;
                }
                return self.fail(Error::Task {
                    task: name,
                    source: Box::new(e),
                });
            }
        };
        {
            let mut s = lock(slot);
            if matches!(*s, Slot::Cancelled) {
                drop(s);
                let _ = ctx.stop(false);
                return;
            }
            *s = Slot::Running(ctx.clone());
        }
        let outcome = ctx.start().and_then(|()| ctx.await_termination());
        let revoked = matches!(*lock(slot), Slot::Cancelled);
        match outcome {
            Err(e) if !revoked => self.fail(Error::Task {
                task: name,
                source: Box::new(e.into()),
            }),
            _ => tracing::info!(task = %name, "task stopped"),
        }
    }

    /// The task's configuration and graph, recovered from its checkpoint.
    fn build_task(&self, tp: &TopicPartition, stage: Stage) -> Result<StreamingContext> {
        let name = task_name(tp);
        let mut cfg = self.cfg.clone();
        cfg.task = Some(name.clone());
        cfg.standby = true;
        cfg.before_recovery = None;
        cfg.checkpoint = Some((self.scale.checkpoint.0)(&format!("tasks/{name}"))?);
        let Input::Kafka { config, options } = &self.cfg.input else {
            return Err(Error::Config("--scale-out reads a Kafka topic".into()));
        };
        let (job, app) = (self.job, self.job.name());
        match (stage, self.repartition.clone()) {
            // A stateless job: the whole job on the partition.
            (Stage::Input, None) => {
                cfg.input = partition_input(config, options, tp.partition);
                cfg.build(job)
            }
            // A keyed job's first stage: partials to the repartition topic.
            (Stage::Input, Some((_, partitions))) => {
                cfg.input = partition_input(config, options, tp.partition);
                let mut sink = KafkaSinkConfig::new(config.brokers.clone(), String::new());
                sink.task = Some(name.clone());
                sink.properties = cfg.kafka_sink_properties.clone();
                sink.retry_timeout = cfg.sink_retry_timeout;
                sink.timeout = crate::kafka_call_timeout(cfg.sink_retry_timeout);
                let target = RepartitionTarget {
                    app: app.to_string(),
                    operator: keyed_operator(job).to_string(),
                    partitions,
                    sink,
                };
                cfg.build_graph(job, false, &|cfg, ctx, _| {
                    let partials = match job {
                        Job::WordCount => stages::word_partials(cfg, ctx)?,
                        Job::LogErrors => stages::event_partials(cfg, ctx)?,
                    };
                    repartition::write(&partials, &target).map_err(kafka_err)?;
                    Ok(Rows::None)
                })
            }
            // The second stage: the job's results from the repartition topic.
            (Stage::Shuffled, _) => cfg.build_graph(job, true, &|cfg, ctx, out| {
                let source = ctx.next_source_name("kafka");
                let options = DirectStreamOptions {
                    read_behind: self.scale.repartition_read_behind,
                    ..options.clone()
                };
                let incoming =
                    repartition::read(ctx, config, app, keyed_operator(job), tp.partition, options)
                        .map_err(kafka_err)?;
                Ok(match job {
                    Job::WordCount => {
                        Rows::Words(stages::word_totals(cfg, ctx, &incoming, &source, out)?)
                    }
                    Job::LogErrors => Rows::Windows(stages::event_windows(
                        ctx,
                        &incoming,
                        self.input_partitions as usize,
                        out,
                    )?),
                })
            }),
        }
    }
}

/// The input of a task: partition `partition` of the job's topic.
fn partition_input(
    config: &lockgate_kafka::KafkaConfig,
    options: &lockgate_core::source::direct::DirectStreamOptions,
    partition: u32,
) -> Input {
    Input::Kafka {
        config: lockgate_kafka::KafkaConfig {
            partitions: Some(vec![partition]),
            ..config.clone()
        },
        options: options.clone(),
    }
}

/// The keyed operator a job's repartition topic feeds (part of the topic's name).
fn keyed_operator(job: Job) -> &'static str {
    match job {
        Job::WordCount => WORD_COUNT_OPERATOR,
        Job::LogErrors => EVENT_WINDOWS_OPERATOR,
    }
}

fn kafka_err(e: lockgate_kafka::Error) -> lockgate_core::Error {
    match e {
        lockgate_kafka::Error::Config(m) => lockgate_core::Error::Config(format!("Kafka: {m}")),
        other => lockgate_core::Error::external("Kafka", other),
    }
}

/// The group member's view of the tasks.
struct Handler(Arc<Tasks>);

impl Rebalancer for Handler {
    fn assigned(&self, partitions: &[TopicPartition]) {
        self.0.assigned(partitions);
    }

    fn revoked(&self, partitions: &[TopicPartition], lost: bool) {
        self.0.revoked(partitions, lost);
    }
}

impl Tasks {
    fn assigned(self: &Arc<Self>, partitions: &[TopicPartition]) {
        self.joined.store(true, Ordering::Release);
        if partitions.is_empty() {
            return;
        }
        let mut running = lock(&self.running);
        for tp in partitions {
            let Some(stage) = self.stage_of(tp) else {
                tracing::warn!(topic = %tp.topic, partition = tp.partition, "assigned a partition of a topic this job does not read; ignoring it");
                continue;
            };
            let name = task_name(tp);
            if running.contains_key(&name) {
                continue;
            }
            let slot = Arc::new(Mutex::new(Slot::Starting));
            let tasks = self.clone();
            let (tp2, slot2) = (tp.clone(), slot.clone());
            let thread = std::thread::Builder::new()
                .name(format!("task-{name}"))
                .spawn(move || tasks.run_task(&tp2, stage, &slot2));
            match thread {
                Ok(thread) => {
                    running.insert(
                        name,
                        Task {
                            stage,
                            slot,
                            thread,
                        },
                    );
                }
                Err(e) => self.fail(Error::Config(format!(
                    "cannot start the thread of task {name}: {e}"
                ))),
            }
        }
        let names: Vec<String> = running.keys().cloned().collect();
        drop(running);
        tracing::info!(instance = %self.scale.instance, assigned = %list(partitions), tasks = %names.join(","), "rebalance: partitions assigned to this instance; starting their tasks");
    }

    fn revoked(&self, partitions: &[TopicPartition], lost: bool) {
        let gone: Vec<(String, Task)> = {
            let mut running = lock(&self.running);
            partitions
                .iter()
                .filter_map(|tp| {
                    let name = task_name(tp);
                    running.remove(&name).map(|t| (name, t))
                })
                .collect()
        };
        if gone.is_empty() {
            return;
        }
        tracing::info!(instance = %self.scale.instance, revoked = %list(partitions), lost, "rebalance: partitions taken from this instance; stopping their tasks");
        let mut joins = Vec::new();
        for (name, task) in gone {
            let previous = std::mem::replace(&mut *lock(&task.slot), Slot::Cancelled);
            match previous {
                Slot::Running(ctx) => {
                    // The batch in flight finishes and commits; queued ones stay logged
                    // for the next owner.
                    if let Err(e) = ctx.stop(false) {
                        tracing::warn!(task = %name, error = %e, "the task stopped with an error");
                    }
                    joins.push(task.thread);
                }
                // Still waiting for its lease or recovering: it stops once built (the
                // thread is not waited for, the next owner waits for the lease).
                Slot::Starting | Slot::Cancelled => {
                    tracing::info!(task = %name, stage = ?task.stage, "task revoked before it started");
                }
            }
        }
        for t in joins {
            let _ = t.join();
        }
        if lost {
            self.fail(Error::Lost {
                instance: self.scale.instance.clone(),
                partitions: list(partitions),
            });
        }
        tracing::info!(instance = %self.scale.instance, tasks = %self.names().join(","), "rebalance: revoked tasks stopped");
    }
}

fn list(partitions: &[TopicPartition]) -> String {
    partitions
        .iter()
        .map(task_name)
        .collect::<Vec<_>>()
        .join(",")
}

/// One instance of a scaled-out job: a group member and its tasks.
pub struct ScaleOutJob {
    tasks: Arc<Tasks>,
    member: Mutex<Option<GroupMember>>,
}

impl ScaleOutJob {
    /// Checks the configuration, creates the repartition topic if the job needs one,
    /// and joins the group; tasks start as partitions are assigned.
    pub fn start(cfg: &JobConfig, job: Job, scale: ScaleOut) -> Result<ScaleOutJob> {
        let Input::Kafka { config, .. } = &cfg.input else {
            return Err(Error::Config(
                "--scale-out needs a Kafka input (--kafka-brokers, --kafka-topic): \
                 instances share a topic's partitions"
                    .into(),
            ));
        };
        let input_topic = match &config.subscription {
            Subscription::Topics(t) if t.len() == 1 => t[0].clone(),
            _ => {
                return Err(Error::Config(
                    "--scale-out reads one Kafka topic (not several, nor a pattern)".into(),
                ))
            }
        };
        if cfg.once {
            return Err(Error::Config(
                "--scale-out runs until stopped; --once is for one process".into(),
            ));
        }
        if cfg.from_sink_offsets {
            return Err(Error::Config(
                "--from-sink-offsets does not apply to --scale-out: each task resumes from \
                 its own checkpoint"
                    .into(),
            ));
        }
        let timeout = config.timeout;
        let input_partitions = lockgate_kafka::admin::partition_count(
            &config.brokers,
            &input_topic,
            &config.properties,
            timeout,
        )
        .map_err(Error::Kafka)?
        .ok_or_else(|| {
            Error::Config(format!(
                "Kafka topic `{input_topic}` does not exist at {}: create it, or check the name",
                config.brokers
            ))
        })?;
        let app = job.name();
        let keyed = job == Job::WordCount || cfg.event_time;
        let repartition = if keyed {
            {
                let topic = repartition::topic_name(app, keyed_operator(job));
                let want = scale.repartition_partitions.unwrap_or(input_partitions);
                let n = lockgate_kafka::admin::ensure_topic(
                    &config.brokers,
                    &topic,
                    want,
                    &config.properties,
                    timeout,
                )
                .map_err(Error::Kafka)?;
                if n != want {
                    tracing::warn!(topic = %topic, partitions = n, asked = want, "the repartition topic exists with another partition count; using it as it is");
                }
                Some((topic, n))
            }
        } else {
            None
        };
        let group = scale
            .group
            .clone()
            .unwrap_or_else(|| format!("lockgate-{app}"));
        let mut topics = vec![input_topic.clone()];
        topics.extend(repartition.iter().map(|(t, _)| t.clone()));
        let options = GroupOptions {
            brokers: config.brokers.clone(),
            group,
            topics,
            instance: scale.instance.clone(),
            session_timeout: scale.session_timeout,
            properties: config.properties.clone(),
        };
        let mut cfg = cfg.clone();
        // `--parallelism N`: the instance's N worker threads, shared by its tasks (by
        // default each task has a worker per core).
        if let Some(n) = cfg.parallelism {
            cfg.worker_pool = Some(lockgate_core::WorkerPool::new(n)?);
        }
        let tasks = Arc::new(Tasks {
            cfg,
            job,
            scale,
            input_topic,
            input_partitions,
            repartition,
            running: Mutex::new(BTreeMap::new()),
            joined: AtomicBool::new(false),
            failure: Mutex::new(None),
            stop: (Mutex::new(false), Condvar::new()),
        });
        let member =
            GroupMember::join(&options, Arc::new(Handler(tasks.clone()))).map_err(Error::Kafka)?;
        Ok(ScaleOutJob {
            tasks,
            member: Mutex::new(Some(member)),
        })
    }

    /// The names of the tasks this instance runs now.
    pub fn tasks(&self) -> Vec<String> {
        self.tasks.names()
    }

    /// The contexts of the running tasks, by task name (for the UI and metrics).
    pub fn contexts(&self) -> Vec<(String, StreamingContext)> {
        lock(&self.tasks.running)
            .iter()
            .filter_map(|(name, t)| match &*lock(&t.slot) {
                Slot::Running(ctx) => Some((name.clone(), ctx.clone())),
                _ => None,
            })
            .collect()
    }

    /// Whether the instance is ready: in the group, not stopping, every task it was
    /// given running (not waiting for its lease or recovering); and a word on why.
    pub fn readiness(&self) -> (bool, String) {
        if self.stopping() {
            return (false, "stopping".into());
        }
        if !self.tasks.joined.load(Ordering::Acquire) {
            return (false, "joining the consumer group".into());
        }
        let running = lock(&self.tasks.running);
        let starting: Vec<&str> = running
            .iter()
            .filter(|(_, t)| !matches!(*lock(&t.slot), Slot::Running(_)))
            .map(|(name, _)| name.as_str())
            .collect();
        if starting.is_empty() {
            (true, format!("running {} task(s)", running.len()))
        } else {
            (false, format!("starting tasks {}", starting.join(", ")))
        }
    }

    /// Asks the instance to stop (from a signal handler): [`await_termination`]
    /// then leaves the group, stopping every task.
    ///
    /// [`await_termination`]: Self::await_termination
    pub fn request_stop(&self) {
        *lock(&self.tasks.stop.0) = true;
        self.tasks.stop.1.notify_all();
    }

    /// Waits until the instance is asked to stop or a task fails; then leaves the
    /// group (the remaining tasks stop, their partitions go to the other instances)
    /// and returns the failure, if any.
    pub fn await_termination(&self) -> Result<()> {
        {
            let mut stopped = lock(&self.tasks.stop.0);
            while !*stopped {
                stopped = self
                    .tasks
                    .stop
                    .1
                    .wait(stopped)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        }
        if let Some(member) = lock(&self.member).take() {
            member.leave();
        }
        match lock(&self.tasks.failure).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// True once a stop was asked for or a task failed.
    pub fn stopping(&self) -> bool {
        *lock(&self.tasks.stop.0)
    }
}
