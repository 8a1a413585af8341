//! `freshet backfill` as a user runs it: from a file of events, dry run and for real into a
//! real Redis, and every mistake ending in one clear line. (Backfill from Kafka, and
//! beside the live processor, is tested in the processor's tests.)

mod common;
use common::{freshet, text};
use freshet_testkit::TestRedis;
use std::io::Write;
use std::path::Path;

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

/// The same events as [`events_file`] (without its unreadable line), as an Avro object
/// container file written with the source's schema.
fn avro_file(dir: &std::path::Path) -> std::path::PathBuf {
    #[derive(serde::Serialize)]
    struct UserEvent<'a> {
        user_id: i64,
        action_type: &'a str,
        item_id: i64,
        amount: Option<f64>,
        timestamp: i64,
        session_id: Option<&'a str>,
    }
    let schema_text =
        std::fs::read_to_string(common::repo().join("features/schemas/user_event.v2.avsc"))
            .unwrap();
    let schema = apache_avro::Schema::parse_str(&schema_text).unwrap();
    let path = dir.join("events.avro");
    let mut writer =
        apache_avro::Writer::new(&schema, std::fs::File::create(&path).unwrap()).unwrap();
    for (action, item, t) in [
        ("click", 1, 1_000),
        ("click", 2, 2_000),
        ("click", 2, 3_000),
        ("view", 5, 10_000),
        ("view", 6, 70_000),
    ] {
        writer
            .append_ser(UserEvent {
                user_id: 7,
                action_type: action,
                item_id: item,
                amount: None,
                timestamp: t,
                session_id: Some("s1"),
            })
            .unwrap();
    }
    writer.flush().unwrap();
    path
}

fn backfill(extra: &[&str]) -> std::process::Output {
    let mut args = vec!["backfill", "--state-dir", "/nonexistent"];
    args.extend_from_slice(extra);
    freshet(&args)
}

/// A dry run of `user_click_stats` from `file`, split into 3 partitions.
fn dry_run(file: &Path) -> std::process::Output {
    backfill(&[
        "--view",
        "user_click_stats",
        "--source-file",
        file.to_str().unwrap(),
        "--partitions",
        "3",
        "--dry-run",
    ])
}

#[test]
fn a_dry_run_from_a_file_reports_the_values_it_would_write() {
    let dir = tempfile::tempdir().unwrap();
    let file = events_file(dir.path());
    let out = dry_run(&file);
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
        .arg("fe:user:7")
        .arg(&[
            "user_click_stats:click_count_1m",
            "user_click_stats:distinct_items_viewed_10m",
            "user_click_stats:_version",
        ])
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
            "error: --partitions applies to --source-file and --source-table only",
        ),
    ];
    for (args, code, message) in cases {
        let out = backfill(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[test]
fn an_avro_container_file_gives_the_same_values_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let file = avro_file(dir.path());
    let out = dry_run(&file);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for line in [
        "read 5: 5 aggregated, 0 outside the range, 0 late, 0 unreadable",
        "  user_click_stats 7 (version 0, as of 1970-01-01T00:01:10.000Z): click_count_1m=3 view_count_1m=1 click_count_10m=3 distinct_items_viewed_10m=2",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?} in:\n{stdout}"
        );
    }
}

#[test]
fn an_interrupted_backfill_writes_nothing_and_a_rerun_gives_the_full_result() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let redis = TestRedis::start();
    let dir = tempfile::tempdir().unwrap();
    // Enough events that reading them takes a while.
    let path = dir.path().join("many.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for i in 0..400_000i64 {
        writeln!(
            file,
            r#"{{"user_id": {}, "action_type": "click", "item_id": {}, "timestamp": {}}}"#,
            i % 500,
            i % 97,
            i * 10
        )
        .unwrap();
    }
    file.flush().unwrap();
    drop(file);
    let args = [
        "backfill",
        "--state-dir",
        "/nonexistent",
        "--view",
        "user_click_stats",
        "--source-file",
        path.to_str().unwrap(),
        "--partitions",
        "3",
        "--redis-url",
        &redis.url(),
    ];
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_freshet"))
        .args(args)
        .current_dir(common::repo())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: interrupted before all input was read; nothing was written"),
        "{stderr}"
    );
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("fe:*").query(&mut conn).unwrap();
    assert!(keys.is_empty(), "nothing written: {keys:?}");

    let out = freshet(&args[..]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("wrote 500 values to"),
        "{}",
        text(&out.stdout)
    );
    let keys: Vec<String> = redis::cmd("KEYS").arg("fe:*").query(&mut conn).unwrap();
    assert_eq!(keys.len(), 500);
}

#[test]
fn windows_out_writes_every_window_the_engine_closed_and_nothing_to_redis() {
    let dir = tempfile::tempdir().unwrap();
    let file = events_file(dir.path());
    let out_file = dir.path().join("windows.jsonl");
    let out = backfill(&[
        "--view",
        "user_click_stats",
        "--source-file",
        file.to_str().unwrap(),
        "--partitions",
        "1",
        "--windows-out",
        out_file.to_str().unwrap(),
        // Never reached: nothing is written to Redis.
        "--redis-url",
        "redis://127.0.0.1:1",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("wrote 8 closed windows to {}", out_file.display())),
        "{stdout}"
    );
    let windows: Vec<serde_json::Value> = std::fs::read_to_string(&out_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The event at 70 s moves the watermark to 65 s: the first minute closes, with the
    // three clicks and the view at 10 s.
    let minute = windows
        .iter()
        .find(|w| w["group"] == "tumble_1m")
        .expect("the first minute closed");
    assert_eq!(
        *minute,
        serde_json::json!({
            "view": "user_click_stats", "entity": "7", "group": "tumble_1m",
            "start": 0, "end": 60_000,
            "values": {"click_count_1m": 3, "view_count_1m": 1},
        })
    );
    // The sliding windows the clock left: the one ending at 10 s (the clicks), then
    // those ending at 20 s .. 70 s (the clicks and the view of item 5).
    let sliding: Vec<(i64, i64, i64)> = windows
        .iter()
        .filter(|w| w["group"] == "hop_10m_10s")
        .map(|w| {
            (
                w["end"].as_i64().unwrap(),
                w["values"]["click_count_10m"].as_i64().unwrap(),
                w["values"]["distinct_items_viewed_10m"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sliding,
        vec![
            (10_000, 3, 0),
            (20_000, 3, 1),
            (30_000, 3, 1),
            (40_000, 3, 1),
            (50_000, 3, 1),
            (60_000, 3, 1),
            (70_000, 3, 1),
        ]
    );
}
