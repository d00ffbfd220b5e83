//! Spark's `element_at(array, i)`: 1-based, negative from the end, NULL past the end
//! (DataFusion's `element_at` is its map lookup; a map's value is `m[key]` in both).

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{plan_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

#[derive(Debug, PartialEq, Eq, Hash)]
struct ElementAt {
    inner: Arc<ScalarUDF>,
    signature: Signature,
}

impl ScalarUDFImpl for ElementAt {
    fn name(&self) -> &str {
        "element_at"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args {
            [DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _), i]
                if i.is_integer() || i.is_null() =>
            {
                Ok(f.data_type().clone())
            }
            [DataType::Map(..), _] => {
                plan_err!("element_at(map, key): look a map's value up with map[key]")
            }
            _ => plan_err!(
                "element_at(array, index) takes an array and an integer index, not {args:?}"
            ),
        }
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        match args {
            [a, i] if i.is_integer() || i.is_null() => Ok(vec![a.clone(), DataType::Int64]),
            _ => Ok(args.to_vec()),
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.inner.invoke_with_args(args)
    }
}

/// Spark's collection functions Lockgate writes (`size` is datafusion-spark's).
pub(crate) fn all() -> Vec<ScalarUDF> {
    vec![ScalarUDF::new_from_impl(ElementAt {
        inner: datafusion::functions_nested::extract::array_element_udf(),
        signature: Signature::user_defined(Volatility::Immutable),
    })]
}
