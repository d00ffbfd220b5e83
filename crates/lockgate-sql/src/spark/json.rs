//! Spark's `get_json_object(json, path)`: the value at a JSONPath (`$`, `.name`,
//! `['name']`, `[index]`) of JSON text, as text (a string without its quotes, anything
//! else as JSON), NULL when the text is not JSON or the path finds nothing.

use std::sync::Arc;

use datafusion::arrow::array::StringViewBuilder;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, plan_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use serde_json::Value;

use super::args::{Args, Text};

/// One step of a path.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// `.name` or `['name']`.
    Field(String),
    /// `[i]`.
    Index(usize),
}

/// The steps of a JSONPath, or why it is not one Spark accepts.
pub(crate) fn parse_path(path: &str) -> std::result::Result<Vec<Step>, String> {
    let Some(mut rest) = path.strip_prefix('$') else {
        return Err(format!("the path `{path}` does not start with `$`"));
    };
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return Err(format!("an empty field name in `{path}`"));
            }
            steps.push(Step::Field(r[..end].to_string()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix("['") {
            let Some(end) = r.find("']") else {
                return Err(format!("an unclosed `['` in `{path}`"));
            };
            steps.push(Step::Field(r[..end].to_string()));
            rest = &r[end + 2..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else {
                return Err(format!("an unclosed `[` in `{path}`"));
            };
            let i = r[..end]
                .trim()
                .parse()
                .map_err(|_| format!("`[{}]` in `{path}` is not an index", &r[..end]))?;
            steps.push(Step::Index(i));
            rest = &r[end + 1..];
        } else {
            return Err(format!(
                "`{rest}` in `{path}`: expected `.name`, `['name']` or `[index]`"
            ));
        }
    }
    Ok(steps)
}

/// The value of `json` at `steps`, as Spark renders it.
fn extract(json: &str, steps: &[Step]) -> Option<String> {
    let mut v: Value = serde_json::from_str(json).ok()?;
    for s in steps {
        v = match (s, v) {
            (Step::Field(f), Value::Object(mut m)) => m.remove(f)?,
            (Step::Index(i), Value::Array(mut a)) if *i < a.len() => a.swap_remove(*i),
            _ => return None,
        };
    }
    match v {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct GetJsonObject {
    signature: Signature,
}

impl ScalarUDFImpl for GetJsonObject {
    fn name(&self) -> &str {
        "get_json_object"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if args.len() != 2 {
            return plan_err!(
                "get_json_object(json, path) takes 2 arguments, not {}",
                args.len()
            );
        }
        Ok(DataType::Utf8View)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let mut args = Args::new("get_json_object", args.args);
        let json = Text::of(args.next("the JSON text")?)?;
        let path = Text::of(args.next("the path")?)?;
        let mut last: Option<(String, Vec<Step>)> = None;
        let mut out = StringViewBuilder::with_capacity(n);
        for i in 0..n {
            let (Some(j), Some(p)) = (json.get(i), path.get(i)) else {
                out.append_null();
                continue;
            };
            if last.as_ref().map(|(q, _)| q.as_str()) != Some(p) {
                match parse_path(p) {
                    Ok(steps) => last = Some((p.to_string(), steps)),
                    Err(e) => return exec_err!("get_json_object: {e}"),
                }
            }
            let steps = last.as_ref().map_or(&[][..], |(_, s)| s.as_slice());
            out.append_option(extract(j, steps));
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// Spark's JSON functions Lockgate writes (`json_tuple` is datafusion-spark's).
pub(crate) fn all() -> Vec<ScalarUDF> {
    vec![ScalarUDF::new_from_impl(GetJsonObject {
        signature: Signature::variadic_any(Volatility::Immutable),
    })]
}

#[cfg(test)]
mod tests {
    use super::*;

    // The cases of Spark's JsonExpressionsSuite (get_json_object).
    #[test]
    fn get_json_object_as_spark() {
        let json = r#"{"store":{"fruit":[{"weight":8,"type":"apple"},{"weight":9,"type":"pear"}],"bicycle":{"price":19.95,"color":"red"}},"email":"amy@only_for_json_udf_test.net","owner":"amy"}"#;
        let get = |p: &str| extract(json, &parse_path(p).expect("a path"));
        assert_eq!(get("$.owner").as_deref(), Some("amy"));
        assert_eq!(get("$.store.bicycle.price").as_deref(), Some("19.95"));
        assert_eq!(
            get("$['store']['bicycle']['color']").as_deref(),
            Some("red")
        );
        assert_eq!(get("$.store.fruit[1].type").as_deref(), Some("pear"));
        assert_eq!(
            get("$.store.fruit[0]").as_deref(),
            Some(r#"{"weight":8,"type":"apple"}"#)
        );
        assert_eq!(get("$.store.fruit[5]"), None);
        assert_eq!(get("$.nope"), None);
        assert_eq!(extract("not json", &[]), None);
        assert!(parse_path("store.owner").is_err());
        assert!(parse_path("$.a[x]").is_err());
    }
}
