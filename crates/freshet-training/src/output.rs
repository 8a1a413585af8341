//! The training set: the spine's columns unchanged, then per requested view its features
//! (`{view}__{feature}`, typed), `{view}__status` and `{view}__event_time`, decided per
//! row as the serving API decides per request.

use crate::asof::Answers;
use crate::request::{RequestedFeature, RequestedView};
use crate::spine::{Spine, TableFormat};
use crate::{Progress, Stage, TrainingError};
use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use freshet_core::{Value, ValueType};
use std::path::Path;
use std::sync::Arc;

/// What a row's view holds, as the serving API says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Values of an update at or before the row's time, within the view's TTL.
    Found,
    /// No update at or before the row's time: the defaults.
    Missing,
    /// The latest update is older than the view's TTL at the row's time: the defaults.
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Found => "found",
            Status::Missing => "missing",
            Status::Expired => "expired",
        }
    }
}

/// Rows per status, per requested view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub found: u64,
    pub missing: u64,
    pub expired: u64,
}

fn arrow_type(t: ValueType) -> DataType {
    match t {
        ValueType::Boolean => DataType::Boolean,
        ValueType::Int | ValueType::Long => DataType::Int64,
        ValueType::Float | ValueType::Double => DataType::Float64,
        ValueType::String => DataType::Utf8,
    }
}

fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into()))
}

