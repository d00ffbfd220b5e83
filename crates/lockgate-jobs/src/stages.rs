//! The two stages of the keyed built-in jobs in scale-out mode (see [`crate::scale_out`]):
//! what a first-stage task writes to the repartition topic, and how a second-stage task
//! turns what it reads back into the job's results.
//!
//! - **word-count**: `(word, count in the batch)` records; the second stage keeps the
//!   running totals (the single-process job's `word_counts` stream).
//! - **log-errors --event-time**: `(window, count in the batch)` records for both
//!   windows of every ERROR line (late and untimed lines dropped and counted by the
//!   first stage's own watermark operator), and the task's watermark after each batch
//!   (unchanged when the batch had no timed line; "idle" when it read nothing at all).
//!   The second stage sums the windows, emits each window its batch changed (update
//!   mode, as the single-process job), and keeps a watermark: the minimum over the
//!   writers, once every writer (one per input partition) was heard from, leaving out
//!   the idle ones — a writer whose last [`IDLE_BATCHES`] batches read nothing — so a
//!   quiet partition does not hold it back forever; a writer that died holds it (its
//!   last mark stands) until its task runs again. Windows the watermark passed are
//!   evicted; a count for an evicted window (from a partition that was quiet while the
//!   others moved on) is late: dropped, counted in the operator's `late_records` and
//!   logged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use lockgate_core::codec::{Codec, CodecError};
use lockgate_core::{
    Batch, CompactString, DStream, EventTimeCounters, GroupState, StreamingContext, Time,
};
use lockgate_kafka::repartition::{Incoming, Shuffle};

use crate::{JobConfig, JsonOutput, WindowRow, EVENT_WATERMARK, EVENT_WINDOWS};

/// First stage of word count: each batch's `(word, count)`.
pub(crate) fn word_partials(
    cfg: &JobConfig,
    ctx: &StreamingContext,
) -> lockgate_core::Result<DStream<Shuffle>> {
    Ok(crate::word_pairs(cfg, ctx)?
        .reduce_by_key(|a, b| a + b)
        .map(|(w, n)| Shuffle::Record {
            key: w.as_bytes().to_vec(),
            value: n.to_string().into_bytes(),
        }))
}

/// Second stage of word count: the running totals of the partial counts read.
pub(crate) fn word_totals(
    cfg: &JobConfig,
    ctx: &StreamingContext,
    incoming: &DStream<Incoming>,
    source: &str,
    out: Option<&JsonOutput>,
) -> lockgate_core::Result<DStream<(CompactString, i64)>> {
    let counters = ctx.metrics().source(source);
    let pairs = incoming.flat_map(move |r| match r {
        Incoming::Record { key, value } => {
            let word = String::from_utf8_lossy(&key);
            match std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.parse::<i64>().ok())
            {
                Some(n) => Some((CompactString::from(word.as_ref()), n)),
                None => {
                    counters.skipped_value(
                        "not a partial count",
                        format!("word `{word}`: {}", String::from_utf8_lossy(&value)),
                    );
                    None
                }
            }
        }
        Incoming::Watermark { .. } => None,
    });
    crate::running_word_counts(cfg, pairs, out)
}

