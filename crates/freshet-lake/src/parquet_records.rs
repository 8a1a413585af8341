//! Parquet files read as records of a source's Avro schema. Columns map to the schema's
//! fields by name, checked once per file against the file's own schema: a field without
//! a default that has no column, or a column of a type its field cannot take, is an error
//! naming the file, the column and both types. Columns the schema does not name are not
//! read. Timestamp and date columns become epoch milliseconds for `long` fields (the
//! event time). Each row is then handed over as a JSON object, which the backfill
//! resolves with the same rules as a line of a JSON Lines file.

use apache_avro::Schema;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, TimeUnit};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;
use std::sync::Arc;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParquetError {
    #[error("{file} is not a readable Parquet file: {reason}")]
    NotParquet { file: String, reason: String },
    #[error(
        "{file} has no column `{column}`, which the source's schema needs (it has: {columns})"
    )]
    MissingColumn {
        file: String,
        column: String,
        columns: String,
    },
    #[error("{file}: column `{column}` is {found}, which the source's field `{column}` ({wanted}) cannot take")]
    MistypedColumn {
        file: String,
        column: String,
        found: String,
        wanted: String,
    },
    #[error("the source's schema is not a record")]
    NotARecord,
}

/// What one file holds, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileShape {
    pub row_groups: usize,
    pub rows: u64,
}

/// Which columns of an Arrow schema fill which fields of a source's Avro schema, and how
/// a batch of them becomes JSON objects: for a Parquet file and for an Iceberg table
/// alike.
#[derive(Debug, Clone)]
pub struct ColumnPlan {
    /// The columns read, as indexes into the Arrow schema, in its order.
    read: Vec<usize>,
    /// Their names, in the same order.
    names: Vec<String>,
    /// The columns read that become epoch milliseconds, with their types in the file.
    casts: std::collections::HashMap<String, DataType>,
}

impl ColumnPlan {
    /// Checks `arrow` (the columns of `file`, which names it in errors) against the
    /// fields of `schema`.
    pub fn new(
        schema: &Schema,
        arrow: &arrow_schema::Schema,
        file: &str,
    ) -> Result<Self, ParquetError> {
        let Schema::Record(record) = schema else {
            return Err(ParquetError::NotARecord);
        };
        let mut read = Vec::new();
        let mut casts = std::collections::HashMap::new();
        for field in &record.fields {
            let Some((index, column)) = arrow.column_with_name(&field.name) else {
                if field.default.is_some() || is_nullable(&field.schema) {
                    continue;
                }
                return Err(ParquetError::MissingColumn {
                    file: file.into(),
                    column: field.name.clone(),
                    columns: arrow
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            let cast = fit(&field.schema, column).ok_or_else(|| ParquetError::MistypedColumn {
                file: file.into(),
                column: field.name.clone(),
                found: column.data_type().to_string(),
                wanted: avro_type_name(&field.schema),
            })?;
            read.push(index);
            if let Some(from) = cast {
                casts.insert(field.name.clone(), from);
            }
        }
        read.sort_unstable();
        let names = read
            .iter()
            .map(|&i| arrow.field(i).name().clone())
            .collect();
        Ok(Self { read, names, casts })
    }

    /// The names of the columns read, in the schema's order.
    pub fn column_names(&self) -> &[String] {
        &self.names
    }

    /// A batch of the columns read (any order, found by name) as JSON lines, one per row.
    pub fn lines(&self, batch: &RecordBatch) -> Result<Vec<String>, String> {
        let mut fields = Vec::with_capacity(self.names.len());
        let mut arrays = Vec::with_capacity(self.names.len());
        for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
            if !self.names.contains(field.name()) {
                continue;
            }
            let (field, array) = match self.casts.get(field.name()) {
                Some(from) => {
                    let array = epoch_millis(array, from).map_err(|e| e.to_string())?;
                    (
                        Arc::new(Field::new(field.name(), DataType::Int64, true)),
                        array,
                    )
                }
                None => (field.clone(), array.clone()),
            };
            fields.push(field);
            arrays.push(array);
        }
        let batch = RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), arrays)
            .map_err(|e| e.to_string())?;
        let mut writer = arrow_json::LineDelimitedWriter::new(Vec::new());
        writer.write(&batch).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
        let text = String::from_utf8(writer.into_inner()).map_err(|e| e.to_string())?;
        Ok(text.lines().map(str::to_string).collect())
    }
}

