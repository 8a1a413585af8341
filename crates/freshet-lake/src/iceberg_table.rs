//! Iceberg tables read as records of a source's Avro schema, through the Apache project's
//! `iceberg` crate: the table is found in a SQL catalog (pyiceberg's `SqlCatalog` on
//! SQLite, or any catalog database in the same layout), one snapshot of it is planned
//! (the current one, or one named by id), and its data files are read one after the
//! other, each through Iceberg's own Arrow reader (which applies the table's schema,
//! column ids and delete files). Columns map to the Avro fields with the same rules as a
//! Parquet file ([`ColumnPlan`]).
//!
//! Order: the engine wants events roughly in event-time order, so the data files are
//! read in the order of their smallest event time (the lower bound the table keeps for
//! the event-time column of each file), then in commit order, then by name; each file's
//! rows in their order.

use crate::parquet_records::{ColumnPlan, ParquetError};
use crate::Lake;
use apache_avro::Schema;
use arrow_array::RecordBatch;
use futures::{SinkExt, StreamExt, TryStreamExt};
use iceberg::spec::{Datum, ManifestContentType, SnapshotRef};
use iceberg::{Catalog, CatalogBuilder, TableIdent};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error("{0}")]
    BadTable(String),
    #[error("cannot open the catalog {catalog}: {reason}")]
    Catalog { catalog: String, reason: String },
    #[error("the catalog {catalog} has no table `{table}`")]
    NoTable { catalog: String, table: String },
    #[error("table `{table}` has no snapshot {snapshot} (it has: {known})")]
    NoSnapshot {
        table: String,
        snapshot: i64,
        known: String,
    },
    #[error("table `{table}` has no snapshot: nothing was ever written to it")]
    Empty { table: String },
    #[error(transparent)]
    Columns(#[from] ParquetError),
    #[error("cannot read table `{table}`: {reason}")]
    Read { table: String, reason: String },
}

/// Where a table is and which of its snapshots to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSource {
    /// The catalog database: `sqlite:PATH` (a file that exists).
    pub catalog: String,
    /// The catalog's name, the one its tables were created under (pyiceberg's first
    /// argument to `SqlCatalog`).
    pub catalog_name: String,
    /// `NAMESPACE.TABLE` (namespaces may nest: `a.b.table`).
    pub table: String,
    /// The snapshot to read; the table's current one when `None`.
    pub snapshot: Option<i64>,
}

impl TableSource {
    fn ident(&self) -> Result<TableIdent, TableError> {
        let parts: Vec<&str> = self.table.split('.').collect();
        if parts.len() < 2 || parts.iter().any(|p| p.trim().is_empty()) {
            return Err(TableError::BadTable(format!(
                "`{}` is not a table name: give NAMESPACE.TABLE, e.g. lake.events",
                self.table
            )));
        }
        TableIdent::from_strs(parts).map_err(|e| TableError::BadTable(e.to_string()))
    }

    fn check_catalog(&self) -> Result<(), TableError> {
        let bad = |reason: String| TableError::Catalog {
            catalog: self.catalog.clone(),
            reason,
        };
        let Some(path) = self.catalog.strip_prefix("sqlite:") else {
            return Err(bad(
                "only SQL catalogs on SQLite are read: give sqlite:PATH (pyiceberg's \
                 SqlCatalog with uri=\"sqlite:///PATH\")"
                    .into(),
            ));
        };
        let path = path.trim_start_matches("//");
        let path = path.split('?').next().unwrap_or(path);
        if !std::path::Path::new(path).is_file() {
            return Err(bad(format!("{path} is not a file")));
        }
        Ok(())
    }
}

/// What a table scan reads, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableShape {
    pub snapshot: i64,
    pub files: usize,
    pub rows: u64,
    pub bytes: u64,
}

/// Storage properties from the standard AWS environment variables, for S3 warehouses:
/// the endpoint of an S3-compatible store (`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`,
/// addressed path-style as `object_store` does) and the region. Credentials are left to
/// the storage's own chain, which reads `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_PROFILE` and the shared config files.
fn storage_properties(env: impl Fn(&str) -> Option<String>) -> HashMap<String, String> {
    let mut props = HashMap::new();
    if let Some(endpoint) = env("AWS_ENDPOINT_URL_S3").or_else(|| env("AWS_ENDPOINT_URL")) {
        props.insert(iceberg::io::S3_ENDPOINT.to_string(), endpoint);
        props.insert(iceberg::io::S3_PATH_STYLE_ACCESS.to_string(), "true".into());
    }
    if let Some(region) = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")) {
        props.insert(iceberg::io::S3_REGION.to_string(), region);
    }
    props
}

/// What the reading task hands over: a batch, the end of one file, or why it stopped.
enum Piece {
    Batch(RecordBatch),
    FileDone,
    Failed(String),
}

/// The rows of one snapshot of a table, as JSON objects (one per row).
pub struct TableRows {
    pieces: futures::channel::mpsc::Receiver<Piece>,
    plan: ColumnPlan,
    lines: std::vec::IntoIter<String>,
    table: String,
    files_done: usize,
    ended: bool,
    pub shape: TableShape,
}

