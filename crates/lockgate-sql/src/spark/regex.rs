//! Spark's regular-expression functions — `regexp_extract`, `regexp_extract_all`,
//! `regexp_replace`, `rlike` (`regexp`, `regexp_like`) and `split` — with Spark's
//! semantics (a find anywhere in the text, `""` where nothing matched, NULL in gives
//! NULL out, Java's `$1` in replacements, trailing empty strings kept by `split`),
//! written with Rust's `regex` crate, whose syntax is Java's for everything but
//! look-around, back-references and possessive quantifiers (refused at start).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, ListBuilder, StringBuilder, StringViewBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{exec_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use regex::Regex;

use super::args::{check_arity, Args, Int, Text};

/// Compiles a Spark (Java) regex, or says why it cannot run.
pub(crate) fn compile(pattern: &str) -> std::result::Result<Regex, String> {
    // Rust reads `a*+` as `(a*)+`: a possessive quantifier would match otherwise.
    let b = pattern.as_bytes();
    let possessive = (1..b.len()).any(|i| {
        b[i] == b'+'
            && matches!(b[i - 1], b'*' | b'+' | b'?' | b'}')
            && (i < 2 || b[i - 2] != b'\\')
    });
    if possessive {
        return Err("possessive quantifiers are not supported: drop the trailing `+`".to_string());
    }
    Regex::new(pattern).map_err(|e| {
        let lookaround = ["(?=", "(?!", "(?<=", "(?<!"]
            .iter()
            .any(|l| pattern.contains(l));
        let hint = if lookaround {
            " (look-around is not supported: match the context and extract a group)"
        } else if pattern.contains("\\1") || pattern.contains("\\2") {
            " (back-references are not supported)"
        } else {
            ""
        };
        let first = e.to_string();
        let reason = first.lines().last().unwrap_or("invalid").trim().to_string();
        format!("{reason}{hint}")
    })
}

/// Java's replacement syntax (`$1`, `${name}`, `\$`) in Rust's (`${1}`, `${name}`,
/// `$$`), for a regex of `groups` capture groups (the whole match is group 0).
pub(crate) fn java_replacement(rep: &str, groups: usize) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(rep.len() + 4);
    let mut chars = rep.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('$') => out.push_str("$$"),
                Some(other) => out.push(other),
                None => return Err("character to be escaped is missing (a trailing `\\`)".into()),
            },
            '$' => match chars.peek().copied() {
                Some('{') => {
                    chars.next();
                    let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    if name.is_empty() {
                        return Err("`${}` names no group".into());
                    }
                    out.push_str(&format!("${{{name}}}"));
                }
                Some(d) if d.is_ascii_digit() => {
                    // As Java: the first digit always, the next ones while the number
                    // is still a group of the regex.
                    let mut group = d.to_digit(10).map_or(0, |d| d as usize);
                    chars.next();
                    while let Some(next) = chars.peek().and_then(|c| c.to_digit(10)) {
                        let longer = group * 10 + next as usize;
                        if longer > groups {
                            break;
                        }
                        group = longer;
                        chars.next();
                    }
                    if group > groups {
                        return Err(format!(
                            "group {group} is referenced but the regex has {groups} group(s)"
                        ));
                    }
                    out.push_str(&format!("${{{group}}}"));
                }
                _ => return Err("a `$` that names no group (write `\\$` for a dollar)".into()),
            },
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Which of Spark's regex functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// `regexp_extract(str, regex[, idx])`.
    Extract,
    /// `regexp_extract_all(str, regex[, idx])`.
    ExtractAll,
    /// `regexp_replace(str, regex, rep[, pos])`.
    Replace,
    /// `rlike(str, regex)`, also `regexp` and `regexp_like`.
    Like,
    /// `split(str, regex[, limit])`.
    Split,
}

