//! The model of event-time windows: [`WindowSpec`] (tumbling, sliding, session; aligned
//! to the epoch), the [`TimeWindow`] a record falls in, a [`Windowed`] result, and the
//! [`OutputMode`] that says when a window is emitted. Re-exported by
//! `dstream::event_time`.

use std::time::Duration;

use crate::clock::{duration_ms, Time};
use crate::codec::{Codec, CodecError};

/// A window of event time: `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimeWindow {
    /// Inclusive start.
    pub start: Time,
    /// Exclusive end.
    pub end: Time,
}

impl Codec for TimeWindow {
    const NAME: &'static str = "TimeWindow";
    fn encode(&self, out: &mut Vec<u8>) {
        self.start.0.encode(out);
        self.end.0.encode(out);
    }
    fn decode(input: &mut &[u8]) -> std::result::Result<Self, CodecError> {
        Ok(TimeWindow {
            start: Time(i64::decode(input)?),
            end: Time(i64::decode(input)?),
        })
    }
}

/// One result of an event-time window aggregation: the key, the window and the value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Windowed<K, V> {
    /// The key (`()` for an aggregation without `key_by`).
    pub key: K,
    /// The window.
    pub window: TimeWindow,
    /// The aggregate of the window's records so far (update mode) or in all (append).
    pub value: V,
}

/// When an event-time aggregation emits a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputMode {
    /// Every batch emits the windows it changed, with their value so far.
    #[default]
    Update,
    /// A window is emitted once, when the watermark passes its end (or at the end of a
    /// bounded run).
    Append,
}

/// How records are grouped into event-time windows. Windows are aligned to the epoch:
/// a 30 s tumbling window starts at a multiple of 30 s since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowSpec {
    /// Fixed, non-overlapping windows of `size_ms`.
    Tumbling {
        /// Window length in ms.
        size_ms: i64,
    },
    /// Windows of `size_ms` starting every `slide_ms` (a record is in every window that
    /// covers it).
    Sliding {
        /// Window length in ms.
        size_ms: i64,
        /// Distance between window starts in ms.
        slide_ms: i64,
    },
    /// Sessions: a record opens `[t, t + gap)`; overlapping sessions of a key merge.
    Session {
        /// Inactivity that ends a session, in ms.
        gap_ms: i64,
    },
}

impl WindowSpec {
    /// Tumbling windows of `size`.
    pub fn tumbling(size: Duration) -> Self {
        WindowSpec::Tumbling {
            size_ms: duration_ms(size),
        }
    }

    /// Sliding windows of `size` every `slide`.
    pub fn sliding(size: Duration, slide: Duration) -> Self {
        WindowSpec::Sliding {
            size_ms: duration_ms(size),
            slide_ms: duration_ms(slide),
        }
    }

    /// Session windows closed by `gap` of inactivity.
    pub fn session(gap: Duration) -> Self {
        WindowSpec::Session {
            gap_ms: duration_ms(gap),
        }
    }

    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        let ok = match *self {
            WindowSpec::Tumbling { size_ms } => size_ms > 0,
            WindowSpec::Sliding { size_ms, slide_ms } => size_ms > 0 && slide_ms > 0,
            WindowSpec::Session { gap_ms } => gap_ms > 0,
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "event-time window {self:?}: lengths, slides and gaps must be at least 1 ms"
            ))
        }
    }

    pub(crate) fn is_session(&self) -> bool {
        matches!(self, WindowSpec::Session { .. })
    }

    /// Calls `f` with every window that holds event time `ts`.
    #[inline]
    pub(crate) fn assign(&self, ts: i64, mut f: impl FnMut(i64, i64)) {
        match *self {
            WindowSpec::Tumbling { size_ms } => {
                let start = ts - ts.rem_euclid(size_ms);
                f(start, start.saturating_add(size_ms));
            }
            WindowSpec::Sliding { size_ms, slide_ms } => {
                let mut start = ts - ts.rem_euclid(slide_ms);
                while start > ts.saturating_sub(size_ms) {
                    f(start, start.saturating_add(size_ms));
                    start -= slide_ms;
                }
            }
            WindowSpec::Session { gap_ms } => f(ts, ts.saturating_add(gap_ms)),
        }
    }

    /// All windows holding `ts` (for tests and for users checking their expectations).
    pub fn windows_of(&self, ts: Time) -> Vec<TimeWindow> {
        let mut out = Vec::new();
        self.assign(ts.0, |s, e| {
            out.push(TimeWindow {
                start: Time(s),
                end: Time(e),
            })
        });
        out.reverse();
        out
    }
}

impl crate::show::Show for TimeWindow {
    /// `[start,end)` in epoch milliseconds.
    fn show(&self, out: &mut dyn std::fmt::Write) -> std::fmt::Result {
        write!(out, "[{},{})", self.start.0, self.end.0)
    }
}

impl<K: crate::show::Show, V: crate::show::Show> crate::show::Show for Windowed<K, V> {
    /// `(key,[start,end),value)`, like a tuple.
    fn show(&self, out: &mut dyn std::fmt::Write) -> std::fmt::Result {
        out.write_char('(')?;
        self.key.show(out)?;
        out.write_char(',')?;
        self.window.show(out)?;
        out.write_char(',')?;
        self.value.show(out)?;
        out.write_char(')')
    }
}
