//! Counting the words of a chunk of text: the inner loop of `word-count`.
//!
//! Words are split on spaces and line ends (`\r` before a line end stripped, empty
//! strings not counted). A word of up to 15 bytes — nearly every word of a log line —
//! is packed into two integers as it is scanned (its bytes, zero-padded, and its length
//! in the top byte), hashed with one multiply and counted in a table of those integers:
//! no hashing of byte slices, no `memcmp`, nothing allocated per word. Longer words go to
//! a map keyed by the borrowed slice. Strings are made once per distinct word, at the end.

use hashbrown::HashTable;
use lockgate_core::CompactString;
use rustc_hash::FxHashMap;

/// Longest word kept inline as two integers (the 16th byte holds the length).
const INLINE: usize = 15;

/// A short word's packed bytes and its count.
struct Short {
    lo: u64,
    hi: u64,
    count: i64,
}

/// Counts words of one chunk; see the module docs.
#[derive(Default)]
struct Counter<'a> {
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

impl<'a> Counter<'a> {
    /// Counts `buf[start..end]`, the text before a separator at `end` (or the end of
    /// the buffer), without a `\r` that ends a line; empty words are not counted.
    #[inline(always)]
    fn word(&mut self, buf: &'a [u8], start: usize, end: usize) {
        let mut len = end - start;
        if len > 0 && buf[end - 1] == b'\r' && (end == buf.len() || buf[end] == b'\n') {
            len -= 1;
        }
        if len > 0 {
            self.add(buf, start, len);
        }
    }

    /// Counts the word `buf[start..start + len]` (`len > 0`).
    #[inline(always)]
    fn add(&mut self, buf: &'a [u8], start: usize, len: usize) {
        if len > INLINE {
            *self.long.entry(&buf[start..start + len]).or_insert(0) += 1;
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

    /// One `(word, count)` per distinct word (invalid UTF-8 replaced).
    fn into_pairs(self) -> Vec<(CompactString, i64)> {
        let mut out = Vec::with_capacity(self.short.len() + self.long.len());
        for e in self.short {
            let len = (e.hi >> 56) as usize;
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&e.lo.to_le_bytes());
            bytes[8..].copy_from_slice(&e.hi.to_le_bytes());
            let word = match std::str::from_utf8(&bytes[..len]) {
                Ok(s) => CompactString::new(s),
                Err(_) => CompactString::from_utf8_lossy(&bytes[..len]),
            };
            out.push((word, e.count));
        }
        out.extend(
            self.long
                .into_iter()
                .map(|(w, n)| (CompactString::from_utf8_lossy(w), n)),
        );
        out
    }
}

/// Bit 7 of each byte of `x` set where that byte is a space or a line feed (exact, no
/// false positives: the carry-free zero-byte test).
#[inline]
fn separators(x: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const SPACES: u64 = 0x2020_2020_2020_2020;
    const LFS: u64 = 0x0a0a_0a0a_0a0a_0a0a;
    let zero = |v: u64| !(((v & LOW7) + LOW7) | v | LOW7);
    zero(x ^ SPACES) | zero(x ^ LFS)
}

/// One bit per byte of a 64-byte block (bit `i` for byte `i`), set at separators.
#[inline(always)]
fn separator_bits(block: &[u8]) -> u64 {
    let mut bits = 0;
    for (j, word) in block.chunks_exact(8).enumerate() {
        let mut x = [0u8; 8];
        x.copy_from_slice(word);
        // Bit 7 of each byte to bit `j` of one byte: the multiply gathers the eight.
        let flags = (separators(u64::from_le_bytes(x)) >> 7).wrapping_mul(0x0102_0408_1020_4080);
        bits |= (flags >> 56) << (8 * j);
    }
    bits
}

/// The words of a chunk of lines with their counts: one pair per distinct word.
///
/// Separators are found 64 bytes at a time (a bit per byte, computed 8 bytes at a time
/// without branches, then walked with `trailing_zeros`): cheaper than a search call per
/// separator when words are a few bytes long.
pub fn count_words(buf: &[u8]) -> Vec<(CompactString, i64)> {
    let mut counter = Counter::default();
    let mut start = 0;
    let blocks = buf.chunks_exact(64);
    let tail = blocks.remainder();
    for (i, block) in blocks.enumerate() {
        let mut bits = separator_bits(block);
        while bits != 0 {
            let end = i * 64 + bits.trailing_zeros() as usize;
            counter.word(buf, start, end);
            start = end + 1;
            bits &= bits - 1;
        }
    }
    let base = buf.len() - tail.len();
    for (j, b) in tail.iter().enumerate() {
        if *b == b' ' || *b == b'\n' {
            counter.word(buf, start, base + j);
            start = base + j + 1;
        }
    }
    counter.word(buf, start, buf.len());
    counter.into_pairs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_splitting(text: &str) -> Vec<(String, i64)> {
        let mut want: std::collections::BTreeMap<String, i64> = Default::default();
        for line in text.split('\n') {
            for w in line
                .strip_suffix('\r')
                .unwrap_or(line)
                .split(' ')
                .filter(|w| !w.is_empty())
            {
                *want.entry(w.to_string()).or_insert(0) += 1;
            }
        }
        want.into_iter().collect()
    }

    fn counted(text: &str) -> Vec<(String, i64)> {
        let mut got: Vec<(String, i64)> = count_words(text.as_bytes())
            .into_iter()
            .map(|(w, n)| (w.into(), n))
            .collect();
        got.sort();
        got
    }

    #[test]
    fn chunk_word_counts_match_splitting_lines() {
        for text in [
            "a bb  a\r\nthe-longest-word-here a\n\nbb last",
            "",
            " \n \r\n",
            "x",
            "ends-with-cr\r",
            // Every length around the inline limit and the 8-byte boundary, at the end of
            // the buffer too (where fewer than 8 bytes follow the word's start).
            "1234567 12345678 123456789 12345678901234 123456789012345 1234567890123456 \
             12345678901234567 123456789012345 12345678",
            // Words that differ only after the 8th byte or in their length.
            "abcdefgh abcdefghi abcdefghj abcdefgh\0 abcdefgh abc\0 abc",
            "héllo wörld héllo 日本語の単語 日本語の単語",
        ] {
            assert_eq!(counted(text), by_splitting(text), "{text:?}");
        }
    }

    #[test]
    fn a_lone_cr_inside_a_line_is_part_of_the_word() {
        assert_eq!(
            counted("a\rb a\r"),
            vec![("a".into(), 1), ("a\rb".into(), 1)]
        );
    }

    #[test]
    fn many_distinct_words_grow_the_table() {
        let text: String = (0..5000)
            .map(|i| format!("w{} w{} ", i % 3000, i))
            .collect();
        assert_eq!(counted(&text), by_splitting(&text));
    }
}
