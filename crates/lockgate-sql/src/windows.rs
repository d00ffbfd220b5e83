//! An aggregation by event-time window (`GROUP BY window(ts, ...)`): the partials go
//! through the engine's event-time window operator (watermark, late records dropped and
//! counted, output modes, eviction), checkpointed as `<query>_window_<signature>`; each
//! emitted window becomes a row with its start and end.

use std::sync::Arc;
use std::time::Duration;

use lockgate_core::{DStream, OutputMode, Time, Windowed};

use crate::aggregate::Aggregation;
use crate::error::{execute_failed, Result};
use crate::exec::Row;
use crate::plan::WindowPart;
use crate::streams::PartialStream;
use crate::value::{self, Key, Partials};

/// The rows of the windows each batch emits, named `name`; `delay` is the watermark's.
pub(crate) fn rows(
    partials: &PartialStream,
    agg: &Arc<Aggregation>,
    window: &WindowPart,
    mode: OutputMode,
    delay: Option<Duration>,
    name: &str,
    warnings: &mut Vec<String>,
) -> Result<DStream<Row>> {
    let time_of = |r: &(Key, Option<i64>, Partials)| r.1.map(Time);
    let events = match delay {
        Some(delay) => partials.with_watermark(time_of, delay),
        None => {
            warnings.push(format!(
                "SQL query `{name}`: a window without a watermark (--watermark COLUMN \
                 DELAY) never closes, so its state grows without bound"
            ));
            partials.with_event_time(time_of)
        }
    };
    let (l1, l2) = (agg.layout.clone(), agg.layout.clone());
    let windows = events
        .window(window.spec)
        .key_by(|r: &(Key, Option<i64>, Partials)| r.0.clone())
        .output_mode(mode)
        .aggregate(
            Partials::default,
            move |acc, r| l1.merge(acc, &r.2),
            move |acc, other| l2.merge(acc, other),
        )
        .name(&format!("{name}_window_{}", agg.sig));
    let (agg, time_type, index) = (agg.clone(), window.time_type.clone(), window.index);
    Ok(windows
        .try_map_partitions(move |ws: Vec<Windowed<Key, Partials>>| {
            if ws.is_empty() {
                return Ok(Vec::new());
            }
            let (mut cols, values) =
                agg.columns(ws.iter().map(|w| &w.key), ws.iter().map(|w| &w.value))?;
            let starts = value::from_epoch_ms(ws.iter().map(|w| w.window.start.0), &time_type)
                .map_err(execute_failed)?;
            cols.insert(index, starts);
            cols.extend(values);
            cols.push(
                value::from_epoch_ms(ws.iter().map(|w| w.window.end.0), &time_type)
                    .map_err(execute_failed)?,
            );
            agg.post.rows(cols)
        })
        .name(name))
}
