//! Where `backfill` and `training-set --from events` read history other than the source
//! topic: a file, Parquet files, or an Iceberg table, and as how many partitions.

use anyhow::{bail, Context, Result};
use clap::Args;
use freshet_backfill::Input;
use freshet_core::definitions::Definitions;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct HistoryFileArgs {
    /// Read events from this file (JSON Lines, or an Avro object container file), or from
    /// these Parquet files (a path or pattern, local or s3://BUCKET/PREFIX/*.parquet;
    /// credentials from the AWS environment variables), instead of the source topic.
    #[arg(long, value_name = "PATH")]
    pub source_file: Option<PathBuf>,
    /// Read events from one snapshot of this Iceberg table instead of the source topic
    /// (with --catalog). Files are read in the order of their smallest event time.
    #[arg(long, value_name = "NAMESPACE.TABLE", conflicts_with = "source_file")]
    pub source_table: Option<String>,
    /// The SQL catalog of --source-table: sqlite:PATH (pyiceberg's SqlCatalog on SQLite).
    /// Its warehouse may be local or on S3 (AWS environment variables as for Parquet).
    #[arg(long, value_name = "URI", env = "FRESHET_ICEBERG_CATALOG")]
    pub catalog: Option<String>,
    /// The name the catalog's tables were created under (pyiceberg's SqlCatalog name).
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub catalog_name: String,
    /// The snapshot of --source-table to read (default: the table's current snapshot).
    #[arg(long, value_name = "ID", requires = "source_table")]
    pub snapshot: Option<i64>,
    /// With --source-file or --source-table: the live topic's partition count (default:
    /// asked from the broker), so events get the partitions and watermarks they have live.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: Option<i32>,
}

impl HistoryFileArgs {
    /// Whether history comes from a file or a table rather than Kafka.
    pub fn given(&self) -> bool {
        self.source_file.is_some() || self.source_table.is_some()
    }

    /// The file or table input for `views`, or `None` for Kafka.
    pub fn input(
        &self,
        defs: &Definitions,
        views: &[String],
        brokers: &str,
    ) -> Result<Option<Input>> {
        if !self.given() {
            if self.partitions.is_some() {
                bail!("--partitions applies to --source-file and --source-table only; Kafka input has its topic's partitions");
            }
            return Ok(None);
        }
        let partitions = match self.partitions {
            Some(n) => n,
            None => {
                let topic = freshet_backfill::source_topic(defs, views)?;
                freshet_backfill::topic_partitions(brokers, &topic).with_context(|| {
                    format!(
                        "cannot tell how many partitions `{topic}` has; pass --partitions \
                         with the live topic's partition count"
                    )
                })?
            }
        };
        if let Some(path) = &self.source_file {
            return Ok(Some(Input::File {
                path: path.clone(),
                partitions,
            }));
        }
        let table = self.source_table.clone().expect("given");
        let Some(catalog) = self.catalog.clone() else {
            bail!("--source-table needs --catalog (or FRESHET_ICEBERG_CATALOG): the table's SQL catalog, e.g. sqlite:/data/catalog.db");
        };
        Ok(Some(Input::Table {
            table: freshet_lake::TableSource {
                catalog,
                catalog_name: self.catalog_name.clone(),
                table,
                snapshot: self.snapshot,
            },
            partitions,
        }))
    }
}

/// How an input is named in what the commands print.
pub fn describe(input: &Input, brokers: &str) -> String {
    match input {
        Input::Kafka { .. } => format!("Kafka at {brokers}"),
        Input::File { path, partitions } => {
            format!("{} (as {partitions} partitions)", path.display())
        }
        Input::Table { table, partitions } => format!(
            "Iceberg table {} of {}, snapshot {} (as {partitions} partitions)",
            table.table,
            table.catalog,
            table
                .snapshot
                .map_or("current".to_string(), |id| id.to_string())
        ),
    }
}
