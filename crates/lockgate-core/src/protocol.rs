//! The batch protocol, top to bottom (docs/design.md, "The batch protocol"): where each
//! batch is planned and logged, run, committed to the outputs, its state persisted and
//! marked done, old files cleaned up, and how a restart recovers. The scheduler's threads
//! call these steps in order; the checkpoint module does the file work they ask for.
//!
//! For every batch `b`:
//!
//! 1. **Plan and log** ([`Protocol::plan`]): every source decides what `b` reads; the
//!    plans are logged durably (`offsets/<b>`) before `b` may run.
//! 2. **Run** ([`Protocol::run`]): the graph computes `b` from its [`BatchContext`] (the
//!    batch, its plan, end of input, delivery mode), passed by value to every operator
//!    and output.
//! 3. **Commit outputs**, inside the run: each sink commits `b` atomically with its id,
//!    so a batch it already holds is not written again (see [`Order`]).
//! 4. **Persist state, mark done, clean up** ([`Protocol::complete`]): the state changes
//!    of version `b` are encoded and handed to the checkpoint writer thread, off the
//!    batch's critical path. The writer writes each batch's state files as they come;
//!    every sync interval (`CheckpointConfig::sync_interval`, 100 ms by default, and at
//!    stop) one filesystem sync makes the files written so far durable, and only then
//!    does it write a commit marker — for the *newest* batch of that sync round alone
//!    (`commits/<newest>` covers every batch before it; the batches in between get no
//!    marker of their own), which becomes durable with the next sync. Then retention
//!    deletes the plans, commits and state no longer needed. With a zero sync interval
//!    every batch is its own round and gets its own marker. Sources hear that their
//!    input is committed only once that marker is durable.
//!
//! At start, [`Protocol::start_point`] chooses, in one place, where the context starts:
//! **recover** a checkpoint ([`Protocol::recover`]: check the metadata, choose the
//! newest commit whose state loads, restore state, collect the logged plans after it to
//! re-run ([`Protocol::restore_replays`], [`Protocol::replayed`]), resume timing); or,
//! with nothing restored, resume after the batches a sink recorded
//! (`from_sink_offsets`); or start fresh.
//!
//! The delivery modes differ only in the ordering of these steps, decided by
//! [`Order::of`] and nowhere else.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::checkpoint::log::Plan;
use crate::checkpoint::{CheckpointConfig, Checkpointer, Recovery, WriteOrder};
use crate::clock::{Clock, Time};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::metrics::StreamingMetrics;
use crate::traits::InputSource;
use crate::types::{
    BatchContext, BatchId, DeliveryMode, InputInfo, OutputOpInfo, SinkOffsets, SourcePlan,
};

/// How a delivery mode orders the protocol's steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Order {
    /// `commits/<b>` is written right after the plan is logged, before `b` runs (at most
    /// once: a crashed batch is never re-run); otherwise after its state is durable.
    pub commit_before_run: bool,
    /// Sinks skip a batch they already committed (exactly once); otherwise a re-run
    /// batch is written again (at least once, and at most once's sinks, which never see
    /// a re-run).
    pub sinks_skip_committed: bool,
}

impl Order {
    /// The ordering of `mode`.
    pub const fn of(mode: DeliveryMode) -> Order {
        match mode {
            DeliveryMode::ExactlyOnce => Order {
                commit_before_run: false,
                sinks_skip_committed: true,
            },
            DeliveryMode::AtLeastOnce => Order {
                commit_before_run: false,
                sinks_skip_committed: false,
            },
            DeliveryMode::AtMostOnce => Order {
                commit_before_run: true,
                sinks_skip_committed: false,
            },
        }
    }

    /// What the checkpoint writer does: a batch committed before it runs has its state
    /// files written atomically (no later commit vouches for them) and no commit of its
    /// own after the sync.
    pub fn writer(self) -> WriteOrder {
        WriteOrder {
            atomic_state_files: self.commit_before_run,
            commit_after_sync: !self.commit_before_run,
        }
    }
}

