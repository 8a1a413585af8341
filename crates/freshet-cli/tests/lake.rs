//! History in the data lake, against an S3 API server (moto) with objects put and fetched
//! by boto3: events as Parquet files on S3 backfill into Redis exactly as the same events
//! from a local JSON Lines file; a training set reads its spine from S3, recomputes from
//! the Parquet events and writes its output to S3, equal byte for byte to the same set
//! built from local files; a Parquet file without a column the source needs stops the
//! backfill naming the file and the column. Iceberg tables written by pyiceberg (SQL
//! catalog on SQLite, warehouse on the S3 server) backfill and build training sets as
//! the same events from a file do, snapshot by snapshot.

mod common;
use common::text;
use freshet_testkit::lake_events::{events, write_jsonl, write_parquet};
use freshet_testkit::s3::{lake_python_or_skip, S3Server};
use freshet_testkit::TestRedis;
use std::collections::BTreeMap;
use std::process::Command;

fn freshet_with(s3: &S3Server, args: &[&str]) -> std::process::Output {
    freshet_in(&s3.env(), args)
}

/// The CLI with exactly these AWS variables (none of the caller's).
fn freshet_in(aws: &[(&str, String)], args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_freshet"));
    command.args(args).current_dir(common::repo());
    for (key, _) in std::env::vars() {
        if key.starts_with("AWS_") {
            command.env_remove(key);
        }
    }
    command
        .envs(aws.iter().map(|(k, v)| (k, v)))
        .env_remove("FRESHET_FEATURES_DIR")
        .output()
        .unwrap()
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

#[test]
fn iceberg_tables_backfill_as_files_do_snapshot_by_snapshot() {
    let Some(python) = lake_python_or_skip() else {
        return;
    };
    let s3 = S3Server::start(&python);
    s3.create_bucket("lake");
    let redis = TestRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let events = events(4_000);
    let all = dir.path().join("events.jsonl");
    write_jsonl(&all, &events);
    let later = dir.path().join("later.jsonl");
    write_jsonl(&later, &events[2_500..]);
    // Two appends: the later events first, then the earlier ones.
    let catalog = dir.path().join("catalog.db");
    let snapshots = s3.write_iceberg_tables(&catalog, &all, 2_500);
    assert_eq!(snapshots.len(), 2);
    let catalog_uri = format!("sqlite:{}", catalog.display());

    // A backfill of both views from `source` into Redis database `db`, with the AWS
    // variables `aws`: what it said and what Redis then holds.
    let backfill_in = |aws: &[(&str, String)], source: &[&str], db: u8| {
        let url = format!("{}/{db}", redis.url());
        let mut args = vec![
            "backfill",
            "--state-dir",
            "/nonexistent",
            "--partitions",
            "3",
            "--view",
            "user_click_stats",
            "--view",
            "user_purchase_stats",
            "--redis-url",
            &url,
        ];
        args.extend(source);
        (freshet_in(aws, &args), hashes(&url))
    };
    let backfill = |source: &[&str], db: u8| backfill_in(&s3.env(), source, db);
    let succeeded = |(out, hashes): (std::process::Output, _)| {
        assert!(
            out.status.success(),
            "{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        (text(&out.stdout), hashes)
    };
    let table = ["--source-table", "lake.events", "--catalog", &catalog_uri];

    // The current snapshot: every event, the earlier file read first (by its smallest
    // event time, not its commit order), equal to the events from a file.
    let (said, from_table) = succeeded(backfill(&table, 1));
    let (_, from_file) = succeeded(backfill(&["--source-file", all.to_str().unwrap()], 2));
    assert!(said.contains("read 4000"), "{said}");
    assert!(said.contains("Iceberg table lake.events"), "{said}");
    assert!(from_table.len() >= 50, "{} entities", from_table.len());
    assert_eq!(from_table, from_file);

    // The first snapshot: only the events of the first append.
    let first = snapshots[0].to_string();
    let mut at_first = table.to_vec();
    at_first.extend(["--snapshot", &first]);
    let (said, from_first) = succeeded(backfill(&at_first, 3));
    let (_, from_later) = succeeded(backfill(&["--source-file", later.to_str().unwrap()], 4));
    assert!(said.contains("read 1500"), "{said}");
    assert_eq!(from_first, from_later);
    assert_ne!(from_first, from_table);

    // A training set recomputed from the table equals the one from the file.
    let mut spine = String::from("user_id,event_timestamp,label\n");
    for i in 0..200 {
        let t = 1_764_000_000_000i64 + (i as i64 * 3_989) % 800_000;
        spine.push_str(&format!("{},{t},{}\n", i % 60 + 1, i % 2));
    }
    let spine_file = dir.path().join("spine.csv");
    std::fs::write(&spine_file, spine).unwrap();
    let training = |source: &[&str], out: &std::path::Path| {
        let mut args = vec![
            "training-set",
            "--spine",
            spine_file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--from",
            "events",
            "--partitions",
            "3",
        ];
        args.extend(source);
        let run = freshet_with(&s3, &args);
        assert!(run.status.success(), "{}", text(&run.stderr));
        std::fs::read_to_string(out).unwrap()
    };
    let set_from_table = training(&table, &dir.path().join("table.csv"));
    let set_from_file = training(
        &["--source-file", all.to_str().unwrap()],
        &dir.path().join("file.csv"),
    );
    assert_eq!(set_from_table.lines().count(), 201);
    assert_eq!(set_from_table, set_from_file);

    // Clear errors: a snapshot the table does not have, a table the catalog does not
    // have, a table without the event time, a catalog that is not there.
    let failed = |args: &[&str]| {
        let (out, written) = backfill(args, 5);
        assert!(!out.status.success(), "{}", text(&out.stdout));
        assert!(written.is_empty(), "nothing written");
        text(&out.stderr)
    };
    let mut unknown = table.to_vec();
    unknown.extend(["--snapshot", "42"]);
    let said = failed(&unknown);
    assert!(
        said.contains(&format!(
            "table `lake.events` has no snapshot 42 (it has: {}, {})",
            snapshots[0], snapshots[1]
        )),
        "{said}"
    );
    let said = failed(&["--source-table", "lake.nothing", "--catalog", &catalog_uri]);
    assert!(said.contains("has no table `lake.nothing`"), "{said}");
    let said = failed(&["--source-table", "lake.no_time", "--catalog", &catalog_uri]);
    assert!(
        said.contains("table `lake.no_time` has no column `timestamp`"),
        "{said}"
    );
    let said = failed(&[
        "--source-table",
        "lake.events",
        "--catalog",
        "sqlite:/nowhere/catalog.db",
    ]);
    assert!(said.contains("/nowhere/catalog.db is not a file"), "{said}");
    let said = failed(&["--source-table", "lake.events"]);
    assert!(said.contains("--source-table needs --catalog"), "{said}");

    // Keys from a named profile of a shared credentials file, for the table and for
    // Parquet files, on a server that checks every request's signature (the bucket copied
    // there: pyarrow's signatures, which pyiceberg writes with, are not ones moto checks
    // right); a profile with a wrong secret is refused, and the secret is never printed.
    let parquet = dir.path().join("part-000.parquet");
    write_parquet(&parquet, &events, true);
    s3.put("lake", "events/part-000.parquet", &parquet);
    let guarded = S3Server::start_with_auth(&python);
    guarded.create_bucket("lake");
    s3.copy_bucket("lake", &guarded);
    let credentials = dir.path().join("credentials");
    std::fs::write(
        &credentials,
        format!(
            "[default]\naws_access_key_id = AKIAWRONGWRONGWRONG0\naws_secret_access_key = wrong-default-secret\n\n\
             [lake]\naws_access_key_id = {}\naws_secret_access_key = {}\n\n\
             [stale]\naws_access_key_id = {}\naws_secret_access_key = stale-secret-0123456789\n",
            guarded.access_key_id, guarded.secret_access_key, guarded.access_key_id
        ),
    )
    .unwrap();
    let with_profile = |profile: &str| {
        vec![
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                credentials.display().to_string(),
            ),
            (
                "AWS_CONFIG_FILE",
                dir.path().join("no-config").display().to_string(),
            ),
            ("AWS_PROFILE", profile.to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ENDPOINT_URL", guarded.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
    };
    let by_profile =
        |profile: &str, source: &[&str], db: u8| backfill_in(&with_profile(profile), source, db);
    let parquet_source = ["--source-file", "s3://lake/events/part-000.parquet"];
    let (out, from_profile) = by_profile("lake", &table, 6);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(from_profile, from_file);
    let (out, from_profile) = by_profile("lake", &parquet_source, 7);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(from_profile, from_file);
    for source in [&table[..], &parquet_source[..]] {
        let (out, written) = by_profile("stale", source, 8);
        assert!(!out.status.success(), "a wrong secret is refused");
        assert!(written.is_empty());
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        // Refused by the server: HEAD answers carry no body, so only the status says it.
        assert!(
            said.contains("SignatureDoesNotMatch") || said.contains("403"),
            "{said}"
        );
        assert!(!said.contains("stale-secret"), "{said}");
        assert!(!said.contains(&guarded.secret_access_key), "{said}");
    }
}
