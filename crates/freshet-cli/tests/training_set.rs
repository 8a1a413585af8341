//! `freshet training-set` as a user runs it, from files: the values each spine row gets
//! and why, no leakage from an event after a row's time, Parquet and CSV that pandas
//! opens with the right types, and every mistake ending in one clear line. (The same
//! against a live pipeline's published updates is in the processor's tests.)

mod common;
use common::{freshet, text};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

fn event(user: i64, action: &str, item: i64, t: i64) -> String {
    let amount = if action == "purchase" { "9.5" } else { "null" };
    format!(
        r#"{{"user_id": {user}, "action_type": "{action}", "item_id": {item}, "amount": {amount}, "timestamp": {t}}}"#
    )
}

/// User 7 clicks twice and views an item in the first minute; user 8's view at 70 s moves
/// the clock (one partition) so the watermark (70 s - 5 s) closes the first minute.
fn base_events() -> Vec<String> {
    vec![
        event(7, "click", 1, 1_000),
        event(7, "click", 2, 2_000),
        event(7, "view", 5, 10_000),
        event(8, "view", 6, 70_000),
    ]
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut file = std::fs::File::create(path).unwrap();
    for line in lines {
        writeln!(file, "{line}").unwrap();
    }
}

/// The spine: a label column, user ids and times (epoch ms and RFC 3339 mixed).
fn spine(dir: &Path) -> PathBuf {
    let path = dir.join("spine.csv");
    std::fs::write(
        &path,
        "label,user_id,event_timestamp\n\
         a,7,5000\n\
         b,7,1970-01-01T00:01:09.999Z\n\
         c,7,70000\n\
         d,8,500\n\
         e,9,100000\n\
         f,7,3700001\n",
    )
    .unwrap();
    path
}

/// Runs a training set of the click view from `events` over `spine`, writing `out`.
fn training_set(dir: &Path, events: &[String], spine: &Path, out: &Path) -> std::process::Output {
    let events_path = dir.join("events.jsonl");
    write_lines(&events_path, events);
    freshet(&[
        "training-set",
        "--spine",
        spine.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--views",
        "user_click_stats",
        "--from",
        "events",
        "--source-file",
        events_path.to_str().unwrap(),
        "--partitions",
        "1",
    ])
}

fn csv_rows(dir: &Path, events: &[String]) -> Vec<String> {
    let out = dir.join("set.csv");
    let run = training_set(dir, events, &spine(dir), &out);
    assert!(
        run.status.success(),
        "{}\n{}",
        text(&run.stdout),
        text(&run.stderr)
    );
    std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn each_row_gets_the_values_served_at_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let rows = csv_rows(dir.path(), &base_events());
    assert_eq!(
        rows,
        [
            "label,user_id,event_timestamp,user_click_stats__click_count_1m,user_click_stats__view_count_1m,user_click_stats__click_count_10m,user_click_stats__distinct_items_viewed_10m,user_click_stats__status,user_click_stats__event_time",
            // At 5 s the clock is 2 s: two clicks in the sliding window, the minute open.
            "a,7,5000,0,0,2,0,found,1970-01-01T00:00:02Z",
            // Just before 70 s: the view at 10 s, still no closed minute.
            "b,7,1970-01-01T00:01:09.999Z,0,0,2,1,found,1970-01-01T00:00:10Z",
            // At 70 s the first minute has closed: 2 clicks and 1 view in it.
            "c,7,70000,2,1,2,1,found,1970-01-01T00:01:10Z",
            // Before user 8's first event, and an entity with no events: defaults.
            "d,8,500,0,0,0,0,missing,",
            "e,9,100000,0,0,0,0,missing,",
            // More than the view's TTL (1 h) after its last update: defaults, expired.
            "f,7,3700001,0,0,0,0,expired,",
        ]
    );
}

#[test]
fn an_event_after_a_rows_time_changes_nothing_in_it_and_one_before_changes_what_it_should() {
    let dir = tempfile::tempdir().unwrap();
    let base = csv_rows(dir.path(), &base_events());
    let row_a = |rows: &[String]| rows[1].clone();

    // A click just after row a's time (5 s): row a is unchanged.
    let mut after = base_events();
    after.insert(2, event(7, "click", 3, 5_001));
    assert_eq!(row_a(&csv_rows(dir.path(), &after)), row_a(&base));

    // The same click just before it: only the sliding click count (and the update's
    // time) change; the minute is still open, so its counts stay.
    let mut before = base_events();
    before.insert(2, event(7, "click", 3, 4_999));
    assert_eq!(
        row_a(&csv_rows(dir.path(), &before)),
        "a,7,5000,0,0,3,0,found,1970-01-01T00:00:04.999Z"
    );

    // At exactly the row's time it counts too: "at or before".
    let mut at = base_events();
    at.insert(2, event(7, "click", 3, 5_000));
    assert_eq!(
        row_a(&csv_rows(dir.path(), &at)),
        "a,7,5000,0,0,3,0,found,1970-01-01T00:00:05Z"
    );
}

/// A Python with pandas and pyarrow: the Flink venv's (apache-flink needs both).
fn pandas_python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FRESHET_FLINK_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let tools = freshet_testkit::tools_dir();
    let python = tools.join("flink-venv/bin/python");
    python.exists().then_some(python)
}