/// Where a started context begins ([`Protocol::start_point`]).
pub(crate) struct Start {
    /// The zero time: batch `base_id + k` has time `zero + (k + 1) * interval`.
    pub zero: Time,
    /// The id of the batch right after `zero`.
    pub base_id: BatchId,
    /// The time of the first batch to plan (after the replays).
    pub first: Time,
    /// Logged plans to re-run first, in order.
    pub replays: Vec<Plan>,
    /// State was restored from an earlier run.
    pub recovered: bool,
    /// The checkpoint, when the context has one.
    pub checkpointer: Option<Arc<Checkpointer>>,
}

/// One planned batch: its context and what its sources reported.
pub(crate) struct Planned {
    /// What the batch's operators and outputs are given.
    pub cx: BatchContext,
    /// The sources' input descriptors (for metrics and the UI).
    pub inputs: Vec<InputInfo>,
}

/// The protocol of one started context.
pub(crate) struct Protocol {
    graph: Arc<Graph>,
    checkpointer: Option<Arc<Checkpointer>>,
    delivery: DeliveryMode,
    bounded: bool,
    /// The last batch each sink reported committed at start (by sink name).
    sinks_committed: Arc<BTreeMap<String, BatchId>>,
}

impl Protocol {
    /// Recovery, step one: readies the sources and state for checkpointing and opens
    /// the checkpoint (check metadata, choose the commit, restore state, collect
    /// replays, resume timing: `checkpoint::recover`).
    pub fn recover(
        graph: &Graph,
        config: &CheckpointConfig,
        settings: Vec<(String, String)>,
        fresh: (Time, BatchId),
        metrics: Arc<StreamingMetrics>,
    ) -> Result<(Recovery, Arc<Checkpointer>)> {
        let inputs = graph.inputs();
        for input in &inputs {
            input.checkpoint_support().map_err(|reason| {
                Error::Config(format!(
                    "source `{}` cannot be checkpointed: {reason}",
                    input.name()
                ))
            })?;
            input.enable_checkpoint(&config.location)?;
        }
        for state in graph.states() {
            state.checkpointed();
        }
        let cp = Arc::new(Checkpointer::new(
            config.clone(),
            Order::of(config.delivery).writer(),
            graph.states(),
            inputs.clone(),
            metrics,
        ));
        let rec = cp.recover(
            &graph.app_name(),
            graph.timing.interval_ms,
            settings,
            fresh,
            &inputs,
        )?;
        Ok((rec, cp))
    }

    /// Zero time and first batch id of a run that recovers nothing from a checkpoint:
    /// right after the last batch a sink recorded (`from_sink_offsets`), else `zero`.
    pub fn fresh_timing(from_sink: Option<&SinkOffsets>, zero: Time) -> (Time, BatchId) {
        match from_sink {
            Some(o) => (Time(o.last_batch_time_ms), o.last_batch_id + 1),
            None => (zero, 0),
        }
    }

    /// Where a context starts — the one place that chooses: the checkpoint's
    /// `recovery` when it restored state (or initialised a new checkpoint); otherwise,
    /// given the batches a sink recorded (`from_sink`), right after them, the sources
    /// told what those batches took; otherwise fresh at `zero`. A new checkpoint
    /// directory with `from_sink` starts after the sink's batches too (its timing came
    /// from [`fresh_timing`](Self::fresh_timing)).
    pub fn start_point(
        graph: &Graph,
        recovery: Option<(Recovery, Arc<Checkpointer>)>,
        from_sink: Option<&SinkOffsets>,
        zero: Time,
    ) -> Result<Start> {
        let interval = graph.timing.interval_ms;
        let start = match recovery {
            Some((r, cp)) => Start {
                zero: r.zero,
                base_id: r.base_id,
                first: r.next_time,
                replays: r.replays,
                recovered: r.restored,
                checkpointer: Some(cp),
            },
            None => {
                let (zero, base_id) = Self::fresh_timing(from_sink, zero);
                Start {
                    zero,
                    base_id,
                    first: zero.plus_ms(interval),
                    replays: Vec::new(),
                    recovered: false,
                    checkpointer: None,
                }
            }
        };
        if let (Some(offsets), false) = (from_sink, start.recovered) {
            Self::resume_from_sink(&graph.inputs(), offsets)?;
        }
        Ok(start)
    }

