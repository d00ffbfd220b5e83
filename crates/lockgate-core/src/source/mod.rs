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
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::batch::Data;
use crate::checkpoint::state::{KeyedState, KeyedStateful};
use crate::codec::Codec;
use crate::context::StreamingContext;
use crate::dstream::DStream;
use crate::metrics::SourceCounters;
use crate::traits::SourceCompute;

pub mod direct;
pub mod files;
pub mod generated;
pub mod queue;
pub(crate) mod read;
pub mod receiver;
pub mod socket;

/// Default longest line of text sources, in bytes: longer lines are cut.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

/// A new source's name: `<kind>-<n>`, `n` counting the context's sources.
pub(crate) fn source_name(ctx: &StreamingContext, kind: &str) -> String {
    ctx.next_source_name(kind)
}

/// A source's checkpointed state (one partition), registered under the stable name
/// `<source>.<what>`.
pub(crate) fn source_state<K, V>(
    ctx: &StreamingContext,
    source: &str,
    what: &str,
) -> Arc<Mutex<KeyedState<K, V>>>
where
    K: std::hash::Hash + Eq + Clone + Codec + Send + 'static,
    V: Codec + Send + 'static,
{
    let (stateful, state) = keyed_source_state(source, what);
    ctx.graph().add_state(Arc::new(stateful));
    state
}

/// Like [`source_state`], for state that checkpoints of an earlier Lockgate do not
/// have: recovering one of those starts it empty.
pub(crate) fn introduced_source_state<K, V>(
    ctx: &StreamingContext,
    source: &str,
    what: &str,
) -> Arc<Mutex<KeyedState<K, V>>>
where
    K: std::hash::Hash + Eq + Clone + Codec + Send + 'static,
    V: Codec + Send + 'static,
{
    let (stateful, state) = keyed_source_state(source, what);
    ctx.graph().add_state(Arc::new(stateful.introduced()));
    state
}

type SourceState<K, V> = (KeyedStateful<K, V>, Arc<Mutex<KeyedState<K, V>>>);

fn keyed_source_state<K, V>(source: &str, what: &str) -> SourceState<K, V>
where
    K: std::hash::Hash + Eq + Clone + Codec + Send + 'static,
    V: Codec + Send + 'static,
{
    let state = Arc::new(Mutex::new(KeyedState::new(1, true)));
    let name = format!("{source}.{what}");
    let stateful = KeyedStateful::new(Arc::new(move || name.clone()), state.clone());
    (stateful, state)
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
        Box::new(crate::dstream::FnOp(
            move |cx: &crate::types::BatchContext| src.compute(cx.time),
        )),
    );
    DStream {
        node,
        graph,
        shuffle_partitions: None,
    }
}

