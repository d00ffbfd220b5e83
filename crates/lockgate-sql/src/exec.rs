//! Running a planned part on one batch partition: DataFusion's physical plan over the
//! partition's record batches (made once per worker thread and reset between runs), on
//! a single-threaded runtime per worker thread (the engine already runs a batch's
//! partitions on all cores).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::scalar::ScalarValue;

use crate::error::{Error, Result};
use crate::slot::with_slot;

thread_local! {
    static RUNTIME: Option<tokio::runtime::Runtime> = tokio::runtime::Builder::new_current_thread()
        .build()
        .ok();
    /// The physical plans made on this thread, by [`Prepared`] id.
    static PLANS: RefCell<HashMap<u64, Arc<dyn ExecutionPlan>>> = RefCell::new(HashMap::new());
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A part of a query ready to run on batch partitions: its physical plan is made once
/// per worker thread, then reset and run again for every partition.
pub struct Prepared {
    id: u64,
    plan: LogicalPlan,
}

impl Prepared {
    /// The optimized logical plan `plan`.
    pub fn new(plan: LogicalPlan) -> Self {
        Prepared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            plan,
        }
    }
}

/// Runs `prepared` with its scan of the stream table `table` reading `batches`.
pub fn run(
    state: &SessionState,
    prepared: &Prepared,
    table: &str,
    batches: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>> {
    let work = async {
        let cached = PLANS.with(|p| p.borrow().get(&prepared.id).cloned());
        let physical = match cached {
            Some(p) => reset_plan_states(p)?,
            None => {
                let p = state.create_physical_plan(&prepared.plan).await?;
                PLANS.with(|plans| plans.borrow_mut().insert(prepared.id, p.clone()));
                p
            }
        };
        datafusion::physical_plan::collect(physical, state.task_ctx()).await
    };
    with_slot(table, batches, || {
        RUNTIME.with(|rt| match rt {
            Some(rt) => rt.block_on(work).map_err(Error::Execute),
            None => Err(Error::Config(
                "cannot start the runtime that evaluates queries (out of threads or memory?)"
                    .into(),
            )),
        })
    })
}

/// Text held as string views (the `lines` table's, and what is computed from it) is
/// plain text in a query's output: `DataType::Utf8`.
pub fn plain_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Utf8View => DataType::Utf8,
        other => other.clone(),
    }
}

/// `schema` with [`plain_type`]s.
pub fn plain_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_data_type(plain_type(f.data_type())))
            .collect::<Vec<_>>(),
    ))
}

/// The rows of `batches` (with their string views as plain text).
pub fn rows(batches: Vec<RecordBatch>) -> Result<Vec<Row>> {
    let mut out = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    for b in batches {
        let b = if b
            .schema()
            .fields()
            .iter()
            .any(|f| f.data_type() == &DataType::Utf8View)
        {
            let columns = b
                .columns()
                .iter()
                .map(|c| cast(c, &plain_type(c.data_type())))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::Execute(e.into()))?;
            RecordBatch::try_new(plain_schema(&b.schema()), columns)
                .map_err(|e| Error::Execute(e.into()))?
        } else {
            b
        };
        let b = Arc::new(b);
        out.extend((0..b.num_rows()).map(|index| Row {
            batch: b.clone(),
            index,
        }));
    }
    Ok(out)
}

/// A record batch of `schema` from rows of scalars.
pub fn batch_of(schema: &SchemaRef, rows: &[Vec<ScalarValue>]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if rows.is_empty() {
                return Ok(datafusion::arrow::array::new_empty_array(f.data_type()));
            }
            ScalarValue::iter_to_array(rows.iter().map(|r| {
                r.get(i)
                    .cloned()
                    .and_then(|v| v.cast_to(f.data_type()).ok())
                    .unwrap_or_else(|| {
                        ScalarValue::try_from(f.data_type()).unwrap_or(ScalarValue::Null)
                    })
            }))
        })
        .collect::<datafusion::common::Result<_>>()
        .map_err(Error::Execute)?;
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| Error::Execute(e.into()))
}

/// A Rust type a SQL value converts to without loss (see [`Row::get`]).
pub trait FromValue: Sized {
    /// What the type holds, for errors (`an integer`).
    const WHAT: &'static str;
    /// The value as `Self`, `None` when it is not one.
    fn from_value(v: ScalarValue) -> Option<Self>;
}

impl FromValue for i64 {
    const WHAT: &'static str = "an integer";
    fn from_value(v: ScalarValue) -> Option<Self> {
        match v {
            ScalarValue::Int8(Some(x)) => Some(x.into()),
            ScalarValue::Int16(Some(x)) => Some(x.into()),
            ScalarValue::Int32(Some(x)) => Some(x.into()),
            ScalarValue::Int64(Some(x)) => Some(x),
            ScalarValue::UInt8(Some(x)) => Some(x.into()),
            ScalarValue::UInt16(Some(x)) => Some(x.into()),
            ScalarValue::UInt32(Some(x)) => Some(x.into()),
            ScalarValue::UInt64(Some(x)) => x.try_into().ok(),
            _ => None,
        }
    }
}

impl FromValue for i32 {
    const WHAT: &'static str = "a 32-bit integer";
    fn from_value(v: ScalarValue) -> Option<Self> {
        i64::from_value(v).and_then(|x| x.try_into().ok())
    }
}

