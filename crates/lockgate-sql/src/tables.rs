//! Static tables: CSV (with a header line) and Parquet files read once into memory, for
//! streams to join against.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};

use crate::error::{Error, Result};
use crate::exec::block_on;

/// Reads static tables (CSV with a header line, Parquet) into memory.
///
/// ```
/// use lockgate_sql::StaticReader;
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("users.csv");
/// std::fs::write(&path, "id,name\n1,ada\n2,alan\n")?;
/// let (schema, batches) = StaticReader::new().csv(&path)?;
/// assert_eq!(schema.field(1).name(), "name");
/// assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct StaticReader {
    session: SessionContext,
}

impl Default for StaticReader {
    fn default() -> Self {
        Self::new()
    }
}

impl StaticReader {
    /// A reader.
    pub fn new() -> Self {
        StaticReader {
            session: SessionContext::new(),
        }
    }

    fn load(
        &self,
        path: &Path,
        df: datafusion::common::Result<datafusion::dataframe::DataFrame>,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let what = |e| Error::Config(format!("reading {}: {e}", path.display()));
        let df = df.map_err(what)?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = block_on(df.collect()).map_err(what)?;
        Ok((schema, batches))
    }

    /// The rows of a CSV file with a header line (types inferred).
    pub fn csv(&self, path: &Path) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let p = path_text(path)?;
        self.load(
            path,
            block_on(self.session.read_csv(p.as_str(), CsvReadOptions::new())),
        )
    }

    /// The rows of a Parquet file.
    pub fn parquet(&self, path: &Path) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let p = path_text(path)?;
        self.load(
            path,
            block_on(
                self.session
                    .read_parquet(p.as_str(), ParquetReadOptions::default()),
            ),
        )
    }
}

fn path_text(path: &Path) -> Result<String> {
    if !path.exists() {
        return Err(Error::Config(format!("{}: no such file", path.display())));
    }
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| Error::Config(format!("{}: the path is not UTF-8", path.display())))
}
