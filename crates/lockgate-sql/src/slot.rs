//! Stream tables as DataFusion sees them: a [`SlotTable`] scans whatever record batches
//! were put in its slot, on this thread, for the current call — so a query's physical
//! plan is made once per worker thread and executed again for every batch partition
//! (reset between runs with DataFusion's `reset_plan_states`), instead of being planned
//! anew each time.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::Result;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};

thread_local! {
    /// The batches each stream table scans in the current call, by table name.
    static SLOTS: RefCell<HashMap<String, Vec<RecordBatch>>> = RefCell::new(HashMap::new());
}

/// Puts `batches` in `table`'s slot for the duration of `f` (on this thread).
pub fn with_slot<R>(table: &str, batches: Vec<RecordBatch>, f: impl FnOnce() -> R) -> R {
    SLOTS.with(|s| s.borrow_mut().insert(table.to_string(), batches));
    let out = f();
    SLOTS.with(|s| s.borrow_mut().remove(table));
    out
}

/// A table whose rows are its slot's batches.
#[derive(Debug)]
pub struct SlotTable {
    name: String,
    schema: SchemaRef,
}

impl SlotTable {
    /// The table `name` of `schema`.
    pub fn new(name: &str, schema: SchemaRef) -> Self {
        SlotTable {
            name: name.to_string(),
            schema,
        }
    }
}

#[async_trait::async_trait]
impl TableProvider for SlotTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn table_type(&self) -> TableType {
        TableType::Temporary
    }
    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let projected = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        Ok(Arc::new(SlotExec {
            name: self.name.clone(),
            projected: projected.clone(),
            projection: projection.cloned(),
            cache: Arc::new(PlanProperties::new(
                EquivalenceProperties::new(projected),
                Partitioning::UnknownPartitioning(1),
                EmissionType::Incremental,
                Boundedness::Bounded,
            )),
        }))
    }
}

/// The scan of a [`SlotTable`].
#[derive(Debug)]
struct SlotExec {
    name: String,
    /// The schema of the scan's output (the table's, projected).
    projected: SchemaRef,
    projection: Option<Vec<usize>>,
    cache: Arc<PlanProperties>,
}

impl DisplayAs for SlotExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SlotExec: {}", self.name)
    }
}

impl ExecutionPlan for SlotExec {
    fn name(&self) -> &'static str {
        "SlotExec"
    }
    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }
    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }
    fn replace_children(
        self: Arc<Self>,
        _: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }
    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let data = SLOTS
            .with(|s| s.borrow_mut().remove(&self.name))
            .unwrap_or_default();
        // The stream applies the projection to the table's batches and reports the
        // projected schema.
        Ok(Box::pin(MemoryStream::try_new(
            data,
            self.projected.clone(),
            self.projection.clone(),
        )?))
    }
}
