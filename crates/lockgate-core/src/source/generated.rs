//! Replayable sources of records computed from their offsets: `generated_stream` (a
//! generator function of an offset range, e.g. a benchmark's event generator) and
//! `seq_stream` (batches given in code, one per offset).
//!
//! A batch's descriptor is its offset range `[from, until)`, so a replayed batch
//! regenerates exactly the same records; the checkpointed state is the offset after the
//! last completed batch.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::batch::{Batch, Data};
use crate::checkpoint::state::KeyedState;
use crate::clock::Time;
use crate::codec::{from_bytes, to_bytes};
use crate::context::StreamingContext;
use crate::dstream::DStream;
use crate::error::{Error, Result};
use crate::metrics::SourceCounters;
use crate::source::{register, source_name, source_state};
use crate::traits::{InputSource, SourceCompute};
use crate::types::{lock, InputInfo};

type Generate<T> = Arc<dyn Fn(Range<u64>) -> Vec<T> + Send + Sync>;

struct GeneratedInput<T> {
    name: String,
    /// Offsets per batch.
    step: u64,
    /// The offset after the last record (None: endless).
    total: Option<u64>,
    generate: Generate<T>,
    /// Generate sub-ranges in parallel, one per partition (else generate the whole range
    /// and split the result).
    split: bool,
    /// The next offset to plan.
    next: Mutex<u64>,
    /// `maps[0][0]`: the offset after the last completed batch (checkpointed).
    done: Arc<Mutex<KeyedState<u8, u64>>>,
    planned: Mutex<BTreeMap<Time, (u64, u64)>>,
    partitions: usize,
    counters: Arc<SourceCounters>,
}

impl<T: Data> GeneratedInput<T> {
    fn decode(&self, descriptor: &[u8], what: &str) -> Result<(u64, u64)> {
        from_bytes(descriptor).map_err(|e| Error::Source {
            source_name: self.name.clone(),
            message: format!("{what} offset range does not decode: {e}"),
        })
    }
}

impl<T: Data> InputSource for GeneratedInput<T> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn start(&self, bounded: bool, recovered: bool) -> Result<()> {
        if bounded && self.total.is_none() {
            return Err(Error::Source {
                source_name: self.name.clone(),
                message: "an endless generated stream cannot run bounded (AvailableNow); \
                          give it a total"
                    .into(),
            });
        }
        if recovered {
            let done = lock(&self.done).get(0, &0).copied().unwrap_or(0);
            let mut n = lock(&self.next);
            *n = (*n).max(done);
        }
        Ok(())
    }

    fn stop(&self) {}

    fn plan(&self, t: Time) -> Result<(InputInfo, Vec<u8>)> {
        let mut next = lock(&self.next);
        let from = *next;
        let until = match self.total {
            Some(total) => from.saturating_add(self.step).min(total).max(from),
            None => from.saturating_add(self.step),
        };
        *next = until;
        lock(&self.planned).insert(t, (from, until));
        let records = until - from;
        SourceCounters::add(&self.counters.records, records);
        let description = if self.split {
            format!("offsets [{from}, {until})")
        } else {
            format!("batch #{from}")
        };
        let info = InputInfo {
            source: self.name.clone(),
            records,
            description,
        };
        Ok((info, to_bytes(&(from, until))))
    }

    fn replay(&self, t: Time, descriptor: &[u8]) -> Result<()> {
        let (from, until) = self.decode(descriptor, "logged")?;
        lock(&self.planned).insert(t, (from, until));
        let mut next = lock(&self.next);
        *next = (*next).max(until);
        Ok(())
    }

    fn has_pending(&self) -> bool {
        self.total.is_none_or(|total| *lock(&self.next) < total)
    }

    fn pending_batches(&self) -> Option<u64> {
        let left = self.total?.saturating_sub(*lock(&self.next));
        Some(left.div_ceil(self.step.max(1)))
    }

    fn seed_consumed(&self, descriptors: &[&[u8]]) -> Result<()> {
        for d in descriptors {
            let (_, until) = self.decode(d, "a sink's recorded")?;
            let mut next = lock(&self.next);
            *next = (*next).max(until);
        }
        Ok(())
    }

    fn forget(&self, done: Time) {
        let mut p = lock(&self.planned);
        let later = p.split_off(&done.plus_ms(1));
        let finished = std::mem::replace(&mut *p, later);
        if let Some(until) = finished.values().map(|r| r.1).max() {
            let mut st = lock(&self.done);
            let next = until.max(st.get(0, &0).copied().unwrap_or(0));
            st.part(0).insert(0, next);
        }
    }
}

