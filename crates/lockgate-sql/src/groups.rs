//! A plain `GROUP BY` (no event-time window): each batch's partials are merged by key,
//! then into the running totals of `map_with_state` (checkpointed as
//! `<query>_state_<signature>`), and the groups that changed are emitted (update mode).

use std::sync::Arc;

use lockgate_core::{DStream, OutputMode, StateSpec};

use crate::aggregate::Aggregation;
use crate::error::{Error, Result};
use crate::exec::Row;
use crate::streams::PartialStream;
use crate::value::{Key, Partials};

/// The rows of the groups each batch changed, named `name`.
pub(crate) fn rows(
    partials: &PartialStream,
    agg: &Arc<Aggregation>,
    keyed: bool,
    mode: OutputMode,
    watermarked: bool,
    name: &str,
    warnings: &mut Vec<String>,
) -> Result<DStream<Row>> {
    if watermarked {
        return Err(Error::Unsupported(
            "--watermark with an aggregation that has no event-time window: group by \
             window(ts, ...) (without a window, a group never closes)"
                .into(),
        ));
    }
    if mode == OutputMode::Append {
        return Err(Error::Unsupported(
            "append mode with an aggregation that has no event-time window: a group never \
             closes, so it would never be emitted; use update mode or group by \
             window(ts, ...) with a watermark"
                .into(),
        ));
    }
    if keyed {
        warnings.push(format!(
            "SQL query `{name}`: an aggregation without an event-time window keeps every \
             group in state, so its state grows without bound with the number of distinct \
             keys"
        ));
    }
    let (l1, l2) = (agg.layout.clone(), agg.layout.clone());
    let changed = partials
        .map(|(k, _, p)| (k, p))
        .reduce_by_key(move |mut a, b| {
            l1.merge(&mut a, &b);
            a
        })
        .map_with_state(StateSpec::function(
            move |k: &Key, p: Option<Partials>, total: &mut lockgate_core::State<Partials>| {
                let mut now = total.get().cloned().unwrap_or_default();
                if let Some(p) = p {
                    l2.merge(&mut now, &p);
                }
                total.update(now.clone());
                (k.clone(), now)
            },
        ))
        .name(&format!("{name}_state_{}", agg.sig))
        .stream();
    let agg = agg.clone();
    Ok(changed
        .try_map_partitions(move |groups: Vec<(Key, Partials)>| {
            if groups.is_empty() {
                return Ok(Vec::new());
            }
            let (mut cols, values) =
                agg.columns(groups.iter().map(|g| &g.0), groups.iter().map(|g| &g.1))?;
            cols.extend(values);
            agg.post.rows(cols)
        })
        .name(name))
}
