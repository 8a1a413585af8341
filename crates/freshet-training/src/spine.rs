//! The spine: the (entity, time) rows a training set is built for, read from CSV or
//! Parquet. Every column passes through to the output unchanged; the entity column is read
//! as strings (Freshet's entity ids) and the time column as epoch milliseconds.

use crate::TrainingError;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Rows per batch read and written.
const BATCH_ROWS: usize = 64 * 1024;
/// Integer times below this (1973-03-03 in milliseconds) look like seconds.
const SECONDS_LIKE_BELOW: i64 = 100_000_000_000;

/// A spine file's format, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    Csv,
    Parquet,
}

impl TableFormat {
    /// The format a path's extension names (`.csv`, `.parquet`, `.pq`), case-insensitive.
    pub fn of(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Self::Csv),
            "parquet" | "pq" => Some(Self::Parquet),
            _ => None,
        }
    }
}

/// The spine's rows: its columns as read (in batches) and, per row, the entity id and
/// the time in epoch milliseconds.
pub struct Spine {
    pub path: PathBuf,
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub entities: Vec<String>,
    pub times: Vec<i64>,
}

impl Spine {
    pub fn rows(&self) -> usize {
        self.times.len()
    }
}

/// Where a row is, as a user finds it: a CSV line (the header is line 1) or a Parquet row.
fn row_name(format: TableFormat, index: usize) -> String {
    match format {
        TableFormat::Csv => format!("line {}", index + 2),
        TableFormat::Parquet => format!("row {}", index + 1),
    }
}

/// Reads the spine at `path`; `entity_column` and `time_column` name its columns.
pub fn read(path: &Path, entity_column: &str, time_column: &str) -> Result<Spine, TrainingError> {
    let format =
        TableFormat::of(path).ok_or_else(|| TrainingError::SpineFormat { path: path.into() })?;
    let (schema, batches) = match format {
        TableFormat::Csv => read_csv(path, entity_column, time_column)?,
        TableFormat::Parquet => read_parquet(path)?,
    };
    let column_index = |name: &str, flag: &str| {
        schema
            .index_of(name)
            .map_err(|_| TrainingError::MissingColumn {
                path: path.into(),
                column: name.into(),
                flag: flag.into(),
                available: schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    };
    let entity_at = column_index(entity_column, "--entity-column")?;
    let time_at = column_index(time_column, "--time-column")?;
    let rows = batches.iter().map(RecordBatch::num_rows).sum();
    let mut entities = Vec::with_capacity(rows);
    let mut times = Vec::with_capacity(rows);
    let mut first = 0;
    for batch in &batches {
        let at = |i: usize| row_name(format, first + i);
        let bad = |i: usize, column: &str, reason: String| TrainingError::BadValue {
            path: path.into(),
            row: at(i),
            column: column.into(),
            reason,
        };
        read_entities(batch.column(entity_at), &mut entities, |i, reason| {
            bad(i, entity_column, reason)
        })?;
        read_times(batch.column(time_at), &mut times, |i, reason| {
            bad(i, time_column, reason)
        })?;
        first += batch.num_rows();
    }
    if !times.is_empty() && times.iter().all(|&t| (0..SECONDS_LIKE_BELOW).contains(&t)) {
        tracing::warn!(
            spine = %path.display(),
            column = time_column,
            "every time is before 1973 read as epoch milliseconds: are they seconds? \
             Integer times are epoch milliseconds"
        );
    }
    Ok(Spine {
        path: path.into(),
        schema,
        batches,
        entities,
        times,
    })
}

fn format_error(path: &Path) -> impl Fn(String) -> TrainingError + '_ {
    move |reason| TrainingError::Format {
        path: path.into(),
        reason,
    }
}

fn open(path: &Path) -> Result<File, TrainingError> {
    File::open(path).map_err(|source| TrainingError::File {
        path: path.into(),
        source,
    })
}

/// A CSV spine with a header; column types are inferred from every row, except the entity
/// column (always strings) and the time column (integers, or strings parsed here).
fn read_csv(
    path: &Path,
    entity_column: &str,
    time_column: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>), TrainingError> {
    let format = arrow_csv::reader::Format::default().with_header(true);
    let (inferred, _) = format
        .infer_schema(open(path)?, None)
        .map_err(|e| format_error(path)(e.to_string()))?;
    let fields: Vec<Field> = inferred
        .fields()
        .iter()
        .map(|f| {
            let name = f.name().as_str();
            if name == entity_column || (name == time_column && f.data_type() != &DataType::Int64) {
                Field::new(name, DataType::Utf8, true)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let reader = arrow_csv::ReaderBuilder::new(schema.clone())
        .with_format(format)
        .with_batch_size(BATCH_ROWS)
        .build(open(path)?)
        .map_err(|e| format_error(path)(e.to_string()))?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format_error(path)(e.to_string()))?;
    Ok((schema, batches))
}

fn read_parquet(path: &Path) -> Result<(SchemaRef, Vec<RecordBatch>), TrainingError> {
    let builder =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(open(path)?)
            .map_err(|e| format_error(path)(e.to_string()))?;
    let schema = builder.schema().clone();
    let reader = builder
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| format_error(path)(e.to_string()))?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format_error(path)(e.to_string()))?;
    Ok((schema, batches))
}

/// Entity ids: strings, or integers written in decimal.
fn read_entities(
    column: &ArrayRef,
    out: &mut Vec<String>,
    bad: impl Fn(usize, String) -> TrainingError,
) -> Result<(), TrainingError> {
    let strings = match column.data_type() {
        t if t.is_integer()
            || matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) =>
        {
            arrow_cast::cast(column, &DataType::Utf8).map_err(|e| bad(0, e.to_string()))?
        }
        other => {
            return Err(bad(
                0,
                format!("holds {other}; entity ids are strings or integers"),
            ))
        }
    };
    let strings: &StringArray = strings.as_string();
    for (i, id) in strings.iter().enumerate() {
        match id {
            Some(id) if !id.is_empty() => out.push(id.to_string()),
            _ => return Err(bad(i, "no entity id".into())),
        }
    }
    Ok(())
}