    /// Recovery without a checkpoint: the sources learn what the batches a sink
    /// recorded took (the batch timing already continues after them).
    fn resume_from_sink(inputs: &[Arc<dyn InputSource>], offsets: &SinkOffsets) -> Result<()> {
        for input in inputs {
            let name = input.name();
            let descriptors: Vec<&[u8]> = offsets
                .plans
                .iter()
                .flatten()
                .filter(|p| p.source == name)
                .map(|p| p.descriptor.as_slice())
                .collect();
            input.seed_consumed(&descriptors)?;
        }
        tracing::info!(
            last_batch = offsets.last_batch_id,
            batches = offsets.plans.len(),
            "resuming from the sink's offsets"
        );
        Ok(())
    }

    /// The protocol of a started context. When recovery re-runs logged batches (up to
    /// `last_replay`), asks every sink which batch it committed last, and records it (up
    /// to `last_replay`) for the batches' contexts: in exactly-once mode a sink is not
    /// handed a re-run batch it already holds. New batches are always handed over: a
    /// sink that reports a later batch holds it from another run (a checkpoint started
    /// anew, whose batch ids start again), not from this one.
    pub fn new(
        graph: Arc<Graph>,
        checkpointer: Option<Arc<Checkpointer>>,
        delivery: DeliveryMode,
        bounded: bool,
        last_replay: Option<BatchId>,
    ) -> Result<Self> {
        let mut sinks_committed = BTreeMap::new();
        let skip = checkpointer.is_some() && Order::of(delivery).sinks_skip_committed;
        let last_replay = last_replay.filter(|_| skip);
        for sink in graph.sinks().into_iter().filter(|_| last_replay.is_some()) {
            let name = sink.name();
            match sink.last_committed(&graph.app_name()) {
                Ok(Some(id)) => {
                    tracing::info!(sink = %name, last_batch = id, "the sink reports its last committed batch");
                    let through = last_replay.map_or(id, |r| id.min(r));
                    sinks_committed.insert(name, through);
                }
                Ok(None) => {}
                Err(source) => {
                    return Err(Error::external(
                        format!("sink `{name}` (reading its last committed batch)"),
                        source,
                    ))
                }
            }
        }
        Ok(Protocol {
            graph,
            checkpointer,
            delivery,
            bounded,
            sinks_committed: Arc::new(sinks_committed),
        })
    }

    /// The batch context of a planned or replayed batch.
    fn context(&self, id: BatchId, time: Time, plan: Vec<SourcePlan>, end: bool) -> BatchContext {
        BatchContext {
            id,
            time,
            plan: Arc::new(plan),
            end_of_input: end,
            delivery: self.delivery,
            sinks_committed: self.sinks_committed.clone(),
        }
    }

    /// Batch times from the next batch on move `by_ms` later (a multiple of the
    /// timing's period), in the checkpoint first: the intervals skipped get no batch.
    pub fn skip_ahead(&self, by_ms: i64) -> Result<()> {
        if let Some(cp) = &self.checkpointer {
            cp.skip_ahead(by_ms)?;
        }
        self.graph.timing.skip(by_ms);
        Ok(())
    }

    /// How many batches a bounded run plans and logs at once: more on an object store,
    /// where logging them is one request and each request takes milliseconds.
    pub fn plan_ahead(&self) -> usize {
        let remote = self
            .checkpointer
            .as_ref()
            .is_some_and(|cp| cp.config.location.groups_writes());
        if remote {
            32
        } else {
            8
        }
    }