/// The text sources' line policy for one line (without its `\n`), for sources built
/// outside this crate (Kafka's `kafka_lines`): strips a trailing `\r`, cuts the line at
/// `max` bytes and replaces invalid UTF-8 by U+FFFD, counting both in `counters`.
pub fn decode_text_line(bytes: &[u8], max: usize, counters: &SourceCounters) -> String {
    decode_line(bytes, max, counters)
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

/// Whole lines of a file held in a shared buffer (see
/// [`text_file_chunk_stream`](StreamingContext::text_file_chunk_stream)): cloning a
/// chunk or iterating its lines copies no text.
#[derive(Clone)]
pub struct TextChunk {
    data: Arc<Vec<u8>>,
    range: Range<usize>,
    /// The file the data was read from, if it was.
    origin: Option<Arc<Path>>,
}

impl TextChunk {
    /// The chunk `range` of `data` (which should start at a line start and end after a
    /// `\n` or at the end of the data).
    pub fn new(data: Arc<Vec<u8>>, range: Range<usize>) -> Self {
        let end = range.end.min(data.len());
        TextChunk {
            range: range.start.min(end)..end,
            data,
            origin: None,
        }
    }

    /// The same chunk, read from the file `origin`.
    pub fn with_origin(mut self, origin: Arc<Path>) -> Self {
        self.origin = Some(origin);
        self
    }

    /// The file the chunk was read from, if it was (for messages).
    pub fn origin(&self) -> Option<&Path> {
        self.origin.as_deref()
    }

    /// The 1-based line number, in its file, of the line at byte `offset` of the chunk
    /// (counts the line ends before it: for messages, not for hot paths).
    pub fn line_number(&self, offset: usize) -> u64 {
        let end = (self.range.start + offset).min(self.data.len());
        memchr::memchr_iter(b'\n', &self.data[..end]).count() as u64 + 1
    }

    /// A chunk of its own bytes (tests, small inputs).
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        let data: Vec<u8> = bytes.into();
        let n = data.len();
        TextChunk::new(Arc::new(data), 0..n)
    }

    /// The chunk's bytes: whole lines, each ending in `\n` (except perhaps the last).
    pub fn as_bytes(&self) -> &[u8] {
        &self.data[self.range.clone()]
    }

    /// The buffer the chunk is a part of, and the part: to hand its text on (to
    /// another library's buffers, say) without copying it.
    pub fn shared(&self) -> (&Arc<Vec<u8>>, Range<usize>) {
        (&self.data, self.range.clone())
    }

    /// The lines, without `\n` or `\r\n`; a last line without `\n` counts.
    pub fn lines(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let buf = self.as_bytes();
        let body = buf.strip_suffix(b"\n").unwrap_or(buf);
        let mut rest = (!buf.is_empty()).then_some(body);
        std::iter::from_fn(move || {
            let cur = rest?;
            let line = match memchr::memchr(b'\n', cur) {
                Some(i) => {
                    rest = Some(&cur[i + 1..]);
                    &cur[..i]
                }
                None => {
                    rest = None;
                    cur
                }
            };
            Some(line.strip_suffix(b"\r").unwrap_or(line))
        })
    }

    /// The lines that contain `needle` (each once, in order), found with a fast
    /// substring search over the whole chunk: lines without it are never looked at.
    pub fn lines_containing<'a>(&'a self, needle: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let buf = self.as_bytes();
        let finder = memchr::memmem::Finder::new(needle);
        let mut from = 0;
        std::iter::from_fn(move || {
            let (start, end) = crate::text::next_line_holding(buf, &finder, &mut from)?;
            let line = &buf[start..end];
            Some(line.strip_suffix(b"\r").unwrap_or(line))
        })
    }

    /// The line of the chunk that holds byte `pos` (an offset into
    /// [`as_bytes`](Self::as_bytes)), without its line ending.
    pub fn line_at(&self, pos: usize) -> &[u8] {
        let buf = self.as_bytes();
        let pos = pos.min(buf.len());
        let start = memchr::memrchr(b'\n', &buf[..pos]).map_or(0, |i| i + 1);
        let end = memchr::memchr(b'\n', &buf[pos..]).map_or(buf.len(), |i| pos + i);
        let line = &buf[start..end];
        line.strip_suffix(b"\r").unwrap_or(line)
    }

    /// The number of lines (a last line without `\n` counts).
    pub fn line_count(&self) -> u64 {
        let buf = self.as_bytes();
        let newlines = memchr::memchr_iter(b'\n', buf).count() as u64;
        newlines + u64::from(buf.last().is_some_and(|&b| b != b'\n'))
    }
}

impl std::fmt::Debug for TextChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TextChunk({} bytes, {} lines)",
            self.range.len(),
            self.line_count()
        )
    }
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
    fn text_chunk_lines_without_copies() {
        let c = TextChunk::from_bytes(&b"ab\r\n\nc ERROR d\nlast"[..]);
        let lines: Vec<&[u8]> = c.lines().collect();
        assert_eq!(lines, vec![&b"ab"[..], b"", b"c ERROR d", b"last"]);
        assert_eq!(c.line_count(), 4);
        let pos = memchr::memmem::find(c.as_bytes(), b"ERROR").unwrap();
        assert_eq!(c.line_at(pos), b"c ERROR d");
        assert_eq!(c.line_at(0), b"ab");
        let many =
            TextChunk::from_bytes(&b"x ERROR ERROR\nok\nERROR\nno\r\ny ERROR\r\nlast ERROR"[..]);
        let hits: Vec<&[u8]> = many.lines_containing(b"ERROR").collect();
        assert_eq!(
            hits,
            vec![&b"x ERROR ERROR"[..], b"ERROR", b"y ERROR", b"last ERROR"]
        );
        let whole = TextChunk::from_bytes(&b"x\ny\n"[..]);
        assert_eq!(whole.lines().count(), 2);
        assert_eq!(whole.line_count(), 2);
        assert_eq!(TextChunk::from_bytes(Vec::new()).lines().count(), 0);
        let data = Arc::new(b"one\ntwo\nthree\n".to_vec());
        let second = TextChunk::new(data, 4..8);
        assert_eq!(second.lines().collect::<Vec<_>>(), vec![&b"two"[..]]);
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