impl Iterator for TableRows {
    /// A row as a JSON object, or why the table could not be read further.
    type Item = Result<String, String>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(line) = self.lines.next() {
                return Some(Ok(line));
            }
            if self.ended {
                return None;
            }
            let Some(piece) = futures::executor::block_on(self.pieces.next()) else {
                self.ended = true;
                // The reading task ends after the last file, or after saying why it
                // stopped: anything else would be rows silently missing.
                if self.files_done < self.shape.files {
                    return Some(Err(format!(
                        "table `{}`: the reading stopped after {} of {} files",
                        self.table, self.files_done, self.shape.files
                    )));
                }
                return None;
            };
            match piece {
                Piece::Batch(batch) => match self.plan.lines(&batch) {
                    Ok(lines) => self.lines = lines.into_iter(),
                    Err(e) => return Some(Err(e)),
                },
                Piece::FileDone => self.files_done += 1,
                Piece::Failed(reason) => {
                    self.ended = true;
                    return Some(Err(format!("table `{}`: {reason}", self.table)));
                }
            }
        }
    }
}

/// One data file to read and where it goes in the order.
struct Planned {
    task: iceberg::scan::FileScanTask,
    first_time: Option<Datum>,
    sequence: i64,
}

impl Lake {
    /// Opens one snapshot of `source` for the fields of `schema`, ordering its files by
    /// the column `order_by` (the event time). The lake must outlive the rows: its runtime
    /// reads them.
    pub fn open_table(
        &self,
        source: &TableSource,
        schema: &Schema,
        order_by: &str,
    ) -> Result<TableRows, TableError> {
        let ident = source.ident()?;
        source.check_catalog()?;
        let (source, schema, order_by) = (source.clone(), schema.clone(), order_by.to_string());
        self.wait(async move {
            let read_error = |e: iceberg::Error| TableError::Read {
                table: source.table.clone(),
                reason: describe(&e),
            };
            let catalog = iceberg_catalog_sql::SqlCatalogBuilder::default()
                .uri(&source.catalog)
                .with_storage_factory(Arc::new(
                    iceberg_storage_opendal::OpenDalResolvingStorageFactory::new(),
                ))
                .load(
                    source.catalog_name.clone(),
                    storage_properties(|name| std::env::var(name).ok()),
                )
                .await
                .map_err(|e| TableError::Catalog {
                    catalog: source.catalog.clone(),
                    reason: describe(&e),
                })?;
            if !catalog.table_exists(&ident).await.map_err(read_error)? {
                return Err(TableError::NoTable {
                    catalog: format!("{} ({})", source.catalog, source.catalog_name),
                    table: source.table.clone(),
                });
            }
            let table = catalog.load_table(&ident).await.map_err(read_error)?;
            let metadata = table.metadata_ref();
            let snapshot: SnapshotRef = match source.snapshot {
                Some(id) => {
                    metadata
                        .snapshot_by_id(id)
                        .cloned()
                        .ok_or_else(|| TableError::NoSnapshot {
                            table: source.table.clone(),
                            snapshot: id,
                            known: known_snapshots(&metadata),
                        })?
                }
                None => metadata
                    .current_snapshot()
                    .cloned()
                    .ok_or_else(|| TableError::Empty {
                        table: source.table.clone(),
                    })?,
            };
            let table_schema = snapshot.schema(&metadata).map_err(read_error)?;
            let arrow =
                iceberg::arrow::schema_to_arrow_schema(&table_schema).map_err(read_error)?;
            let plan = ColumnPlan::new(&schema, &arrow, &format!("table `{}`", source.table))?;

            // Where each live data file goes in the order.
            let order_field = table_schema.field_id_by_name(&order_by);
            let mut order: HashMap<String, (Option<Datum>, i64)> = HashMap::new();
            let manifests = table
                .manifest_list_reader(&snapshot)
                .load()
                .await
                .map_err(read_error)?;
            for manifest in manifests.entries() {
                if manifest.content != ManifestContentType::Data {
                    continue;
                }
                let manifest = manifest
                    .load_manifest(table.file_io())
                    .await
                    .map_err(read_error)?;
                for entry in manifest.entries().iter().filter(|e| e.is_alive()) {
                    let first_time = order_field
                        .and_then(|id| entry.data_file().lower_bounds().get(&id).cloned());
                    order.insert(
                        entry.file_path().to_string(),
                        (first_time, entry.sequence_number().unwrap_or(0)),
                    );
                }
            }

            let scan = table
                .scan()
                .snapshot_id(snapshot.snapshot_id())
                .select(plan.column_names().to_vec())
                .build()
                .map_err(read_error)?;
            let tasks: Vec<iceberg::scan::FileScanTask> = scan
                .plan_files()
                .await
                .map_err(read_error)?
                .try_collect()
                .await
                .map_err(read_error)?;
            let mut planned: Vec<Planned> = tasks
                .into_iter()
                .map(|task| {
                    let (first_time, sequence) = order
                        .get(&task.data_file_path)
                        .cloned()
                        .unwrap_or((None, 0));
                    Planned {
                        task,
                        first_time,
                        sequence,
                    }
                })
                .collect();
            planned.sort_by(|a, b| {
                a.first_time
                    .partial_cmp(&b.first_time)
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(a.sequence.cmp(&b.sequence))
                    .then(a.task.data_file_path.cmp(&b.task.data_file_path))
            });
            let shape = TableShape {
                snapshot: snapshot.snapshot_id(),
                files: planned.len(),
                rows: planned.iter().filter_map(|p| p.task.record_count).sum(),
                bytes: planned.iter().map(|p| p.task.file_size_in_bytes).sum(),
            };
            tracing::info!(
                table = %source.table,
                snapshot = shape.snapshot,
                files = shape.files,
                rows = shape.rows,
                bytes = shape.bytes,
                "reading an Iceberg table"
            );

            // Files one after the other, each through Iceberg's reader; a few batches
            // ahead of the engine at most.
            let (mut send, pieces) = futures::channel::mpsc::channel(4);
            let reader = table
                .reader_builder()
                .with_data_file_concurrency_limit(1)
                .build();
            tokio::spawn(async move {
                for file in planned {
                    let name = file.task.data_file_path.clone();
                    let one = futures::stream::iter([Ok(file.task)]).boxed();
                    let batches = reader.clone().read(one).map(|r| r.stream());
                    let mut batches = match batches {
                        Ok(batches) => batches,
                        Err(e) => {
                            let _ = send
                                .send(Piece::Failed(format!("{name}: {}", describe(&e))))
                                .await;
                            return;
                        }
                    };
                    while let Some(batch) = batches.next().await {
                        let piece = match batch {
                            Ok(batch) => Piece::Batch(batch),
                            Err(e) => Piece::Failed(format!("{name}: {}", describe(&e))),
                        };
                        let failed = matches!(piece, Piece::Failed(_));
                        if send.send(piece).await.is_err() || failed {
                            return;
                        }
                    }
                    if send.send(Piece::FileDone).await.is_err() {
                        return;
                    }
                }
            });
            Ok(TableRows {
                pieces,
                plan,
                lines: Vec::new().into_iter(),
                table: source.table.clone(),
                files_done: 0,
                ended: false,
                shape,
            })
        })
    }
}

