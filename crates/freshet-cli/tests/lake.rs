//! History in the data lake, against an S3 API server (moto) with objects put and fetched
//! by boto3: events as Parquet files on S3 backfill into Redis exactly as the same events
//! from a local JSON Lines file; a training set reads its spine from S3, recomputes from
//! the Parquet events and writes its output to S3, equal byte for byte to the same set
//! built from local files; a Parquet file without a column the source needs stops the
//! backfill naming the file and the column.

mod common;
use common::text;
use freshet_testkit::lake_events::{events, write_jsonl, write_parquet};
use freshet_testkit::s3::{lake_python_or_skip, S3Server};
use freshet_testkit::TestRedis;
use std::collections::BTreeMap;
use std::process::Command;

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
