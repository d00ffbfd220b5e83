//! Sources: where batches come from. Each source plans what a batch reads (its input
//! descriptor) when the batch is generated, and reads exactly that when the batch runs.
//!
//! - [`queue`]: a queue of prepared batches (tests, demos), and a constant stream.
//! - [`files`]: new files in a directory (`text_file_stream`).
//! - [`receiver`]: the [`Receiver`](receiver::Receiver) trait for push sources on their
//!   own thread, and [`socket`]: lines from a TCP socket.
//!
//! Text sources share one line decoder: invalid UTF-8 is replaced (and counted), lines
//! longer than a limit are cut (and counted), `\r\n` endings are stripped.

use std::ops::Range;
use std::sync::Arc;

use crate::batch::{Batch, Data};
use crate::clock::Time;
use crate::context::StreamingContext;
use crate::dstream::DStream;
use crate::error::Result;
use crate::graph::InputSource;
use crate::metrics::SourceCounters;

pub mod files;
pub mod queue;
pub mod receiver;
pub mod socket;

/// Default longest line of text sources, in bytes: longer lines are cut.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

/// The part of a source that produces the batch planned for a time.
pub(crate) trait SourceCompute<T>: InputSource {
    fn compute(&self, t: Time) -> Result<Batch<T>>;
}

/// A new source's name: `<kind>-<n>`, `n` counting the context's sources.
pub(crate) fn source_name(ctx: &StreamingContext, kind: &str) -> String {
    format!("{kind}-{}", ctx.metrics_ref().source_names().len())
}

/// Registers an input node for `src` in the context's graph.
pub(crate) fn register<T: Data, S: SourceCompute<T> + 'static>(
    ctx: &StreamingContext,
    kind: &'static str,
    src: Arc<S>,
) -> DStream<T> {
    let graph = ctx.graph();
    graph.add_input(src.clone());
    let node = graph.add_node(
        kind,
        graph.timing.interval_ms,
        false,
        Box::new(crate::dstream::FnOp(move |t| src.compute(t))),
    );
    DStream { node, graph }
}

/// Decodes one line (without its `\n`): strips a trailing `\r`, cuts it at `max` bytes,
/// replaces invalid UTF-8.
pub(crate) fn decode_line(mut bytes: &[u8], max: usize, counters: &SourceCounters) -> String {
    if let [rest @ .., b'\r'] = bytes {
        bytes = rest;
    }
    if bytes.len() > max {
        bytes = &bytes[..max];
        SourceCounters::add(&counters.truncated_lines, 1);
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => {
            SourceCounters::add(&counters.invalid_utf8_lines, 1);
            String::from_utf8_lossy(bytes).into_owned()
        }
    }
}

/// Splits a buffer into lines. A last line without `\n` counts as a line.
pub(crate) fn split_lines(buf: &[u8], max: usize, counters: &SourceCounters) -> Vec<String> {
    let mut out = Vec::with_capacity(buf.len() / 64 + 1);
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', buf) {
        out.push(decode_line(&buf[start..nl], max, counters));
        start = nl + 1;
    }
    if start < buf.len() {
        out.push(decode_line(&buf[start..], max, counters));
    }
    out
}

/// Cuts `buf` into about `k` ranges that end just after a `\n` (or at the end).
pub(crate) fn chunk_bounds(buf: &[u8], k: usize) -> Vec<Range<usize>> {
    let k = k.max(1);
    let mut out = Vec::with_capacity(k);
    let mut start = 0;
    for i in 1..=k {
        if start >= buf.len() {
            break;
        }
        let target = buf.len() * i / k;
        let end = if i == k || target <= start {
            if i == k {
                buf.len()
            } else {
                continue;
            }
        } else {
            match memchr::memchr(b'\n', &buf[target..]) {
                Some(off) => target + off + 1,
                None => buf.len(),
            }
        };
        if end > start {
            out.push(start..end);
            start = end;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_lines_handles_crlf_invalid_utf8_and_long_lines() {
        let c = SourceCounters::default();
        let lines = split_lines(b"ab\r\nc\xffd\n0123456789\nlast", 5, &c);
        assert_eq!(lines, vec!["ab", "c\u{fffd}d", "01234", "last"]);
        assert_eq!(SourceCounters::get(&c.invalid_utf8_lines), 1);
        assert_eq!(SourceCounters::get(&c.truncated_lines), 1);
    }

    #[test]
    fn chunk_bounds_cover_buffer_on_line_boundaries() {
        let buf = b"aaa\nbb\nc\ndddd\ne\n";
        for k in 1..8 {
            let chunks = chunk_bounds(buf, k);
            let mut pos = 0;
            for r in &chunks {
                assert_eq!(r.start, pos);
                assert!(r.end == buf.len() || buf[r.end - 1] == b'\n');
                pos = r.end;
            }
            assert_eq!(pos, buf.len());
        }
        assert!(chunk_bounds(b"", 3).is_empty());
    }
}
