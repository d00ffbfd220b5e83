//! Counting the words of a chunk of text: the inner loop of `word-count`.
//!
//! Words are split on spaces and line ends (`\r` before a line end stripped, empty
//! strings not counted), with [`lockgate_core::text`]'s splitter and packed-word table:
//! nothing allocated per word; strings are made once per distinct word, at the end.

use lockgate_core::text::{for_each_part, WordCounts};
use lockgate_core::CompactString;

/// The words of a chunk of lines with their counts: one pair per distinct word
/// (invalid UTF-8 replaced).
pub fn count_words(buf: &[u8]) -> Vec<(CompactString, i64)> {
    let mut counts = WordCounts::new();
    for_each_part(buf, b" ", |start, end| {
        if end > start {
            counts.add(buf, start, end);
        }
    });
    let mut out = Vec::with_capacity(counts.len());
    counts.for_each(|w, n| {
        let word = match std::str::from_utf8(w) {
            Ok(s) => CompactString::new(s),
            Err(_) => CompactString::from_utf8_lossy(w),
        };
        out.push((word, n));
    });
    out
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
