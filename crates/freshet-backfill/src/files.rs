//! History from files: a local JSON Lines or Avro file, Parquet files (local or on S3),
//! or one snapshot of an Iceberg table, read in order and fed to one engine per
//! partition as the live topic would have delivered them.

use super::*;

/// A reader that counts the bytes read through it.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// An Avro object container file starts with these bytes.
const AVRO_MAGIC: &[u8; 4] = b"Obj\x01";

fn is_avro_file(path: &Path) -> Result<bool, BackfillError> {
    let mut head = [0u8; 4];
    let read = std::fs::File::open(path).and_then(|mut file| file.read_exact(&mut head));
    match read {
        Ok(()) => Ok(&head == AVRO_MAGIC),
        // Shorter than the magic: not an Avro file.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(source) => Err(BackfillError::File {
            path: path.into(),
            source,
        }),
    }
}

/// A JSON object as a record of `schema` (missing optional fields take their defaults,
/// integers widen as Avro resolution allows), or why it is not one.
fn json_to_record(line: &str, schema: &Schema) -> Result<AvroValue, String> {
    let json: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    if !json.is_object() {
        return Err("not a JSON object".into());
    }
    let value = AvroValue::try_from(json).map_err(|e| e.to_string())?;
    value
        .resolve(schema)
        .map_err(|e| format!("does not fit the source's schema: {e}"))
}

/// Where file history comes from.
pub(crate) enum FileSource<'a> {
    /// A local JSON Lines or Avro file, or Parquet files (local or on S3).
    Path(&'a Path),
    /// One snapshot of an Iceberg table.
    Table(&'a freshet_lake::TableSource),
}

impl std::fmt::Display for FileSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileSource::Path(path) => write!(f, "{}", path.display()),
            FileSource::Table(table) => write!(f, "table {}", table.table),
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn read_file(
    defs: &Definitions,
    views: &Arc<Vec<CompiledView>>,
    mut feeder: Feeder,
    source: FileSource<'_>,
    partitions: i32,
    observer: &mut dyn LaneObserver,
    progress: &mut dyn FnMut(Progress),
    stop: &AtomicBool,
) -> Result<(Vec<Lane>, InputStats), BackfillError> {
    let topic = one_topic(views)?;
    let view = &views[0];
    let schema = &source_of_topic(defs, topic).schema.avro;
    let (entity_field, time_field, delay) = (
        view.entity_key_field.as_str(),
        view.event_time_field.as_str(),
        view.watermark_delay_ms,
    );
    let count = Arc::new(AtomicU64::new(0));
    let (total, what, records) = match source {
        FileSource::Table(table) => {
            let (total, records) = table_records(table, schema, time_field, count.clone())?;
            (total, "row", records)
        }
        FileSource::Path(path) => match lake_location(path) {
            Some(location) => {
                let (total, records) = lake_records(location, schema, count.clone())?;
                (total, "row", records)
            }
            None => local_records(path, schema, count.clone())?,
        },
    };
    let mut lanes: Vec<Lane> = (0..partitions)
        .map(|partition| Lane {
            topic: view.topic.clone(),
            partition,
            engine: PartitionEngine::without_checkpoint(views.clone(), &view.topic),
            max_time: None,
            done: false,
        })
        .collect();
    // Per partition, the position of the next event: the engine's offsets.
    let mut next = vec![0i64; partitions as usize];
    let mut last_progress = Instant::now();
    let mut report = |feeder: &Feeder| {
        progress(Progress {
            events: feeder.stats.used,
            position: count.load(Ordering::Relaxed),
            total,
        })
    };

    for item in records {
        let (number, record) = item?;
        if stop.load(Ordering::Relaxed) {
            return Err(BackfillError::Interrupted);
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            report(&feeder);
        }
        let event = record.and_then(|value| {
            into_event(value, entity_field, time_field).map_err(|e| e.to_string())
        });
        let event = match event {
            Ok(event) => event,
            Err(reason) => {
                feeder.stats.read += 1;
                feeder.stats.unreadable += 1;
                if feeder.stats.unreadable <= NAMED_BAD_LINES {
                    tracing::warn!(file = %source, "{what} {number} skipped: {reason}");
                }
                continue;
            }
        };
        let partition = freshet_kafka::partition_for_key(event.entity.as_bytes(), partitions);
        let offset = next[partition as usize];
        next[partition as usize] += 1;
        let lane = &mut lanes[partition as usize];
        if !lane.done {
            feeder.feed(lane, offset, Some(&event), delay, observer);
        }
    }
    if feeder.stats.unreadable > NAMED_BAD_LINES {
        tracing::warn!(
            skipped = feeder.stats.unreadable,
            "more unreadable entries were skipped than named above"
        );
    }
    report(&feeder);
    Ok((lanes, feeder.stats))
}

/// Records read from a file or files: each with its number (line, record or row, from 1)
/// and the record or why it is not one; an error ends the reading (the input cannot be
/// read further, and what is left would silently be missing).
type Records<'a> =
    Box<dyn Iterator<Item = Result<(u64, Result<AvroValue, String>), BackfillError>> + 'a>;

/// A local JSON Lines or Avro file's records, its size, and what its entries are called;
/// `count` follows the bytes read.
fn local_records<'a>(
    path: &Path,
    schema: &'a Schema,
    count: Arc<AtomicU64>,
) -> Result<(u64, &'static str, Records<'a>), BackfillError> {
    let file_error = |source| BackfillError::File {
        path: path.into(),
        source,
    };
    let total = std::fs::metadata(path).map_err(file_error)?.len();
    let reader = Counting {
        inner: std::fs::File::open(path).map_err(file_error)?,
        count,
    };
    if is_avro_file(path)? {
        let reader = apache_avro::Reader::builder(BufReader::new(reader))
            .reader_schema(schema)
            .build()
            .map_err(|e| BackfillError::AvroFile {
                path: path.into(),
                reason: e.to_string(),
            })?;
        let records = reader
            .enumerate()
            .map(|(i, r)| Ok((i as u64 + 1, r.map_err(|e| e.to_string()))));
        return Ok((total, "record", Box::new(records)));
    }
    let mut lines = BufReader::new(reader).lines().enumerate();
    let records = std::iter::from_fn(move || loop {
        let (i, line) = lines.next()?;
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                return Some(Ok((
                    i as u64 + 1,
                    Err(format!("cannot read the line: {e}")),
                )))
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        return Some(Ok((i as u64 + 1, json_to_record(&line, schema))));
    });
    Ok((total, "line", Box::new(records)))
}

