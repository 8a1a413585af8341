//! Seeded user events for data-lake tests and benchmarks, written as JSON Lines and as
//! Parquet: the same events in both, so what Freshet reads from either can be compared.

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// A user event as the source's schema has it (without `session_id`).
pub struct Event {
    pub user_id: i64,
    pub action_type: &'static str,
    pub item_id: i64,
    pub amount: Option<f64>,
    pub timestamp: i64,
}

/// `count` seeded events of 60 users over about ten minutes: mostly in order, 10% up to 3 s out
/// of order, 2% 10-60 s late.
pub fn events(count: usize) -> Vec<Event> {
    let mut state: u64 = 0x5eed_1a4e;
    let mut next = move |n: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % n
    };
    let start = 1_764_000_000_000i64;
    (0..count)
        .map(|i| {
            let mut timestamp = start + i as i64 * 200;
            match next(100) {
                0..=9 => timestamp -= next(3_000) as i64,
                10..=11 => timestamp -= 10_000 + next(50_000) as i64,
                _ => {}
            }
            let action_type =
                ["click", "click", "view", "view", "view", "purchase"][next(6) as usize];
            Event {
                user_id: next(60) as i64 + 1,
                action_type,
                item_id: next(40) as i64,
                amount: (action_type == "purchase").then(|| (next(10_000) as f64) / 100.0),
                timestamp,
            }
        })
        .collect()
}

pub fn write_jsonl(path: &Path, events: &[Event]) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for e in events {
        let amount = e.amount.map_or("null".to_string(), |a| a.to_string());
        writeln!(
            file,
            r#"{{"user_id": {}, "action_type": "{}", "item_id": {}, "amount": {amount}, "timestamp": {}}}"#,
            e.user_id, e.action_type, e.item_id, e.timestamp
        )
        .unwrap();
    }
}

/// `events` as a Parquet file (row groups of 500), the time (unless `with_time` is false) as a timestamp column (milliseconds, UTC), as
/// lake tables usually hold it, and an extra column the source does not know.
pub fn write_parquet(path: &Path, events: &[Event], with_time: bool) {
    let mut columns: Vec<(&str, ArrayRef)> = vec![
        (
            "user_id",
            Arc::new(Int64Array::from_iter_values(
                events.iter().map(|e| e.user_id),
            )),
        ),
        (
            "action_type",
            Arc::new(StringArray::from_iter_values(
                events.iter().map(|e| e.action_type),
            )),
        ),
        (
            "item_id",
            Arc::new(Int64Array::from_iter_values(
                events.iter().map(|e| e.item_id),
            )),
        ),
        (
            "amount",
            Arc::new(Float64Array::from_iter(events.iter().map(|e| e.amount))),
        ),
        (
            "ingested_by",
            Arc::new(StringArray::from_iter_values(events.iter().map(|_| "etl"))),
        ),
    ];
    if with_time {
        columns.push((
            "timestamp",
            Arc::new(
                arrow_array::TimestampMillisecondArray::from_iter_values(
                    events.iter().map(|e| e.timestamp),
                )
                .with_timezone("UTC"),
            ),
        ));
    }
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    // Several row groups per file.
    for start in (0..batch.num_rows()).step_by(500) {
        let len = 500.min(batch.num_rows() - start);
        writer.write(&batch.slice(start, len)).unwrap();
        writer.flush().unwrap();
    }
    writer.close().unwrap();
}