#[test]
fn parquet_and_csv_open_in_pandas_with_the_expected_types() {
    let Some(python) = pandas_python() else {
        let reason = "no Python with pandas found (run scripts/bootstrap.sh --with-flink)";
        if std::env::var("FRESHET_REQUIRE_FLINK").as_deref() == Ok("1") {
            panic!("{reason}");
        }
        eprintln!("SKIPPED pandas check: {reason}");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut events = base_events();
    events.push(event(7, "purchase", 9, 20_000));
    let events_path = dir.path().join("events.jsonl");
    write_lines(&events_path, &events);
    let spine = spine(dir.path());
    for out in ["set.parquet", "set.csv"] {
        let out = dir.path().join(out);
        let run = freshet(&[
            "training-set",
            "--spine",
            spine.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--from",
            "events",
            "--source-file",
            events_path.to_str().unwrap(),
            "--partitions",
            "1",
        ]);
        let stdout = text(&run.stdout);
        assert!(run.status.success(), "{stdout}\n{}", text(&run.stderr));
        assert!(
            stdout.contains("user_click_stats: 3 found, 2 missing, 1 expired"),
            "{stdout}"
        );
        assert!(stdout.contains("wrote 6 rows to"), "{stdout}");
        let check = r#"
import sys, pandas as pd
path = sys.argv[1]
if path.endswith(".parquet"):
    df = pd.read_parquet(path)
else:
    df = pd.read_csv(path, parse_dates=["user_click_stats__event_time", "user_purchase_stats__event_time"])
print(len(df))
for column in ["label", "user_click_stats__click_count_10m", "user_purchase_stats__purchase_amount_sum_1h",
               "user_purchase_stats__avg_purchase_amount_1h", "user_click_stats__status",
               "user_click_stats__event_time"]:
    print(column, df[column].dtype)
print(df["user_purchase_stats__status"].tolist())
print(df["user_click_stats__click_count_10m"].tolist())
"#;
        let output = Command::new(&python)
            .arg("-c")
            .arg(check)
            .arg(&out)
            .output()
            .unwrap();
        let printed = text(&output.stdout);
        assert!(
            output.status.success(),
            "{printed}\n{}",
            text(&output.stderr)
        );
        let lines: Vec<&str> = printed.lines().collect();
        assert_eq!(lines[0], "6", "{printed}");
        assert_eq!(lines[1], "label object");
        assert_eq!(lines[2], "user_click_stats__click_count_10m int64");
        assert_eq!(
            lines[3],
            "user_purchase_stats__purchase_amount_sum_1h float64"
        );
        assert_eq!(
            lines[4],
            "user_purchase_stats__avg_purchase_amount_1h float64"
        );
        assert_eq!(lines[5], "user_click_stats__status object");
        assert!(
            lines[6].starts_with("user_click_stats__event_time datetime64")
                && lines[6].contains("UTC"),
            "{printed}"
        );
        assert_eq!(
            lines[7],
            "['found', 'found', 'found', 'missing', 'missing', 'found']"
        );
        assert_eq!(lines[8], "[2, 2, 2, 0, 0, 0]");
    }
}

#[test]
fn training_set_mistakes_end_in_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    write_lines(&events, &base_events());
    let events = events.to_str().unwrap();
    let good = spine(dir.path());
    let good = good.to_str().unwrap();
    let write = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        path.to_str().unwrap().to_string()
    };
    let no_time = write("no_time.csv", "user_id,ts\n7,5000\n");
    let bad_time = write("bad_time.csv", "user_id,event_timestamp\n7,5000\n7,soon\n");
    let naive_time = write(
        "naive.csv",
        "user_id,event_timestamp\n7,2026-11-26T08:00:00\n",
    );
    let no_entity = write("no_entity.csv", "user_id,event_timestamp\n7,5000\n,6000\n");
    let json_spine = write("spine.json", "{}");
    let out = dir.path().join("out.parquet");
    let out = out.to_str().unwrap();
    let from_file = [
        "--from",
        "events",
        "--source-file",
        events,
        "--partitions",
        "1",
    ];
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["--spine", &no_time, "--out", out],
            format!("error: the spine {no_time} has no column `event_timestamp` (columns: user_id, ts); name it with --time-column"),
        ),
        (
            vec!["--spine", &bad_time, "--out", out],
            format!("error: the spine {bad_time}, line 3, column `event_timestamp`: `soon` is not a time"),
        ),
        (
            vec!["--spine", &naive_time, "--out", out],
            format!("error: the spine {naive_time}, line 2, column `event_timestamp`: `2026-11-26T08:00:00` has no UTC offset"),
        ),
        (
            vec!["--spine", &no_entity, "--out", out],
            format!("error: the spine {no_entity}, line 3, column `user_id`: no entity id"),
        ),
        (
            vec!["--spine", &json_spine, "--out", out],
            format!("error: the spine {json_spine} is neither CSV (.csv) nor Parquet (.parquet)"),
        ),
        (
            vec!["--spine", good, "--out", "set.json"],
            "error: --out set.json: name a .parquet or .csv file".to_string(),
        ),
        (
            vec!["--spine", good, "--out", out, "--views", "nope"],
            "error: no feature view named `nope` (views: user_click_stats, user_purchase_stats)".to_string(),
        ),
        (
            vec!["--spine", good, "--out", out, "--features", "user_click_stats:nope"],
            "error: feature view `user_click_stats` has no feature `nope`".to_string(),
        ),
        (
            vec!["--spine", "/no/such/spine.csv", "--out", out],
            "error: cannot read or write /no/such/spine.csv".to_string(),
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["training-set"];
        all.extend(args.iter().copied());
        all.extend(from_file.iter().copied());
        let run = freshet(&all);
        let stderr = text(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.lines().any(|l| l.starts_with(&expected)),
            "{args:?}: expected a line starting with {expected:?}, got:\n{stderr}"
        );
        assert!(!Path::new(out).exists(), "{args:?} wrote nothing");
    }
}