/// Times as epoch milliseconds: integers (milliseconds), timestamps of any unit, dates,
/// or strings holding either an integer or an RFC 3339 time.
fn read_times(
    column: &ArrayRef,
    out: &mut Vec<i64>,
    bad: impl Fn(usize, String) -> TrainingError,
) -> Result<(), TrainingError> {
    if let Some(i) = (0..column.len()).find(|&i| column.is_null(i)) {
        return Err(bad(i, "no time".into()));
    }
    match column.data_type() {
        t if t.is_integer() => {
            let ms =
                arrow_cast::cast(column, &DataType::Int64).map_err(|e| bad(0, e.to_string()))?;
            out.extend(ms.as_primitive::<Int64Type>().values().iter().copied());
        }
        DataType::Timestamp(_, tz) => {
            // The same zone, only the unit changes: the values stay instants in UTC.
            let target = DataType::Timestamp(TimeUnit::Millisecond, tz.clone());
            let ms = arrow_cast::cast(column, &target).map_err(|e| bad(0, e.to_string()))?;
            out.extend(
                ms.as_primitive::<TimestampMillisecondType>()
                    .values()
                    .iter()
                    .copied(),
            );
        }
        DataType::Date32 | DataType::Date64 => {
            let target = DataType::Timestamp(TimeUnit::Millisecond, None);
            let ms = arrow_cast::cast(column, &target).map_err(|e| bad(0, e.to_string()))?;
            out.extend(
                ms.as_primitive::<TimestampMillisecondType>()
                    .values()
                    .iter()
                    .copied(),
            );
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let strings =
                arrow_cast::cast(column, &DataType::Utf8).map_err(|e| bad(0, e.to_string()))?;
            for (i, text) in strings.as_string::<i32>().iter().enumerate() {
                let text = text.unwrap_or_default();
                out.push(parse_time(text).map_err(|reason| bad(i, reason))?);
            }
        }
        other => {
            return Err(bad(
                0,
                format!(
                    "holds {other}; times are epoch milliseconds, timestamps, dates or \
                     RFC 3339 strings"
                ),
            ))
        }
    }
    Ok(())
}

/// Epoch milliseconds written as an integer, or an RFC 3339 time (a space may stand for
/// the `T`).
pub fn parse_time(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let parsed = chrono::DateTime::parse_from_rfc3339(text)
        .or_else(|_| chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%:z"))
        .or_else(|_| chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.fZ"));
    match parsed {
        Ok(time) => Ok(time.timestamp_millis()),
        Err(_)
            if chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
                || chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").is_ok() =>
        {
            Err(format!(
                "`{text}` has no UTC offset; add one (`Z` for UTC), as RFC 3339 requires"
            ))
        }
        Err(e) => Err(format!(
            "`{text}` is not a time ({e}): give epoch milliseconds or RFC 3339 \
             (2026-11-26T08:00:00Z)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_epoch_milliseconds_or_rfc_3339() {
        assert_eq!(parse_time("1795680000000"), Ok(1_795_680_000_000));
        assert_eq!(parse_time("2026-11-26T08:00:00Z"), Ok(1_795_680_000_000));
        assert_eq!(
            parse_time("2026-11-26T09:00:00.5+01:00"),
            Ok(1_795_680_000_500)
        );
        assert_eq!(parse_time("2026-11-26 08:00:00Z"), Ok(1_795_680_000_000));
        let error = parse_time("2026-11-26T08:00:00").unwrap_err();
        assert!(error.contains("has no UTC offset"), "{error}");
        let error = parse_time("yesterday").unwrap_err();
        assert!(error.contains("`yesterday` is not a time"), "{error}");
    }

    #[test]
    fn formats_come_from_extensions() {
        assert_eq!(
            TableFormat::of(Path::new("a/b.CSV")),
            Some(TableFormat::Csv)
        );
        assert_eq!(
            TableFormat::of(Path::new("b.parquet")),
            Some(TableFormat::Parquet)
        );
        assert_eq!(TableFormat::of(Path::new("b.json")), None);
        assert_eq!(TableFormat::of(Path::new("b")), None);
    }
}