/// A first-stage record of event time: a window's count, or the task's watermark.
#[derive(Clone, Debug)]
enum Part {
    Count(&'static str, i64, i64, i64),
    Mark(i64),
}

/// The windows (name, start, end in epoch seconds) of the job's specs that hold `second`.
fn windows_of(second: i64) -> impl Iterator<Item = (&'static str, i64, i64)> {
    EVENT_WINDOWS
        .into_iter()
        .flat_map(move |(name, size, slide)| {
            let (size, slide) = (size as i64, slide as i64);
            let last = second - second.rem_euclid(slide);
            (0..)
                .map(move |i| last - i * slide)
                .take_while(move |start| *start > second - size)
                .map(move |start| (name, start, start + size))
        })
}

/// First stage of `log-errors --event-time`: each batch's count per window, and the
/// task's watermark (see the module docs).
pub(crate) fn event_partials(
    cfg: &JobConfig,
    ctx: &StreamingContext,
) -> lockgate_core::Result<DStream<Shuffle>> {
    let lines = cfg.lines(ctx)?;
    // Whether the batch read anything: a task is idle only when its partition gave it
    // nothing (a batch of lines without a timed ERROR line is progress, not idleness).
    let read = lines.count();
    let finder = memchr::memmem::Finder::new("ERROR").into_owned();
    let times = lines
        .flat_map(move |l| {
            finder
                .find(l.as_bytes())
                .map(|_| crate::parse_apache_time(l.as_bytes()))
        })
        .name("error_times");
    let parts = times
        .map(|t| (t, ()))
        .with_watermark(|(t, _)| t.map(|s| Time(s * 1000)), EVENT_WATERMARK)
        .flat_map_groups_with_state(
            |second: &Option<i64>, seen: Vec<()>, gs: &mut GroupState<()>| {
                let n = seen.len() as i64;
                let mut out = vec![Part::Mark(gs.watermark().0)];
                if let Some(s) = *second {
                    out.extend(windows_of(s).map(|(w, start, end)| Part::Count(w, start, end, n)));
                }
                out
            },
        )
        .name("event_partials");
    Ok(
        parts.transform_with(&read, |batch: Batch<Part>, read: Batch<i64>, _| {
            let mut windows: BTreeMap<(&'static str, i64), (i64, i64)> = BTreeMap::new();
            let mut mark: Option<i64> = None;
            for p in batch.iter() {
                match p {
                    Part::Count(w, start, end, n) => {
                        let e = windows.entry((*w, *start)).or_insert((*end, 0));
                        e.1 += n;
                    }
                    Part::Mark(ms) => mark = Some(mark.map_or(*ms, |m: i64| m.max(*ms))),
                }
            }
            let mut out: Vec<Shuffle> = windows
                .into_iter()
                .map(|((w, start), (end, n))| Shuffle::Record {
                    key: format!("{w}|{start}").into_bytes(),
                    value: format!("{end}|{n}").into_bytes(),
                })
                .collect();
            // A batch that read nothing marks the task idle; one without a timed line
            // leaves its watermark where it was (`i64::MIN`: no news).
            let idle = read.iter().sum::<i64>() == 0;
            out.push(Shuffle::Watermark(
                (!idle).then(|| mark.unwrap_or(i64::MIN)),
            ));
            Batch::from_vec(out, 1)
        }),
    )
}

/// A writer whose last this many batches in a row read nothing is idle: left out of
/// the watermark's minimum. (One empty batch is not enough: a writer killed right after
/// one would let the others' watermark pass the data its partition gets meanwhile.)
pub const IDLE_BATCHES: u64 = 10;

/// Second-stage state of the event-time windows: where each writer stands, the open
/// windows, the watermark, and what the last batch changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowsState {
    /// Per writing task: its last batch seen, its watermark (epoch ms), and how many
    /// of its batches in a row read nothing.
    pub writers: Vec<(String, u64, i64, u64)>,
    /// Open windows: (window name, start, end (epoch seconds), count), sorted.
    pub windows: Vec<(String, i64, i64, i64)>,
    /// The watermark, epoch ms (`i64::MIN`: none yet).
    pub watermark_ms: i64,
    /// The windows the last batch changed, with their counts.
    pub changed: Vec<(String, i64, i64, i64)>,
    /// Counts the last batch dropped as late (for closed windows), and windows it
    /// evicted.
    pub late: i64,
    /// Windows the last batch evicted.
    pub closed: u64,
}

impl Default for WindowsState {
    fn default() -> Self {
        WindowsState {
            writers: Vec::new(),
            windows: Vec::new(),
            watermark_ms: i64::MIN,
            changed: Vec::new(),
            late: 0,
            closed: 0,
        }
    }
}

impl Codec for WindowsState {
    const NAME: &'static str = "lockgate-jobs.EventWindows";
    fn encode(&self, out: &mut Vec<u8>) {
        self.writers.encode(out);
        self.windows.encode(out);
        self.watermark_ms.encode(out);
        self.changed.encode(out);
        self.late.encode(out);
        self.closed.encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        Ok(WindowsState {
            writers: Codec::decode_stored(input)?,
            windows: Codec::decode_stored(input)?,
            watermark_ms: Codec::decode_stored(input)?,
            changed: Codec::decode_stored(input)?,
            late: Codec::decode_stored(input)?,
            closed: Codec::decode_stored(input)?,
        })
    }
}

impl WindowsState {
    /// The state after a batch that read `incoming` (see the module docs), with
    /// `writers` first-stage tasks: until each of them was heard from, the watermark
    /// stays (a task not started yet may still send counts for the oldest windows).
    pub fn apply(mut self, incoming: &[Incoming], writers: usize) -> WindowsState {
        self.changed.clear();
        self.late = 0;
        self.closed = 0;
        let mut open: BTreeMap<(String, i64), (i64, i64)> = std::mem::take(&mut self.windows)
            .into_iter()
            .map(|(w, s, e, n)| ((w, s), (e, n)))
            .collect();
        let mut touched = BTreeSet::new();
        for r in incoming {
            match r {
                Incoming::Record { key, value } => {
                    let Some((w, start, end, n)) = parse_partial(key, value) else {
                        tracing::warn!(key = %String::from_utf8_lossy(key), "a repartition record that is not a window count; skipped");
                        continue;
                    };
                    if end.saturating_mul(1000) <= self.watermark_ms {
                        self.late += n;
                        continue;
                    }
                    let e = open.entry((w.clone(), start)).or_insert((end, 0));
                    e.1 += n;
                    touched.insert((w, start));
                }
                Incoming::Watermark { writer, batch, ms } => {
                    match self.writers.iter_mut().find(|(w, ..)| w == writer) {
                        Some(entry) if entry.1 > *batch => {}
                        Some(entry) => {
                            entry.1 = *batch;
                            match ms {
                                // A writer's watermark only moves forward.
                                Some(ms) => {
                                    entry.2 = entry.2.max(*ms);
                                    entry.3 = 0;
                                }
                                None => entry.3 += 1,
                            }
                        }
                        None => self.writers.push((
                            writer.clone(),
                            *batch,
                            ms.unwrap_or(i64::MIN),
                            u64::from(ms.is_none()),
                        )),
                    }
                }
            }
        }
        self.writers.sort();
        // The minimum over the writers that read records in their last batch, once
        // every writer was heard from.
        let all_known = self.writers.len() >= writers;
        if let Some(min) = self
            .writers
            .iter()
            .filter(|(_, _, _, idle)| *idle < IDLE_BATCHES)
            .map(|(_, _, ms, _)| *ms)
            .min()
            .filter(|_| all_known)
        {
            self.watermark_ms = self.watermark_ms.max(min);
        }
        self.changed = touched
            .into_iter()
            .filter_map(|k| open.get(&k).map(|(e, n)| (k.0.clone(), k.1, *e, *n)))
            .collect();
        let before = open.len();
        let wm = self.watermark_ms;
        open.retain(|_, (end, _)| end.saturating_mul(1000) > wm);
        self.closed = (before - open.len()) as u64;
        self.windows = open
            .into_iter()
            .map(|((w, s), (e, n))| (w, s, e, n))
            .collect();
        self
    }
}

fn parse_partial(key: &[u8], value: &[u8]) -> Option<(String, i64, i64, i64)> {
    let (w, start) = std::str::from_utf8(key).ok()?.split_once('|')?;
    let (end, n) = std::str::from_utf8(value).ok()?.split_once('|')?;
    Some((
        w.to_string(),
        start.parse().ok()?,
        end.parse().ok()?,
        n.parse().ok()?,
    ))
}

/// Second stage of `log-errors --event-time`: the windows' counts (each window stream
/// written to `out` as the single-process job writes it), as rows for a database.
pub(crate) fn event_windows(
    ctx: &StreamingContext,
    incoming: &DStream<Incoming>,
    writers: usize,
    out: Option<&JsonOutput>,
) -> lockgate_core::Result<DStream<WindowRow>> {
    let counters: Vec<(&'static str, Arc<EventTimeCounters>)> = EVENT_WINDOWS
        .iter()
        .map(|(name, _, _)| (*name, ctx.metrics().event_time(name)))
        .collect();
    let state = incoming
        .map(|r| ((), r))
        .update_state_by_key(move |values: &[Incoming], st: Option<WindowsState>| {
            let st = st.unwrap_or_default().apply(values, writers);
            for (_, c) in &counters {
                c.watermark_ms.store(st.watermark_ms, Ordering::Relaxed);
                c.closed.fetch_add(st.closed, Ordering::Relaxed);
            }
            if st.late > 0 {
                if let Some((_, c)) = counters.first() {
                    c.late_records.fetch_add(st.late as u64, Ordering::Relaxed);
                }
                tracing::warn!(late = st.late, watermark_ms = st.watermark_ms, "event-time windows: counts for windows the watermark already closed were dropped (their writer was idle while the others moved on)");
            }
            Some(st)
        })
        .name("event_windows");
    let rows: DStream<WindowRow> = state.flat_map(|(_, st)| {
        st.changed
            .iter()
            .filter_map(|(w, start, end, n)| {
                EVENT_WINDOWS
                    .iter()
                    .find(|(name, _, _)| name == w)
                    .map(|(name, _, _)| (*name, *start, *end, *n))
            })
            .collect::<Vec<_>>()
    });
    if let Some(out) = out {
        for (name, _, _) in EVENT_WINDOWS {
            let counts = rows.filter(move |(w, ..)| *w == name);
            out.write(
                &counts,
                name,
                |(_, start, _, _), _| Some(start.to_string()),
                |(_, start, end, n), _| serde_json::json!({ "start": start, "end": end, "count": n }),
            )?;
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(writer: &str, batch: u64, ms: Option<i64>) -> Incoming {
        Incoming::Watermark {
            writer: writer.into(),
            batch,
            ms,
        }
    }

    fn count(w: &str, start: i64, end: i64, n: i64) -> Incoming {
        Incoming::Record {
            key: format!("{w}|{start}").into_bytes(),
            value: format!("{end}|{n}").into_bytes(),
        }
    }

    #[test]
    fn windows_of_a_second_match_the_specs() {
        let all: Vec<_> = windows_of(95).collect();
        assert_eq!(
            all,
            vec![
                ("tumbling_30s", 90, 120),
                ("sliding_30s_10s", 90, 120),
                ("sliding_30s_10s", 80, 110),
                ("sliding_30s_10s", 70, 100),
            ]
        );
        assert_eq!(windows_of(-5).next(), Some(("tumbling_30s", -30, 0)));
    }

    #[test]
    fn the_watermark_is_the_minimum_over_writers_and_an_idle_one_does_not_hold_it() {
        // b is not heard from yet: it holds the watermark.
        let st = WindowsState::default().apply(&[mark("a", 0, Some(50_000))], 2);
        assert_eq!(
            st.watermark_ms,
            i64::MIN,
            "a writer not heard from holds it"
        );
        let st = st.apply(&[count("t", 0, 30, 2), mark("b", 0, Some(20_000))], 2);
        assert_eq!(st.watermark_ms, 20_000, "the slower writer holds it");
        assert_eq!(st.changed, vec![("t".into(), 0, 30, 2)]);
        assert_eq!(st.windows.len(), 1, "window [0, 30) is still open");
        // b's partition goes quiet: its next batches read nothing. One empty batch
        // is not idleness yet.
        let st = st.apply(&[mark("a", 1, Some(70_000)), mark("b", 1, None)], 2);
        assert_eq!(st.watermark_ms, 20_000, "one empty batch: b still holds it");
        let quiet: Vec<Incoming> = (2..IDLE_BATCHES + 1).map(|b| mark("b", b, None)).collect();
        let st = st.apply(&quiet, 2);
        assert_eq!(
            st.watermark_ms, 70_000,
            "an idle writer does not hold it back"
        );
        assert!(st.windows.is_empty(), "window [0, 30) closed");
        assert_eq!((st.closed, st.changed.len()), (1, 0));
        // b comes back with a count for the closed window: late, dropped and counted.
        let st = st.apply(&[count("t", 0, 30, 5), mark("b", 99, Some(25_000))], 2);
        assert_eq!(st.late, 5);
        assert_eq!(st.watermark_ms, 70_000, "the watermark never goes back");
        // A writer that died keeps its last (not idle) mark: it holds the watermark.
        let st = st.apply(&[count("t", 90, 120, 1), mark("a", 2, Some(200_000))], 2);
        assert_eq!(
            st.watermark_ms, 70_000,
            "b's last mark (25 s) is below: unchanged"
        );
        assert_eq!(st.windows, vec![("t".into(), 90, 120, 1)]);
    }

    #[test]
    fn counts_add_up_and_an_older_mark_does_not_undo_a_newer_one() {
        let st = WindowsState::default().apply(
            &[
                count("t", 0, 30, 2),
                count("t", 0, 30, 3),
                mark("a", 5, Some(10_000)),
                mark("a", 4, None),
            ],
            1,
        );
        assert_eq!(st.changed, vec![("t".into(), 0, 30, 5)]);
        assert_eq!(st.writers, vec![("a".into(), 5, 10_000, 0)]);
        let bytes = lockgate_core::codec::to_bytes(&st);
        assert_eq!(
            lockgate_core::codec::from_bytes::<WindowsState>(&bytes).unwrap(),
            st
        );
    }
}
