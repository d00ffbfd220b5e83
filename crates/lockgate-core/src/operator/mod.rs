//! The physical operators: what a node of the graph runs for each batch. Each implements
//! [`Operator`](crate::graph::Operator): one required method, `compute`, that turns its
//! parents' batches into its own for the batch's [`BatchContext`](crate::BatchContext),
//! and optional hooks with default bodies — `prepare` (runs at every batch time, also
//! when the operator emits nothing: windows buffer their input there) and `state` (its
//! checkpointed state, registered under the node's stable name when the node is added).
//! The node attaches the operator's name to its errors, times it and memoises its batch.
//!
//! Narrow operators (`map`, `filter`, ...) and stateless shuffles are closures in
//! `dstream/`; operators with state or more than a few lines live here, one per file.
//! The user API in `dstream/` builds them.

pub(crate) mod event_window;
pub(crate) mod group_state;
pub(crate) mod inverse_window;
pub(crate) mod map_with_state;
pub(crate) mod shuffle;
pub(crate) mod update_state;
pub(crate) mod watermark;
pub(crate) mod window;
pub(crate) mod window_agg;