/// The output's schema: the spine's fields, then each view's.
pub fn schema(spine: &Spine, views: &[RequestedView]) -> Result<SchemaRef, TrainingError> {
    let mut fields: Vec<Field> = spine
        .schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    for view in views {
        for feature in &view.features {
            fields.push(Field::new(
                format!("{}__{}", view.name, feature.name),
                arrow_type(feature.value_type),
                true,
            ));
        }
        fields.push(Field::new(
            format!("{}__status", view.name),
            DataType::Utf8,
            false,
        ));
        fields.push(Field::new(
            format!("{}__event_time", view.name),
            time_type(),
            true,
        ));
    }
    for (i, field) in fields.iter().enumerate() {
        if fields[..i].iter().any(|f| f.name() == field.name()) {
            return Err(TrainingError::ColumnClash {
                path: spine.path.clone(),
                column: field.name().clone(),
            });
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// One typed column being built.
enum Column {
    Boolean(BooleanBuilder),
    Long(Int64Builder),
    Double(Float64Builder),
    Text(StringBuilder),
}

impl Column {
    fn new(t: ValueType, rows: usize) -> Self {
        match t {
            ValueType::Boolean => Column::Boolean(BooleanBuilder::with_capacity(rows)),
            ValueType::Int | ValueType::Long => Column::Long(Int64Builder::with_capacity(rows)),
            ValueType::Float | ValueType::Double => {
                Column::Double(Float64Builder::with_capacity(rows))
            }
            ValueType::String => Column::Text(StringBuilder::with_capacity(rows, rows * 8)),
        }
    }

    fn push(&mut self, value: &Value) {
        match (self, value) {
            (Column::Boolean(b), Value::Bool(x)) => b.append_value(*x),
            (Column::Long(b), Value::Long(x)) => b.append_value(*x),
            (Column::Long(b), Value::Double(x)) if x.fract() == 0.0 => b.append_value(*x as i64),
            (Column::Double(b), Value::Double(x)) => b.append_value(*x),
            (Column::Double(b), Value::Long(x)) => b.append_value(*x as f64),
            (Column::Text(b), Value::String(x)) => b.append_value(x),
            (Column::Text(b), other) if !matches!(other, Value::Null) => {
                b.append_value(other.to_json_string())
            }
            (Column::Boolean(b), _) => b.append_null(),
            (Column::Long(b), _) => b.append_null(),
            (Column::Double(b), _) => b.append_null(),
            (Column::Text(b), _) => b.append_null(),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Column::Boolean(mut b) => Arc::new(b.finish()),
            Column::Long(mut b) => Arc::new(b.finish()),
            Column::Double(mut b) => Arc::new(b.finish()),
            Column::Text(mut b) => Arc::new(b.finish()),
        }
    }
}

/// The status of `view` at `time` for an as-of update with `event_time`, as serving
/// decides it (`now - event_time > ttl` is expired).
pub fn status(view: &RequestedView, time: i64, found: Option<i64>) -> Status {
    match found {
        None => Status::Missing,
        Some(event_time) if time.saturating_sub(event_time) > view.ttl_ms => Status::Expired,
        Some(_) => Status::Found,
    }
}

/// The view's columns for spine rows `first..first + rows`.
fn view_columns(
    view: &RequestedView,
    v: usize,
    answers: &Answers,
    times: &[i64],
    first: usize,
    tally: &mut Tally,
) -> Vec<ArrayRef> {
    let rows = times.len();
    let mut features: Vec<(&RequestedFeature, Column)> = view
        .features
        .iter()
        .map(|f| (f, Column::new(f.value_type, rows)))
        .collect();
    let mut statuses = StringBuilder::with_capacity(rows, rows * 6);
    let mut event_times = TimestampMillisecondBuilder::with_capacity(rows).with_timezone("+00:00");
    for (i, &time) in times.iter().enumerate() {
        let found = answers.per_view[v][first + i].as_ref();
        let status = status(view, time, found.map(|f| f.event_time));
        match (status, found) {
            (Status::Found, Some(found)) => {
                tally.found += 1;
                for (feature, column) in &mut features {
                    column.push(&found.values[feature.position]);
                }
                event_times.append_value(found.event_time);
            }
            _ => {
                if status == Status::Expired {
                    tally.expired += 1;
                } else {
                    tally.missing += 1;
                }
                for (feature, column) in &mut features {
                    column.push(&feature.default);
                }
                event_times.append_null();
            }
        }
        statuses.append_value(status.as_str());
    }
    let mut columns: Vec<ArrayRef> = features.into_iter().map(|(_, c)| c.finish()).collect();
    columns.push(Arc::new(statuses.finish()));
    columns.push(Arc::new(event_times.finish()));
    columns
}

/// Writes the training set to `out` (Parquet or CSV by its extension), through a file
/// beside it that is renamed into place once complete. Returns the tally per view.
pub fn write(
    spine: &Spine,
    views: &[RequestedView],
    answers: &Answers,
    out: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<Tally>, TrainingError> {
    let format =
        TableFormat::of(out).ok_or_else(|| TrainingError::OutFormat { path: out.into() })?;
    let schema = schema(spine, views)?;
    let partial = out.with_extension(format!(
        "{}.partial",
        out.extension().and_then(|e| e.to_str()).unwrap_or_default()
    ));
    let file_error = |source| TrainingError::File {
        path: out.into(),
        source,
    };
    let format_error = |e: &dyn std::fmt::Display| TrainingError::Format {
        path: out.into(),
        reason: e.to_string(),
    };
    let file = std::fs::File::create(&partial).map_err(file_error)?;
    let mut writer = Writer::new(format, file, schema.clone()).map_err(|e| format_error(&e))?;
    let mut tallies = vec![Tally::default(); views.len()];
    let mut first = 0;
    for batch in &spine.batches {
        let rows = batch.num_rows();
        let times = &spine.times[first..first + rows];
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        for (v, view) in views.iter().enumerate() {
            columns.extend(view_columns(
                view,
                v,
                answers,
                times,
                first,
                &mut tallies[v],
            ));
        }
        let joined = RecordBatch::try_new(schema.clone(), columns).map_err(|e| format_error(&e))?;
        writer.write(&joined).map_err(|e| format_error(&e))?;
        first += rows;
        progress(Progress {
            stage: Stage::Writing,
            done: first as u64,
            total: Some(spine.rows() as u64),
        });
    }
    writer.close().map_err(|e| format_error(&e))?;
    std::fs::rename(&partial, out).map_err(file_error)?;
    Ok(tallies)
}

enum Writer {
    Parquet(parquet::arrow::ArrowWriter<std::fs::File>),
    Csv(arrow_csv::Writer<std::fs::File>),
}

impl Writer {
    fn new(
        format: TableFormat,
        file: std::fs::File,
        schema: SchemaRef,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        Ok(match format {
            TableFormat::Parquet => {
                let properties = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::SNAPPY)
                    .build();
                Writer::Parquet(parquet::arrow::ArrowWriter::try_new(
                    file,
                    schema,
                    Some(properties),
                )?)
            }
            TableFormat::Csv => Writer::Csv(
                arrow_csv::WriterBuilder::new()
                    .with_header(true)
                    .build(file),
            ),
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), Box<dyn std::error::Error>> {
        match self {
            Writer::Parquet(w) => w.write(batch)?,
            Writer::Csv(w) => w.write(batch)?,
        }
        Ok(())
    }

    fn close(self) -> Result<(), Box<dyn std::error::Error>> {
        match self {
            Writer::Parquet(w) => {
                w.close()?;
            }
            Writer::Csv(w) => {
                let file = w.into_inner();
                file.sync_all()?;
            }
        }
        Ok(())
    }
}
