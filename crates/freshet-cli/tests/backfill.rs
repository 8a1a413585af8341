//! `freshet backfill` as a user runs it: from a file of events, dry run and for real into a
//! real Redis, and every mistake ending in one clear line. (Backfill from Kafka, and
//! beside the live processor, is tested in the processor's tests.)

mod common;
use common::{freshet, text};
use freshet_testkit::TestRedis;
use std::io::Write;

/// User 7's events: three clicks and a view in the first minute, then a view at 70 s that
/// moves the watermark (70 s - 5 s delay) past the end of the first minute.
fn events_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("events.jsonl");
    let mut file = std::fs::File::create(&path).unwrap();
    let event = |action: &str, item: i64, t: i64| {
        format!(
            r#"{{"user_id": 7, "action_type": "{action}", "item_id": {item}, "amount": null, "timestamp": {t}}}"#
        )
    };
    for line in [
        event("click", 1, 1_000),
        event("click", 2, 2_000),
        "{\"user_id\": \"seven\", \"timestamp\": 2500}".to_string(),
        event("click", 2, 3_000),
        event("view", 5, 10_000),
        String::new(),
        event("view", 6, 70_000),
    ] {
        writeln!(file, "{line}").unwrap();
    }
    path
}

fn backfill(extra: &[&str]) -> std::process::Output {
    let mut args = vec!["backfill", "--state-dir", "/nonexistent"];
    args.extend_from_slice(extra);
    freshet(&args)
}

#[test]
fn a_dry_run_from_a_file_reports_the_values_it_would_write() {
    let dir = tempfile::tempdir().unwrap();
    let file = events_file(dir.path());
    let out = backfill(&[
        "--view",
        "user_click_stats",
        "--source-file",
        file.to_str().unwrap(),
        "--partitions",
        "3",
        "--dry-run",
    ]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for line in [
        "read 6: 5 aggregated, 0 outside the range, 0 late, 1 unreadable",
        "user_click_stats: 1 entities; values other than the default: click_count_1m 1, view_count_1m 1, click_count_10m 1, distinct_items_viewed_10m 1",
        "  user_click_stats 7 (version 0, as of 1970-01-01T00:01:10.000Z): click_count_1m=3 view_count_1m=1 click_count_10m=3 distinct_items_viewed_10m=2",
        "dry run: nothing written",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?} in:\n{stdout}"
        );
    }
    assert!(
        stderr.contains("line 3 skipped"),
        "the unreadable line is named: {stderr}"
    );
}

#[test]
fn a_backfill_from_a_file_writes_versioned_values_to_redis() {
    let redis = TestRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let file = events_file(dir.path());
    let args = [
        "--view",
        "user_click_stats",
        "--source-file",
        file.to_str().unwrap(),
        "--partitions",
        "3",
        "--redis-url",
        &redis.url(),
    ];
    let out = backfill(&args);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("wrote 1 values to"),
        "one entity written: {stdout}"
    );
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let stored: Vec<Option<String>> = redis::cmd("HMGET")
        .arg("fv:user_click_stats:7")
        .arg(&["click_count_1m", "distinct_items_viewed_10m", "_version"])
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        stored,
        vec![
            Some("3".to_string()),
            Some("2".to_string()),
            Some("00000000000000000000".to_string())
        ]
    );
    // Again: the same values under the same version are already there.
    let out = backfill(&args);
    assert!(
        text(&out.stdout).contains("wrote 0 values to"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn backfill_mistakes_end_in_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = events_file(dir.path());
    let file = file.to_str().unwrap();
    let cases: Vec<(Vec<&str>, i32, &str)> =
        vec![
        (
            vec!["--view", "user_click_stats"],
            1,
            "error: --from is required when backfilling from Kafka",
        ),
        (
            vec!["--view", "user_click_stats", "--from", "last tuesday"],
            2,
            "`last tuesday` is not a time",
        ),
        (
            vec!["--view", "nope", "--source-file", file, "--partitions", "3"],
            1,
            "error: no feature view named `nope` (views: user_click_stats, user_purchase_stats)",
        ),
        (
            vec![
                "--view",
                "user_click_stats",
                "--source-file",
                "/no/such/file.jsonl",
                "--partitions",
                "3",
            ],
            1,
            "error: cannot read /no/such/file.jsonl",
        ),
        (
            vec![
                "--view",
                "user_click_stats",
                "--from",
                "2026-01-02T00:00:00Z",
                "--to",
                "2026-01-01T00:00:00Z",
                "--source-file",
                file,
                "--partitions",
                "3",
            ],
            1,
            "is not before the end time",
        ),
        (
            vec!["--view", "user_click_stats", "--from", "earliest", "--partitions", "3"],
            1,
            "error: --partitions applies to --source-file only",
        ),
    ];
    for (args, code, message) in cases {
        let out = backfill(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}
