//! `window`: the union of the parent's batches in `(t - length, t]`, kept in a buffer
//! (shared partitions, no copy) that is checkpointed as the operator's state.

use std::sync::{Arc, Mutex};

use crate::batch::{Batch, Data};
use crate::checkpoint::state::{BufferState, BufferStateful, NameFn};
use crate::clock::Time;
use crate::codec::Codec;
use crate::error::Result;
use crate::graph::NodeCell;
use crate::traits::{Operator, Stateful};
use crate::types::{lock, BatchContext};

/// `window`: the union of the buffered parent batches in `(t - len, t]`.
pub(crate) struct WindowOp<T> {
    pub parent: Arc<NodeCell<T>>,
    pub len: i64,
    pub buffer: Arc<Mutex<BufferState<T>>>,
}

/// Adds the parent's batch of `cx` (if it has one) to `buffer`, keeping `keep` ms.
pub(crate) fn collect_parent<T: Data + Codec>(
    parent: &NodeCell<T>,
    buffer: &Mutex<BufferState<T>>,
    cx: &BatchContext,
    keep: i64,
) -> Result<()> {
    let t = cx.time;
    if parent.meta.is_valid(t) {
        let b = parent.get_or_compute(cx)?;
        let mut buf = lock(buffer);
        buf.insert(t, b);
        buf.drop_through(t.plus_ms(-keep));
    }
    Ok(())
}

/// The buffered batches with times in `(from, to]`, oldest first.
pub(crate) fn buffered<T: Data>(
    buffer: &Mutex<BufferState<T>>,
    from: Time,
    to: Time,
) -> Vec<Batch<T>> {
    lock(buffer)
        .batches
        .range(from.plus_ms(1)..to.plus_ms(1))
        .map(|(_, b)| b.clone())
        .collect()
}

impl<T: Data + Codec> Operator<T> for WindowOp<T> {
    fn prepare(&self, cx: &BatchContext) -> Result<()> {
        collect_parent(&self.parent, &self.buffer, cx, self.len)
    }

    fn state(&self, name: NameFn) -> Option<Arc<dyn Stateful>> {
        Some(Arc::new(BufferStateful {
            name,
            state: self.buffer.clone(),
        }))
    }

    fn compute(&self, cx: &BatchContext) -> Result<Batch<T>> {
        let t = cx.time;
        let mut out = Batch::empty();
        for b in buffered(&self.buffer, t.plus_ms(-self.len), t) {
            out = out.union(&b);
        }
        Ok(out)
    }
}