/// The rows of one Parquet file, as JSON objects (one per row, in file order).
pub struct ParquetRows {
    batches: ParquetRecordBatchReader,
    plan: ColumnPlan,
    lines: std::vec::IntoIter<String>,
    pub shape: FileShape,
}

impl ParquetRows {
    /// Opens `bytes` (the whole file; `file` names it in errors) for the fields of
    /// `schema`.
    pub fn open(bytes: Bytes, schema: &Schema, file: &str) -> Result<Self, ParquetError> {
        let not_parquet = |e: parquet::errors::ParquetError| ParquetError::NotParquet {
            file: file.into(),
            reason: e.to_string(),
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(not_parquet)?;
        let shape = FileShape {
            row_groups: builder.metadata().num_row_groups(),
            rows: builder.metadata().file_metadata().num_rows().max(0) as u64,
        };
        let plan = ColumnPlan::new(schema, builder.schema(), file)?;
        // Leaf columns, in the file's order: top-level columns of primitive types.
        let mask = ProjectionMask::roots(builder.parquet_schema(), plan.read.iter().copied());
        let batches = builder
            .with_projection(mask)
            .with_batch_size(8 * 1024)
            .build()
            .map_err(not_parquet)?;
        Ok(Self {
            batches,
            plan,
            lines: Vec::new().into_iter(),
            shape,
        })
    }

    fn next_batch(&mut self) -> Option<Result<Vec<String>, String>> {
        let batch = match self.batches.next()? {
            Ok(batch) => batch,
            Err(e) => return Some(Err(e.to_string())),
        };
        Some(self.plan.lines(&batch))
    }
}

impl Iterator for ParquetRows {
    /// A row as a JSON object, or why the file could not be read further.
    type Item = Result<String, String>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(line) = self.lines.next() {
                return Some(Ok(line));
            }
            match self.next_batch()? {
                Ok(lines) => self.lines = lines.into_iter(),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// Timestamps and dates as epoch milliseconds.
fn epoch_millis(array: &ArrayRef, from: &DataType) -> Result<ArrayRef, arrow_schema::ArrowError> {
    let as_millis = match from {
        DataType::Timestamp(_, zone) => arrow_cast::cast(
            array,
            &DataType::Timestamp(TimeUnit::Millisecond, zone.clone()),
        )?,
        DataType::Date32 | DataType::Date64 => arrow_cast::cast(array, &DataType::Date64)?,
        _ => array.clone(),
    };
    arrow_cast::cast(&as_millis, &DataType::Int64)
}

fn is_nullable(schema: &Schema) -> bool {
    matches!(schema, Schema::Union(u) if u.variants().iter().any(|v| matches!(v, Schema::Null)))
}

/// Whether a column of `column`'s type can fill a field of `schema`: `Some(None)` as it
/// is, `Some(Some(type))` turned from that timestamp or date type into epoch
/// milliseconds, `None` not at all.
fn fit(schema: &Schema, column: &Field) -> Option<Option<DataType>> {
    use DataType::*;
    let ty = column.data_type();
    let integer = matches!(
        ty,
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64
    );
    let text = matches!(ty, Utf8 | LargeUtf8 | Utf8View)
        || matches!(ty, Dictionary(_, v) if matches!(**v, Utf8 | LargeUtf8));
    match schema {
        Schema::Long | Schema::Int => match ty {
            Timestamp(_, _) | Date32 | Date64 => Some(Some(ty.clone())),
            _ if integer => Some(None),
            _ => None,
        },
        Schema::Double | Schema::Float => (integer
            || matches!(ty, Float16 | Float32 | Float64 | Decimal128(_, _)))
        .then_some(None),
        Schema::String | Schema::Enum(_) => text.then_some(None),
        Schema::Boolean => matches!(ty, Boolean).then_some(None),
        Schema::Union(union) => union
            .variants()
            .iter()
            .filter(|v| !matches!(v, Schema::Null))
            .find_map(|v| fit(v, column)),
        _ => None,
    }
}

fn avro_type_name(schema: &Schema) -> String {
    match schema {
        Schema::Union(union) => union
            .variants()
            .iter()
            .map(avro_type_name)
            .collect::<Vec<_>>()
            .join(" or "),
        other => serde_json::to_string(other)
            .map(|s| s.trim_matches('"').to_string())
            .unwrap_or_else(|_| format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use parquet::arrow::ArrowWriter;

    const SCHEMA: &str = r#"{"type":"record","name":"E","fields":[
        {"name":"user_id","type":"long"},
        {"name":"action_type","type":"string"},
        {"name":"amount","type":["null","double"],"default":null},
        {"name":"timestamp","type":"long"}]}"#;

    fn file(columns: Vec<(&str, ArrayRef)>) -> Bytes {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let mut out = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        Bytes::from(out)
    }

    #[test]
    fn rows_become_json_objects_with_timestamps_in_epoch_millis() {
        let bytes = file(vec![
            (
                "user_id",
                Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
            ),
            (
                "action_type",
                Arc::new(StringArray::from(vec!["click", "view"])),
            ),
            ("extra", Arc::new(StringArray::from(vec!["x", "y"]))),
            (
                "timestamp",
                Arc::new(TimestampMicrosecondArray::from(vec![
                    1_700_000_000_123_000,
                    1_700_000_001_000_000,
                ])),
            ),
        ]);
        let schema = Schema::parse_str(SCHEMA).unwrap();
        let rows = ParquetRows::open(bytes, &schema, "f.parquet").unwrap();
        assert_eq!(
            rows.shape,
            FileShape {
                row_groups: 1,
                rows: 2
            }
        );
        let rows: Vec<serde_json::Value> = rows
            .map(|r| serde_json::from_str(&r.unwrap()).unwrap())
            .collect();
        assert_eq!(
            rows,
            vec![
                serde_json::json!({"user_id": 1, "action_type": "click", "timestamp": 1_700_000_000_123i64}),
                serde_json::json!({"user_id": 2, "action_type": "view", "timestamp": 1_700_000_001_000i64}),
            ]
        );
    }

    #[test]
    fn a_missing_or_mistyped_column_is_named() {
        let schema = Schema::parse_str(SCHEMA).unwrap();
        let missing = file(vec![
            ("user_id", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            ("action_type", Arc::new(StringArray::from(vec!["click"]))),
        ]);
        assert_eq!(
            ParquetRows::open(missing, &schema, "a.parquet").err().unwrap().to_string(),
            "a.parquet has no column `timestamp`, which the source's schema needs (it has: user_id, action_type)"
        );
        let mistyped = file(vec![
            (
                "user_id",
                Arc::new(StringArray::from(vec!["1"])) as ArrayRef,
            ),
            ("action_type", Arc::new(StringArray::from(vec!["click"]))),
            ("amount", Arc::new(Float64Array::from(vec![1.5]))),
            ("timestamp", Arc::new(Int64Array::from(vec![5]))),
        ]);
        assert_eq!(
            ParquetRows::open(mistyped, &schema, "b.parquet").err().unwrap().to_string(),
            "b.parquet: column `user_id` is Utf8, which the source's field `user_id` (long) cannot take"
        );
        let not_parquet =
            ParquetRows::open(Bytes::from_static(b"{\"a\":1}\n"), &schema, "c.parquet");
        assert!(matches!(not_parquet, Err(ParquetError::NotParquet { .. })));
    }
}