impl Kind {
    /// The function's name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Extract => "regexp_extract",
            Kind::ExtractAll => "regexp_extract_all",
            Kind::Replace => "regexp_replace",
            Kind::Like => "rlike",
            Kind::Split => "split",
        }
    }

    /// How many arguments it takes (at least, at most).
    fn arity(self) -> (usize, usize) {
        match self {
            Kind::Extract | Kind::ExtractAll | Kind::Split => (2, 3),
            Kind::Replace => (3, 4),
            Kind::Like => (2, 2),
        }
    }
}

/// One of Spark's regex functions as a DataFusion function.
#[derive(Debug, PartialEq, Eq, Hash)]
struct RegexFn {
    kind: Kind,
    aliases: Vec<String>,
    signature: Signature,
}

/// A regex compiled once per distinct pattern (a column of patterns recompiles when
/// the pattern changes from row to row).
#[derive(Default)]
struct Cache(Option<(String, Regex)>);

impl Cache {
    fn get(&mut self, name: &str, pattern: &str) -> Result<&Regex> {
        if self.0.as_ref().map(|(p, _)| p.as_str()) != Some(pattern) {
            match compile(pattern) {
                Ok(r) => self.0 = Some((pattern.to_string(), r)),
                Err(e) => return exec_err!("{name}: the regex `{pattern}`: {e}"),
            }
        }
        match &self.0 {
            Some((_, r)) => Ok(r),
            None => exec_err!("{name}: no regex"),
        }
    }
}

/// Checks a group index against the regex, as Spark does.
fn group_index(name: &str, re: &Regex, idx: i64) -> Result<usize> {
    let groups = re.captures_len() - 1;
    match usize::try_from(idx) {
        Ok(i) if i <= groups => Ok(i),
        _ => exec_err!(
            "{name}: the regex `{}` has {groups} group(s), but the group index is {idx}",
            re.as_str()
        ),
    }
}

