//! Splitting lines of text into parts and counting the parts: the inner loop of the
//! `word-count` job and of SQL's `unnest(string_to_array(value, ' '))` grouped by word.
//!
//! [`for_each_part`] splits a chunk of lines on a delimiter the way SQL's `lines`
//! table and `string_to_array` do: lines end at `\n` (a `\r` before it, or at the end
//! of the chunk, is not part of the line; a last line without `\n` counts), an empty
//! line has no parts, and a line's parts are the texts between delimiters — empty ones
//! included (`"a  b"` is `a`, ``, `b`). A one-byte delimiter is found 64 bytes at a time
//! (a bit per byte, computed 8 bytes at a time without branches, then walked with
//! `trailing_zeros`): cheaper than a search call per delimiter when parts are a few bytes
//! long.
//!
//! [`WordCounts`] counts byte strings borrowed from the text. A word of up to 15 bytes —
//! nearly every word of a log line — is packed into two integers (its bytes,
//! zero-padded, and its length in the top byte), hashed with one multiply and counted in
//! a table of those integers: no hashing of byte slices, no `memcmp`, nothing allocated
//! per word. Longer words go to a map keyed by the borrowed slice.
//!
//! [`next_line_holding`] finds the lines that hold a text with one substring search
//! over the chunk (the `log-errors` job's `ERROR` lines, SQL's `LIKE '%text%'`).

use hashbrown::HashTable;

use crate::hash::FxHashMap;

/// The next line of `buf`, from byte `*from` on, that holds `finder`'s needle: the range
/// of its bytes without its `\n` (a `\r` before it is kept), found with one substring
/// search (lines without the needle are never looked at); `*from` moves past it.
pub fn next_line_holding(
    buf: &[u8],
    finder: &memchr::memmem::Finder<'_>,
    from: &mut usize,
) -> Option<(usize, usize)> {
    let at = *from + finder.find(buf.get(*from..)?)?;
    // The line's start is looked for back from the match, no further than `*from`.
    let start = memchr::memrchr(b'\n', &buf[*from..at]).map_or(*from, |i| *from + i + 1);
    let end = memchr::memchr(b'\n', &buf[at..]).map_or(buf.len(), |i| at + i);
    *from = end + 1;
    Some((start, end))
}

/// Longest word kept inline as two integers (the 16th byte holds the length).
const INLINE: usize = 15;

/// A short word's packed bytes and its count.
struct Short {
    lo: u64,
    hi: u64,
    count: i64,
}

/// Counts of byte strings borrowed from text of lifetime `'a`; see the module docs.
#[derive(Default)]
pub struct WordCounts<'a> {
    short: HashTable<Short>,
    long: FxHashMap<&'a [u8], i64>,
}

/// Mixes the packed bytes of a short word into a hash whose high bits (the table's
/// tag) and low bits (its bucket) both depend on every byte: a folded 64×64→128 multiply.
#[inline]
fn mix(lo: u64, hi: u64) -> u64 {
    let m = u128::from(lo ^ 0x243f_6a88_85a3_08d3) * u128::from(hi ^ 0x1319_8a2e_0370_7344);
    // Truncations intended: the two halves of the product are folded together.
    (m as u64) ^ ((m >> 64) as u64)
}

/// The first `n` (≤ 8) bytes of `b` as a little-endian integer, zero-padded.
#[inline]
fn load(b: &[u8], n: usize) -> u64 {
    match b.get(..8) {
        Some(eight) => {
            let mut x = [0u8; 8];
            x.copy_from_slice(eight);
            let v = u64::from_le_bytes(x);
            if n >= 8 {
                v
            } else {
                v & ((1u64 << (8 * n)) - 1)
            }
        }
        None => {
            let mut x = [0u8; 8];
            let n = n.min(b.len());
            x[..n].copy_from_slice(&b[..n]);
            u64::from_le_bytes(x)
        }
    }
}