    /// Step 1, plan and log: plans up to `max` batches from `first` on (fewer when a
    /// bounded run's sources run dry) and logs their plans durably together (one
    /// filesystem sync) before any of them may run.
    pub fn plan(&self, first: Time, max: usize) -> Result<Vec<Planned>> {
        let interval = self.graph.timing.interval_ms;
        let inputs = self.graph.inputs();
        let mut planned = Vec::new();
        let mut t = first;
        loop {
            let id = self.graph.timing.batch_id(t);
            let mut infos = Vec::new();
            let mut sources = Vec::new();
            for input in &inputs {
                let (info, descriptor) = input.plan(t)?;
                sources.push(SourcePlan {
                    source: info.source.clone(),
                    descriptor,
                    records: info.records,
                    description: info.description.clone(),
                });
                infos.push(info);
            }
            let pending = inputs.iter().any(|i| i.has_pending());
            planned.push((
                Plan {
                    batch_id: id,
                    batch_time_ms: t.0,
                    sources,
                    // A bounded run's last batch is marked (and logged) as the end of
                    // its input.
                    end_of_input: self.bounded && !pending,
                },
                infos,
            ));
            t = t.plus_ms(interval);
            if !pending || planned.len() >= max {
                break;
            }
        }
        if let Some(cp) = &self.checkpointer {
            let plans: Vec<Plan> = planned.iter().map(|(p, _)| p.clone()).collect();
            cp.log_plans(&plans)?;
            if Order::of(self.delivery).commit_before_run {
                for p in &plans {
                    cp.write_commit(p.batch_id, Time(p.batch_time_ms))?;
                }
            }
        }
        Ok(planned
            .into_iter()
            .map(|(p, inputs)| Planned {
                cx: self.context(p.batch_id, Time(p.batch_time_ms), p.sources, p.end_of_input),
                inputs,
            })
            .collect())
    }

    /// Recovery: hands the logged plans to their sources, in order, before the threads
    /// start: each source reads exactly what the plan names when the batch runs, and
    /// plans new batches after it.
    pub fn restore_replays(&self, replays: &[Plan]) -> Result<()> {
        let inputs = self.graph.inputs();
        for plan in replays {
            let t = Time(plan.batch_time_ms);
            for sp in &plan.sources {
                if let Some(input) = inputs.iter().find(|i| i.name() == sp.source) {
                    input.replay(t, &sp.descriptor)?;
                }
            }
        }
        Ok(())
    }

    /// Recovery: a logged batch, to run exactly as it was planned (its sources have it
    /// from [`restore_replays`](Self::restore_replays)).
    pub fn replayed(&self, plan: Plan) -> Planned {
        let t = Time(plan.batch_time_ms);
        let inputs = plan
            .sources
            .iter()
            .map(|sp| InputInfo {
                source: sp.source.clone(),
                records: sp.records,
                description: sp.description.clone(),
            })
            .collect();
        tracing::warn!(
            batch_id = plan.batch_id,
            batch_time_ms = t.0,
            "re-running a logged batch after a restart"
        );
        Planned {
            cx: self.context(plan.batch_id, t, plan.sources, plan.end_of_input),
            inputs,
        }
    }

    /// Steps 2 to 4: runs the batch (operators, then outputs, each sink committing it
    /// with its id), then hands its state and commit to the checkpoint. Returns the
    /// outputs' results and the first failure.
    pub fn run(&self, job: &mut Planned, clock: &dyn Clock) -> (Vec<OutputOpInfo>, Result<()>) {
        // A process that lost the checkpoint to another (an object store's lease taken
        // over while it was paused) must not let its sinks commit anything.
        if let Some(cp) = &self.checkpointer {
            if let Err(e) = cp.config.location.check_owner() {
                return (Vec::new(), Err(e));
            }
        }
        let (outputs, result) = self.graph.run_batch(&job.cx, &mut job.inputs, clock);
        let result = result.and_then(|()| self.complete(&job.cx));
        (outputs, result)
    }

    /// Step 4, persist state, mark done, clean up: the state changes of the batch's
    /// version are encoded now (no other batch runs) and the checkpoint writer writes
    /// them, then the commit (unless the mode committed before running), then deletes
    /// what retention no longer needs. The next batch may run meanwhile: if the process
    /// dies before the commit is durable, recovery re-runs this batch from its plan.
    fn complete(&self, cx: &BatchContext) -> Result<()> {
        match &self.checkpointer {
            Some(cp) => cp.commit(cx.id, cx.time),
            None => Ok(()),
        }
    }

    /// Lets go of the checkpoint location (its lock or lease) once the context stopped.
    pub fn release(&self) {
        if let Some(cp) = &self.checkpointer {
            cp.release();
        }
    }

    /// Waits until every commit handed to the checkpoint writer is durable (a stop).
    pub fn flush(&self) -> Result<()> {
        match &self.checkpointer {
            Some(cp) => cp.flush(),
            None => Ok(()),
        }
    }
}