impl ScalarUDFImpl for RegexFn {
    fn name(&self) -> &str {
        self.kind.name()
    }
    fn aliases(&self) -> &[String] {
        &self.aliases
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        check_arity(self.kind.name(), args.len(), self.kind.arity())?;
        Ok(match self.kind {
            Kind::Extract | Kind::Replace => DataType::Utf8View,
            Kind::Like => DataType::Boolean,
            Kind::ExtractAll | Kind::Split => {
                DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
            }
        })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let name = self.kind.name();
        let mut args = Args::new(name, args.args);
        let text = Text::of(args.next("the text")?)?;
        let pattern = Text::of(args.next("the regex")?)?;
        let mut cache = Cache::default();
        let out: ArrayRef = match self.kind {
            Kind::Extract | Kind::ExtractAll => {
                let idx = Int::of(args.optional(), 1)?;
                let all = self.kind == Kind::ExtractAll;
                let mut one = StringViewBuilder::with_capacity(if all { 0 } else { n });
                let mut many = ListBuilder::new(StringBuilder::new());
                for i in 0..n {
                    let (Some(t), Some(p), Some(g)) = (text.get(i), pattern.get(i), idx.get(i))
                    else {
                        if all {
                            many.append_null();
                        } else {
                            one.append_null();
                        }
                        continue;
                    };
                    let re = cache.get(name, p)?;
                    let g = group_index(name, re, g)?;
                    if all {
                        for c in re.captures_iter(t) {
                            many.values()
                                .append_value(c.get(g).map_or("", |m| m.as_str()));
                        }
                        many.append(true);
                    } else {
                        let found = re.captures(t).and_then(|c| c.get(g));
                        one.append_value(found.map_or("", |m| m.as_str()));
                    }
                }
                if all {
                    Arc::new(many.finish())
                } else {
                    Arc::new(one.finish())
                }
            }
            Kind::Replace => {
                let rep = Text::of(args.next("the replacement")?)?;
                let pos = Int::of(args.optional(), 1)?;
                let mut out = StringViewBuilder::with_capacity(n);
                let mut last_rep: Option<(String, usize, String)> = None;
                for i in 0..n {
                    let (Some(t), Some(p), Some(r), Some(pos)) =
                        (text.get(i), pattern.get(i), rep.get(i), pos.get(i))
                    else {
                        out.append_null();
                        continue;
                    };
                    if pos < 1 {
                        return exec_err!("{name}: the position must be at least 1, not {pos}");
                    }
                    let re = cache.get(name, p)?;
                    let groups = re.captures_len() - 1;
                    if last_rep.as_ref().map(|(j, g, _)| (j.as_str(), *g)) != Some((r, groups)) {
                        let rust = match java_replacement(r, groups) {
                            Ok(x) => x,
                            Err(e) => return exec_err!("{name}: the replacement `{r}`: {e}"),
                        };
                        last_rep = Some((r.to_string(), groups, rust));
                    }
                    let rust = last_rep.as_ref().map_or("", |(_, _, x)| x.as_str());
                    // Spark starts searching at the 1-based character position `pos`.
                    let start = t
                        .char_indices()
                        .nth(usize::try_from(pos - 1).unwrap_or(usize::MAX))
                        .map(|(b, _)| b);
                    match start {
                        Some(b) => {
                            let (head, tail) = t.split_at(b);
                            let replaced = re.replace_all(tail, rust);
                            out.append_value(format!("{head}{replaced}"));
                        }
                        None => out.append_value(t),
                    }
                }
                Arc::new(out.finish())
            }
            Kind::Like => {
                let mut out = BooleanBuilder::with_capacity(n);
                for i in 0..n {
                    match (text.get(i), pattern.get(i)) {
                        (Some(t), Some(p)) => out.append_value(cache.get(name, p)?.is_match(t)),
                        _ => out.append_null(),
                    }
                }
                Arc::new(out.finish())
            }
            Kind::Split => {
                let limit = Int::of(args.optional(), -1)?;
                let mut out = ListBuilder::new(StringBuilder::new());
                for i in 0..n {
                    let (Some(t), Some(p), Some(limit)) =
                        (text.get(i), pattern.get(i), limit.get(i))
                    else {
                        out.append_null();
                        continue;
                    };
                    split_into(out.values(), t, cache.get(name, p)?, limit);
                    out.append(true);
                }
                Arc::new(out.finish())
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// Spark's `split`: the parts of `text` between matches of `re`, at most `limit` of
/// them when `limit > 0` (the last holds the rest), trailing empty parts kept; an empty
/// regex splits between characters.
fn split_into(out: &mut StringBuilder, text: &str, re: &Regex, limit: i64) {
    let max = usize::try_from(limit).ok().filter(|&l| l > 0);
    if re.as_str().is_empty() {
        let mut count = 0;
        for (b, c) in text.char_indices() {
            count += 1;
            if max == Some(count) {
                out.append_value(&text[b..]);
                return;
            }
            out.append_value(&text[b..b + c.len_utf8()]);
        }
        if text.is_empty() {
            out.append_value("");
        }
        return;
    }
    match max {
        Some(m) => re.splitn(text, m).for_each(|p| out.append_value(p)),
        None => re.split(text).for_each(|p| out.append_value(p)),
    }
}

/// Spark's regex functions.
pub(crate) fn all() -> Vec<ScalarUDF> {
    [
        (Kind::Extract, &[][..]),
        (Kind::ExtractAll, &[]),
        (Kind::Replace, &[]),
        (Kind::Like, &["regexp", "regexp_like"]),
        (Kind::Split, &[]),
    ]
    .into_iter()
    .map(|(kind, aliases)| {
        ScalarUDF::new_from_impl(RegexFn {
            kind,
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            signature: Signature::variadic_any(Volatility::Immutable),
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray, StringArray};
    use datafusion::arrow::datatypes::Field;
    use datafusion::common::config::ConfigOptions;
    use datafusion::common::ScalarValue;

    /// Calls `f` on one row of text arguments (NULL as `None`) and integer extras.
    fn call(kind: Kind, text: Option<&str>, rest: &[ColumnarValue]) -> Result<ArrayRef> {
        let f = all()
            .into_iter()
            .find(|f| f.name() == kind.name())
            .expect("registered");
        let mut args = vec![ColumnarValue::Array(Arc::new(StringArray::from(vec![
            text,
        ])))];
        args.extend(rest.iter().cloned());
        let types: Vec<DataType> = args.iter().map(|a| a.data_type()).collect();
        let ret = f.return_type(&types)?;
        let out = f.invoke_with_args(ScalarFunctionArgs {
            arg_fields: types
                .iter()
                .map(|t| Arc::new(Field::new("a", t.clone(), true)))
                .collect(),
            args,
            number_rows: 1,
            return_field: Arc::new(Field::new("r", ret, true)),
            config_options: Arc::new(ConfigOptions::default()),
        })?;
        out.into_array(1)
    }

    fn s(v: &str) -> ColumnarValue {
        ColumnarValue::Scalar(ScalarValue::Utf8(Some(v.into())))
    }
    fn i(v: i64) -> ColumnarValue {
        ColumnarValue::Scalar(ScalarValue::Int64(Some(v)))
    }
    fn text(a: &ArrayRef) -> Option<String> {
        (!a.is_null(0)).then(|| a.as_string_view().value(0).to_string())
    }
    fn list(a: &ArrayRef) -> Option<Vec<String>> {
        let l = a.as_list::<i32>();
        (!l.is_null(0)).then(|| {
            let v = l.value(0);
            let v = v.as_string::<i32>();
            (0..v.len()).map(|i| v.value(i).to_string()).collect()
        })
    }

    // The cases of Spark's RegexpExpressionsSuite and StringFunctionsSuite.
    #[test]
    fn regexp_extract_as_spark() -> Result<()> {
        let ex = |t, p: &str, g| call(Kind::Extract, t, &[s(p), i(g)]).map(|a| text(&a));
        assert_eq!(ex(Some("100-200"), "(\\d+)-(\\d+)", 1)?, Some("100".into()));
        assert_eq!(ex(Some("100-200"), "(\\d+)-(\\d+)", 2)?, Some("200".into()));
        assert_eq!(
            ex(Some("100-200"), "(\\d+)-(\\d+)", 0)?,
            Some("100-200".into())
        );
        assert_eq!(ex(Some("100-200"), "(\\d+).*", 1)?, Some("100".into()));
        assert_eq!(ex(Some("foo"), "(\\d+)", 1)?, Some("".into()));
        assert_eq!(ex(Some("100-200"), "([a-z])", 1)?, Some("".into()));
        assert_eq!(ex(Some("abc"), "(a)|(b)", 2)?, Some("".into()));
        assert_eq!(ex(None, "(\\d+)", 1)?, None);
        assert_eq!(
            ex(Some("[ERROR] x"), "\\[(\\w+)\\]", 1)?,
            Some("ERROR".into())
        );
        let err = ex(Some("100-200"), "(\\d+)", 2).expect_err("group 2 of 1");
        assert!(
            err.to_string()
                .contains("1 group(s), but the group index is 2"),
            "{err}"
        );
        // The group index defaults to 1.
        let a = call(Kind::Extract, Some("a1b22"), &[s("[a-z](\\d+)")])?;
        assert_eq!(text(&a), Some("1".into()));
        Ok(())
    }

    #[test]
    fn regexp_extract_all_as_spark() -> Result<()> {
        let a = call(
            Kind::ExtractAll,
            Some("100-200, 300-400"),
            &[s("(\\d+)-(\\d+)"), i(1)],
        )?;
        assert_eq!(list(&a), Some(vec!["100".into(), "300".into()]));
        let a = call(
            Kind::ExtractAll,
            Some("100-200, 300-400"),
            &[s("(\\d+)-(\\d+)"), i(2)],
        )?;
        assert_eq!(list(&a), Some(vec!["200".into(), "400".into()]));
        let a = call(Kind::ExtractAll, Some("abc"), &[s("(\\d+)"), i(1)])?;
        assert_eq!(list(&a), Some(vec![]));
        Ok(())
    }

    #[test]
    fn regexp_replace_as_spark() -> Result<()> {
        let re = |t, p: &str, r: &str| call(Kind::Replace, t, &[s(p), s(r)]).map(|a| text(&a));
        assert_eq!(
            re(Some("100-200"), "(\\d+)", "num")?,
            Some("num-num".into())
        );
        assert_eq!(
            re(Some("100-200"), "(\\d+)-(\\d+)", "$2-$1")?,
            Some("200-100".into())
        );
        assert_eq!(re(Some("abc"), "b", "\\$")?, Some("a$c".into()));
        // Java reads `$1a` as group 1 then `a` (Rust would read a group named `1a`).
        assert_eq!(re(Some("x7"), "(\\d)", "$1a")?, Some("x7a".into()));
        assert_eq!(re(Some("100-200"), "(-)", "")?, Some("100200".into()));
        assert_eq!(re(None, "b", "c")?, None);
        let a = call(Kind::Replace, Some("aaa"), &[s("a"), s("b"), i(2)])?;
        assert_eq!(text(&a), Some("abb".into()));
        let a = call(Kind::Replace, Some("aaa"), &[s("a"), s("b"), i(9)])?;
        assert_eq!(text(&a), Some("aaa".into()));
        assert!(re(Some("a"), "(a)", "$2").is_err());
        Ok(())
    }

    #[test]
    fn rlike_as_spark() -> Result<()> {
        let like = |t, p: &str| {
            call(Kind::Like, t, &[s(p)]).map(|a| (!a.is_null(0)).then(|| a.as_boolean().value(0)))
        };
        assert_eq!(like(Some("abc"), "^a")?, Some(true));
        assert_eq!(
            like(Some("abc"), "b")?,
            Some(true),
            "a find, not a full match"
        );
        assert_eq!(like(Some("abc"), "^b")?, Some(false));
        assert_eq!(like(Some("a\nb"), "a.b")?, Some(false));
        assert_eq!(like(None, "a")?, None);
        Ok(())
    }

    #[test]
    fn split_as_spark() -> Result<()> {
        let sp = |t: &str, p: &str, l| call(Kind::Split, Some(t), &[s(p), i(l)]).map(|a| list(&a));
        let v = |x: &[&str]| Some(x.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(sp("aa2bb3cc", "[1-9]+", -1)?, v(&["aa", "bb", "cc"]));
        assert_eq!(sp("aa2bb3cc4", "[1-9]+", -1)?, v(&["aa", "bb", "cc", ""]));
        assert_eq!(sp("aa2bb3cc", "[1-9]+", 2)?, v(&["aa", "bb3cc"]));
        assert_eq!(sp("aa2bb3cc", "[1-9]+", 0)?, v(&["aa", "bb", "cc"]));
        assert_eq!(sp("hello", "", -1)?, v(&["h", "e", "l", "l", "o"]));
        assert_eq!(sp("hello", "", 3)?, v(&["h", "e", "llo"]));
        assert_eq!(sp("", "", -1)?, v(&[""]));
        assert_eq!(sp("a.b", "\\.", -1)?, v(&["a", "b"]));
        assert_eq!(
            call(Kind::Split, None, &[s(","), i(-1)]).map(|a| list(&a))?,
            None
        );
        Ok(())
    }

    #[test]
    fn java_replacements_and_refused_regexes() {
        assert_eq!(java_replacement("$10", 1).as_deref(), Ok("${1}0"));
        assert_eq!(java_replacement("$10", 10).as_deref(), Ok("${10}"));
        assert_eq!(java_replacement("${year}", 1).as_deref(), Ok("${year}"));
        assert!(java_replacement("$", 1).is_err());
        assert!(compile("(?<=a)b").unwrap_err().contains("look-around"));
        assert!(compile("a*+").unwrap_err().contains("possessive"));
        assert!(compile("[").is_err());
    }
}
