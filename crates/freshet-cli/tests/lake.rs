//! History in the data lake, against an S3 API server (moto) with objects put and fetched
//! by boto3: events as Parquet files on S3 backfill into Redis exactly as the same events
//! from a local JSON Lines file; a training set reads its spine from S3, recomputes from
//! the Parquet events and writes its output to S3, equal byte for byte to the same set
//! built from local files; a Parquet file without a column the source needs stops the
//! backfill naming the file and the column.

mod common;
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use common::text;
use freshet_testkit::s3::{lake_python_or_skip, S3Server};
use freshet_testkit::TestRedis;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

struct Event {
    user_id: i64,
    action_type: &'static str,
    item_id: i64,
    amount: Option<f64>,
    timestamp: i64,
}

/// Seeded events of 60 users over about ten minutes: mostly in order, 10% up to 3 s out
/// of order, 2% 10-60 s late.
fn events(count: usize) -> Vec<Event> {
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

fn write_jsonl(path: &Path, events: &[Event]) {
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

/// `events` as a Parquet file, the time as a timestamp column (milliseconds, UTC), as
/// lake tables usually hold it, and an extra column the source does not know.
fn write_parquet(path: &Path, events: &[Event], with_time: bool) {
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

fn freshet_with(s3: &S3Server, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_freshet"));
    command.args(args).current_dir(common::repo());
    for (key, value) in s3.env() {
        command.env(key, value);
    }
    command.env_remove("FRESHET_FEATURES_DIR").output().unwrap()
}

fn hashes(url: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    keys.into_iter()
        .map(|key| {
            let hash: BTreeMap<String, String> =
                redis::cmd("HGETALL").arg(&key).query(&mut conn).unwrap();
            (key, hash)
        })
        .collect()
}

#[test]
fn parquet_on_s3_backfills_and_builds_training_sets_as_local_files_do() {
    let Some(python) = lake_python_or_skip() else {
        return;
    };
    let s3 = S3Server::start(&python);
    s3.create_bucket("lake");
    let redis = TestRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let events = events(4_000);
    let jsonl = dir.path().join("events.jsonl");
    write_jsonl(&jsonl, &events);
    // Two files, in name order the events' order.
    for (i, part) in events.chunks(2_500).enumerate() {
        let file = dir.path().join(format!("part-{i:03}.parquet"));
        write_parquet(&file, part, true);
        s3.put("lake", &format!("events/2026/part-{i:03}.parquet"), &file);
    }
    let lake_events = "s3://lake/events/2026/part-*.parquet";
    let views = [
        "--view",
        "user_click_stats",
        "--view",
        "user_purchase_stats",
    ];

    let backfill = |source: &str, db: u8| {
        let url = format!("{}/{db}", redis.url());
        let mut args = vec![
            "backfill",
            "--state-dir",
            "/nonexistent",
            "--partitions",
            "3",
        ];
        args.extend(views);
        args.extend(["--source-file", source, "--redis-url", &url]);
        let out = freshet_with(&s3, &args);
        assert!(
            out.status.success(),
            "{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        (text(&out.stdout), hashes(&url))
    };
    let (said, from_lake) = backfill(lake_events, 1);
    let (_, from_file) = backfill(jsonl.to_str().unwrap(), 2);
    assert!(said.contains("read 4000"), "{said}");
    assert!(from_lake.len() >= 50, "{} entities", from_lake.len());
    assert_eq!(from_lake, from_file);

    // A training set: spine from S3, events from Parquet on S3, output to S3.
    let mut spine = String::from("user_id,event_timestamp,label\n");
    for i in 0..300 {
        let user = i % 60 + 1;
        let t = 1_764_000_000_000i64 + (i as i64 * 2_711) % 800_000;
        spine.push_str(&format!("{user},{t},{}\n", i % 2));
    }
    let local_spine = dir.path().join("spine.csv");
    std::fs::write(&local_spine, &spine).unwrap();
    s3.put("lake", "spines/spine.csv", &local_spine);
    let local_out = dir.path().join("train.csv");
    let training = |spine: &str, source: &str, out: &str| {
        let out = freshet_with(
            &s3,
            &[
                "training-set",
                "--spine",
                spine,
                "--out",
                out,
                "--from",
                "events",
                "--source-file",
                source,
                "--partitions",
                "3",
            ],
        );
        assert!(
            out.status.success(),
            "{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    };
    training(
        "s3://lake/spines/spine.csv",
        lake_events,
        "s3://lake/sets/train.csv",
    );
    training(
        local_spine.to_str().unwrap(),
        jsonl.to_str().unwrap(),
        local_out.to_str().unwrap(),
    );
    let from_s3 = s3.get("lake", "sets/train.csv");
    let local = std::fs::read(&local_out).unwrap();
    assert_eq!(
        String::from_utf8(from_s3).unwrap(),
        String::from_utf8(local.clone()).unwrap()
    );
    assert_eq!(String::from_utf8(local).unwrap().lines().count(), 301);

    // A file without the event time: the backfill stops, naming the file and the column.
    let bad = dir.path().join("bad.parquet");
    write_parquet(&bad, &events[..10], false);
    s3.put("lake", "bad/part-000.parquet", &bad);
    let url = format!("{}/3", redis.url());
    let out = freshet_with(
        &s3,
        &[
            "backfill",
            "--state-dir",
            "/nonexistent",
            "--partitions",
            "3",
            "--view",
            "user_click_stats",
            "--source-file",
            "s3://lake/bad/*.parquet",
            "--redis-url",
            &url,
        ],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("s3://lake/bad/part-000.parquet has no column `timestamp`"),
        "{stderr}"
    );
    assert!(hashes(&url).is_empty(), "nothing written");
    // And nothing matching: said so.
    let out = freshet_with(
        &s3,
        &[
            "backfill",
            "--state-dir",
            "/nonexistent",
            "--partitions",
            "3",
            "--view",
            "user_click_stats",
            "--source-file",
            "s3://lake/nothing/*.parquet",
            "--dry-run",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("s3://lake/nothing/*.parquet matches no file"),
        "{}",
        text(&out.stderr)
    );
}