/// A source file in the data lake: anything on S3, and Parquet files (by their name,
/// also a pattern of names such as `events/*.parquet`) on local disk.
fn lake_location(path: &Path) -> Option<freshet_lake::Location> {
    let location = freshet_lake::Location::parse(path.to_str()?).ok()?;
    (location.is_s3() || location.is_parquet()).then_some(location)
}

/// The rows of every Parquet file at `location`, file after file in name order, each
/// file's rows in their order; the files' total size. `count` follows the bytes of the
/// files read so far.
fn lake_records<'a>(
    location: freshet_lake::Location,
    schema: &'a Schema,
    count: Arc<AtomicU64>,
) -> Result<(u64, Records<'a>), BackfillError> {
    let lake_error = |e: freshet_lake::LakeError| BackfillError::Lake(e.to_string());
    if !location.is_parquet() {
        return Err(BackfillError::Lake(format!(
            "{location}: only Parquet files (*.parquet) are read from S3"
        )));
    }
    let lake = freshet_lake::Lake::new().map_err(lake_error)?;
    let files = lake.list(&location).map_err(lake_error)?;
    let total: u64 = files.iter().map(|f| f.size).sum();
    tracing::info!(%location, files = files.len(), bytes = total, "reading Parquet files");
    let mut files = files.into_iter();
    let mut rows: Option<(String, freshet_lake::parquet_records::ParquetRows)> = None;
    let mut number = 0u64;
    let mut failed = false;
    let records = std::iter::from_fn(move || loop {
        if failed {
            return None;
        }
        if let Some((name, current)) = rows.as_mut() {
            match current.next() {
                Some(Ok(line)) => {
                    number += 1;
                    return Some(Ok((number, json_to_record(&line, schema))));
                }
                Some(Err(reason)) => {
                    failed = true;
                    return Some(Err(BackfillError::Lake(format!(
                        "{name} cannot be read after row {number}: {reason}"
                    ))));
                }
                None => rows = None,
            }
        }
        let file = files.next()?;
        let name = file.location.to_string();
        let opened = lake
            .read(&file.location)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                freshet_lake::parquet_records::ParquetRows::open(bytes, schema, &name)
                    .map_err(|e| e.to_string())
            });
        count.fetch_add(file.size, Ordering::Relaxed);
        match opened {
            Ok(opened) => {
                tracing::info!(
                    file = %name,
                    row_groups = opened.shape.row_groups,
                    rows = opened.shape.rows,
                    "reading"
                );
                rows = Some((name, opened));
            }
            Err(reason) => {
                // A file that cannot be read (missing column, wrong type, not Parquet)
                // fails the whole backfill: its events would silently be missing.
                failed = true;
                return Some(Err(BackfillError::Lake(reason)));
            }
        }
    });
    Ok((total, Box::new(records)))
}

/// The rows of one snapshot of an Iceberg table, file after file in the order of their
/// smallest event time (`time_field`), then commit order; the rows the snapshot holds.
/// `count` follows the rows read.
fn table_records<'a>(
    table: &freshet_lake::TableSource,
    schema: &'a Schema,
    time_field: &str,
    count: Arc<AtomicU64>,
) -> Result<(u64, Records<'a>), BackfillError> {
    let lake = freshet_lake::Lake::new().map_err(|e| BackfillError::Lake(e.to_string()))?;
    let mut rows = lake
        .open_table(table, schema, time_field)
        .map_err(|e| BackfillError::Lake(e.to_string()))?;
    let total = rows.shape.rows;
    let mut number = 0u64;
    let records = std::iter::from_fn(move || {
        // The lake's runtime reads the files: it lives as long as the rows.
        let _reading = &lake;
        match rows.next()? {
            Ok(line) => {
                number += 1;
                count.store(number, Ordering::Relaxed);
                Some(Ok((number, json_to_record(&line, schema))))
            }
            Err(reason) => Some(Err(BackfillError::Lake(format!(
                "{reason} (after row {number})"
            )))),
        }
    });
    Ok((total, Box::new(records)))
}