impl<T: Data> SourceCompute<T> for GeneratedInput<T> {
    fn compute(&self, t: Time) -> Result<Batch<T>> {
        let Some((from, until)) = lock(&self.planned).get(&t).copied() else {
            return Ok(Batch::empty());
        };
        if !self.split {
            return Ok(Batch::from_vec(
                (self.generate)(from..until),
                self.partitions,
            ));
        }
        let n = self.partitions.max(1) as u64;
        let len = until - from;
        let parts = (0..n)
            .into_par_iter()
            .map(|i| (self.generate)(from + len * i / n..from + len * (i + 1) / n))
            .collect();
        Ok(Batch::from_partitions(parts))
    }
}

impl StreamingContext {
    /// A replayable stream of generated records: batch `k` covers offsets
    /// `[k * per_batch, (k + 1) * per_batch)` (up to `total`, if given) and its records
    /// are `generate(range)`, called in parallel on sub-ranges, one per partition. The
    /// function must be deterministic: a replayed batch calls it again for the same
    /// offsets. A bounded run ends after `total` records.
    pub fn generated_stream<T: Data>(
        &self,
        per_batch: u64,
        total: Option<u64>,
        generate: impl Fn(Range<u64>) -> Vec<T> + Send + Sync + 'static,
    ) -> DStream<T> {
        self.offset_stream(
            "generated",
            per_batch.max(1),
            total,
            Arc::new(generate),
            true,
        )
    }

    /// A replayable stream of the given batches: batch `k` of the run is `batches[k]`,
    /// then empty batches; bounded runs end after the last one. Unlike a queue it works
    /// with checkpoints: the test source of recovery tests, and of demos that must
    /// survive a restart.
    pub fn seq_stream<T: Data>(&self, batches: Vec<Vec<T>>) -> DStream<T> {
        let total = batches.len() as u64;
        let generate = move |r: Range<u64>| {
            usize::try_from(r.start)
                .ok()
                .and_then(|i| batches.get(i))
                .cloned()
                .unwrap_or_default()
        };
        self.offset_stream("seq", 1, Some(total), Arc::new(generate), false)
    }

    fn offset_stream<T: Data>(
        &self,
        kind: &'static str,
        step: u64,
        total: Option<u64>,
        generate: Generate<T>,
        split: bool,
    ) -> DStream<T> {
        let name = source_name(self, kind);
        let done = source_state(self, &name, "position");
        let src = Arc::new(GeneratedInput {
            counters: self.metrics_ref().source(&name),
            name,
            step,
            total,
            generate,
            split,
            next: Mutex::new(0),
            done,
            planned: Mutex::new(BTreeMap::new()),
            partitions: self.parallelism(),
        });
        let node_kind = if split {
            "generated_stream"
        } else {
            "seq_stream"
        };
        register(self, node_kind, src)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::run_bounded;
    use crate::{StreamingContext, Trigger};

    #[test]
    fn generated_stream_covers_every_offset_once_and_ends_at_its_total() {
        let out = run_bounded(3, |ctx| {
            ctx.generated_stream(10, Some(25), |r| r.collect::<Vec<u64>>())
        })
        .unwrap();
        assert_eq!(out.len(), 3);
        let mut all: Vec<u64> = out.values().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..25).collect::<Vec<_>>());
        assert_eq!(out[&2].len(), 5);
    }

    #[test]
    fn an_endless_generated_stream_cannot_run_bounded() {
        let ctx = StreamingContext::builder()
            .trigger(Trigger::AvailableNow)
            .build()
            .unwrap();
        ctx.generated_stream(10, None, |r| r.collect::<Vec<u64>>())
            .foreach_batch(|_, _| ());
        let err = ctx.start().unwrap_err().to_string();
        assert!(err.contains("endless"), "{err}");
    }
}