fn known_snapshots(metadata: &iceberg::spec::TableMetadata) -> String {
    let mut snapshots: Vec<(i64, i64)> = metadata
        .snapshots()
        .map(|s| (s.timestamp_ms(), s.snapshot_id()))
        .collect();
    snapshots.sort_unstable();
    if snapshots.is_empty() {
        return "none".into();
    }
    snapshots
        .iter()
        .map(|(_, id)| id.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Iceberg's message with its causes; it names no credential (storage properties are
/// never part of it).
fn describe(e: &iceberg::Error) -> String {
    crate::with_causes(e.message().to_string(), e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_need_a_namespace() {
        let source = |table: &str| TableSource {
            catalog: "sqlite:/nowhere.db".into(),
            catalog_name: "default".into(),
            table: table.into(),
            snapshot: None,
        };
        assert!(source("lake.events").ident().is_ok());
        assert!(source("a.b.events").ident().is_ok());
        assert_eq!(
            source("events").ident().unwrap_err().to_string(),
            "`events` is not a table name: give NAMESPACE.TABLE, e.g. lake.events"
        );
        assert!(source("lake.").ident().is_err());
    }

    #[test]
    fn only_sqlite_catalogs_that_exist() {
        let source = |catalog: &str| TableSource {
            catalog: catalog.into(),
            catalog_name: "default".into(),
            table: "lake.events".into(),
            snapshot: None,
        };
        assert_eq!(
            source("sqlite:///no/such/catalog.db")
                .check_catalog()
                .unwrap_err()
                .to_string(),
            "cannot open the catalog sqlite:///no/such/catalog.db: /no/such/catalog.db is not a file"
        );
        assert!(source("postgres://db/catalog")
            .check_catalog()
            .unwrap_err()
            .to_string()
            .contains("only SQL catalogs on SQLite"));
        let file = tempfile::NamedTempFile::new().unwrap();
        let uri = format!("sqlite:{}", file.path().display());
        assert!(source(&uri).check_catalog().is_ok());
    }

    #[test]
    fn the_aws_environment_becomes_storage_properties() {
        let env: HashMap<&str, &str> = [
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_SECRET_ACCESS_KEY", "never-copied"),
        ]
        .into();
        let props = storage_properties(|name| env.get(name).map(|v| v.to_string()));
        assert_eq!(props["s3.endpoint"], "http://127.0.0.1:9000");
        assert_eq!(props["s3.path-style-access"], "true");
        assert_eq!(props["s3.region"], "eu-west-1");
        assert_eq!(
            props.len(),
            3,
            "credentials are left to the storage's chain"
        );
    }
}
