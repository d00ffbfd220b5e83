//! State schemas as checkpoints record them, and how recovery compares a recorded one
//! with the code's.
//!
//! A state's schema is built from its types' [`Codec`](crate::codec::Codec) schemas:
//! `K -> S` for keyed state (`string -> (i64, i64)`), `batches of T` for a window's
//! buffer, `A; B` for two pieces of state stored as one. Lockgate 0.1 and the releases
//! before schemas recorded Rust's type paths instead
//! (`compact_str::CompactString -> (i64, i64)`): [`normalise`] reads those as the schema
//! the same types have now (each path by its last segment, the standard types by their
//! schema names), so their checkpoints keep recovering without `std::any::type_name`,
//! whose output Rust does not promise to keep.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::codec::StoredVersions;

/// How a recorded schema relates to the code's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SchemaMatch {
    /// The same schema.
    Same,
    /// The same types, some at an older version: decoding migrates them (the recorded
    /// versions by name, for [`Codec::decode_stored`](crate::codec::Codec::decode_stored)).
    Migrates(Arc<BTreeMap<String, u32>>),
    /// Different types (or a version newer than the code's).
    Changed,
}

impl SchemaMatch {
    /// The recorded versions to decode with (`None` unless some type migrates).
    pub fn versions(&self) -> StoredVersions {
        match self {
            SchemaMatch::Migrates(v) => Some(v.clone()),
            _ => None,
        }
    }

    /// Whether the state can be restored.
    pub fn compatible(&self) -> bool {
        !matches!(self, SchemaMatch::Changed)
    }
}

/// Compares a schema a checkpoint recorded (in either form) with the code's.
pub(crate) fn compare(recorded: &str, code: &str) -> SchemaMatch {
    let recorded = normalise(recorded);
    if recorded == code {
        return SchemaMatch::Same;
    }
    let (old_shape, old_versions) = split_versions(&recorded);
    let (new_shape, new_versions) = split_versions(code);
    if old_shape != new_shape {
        return SchemaMatch::Changed;
    }
    let mut migrating = BTreeMap::new();
    for (name, new) in new_versions {
        let old = old_versions.get(&name).copied().unwrap_or(1);
        if old > new {
            // Written by newer code than this: nothing here can read it.
            return SchemaMatch::Changed;
        }
        if old != new {
            migrating.insert(name, old);
        }
    }
    if migrating.is_empty() {
        SchemaMatch::Same
    } else {
        SchemaMatch::Migrates(Arc::new(migrating))
    }
}

/// One token of a schema: a name (a path of Rust's type names too) or one character of
/// punctuation or space.
enum Token<'a> {
    Name(&'a str),
    Punct(char),
}

fn is_name_char(c: char) -> bool {
    !(c.is_whitespace() || "<>(),;".contains(c))
}

fn tokens(s: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if is_name_char(c) {
            let end = rest.find(|c| !is_name_char(c)).unwrap_or(rest.len());
            out.push(Token::Name(&rest[..end]));
            rest = &rest[end..];
        } else {
            out.push(Token::Punct(c));
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// A recorded schema in today's form: Rust type paths of the releases before schemas
/// become the schema names the same types have now (`alloc::string::String` and
/// `compact_str::CompactString` are `string`, `alloc::vec::Vec<T>` is `vec<T>`, a `Box`
/// is its content, any other path its last segment). Today's form is left as it is.
pub(crate) fn normalise(recorded: &str) -> String {
    let toks = tokens(recorded);
    let mut out = String::with_capacity(recorded.len());
    // For each open `<`: whether it opened a `Box<..>` (dropped with its `>`).
    let mut angles: Vec<bool> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        match toks[i] {
            Token::Name(path) => {
                let last = path.rsplit("::").next().unwrap_or(path);
                let opens = matches!(toks.get(i + 1), Some(Token::Punct('<')));
                match last {
                    "Box" if opens && path.contains("::") => {
                        angles.push(true);
                        i += 2;
                        continue;
                    }
                    "String" | "CompactString" | "PathBuf" if path.contains("::") => {
                        out.push_str("string")
                    }
                    "Vec" if path.contains("::") => out.push_str("vec"),
                    "Option" if path.contains("::") => out.push_str("option"),
                    "usize" => out.push_str("u64"),
                    "isize" => out.push_str("i64"),
                    _ => out.push_str(last),
                }
            }
            Token::Punct('<') => {
                angles.push(false);
                out.push('<');
            }
            Token::Punct('>') => {
                if !angles.pop().unwrap_or(false) {
                    out.push('>');
                }
            }
            Token::Punct(c) => out.push(c),
        }
        i += 1;
    }
    out
}

/// A schema without its `@version` suffixes, and the version of every name in it
/// (1 where it has none).
fn split_versions(schema: &str) -> (String, BTreeMap<String, u32>) {
    let mut shape = String::with_capacity(schema.len());
    let mut versions = BTreeMap::new();
    for tok in tokens(schema) {
        match tok {
            Token::Name(name) => {
                let (base, version) = match name.rsplit_once('@') {
                    Some((base, v)) => match v.parse::<u32>() {
                        Ok(v) => (base, v),
                        Err(_) => (name, 1),
                    },
                    None => (name, 1),
                };
                shape.push_str(base);
                versions.insert(base.to_string(), version);
            }
            Token::Punct(c) => shape.push(c),
        }
    }
    (shape, versions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_paths_earlier_releases_recorded_read_as_todays_schemas() {
        for (old, new) in [
            (
                "compact_str::CompactString -> (i64, i64)",
                "string -> (i64, i64)",
            ),
            ("std::path::PathBuf -> ()", "string -> ()"),
            ("u32 -> i64", "u32 -> i64"),
            (
                "() -> alloc::vec::Vec<lockgate_core::dstream::event_time::Win<i64>>; u8 -> i64",
                "() -> vec<Win<i64>>; u8 -> i64",
            ),
            (
                "batches of (alloc::string::String, core::option::Option<usize>)",
                "batches of (string, option<u64>)",
            ),
            (
                "alloc::boxed::Box<my_app::state::Session> -> (i64,)",
                "Session -> (i64,)",
            ),
            (
                "lockgate_sql::value::Key -> lockgate_sql::value::Partials",
                "Key -> Partials",
            ),
        ] {
            assert_eq!(normalise(old), new, "{old}");
            // Today's form is left as it is.
            assert_eq!(normalise(new), new);
        }
    }

    #[test]
    fn an_older_version_migrates_a_newer_one_or_another_type_does_not() {
        assert_eq!(
            compare("my_app::Session -> i64", "Session -> i64"),
            SchemaMatch::Same
        );
        let m = compare("string -> vec<Session>", "string -> vec<Session@3>");
        assert_eq!(
            m,
            SchemaMatch::Migrates(Arc::new(BTreeMap::from([("Session".to_string(), 1)])))
        );
        assert!(m.compatible());
        assert_eq!(m.versions().unwrap().get("Session"), Some(&1));
        assert!(matches!(
            compare("string -> Session@2", "string -> Session@3"),
            SchemaMatch::Migrates(v) if v.get("Session") == Some(&2)
        ));
        // Newer than the code: nothing can read it.
        assert_eq!(
            compare("string -> Session@4", "string -> Session@3"),
            SchemaMatch::Changed
        );
        assert_eq!(
            compare("string -> i64", "string -> u64"),
            SchemaMatch::Changed
        );
        assert_eq!(
            compare("string -> Session", "string -> Visit@2"),
            SchemaMatch::Changed
        );
    }
}