impl FromValue for f64 {
    const WHAT: &'static str = "a number";
    fn from_value(v: ScalarValue) -> Option<Self> {
        match v {
            ScalarValue::Float32(Some(x)) => Some(x.into()),
            ScalarValue::Float64(Some(x)) => Some(x),
            other => i64::from_value(other).map(|x| x as f64),
        }
    }
}

impl FromValue for bool {
    const WHAT: &'static str = "a boolean";
    fn from_value(v: ScalarValue) -> Option<Self> {
        match v {
            ScalarValue::Boolean(b) => b,
            _ => None,
        }
    }
}

impl FromValue for String {
    const WHAT: &'static str = "text";
    fn from_value(v: ScalarValue) -> Option<Self> {
        match v {
            ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => s,
            _ => None,
        }
    }
}

impl FromValue for ScalarValue {
    const WHAT: &'static str = "a value";
    fn from_value(v: ScalarValue) -> Option<Self> {
        Some(v)
    }
}

/// One output row of a query: a row of a record batch (shared by the batch's rows).
#[derive(Clone, Debug)]
pub struct Row {
    batch: Arc<RecordBatch>,
    index: usize,
}

impl Row {
    /// Its number of columns.
    pub fn len(&self) -> usize {
        self.batch.num_columns()
    }

    /// True when it has no columns.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of column `i` (NULL past the last column).
    pub fn value(&self, i: usize) -> ScalarValue {
        self.batch
            .columns()
            .get(i)
            .and_then(|c| ScalarValue::try_from_array(c, self.index).ok())
            .unwrap_or(ScalarValue::Null)
    }

    /// All its values.
    pub fn values(&self) -> Vec<ScalarValue> {
        (0..self.len()).map(|i| self.value(i)).collect()
    }

    /// The index of the column named `name` (as the query's SELECT names it).
    pub fn index_of(&self, name: &str) -> Result<usize> {
        let schema = self.batch.schema();
        schema.index_of(name).map_err(|_| {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            Error::Read(format!(
                "no column `{name}`: the query's columns are {}",
                names.join(", ")
            ))
        })
    }

    /// The value of column `name` as a `T` (NULL as `None`), as Spark's
    /// `row.getAs[T]("name")`: `row.get::<i64>("n")?`, `row.get::<String>("word")?`.
    /// A value that is not a `T` is an error naming the column and its type.
    pub fn get<T: FromValue>(&self, name: &str) -> Result<Option<T>> {
        self.get_at(self.index_of(name)?)
    }

    /// The value of column `i` as a `T` (see [`Row::get`]).
    pub fn get_at<T: FromValue>(&self, i: usize) -> Result<Option<T>> {
        let v = self.value(i);
        if v.is_null() {
            return Ok(None);
        }
        let name = self
            .batch
            .schema()
            .fields()
            .get(i)
            .map(|f| f.name().clone());
        let data_type = v.data_type();
        T::from_value(v).map(Some).ok_or_else(|| {
            Error::Read(format!(
                "column `{}` holds {data_type}, which is not {}",
                name.unwrap_or_else(|| i.to_string()),
                T::WHAT
            ))
        })
    }

    /// The record batch it is a row of, and its index there.
    pub fn batch(&self) -> (&RecordBatch, usize) {
        (&self.batch, self.index)
    }

    /// The row as a JSON object of its column names (see [`crate::value::to_json`]).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.batch
                .schema()
                .fields()
                .iter()
                .zip(self.batch.columns())
                .map(|(f, c)| (f.name().clone(), crate::value::to_json(c, self.index)))
                .collect(),
        )
    }
}

/// Runs `f` to completion on a current-thread runtime: planning and static tables are
/// read once, at start, on the caller's thread.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f),
        Err(e) => panic!("cannot start a runtime to plan the query: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{BooleanArray, Float64Array, Int32Array, StringArray};
    use datafusion::arrow::datatypes::Field;

    fn row() -> Row {
        let schema = Arc::new(Schema::new(vec![
            Field::new("word", DataType::Utf8, true),
            Field::new("n", DataType::Int32, true),
            Field::new("avg", DataType::Float64, true),
            Field::new("late", DataType::Boolean, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("a"), None])),
                Arc::new(Int32Array::from(vec![Some(2), Some(3)])),
                Arc::new(Float64Array::from(vec![1.5, 2.0])),
                Arc::new(BooleanArray::from(vec![true, false])),
            ],
        )
        .expect("a batch");
        Row {
            batch: Arc::new(batch),
            index: 0,
        }
    }

    #[test]
    fn values_are_read_by_name_and_type() -> Result<()> {
        let r = row();
        assert_eq!(r.get::<String>("word")?, Some("a".to_string()));
        assert_eq!(r.get::<i64>("n")?, Some(2));
        assert_eq!(r.get::<i32>("n")?, Some(2));
        assert_eq!(r.get::<f64>("n")?, Some(2.0));
        assert_eq!(r.get::<f64>("avg")?, Some(1.5));
        assert_eq!(r.get::<bool>("late")?, Some(true));
        assert_eq!(r.get_at::<i64>(1)?, Some(2));
        let null = Row {
            index: 1,
            ..r.clone()
        };
        assert_eq!(null.get::<String>("word")?, None);
        let e = r
            .get::<i64>("nope")
            .expect_err("no such column")
            .to_string();
        assert!(
            e.contains("no column `nope`: the query's columns are word, n, avg, late"),
            "{e}"
        );
        let e = r.get::<i64>("word").expect_err("text").to_string();
        assert!(
            e.contains("column `word` holds Utf8, which is not an integer"),
            "{e}"
        );
        Ok(())
    }
}