impl<'a> WordCounts<'a> {
    /// No words yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts the word `buf[start..end]` (any length, the empty word too). Taking the
    /// word as a range of its text lets a short word be read 8 bytes at a time past
    /// its end, within `buf`.
    ///
    /// # Panics
    /// When `start..end` is not a range of `buf`.
    #[inline(always)]
    pub fn add(&mut self, buf: &'a [u8], start: usize, end: usize) {
        let len = end - start;
        if len > INLINE {
            *self.long.entry(&buf[start..end]).or_insert(0) += 1;
            return;
        }
        let rest = &buf[start..];
        let lo = load(rest, len);
        // Length-checked above: `len` ≤ 15 fits the top byte.
        let hi = if len > 8 {
            load(&rest[8..], len - 8)
        } else {
            0
        } | ((len as u64) << 56);
        let hash = mix(lo, hi);
        match self.short.find_mut(hash, |e| e.lo == lo && e.hi == hi) {
            Some(e) => e.count += 1,
            None => {
                self.short
                    .insert_unique(hash, Short { lo, hi, count: 1 }, |e| mix(e.lo, e.hi));
            }
        }
    }

    /// The number of distinct words.
    pub fn len(&self) -> usize {
        self.short.len() + self.long.len()
    }

    /// True when no word was counted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` with each distinct word and its count (in no particular order).
    pub fn for_each(self, mut f: impl FnMut(&[u8], i64)) {
        for e in self.short {
            let len = (e.hi >> 56) as usize;
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&e.lo.to_le_bytes());
            bytes[8..].copy_from_slice(&e.hi.to_le_bytes());
            f(&bytes[..len], e.count);
        }
        for (w, n) in self.long {
            f(w, n);
        }
    }
}

/// Bit 7 of each byte of `x` set where that byte is `delimiter` (`splat`, the byte in
/// every lane) or a line feed (exact, no false positives: the carry-free zero-byte test).
#[inline]
fn separators(x: u64, splat: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const LFS: u64 = 0x0a0a_0a0a_0a0a_0a0a;
    let zero = |v: u64| !(((v & LOW7) + LOW7) | v | LOW7);
    zero(x ^ splat) | zero(x ^ LFS)
}

/// One bit per byte of a 64-byte block (bit `i` for byte `i`), set at separators.
#[inline(always)]
fn separator_bits(block: &[u8], splat: u64) -> u64 {
    let mut bits = 0;
    for (j, word) in block.chunks_exact(8).enumerate() {
        let mut x = [0u8; 8];
        x.copy_from_slice(word);
        // Bit 7 of each byte to bit `j` of one byte: the multiply gathers the eight.
        let flags =
            (separators(u64::from_le_bytes(x), splat) >> 7).wrapping_mul(0x0102_0408_1020_4080);
        bits |= (flags >> 56) << (8 * j);
    }
    bits
}

/// Calls `part(start, end)` with the range in `buf` of each part of each line of `buf`
/// split on `delimiter` (see the module docs for what a line and a part are; an empty
/// delimiter leaves each non-empty line whole).
#[inline]
pub fn for_each_part(buf: &[u8], delimiter: &[u8], mut part: impl FnMut(usize, usize)) {
    match *delimiter {
        [d] if d != b'\n' && d != b'\r' => split_on_byte(buf, d, &mut part),
        _ => {
            let Some(body) = (!buf.is_empty()).then(|| buf.strip_suffix(b"\n").unwrap_or(buf))
            else {
                return;
            };
            let finder = memchr::memmem::Finder::new(delimiter);
            let mut start = 0;
            for end in memchr::memchr_iter(b'\n', body).chain(std::iter::once(body.len())) {
                let line = &body[start..end];
                let len = line.len() - usize::from(line.ends_with(b"\r"));
                if len > 0 {
                    let mut from = start;
                    if !delimiter.is_empty() {
                        for at in finder.find_iter(&line[..len]) {
                            part(from, start + at);
                            from = start + at + delimiter.len();
                        }
                    }
                    part(from, start + len);
                }
                start = end + 1;
            }
        }
    }
}

/// [`for_each_part`] for a one-byte delimiter `d` that is not a line end.
#[inline(always)]
fn split_on_byte(buf: &[u8], d: u8, part: &mut impl FnMut(usize, usize)) {
    let splat = u64::from(d) * 0x0101_0101_0101_0101;
    // The current part's and the current line's first byte.
    let (mut start, mut line) = (0usize, 0usize);
    let mut separator = |at: usize, start: &mut usize, line: &mut usize| {
        if buf[at] == d {
            part(*start, at);
        } else {
            end_line(buf, *start, *line, at, part);
            *line = at + 1;
        }
        *start = at + 1;
    };
    let blocks = buf.chunks_exact(64);
    let tail = blocks.remainder();
    for (i, block) in blocks.enumerate() {
        let mut bits = separator_bits(block, splat);
        while bits != 0 {
            separator(
                i * 64 + bits.trailing_zeros() as usize,
                &mut start,
                &mut line,
            );
            bits &= bits - 1;
        }
    }
    let base = buf.len() - tail.len();
    for (j, &b) in tail.iter().enumerate() {
        if b == d || b == b'\n' {
            separator(base + j, &mut start, &mut line);
        }
    }
    if line < buf.len() {
        end_line(buf, start, line, buf.len(), part);
    }
}

/// The last part of the line `buf[line..end]` (a line end at `end`), which starts at
/// `start`: without a `\r` that ends the line, and none when the line is empty.
#[inline(always)]
fn end_line(
    buf: &[u8],
    start: usize,
    line: usize,
    end: usize,
    part: &mut impl FnMut(usize, usize),
) {
    let end = end - usize::from(end > line && buf[end - 1] == b'\r');
    if end > line {
        part(start, end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parts as SQL's `lines` table and `string_to_array` make them.
    fn by_splitting(text: &str, delimiter: &str) -> Vec<String> {
        if text.is_empty() {
            return Vec::new();
        }
        let body = text.strip_suffix('\n').unwrap_or(text);
        let mut out = Vec::new();
        for line in body.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            if delimiter.is_empty() {
                out.push(line.to_string());
            } else {
                out.extend(line.split(delimiter).map(str::to_string));
            }
        }
        out
    }

    fn parts(text: &str, delimiter: &str) -> Vec<String> {
        let mut out = Vec::new();
        for_each_part(text.as_bytes(), delimiter.as_bytes(), |s, e| {
            out.push(text[s..e].to_string())
        });
        out
    }

    #[test]
    fn parts_are_sqls_split_lines() {
        let long: String = (0..300).map(|i| format!("w{} ", i % 7)).collect();
        for text in [
            "a bb  a\r\nthe-longest-word-here a\n\nbb last",
            "",
            "\n",
            "\n\n",
            " \n \r\n",
            "\r",
            " \r",
            "x",
            "a \n",
            "ends-with-cr\r",
            "a\rb a\r",
            "héllo wörld::héllo 日本語の単語 日本語の単語\n",
            long.as_str(),
        ] {
            for d in [" ", "::", "\r", "\n", "", "wörld", "a"] {
                assert_eq!(parts(text, d), by_splitting(text, d), "{text:?} on {d:?}");
            }
        }
    }

    fn counted(text: &str) -> Vec<(String, i64)> {
        let mut counts = WordCounts::new();
        let buf = text.as_bytes();
        for_each_part(buf, b" ", |s, e| counts.add(buf, s, e));
        let mut got = Vec::new();
        counts.for_each(|w, n| got.push((String::from_utf8_lossy(w).into_owned(), n)));
        got.sort();
        got
    }

    fn by_counting(text: &str) -> Vec<(String, i64)> {
        let mut want: std::collections::BTreeMap<String, i64> = Default::default();
        for w in by_splitting(text, " ") {
            *want.entry(w).or_insert(0) += 1;
        }
        want.into_iter().collect()
    }

    #[test]
    fn counts_match_counting_the_parts() {
        let many: String = (0..5000)
            .map(|i| format!("w{} w{} ", i % 3000, i))
            .collect();
        for text in [
            "a bb  a\r\nthe-longest-word-here a\n\nbb last",
            // Every length around the inline limit and the 8-byte boundary, at the end of
            // the buffer too (where fewer than 8 bytes follow the word's start).
            "1234567 12345678 123456789 12345678901234 123456789012345 1234567890123456 \
             12345678901234567 123456789012345 12345678",
            // Words that differ only after the 8th byte or in their length.
            "abcdefgh abcdefghi abcdefghj abcdefgh\0 abcdefgh abc\0 abc",
            many.as_str(),
        ] {
            assert_eq!(counted(text), by_counting(text), "{text:?}");
        }
    }
}
