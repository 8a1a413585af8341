//! The `freshet` binary as a user runs it: from the repository root, on the shipped
//! definitions, on broken ones, and running the local stack with real servers.
//!
//! The stack runs the service binaries beside `freshet` in the target folder, which
//! `cargo test -p freshet-cli` alone does not rebuild: `cargo build --bins` first.

use freshet_localstack::free_port;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{freshet, http_get, repo, text, DownOnDrop};

#[test]
fn features_list_prints_every_view_and_feature_with_its_description() {
    let out = freshet(&["features", "list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with(
        "user_click_stats  (entity: user, source: user_events from topic user_events, ttl: 1h)\n"
    ));
    for line in [
        "├── click_count_1m: count where action_type == \"click\", tumbling 1m, long, default 0",
        "│       Clicks in the last closed one-minute window.",
        "├── click_count_10m: count where action_type == \"click\", sliding 10m every 10s, long, default 0",
        "user_purchase_stats  (entity: user, source: user_events from topic user_events, ttl: 1d)",
        "├── purchase_amount_sum_1h: sum(amount) where action_type == \"purchase\", tumbling 1h, double, default 0.0",
        "└── events_per_session: count, session gap 30m, long, default 0",
    ] {
        assert!(stdout.lines().any(|l| l == line), "missing line {line:?} in:\n{stdout}");
    }
}

#[test]
fn features_list_json_describes_views_for_machines() {
    let out = freshet(&["features", "list", "--json"]);
    assert!(out.status.success());
    let views: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(views[0]["name"], "user_click_stats");
    assert_eq!(views[0]["ttl_ms"], 3_600_000);
    let sliding = &views[0]["features"][2];
    assert_eq!(sliding["name"], "click_count_10m");
    assert_eq!(
        sliding["window"],
        serde_json::json!({"type": "sliding", "size_ms": 600000, "step_ms": 10000})
    );
    assert_eq!(views[1]["features"][2]["default"], serde_json::Value::Null);
    assert_eq!(views[1]["features"][1]["field"], "amount");
}

#[test]
fn validate_reports_every_problem_of_a_broken_folder_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("schemas")).unwrap();
    std::fs::copy(
        repo().join("features/schemas/user_event.v2.avsc"),
        dir.path().join("schemas/e.avsc"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("broken.toml"),
        r#"[[source]]
name = "events"
schema = "schemas/e.avsc"
event_time_field = "timestamp"
entity_key_field = "user_id"

[view]
name = "v"
entity = "user"
source = "events"
ttl = "1 hour"
description = "d"

[[feature]]
name = "spend"
description = "d"
aggregation = "sum"
field = "action_type"
window = { type = "sliding", size = "1m", step = "5m" }
"#,
    )
    .unwrap();
    let path = dir.path().to_str().unwrap();
    let out = freshet(&["features", "validate", path]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let file = dir.path().join("broken.toml");
    for expected in [
        format!("{}:11:7: view \"v\" > ttl: invalid duration \"1 hour\"", file.display()),
        format!("{}:18:9: feature \"spend\" > field: `sum` needs a numeric field", file.display()),
        format!("{}:19:50: feature \"spend\" > window > step: step 5m is larger than the window size 1m", file.display()),
        format!("error: 3 problem(s) in {path}"),
    ] {
        assert!(stderr.contains(&expected), "missing {expected:?} in:\n{stderr}");
    }

    let ok = freshet(&["features", "validate"]);
    assert!(ok.status.success());
    assert_eq!(
        text(&ok.stdout),
        "features: 1 source(s), 2 view(s), 8 feature(s): all valid\n"
    );
}

#[test]
fn compile_prints_the_golden_sql_and_writes_it_with_output() {
    let golden = std::fs::read_to_string(
        repo().join("crates/freshet-flink-sql/tests/golden/user_click_stats.sql"),
    )
    .unwrap();
    let out = freshet(&[
        "compile",
        "--target",
        "flink-sql",
        "--view",
        "user_click_stats",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), golden);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.sql");
    let out = freshet(&[
        "compile",
        "--target",
        "flink-sql",
        "--view",
        "user_click_stats",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), golden);
}

#[test]
fn compile_all_writes_every_view_and_the_files_profile_names_its_paths() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs");
    let out = freshet(&[
        "compile",
        "--target",
        "flink-sql",
        "--all",
        "--output-dir",
        jobs.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for view in ["user_click_stats", "user_purchase_stats"] {
        let golden = std::fs::read_to_string(
            repo().join(format!("crates/freshet-flink-sql/tests/golden/{view}.sql")),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(jobs.join(format!("{view}.sql"))).unwrap(),
            golden
        );
    }

    let out = freshet(&[
        "compile",
        "--target",
        "flink-sql",
        "--view",
        "user_click_stats",
        "--connectors",
        "files",
        "--events-path",
        "/data/events.jsonl",
        "--output-path",
        "/data/out",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sql = text(&out.stdout);
    assert!(
        sql.contains("  'path' = '/data/events.jsonl',\n  'format' = 'json'"),
        "{sql}"
    );
    assert!(
        sql.contains("  'path' = '/data/out/user_click_stats__tumble_1m',"),
        "{sql}"
    );
    assert!(!sql.contains("PRIMARY KEY"), "file sinks append: {sql}");

    // Without its paths the files profile is a usage error naming them.
    let out = freshet(&[
        "compile",
        "--target",
        "flink-sql",
        "--view",
        "user_click_stats",
        "--connectors",
        "files",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--events-path"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn export_feast_writes_a_repository_pointing_at_the_serving_api() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("feast_repo");
    let out = freshet(&[
        "features",
        "export-feast",
        "-o",
        out_dir.to_str().unwrap(),
        "--serving-url",
        "http://serving.internal:8000",
        "--project",
        "ranking",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = std::fs::read_to_string(out_dir.join("feature_store.yaml")).unwrap();
    assert!(config.contains("project: ranking\n"), "{config}");
    assert!(
        config.contains("  type: remote\n  path: \"http://serving.internal:8000\"\n"),
        "{config}"
    );
    let python = std::fs::read_to_string(out_dir.join("freshet_features.py")).unwrap();
    assert_eq!(python.matches(" = FeatureView(").count(), 2, "{python}");
    assert!(text(&out.stdout).ends_with(&format!(
        "a Feast repository of 2 view(s) and 8 feature(s), read from http://serving.internal:8000; next: cd {} && feast apply\n",
        out_dir.display()
    )));
}

#[test]
fn mistakes_end_in_one_clear_line_and_a_non_zero_exit() {
    let cases: [(&[&str], &str); 5] = [
        (&["features", "export-feast", "-o", "/tmp/x", "--project", "my-project"], "error: `my-project` is not a valid Feast project name: use letters, digits and underscores, starting with a letter\n"),
        (&["features", "export-feast", "-o", "/proc/freshet-feast", "--serving-url", "http://h:1"], "error: cannot write /proc/freshet-feast: No such file or directory (os error 2)\n"),
        (&["compile", "--target", "flink-sql", "--view", "nope"], "error: unknown view `nope`; defined views are: user_click_stats, user_purchase_stats\n"),
        (&["features", "list", "--features-dir", "/nonexistent"], "error: cannot read definitions at /nonexistent: No such file or directory (os error 2)\n"),
        (&["compile", "--target", "flink-sql", "--view", "user_click_stats", "-o", "/nonexistent/x.sql"], "error: cannot write /nonexistent/x.sql: No such file or directory (os error 2)\n"),
    ];
    for (args, expected) in cases {
        let out = freshet(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(text(&out.stderr), expected, "{args:?}");
    }
    let out = freshet(&["compile", "--target", "spark", "--view", "x"]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit with 2");
    assert!(!text(&out.stderr).contains("panicked"));
}

/// A metric's value, summed over its labels, from the Prometheus endpoint at `address`.
fn scrape(address: &str, metric: &str) -> Option<f64> {
    freshet_testkit::metrics::sum(&freshet_testkit::metrics::scrape(address), metric)
}

fn pid_alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z"))
}

fn recorded_pids(state_dir: &Path) -> Vec<i32> {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state_dir.join("stack.json")).unwrap())
            .unwrap();
    state["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["pid"].as_i64().unwrap() as i32)
        .collect()
}

#[test]
fn up_detach_status_and_down_manage_a_real_stack() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("stack");
    let state = state.to_str().unwrap();
    let _cleanup = DownOnDrop(state.to_string());
    // Ports are picked free here and bound by the services later: another process may
    // take one in between. Such a start is tried again on new ports (twice at most).
    let mut attempt = 0;
    let (broker, redis, registry, producer, processor, processor_2, serving, prometheus, up) = loop {
        attempt += 1;
        // Two processor instances: metrics on this port and the next.
        let processor_port = loop {
            let port = free_port();
            if std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
                break port;
            }
        };
        let processor = processor_port.to_string();
        let processor_2 = (processor_port + 1).to_string();
        let serving = free_port().to_string();
        let prometheus = free_port().to_string();
        let (broker, redis, registry, producer) = (
            free_port().to_string(),
            free_port().to_string(),
            free_port().to_string(),
            free_port().to_string(),
        );
        let up: Vec<&str> = vec![
            "up",
            "--detach",
            "--state-dir",
            state,
            "--broker-port",
            &broker,
            "--redis-port",
            &redis,
            "--registry-port",
            &registry,
            "--producer-metrics-port",
            &producer,
            "--processor-metrics-port",
            &processor,
            "--serving-port",
            &serving,
            "--prometheus-port",
            &prometheus,
            "--demo-rate",
            "100",
            "--processors",
            "2",
        ];
        let out = freshet(&up);
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        if out.status.success() {
            let up: Vec<String> = up.iter().map(|a| a.to_string()).collect();
            break (
                broker,
                redis,
                registry,
                producer,
                processor,
                processor_2,
                serving,
                prometheus,
                up,
            );
        }
        assert!(
            attempt < 3 && said.contains("Address already in use"),
            "{said}"
        );
        let _ = freshet(&["down", "--state-dir", state]);
    };
    let up: Vec<&str> = up.iter().map(String::as_str).collect();

    let env = std::fs::read_to_string(Path::new(state).join("stack.env")).unwrap();
    let lines: Vec<&str> = env.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            format!("FRESHET_BROKERS=127.0.0.1:{broker}"),
            format!("FRESHET_REDIS_URL=redis://127.0.0.1:{redis}"),
            format!("FRESHET_REGISTRY_URL=http://127.0.0.1:{registry}"),
            format!("FRESHET_PROCESSOR_METRICS_URL=http://127.0.0.1:{processor}/metrics"),
            format!("FRESHET_PROCESSOR_2_METRICS_URL=http://127.0.0.1:{processor_2}/metrics"),
            format!("FRESHET_SERVING_URL=http://127.0.0.1:{serving}"),
            format!("FRESHET_PROMETHEUS_URL=http://127.0.0.1:{prometheus}"),
            format!("FRESHET_PRODUCER_METRICS_URL=http://127.0.0.1:{producer}/metrics"),
        ]
    );
    let pids = recorded_pids(Path::new(state));
    assert!(pids.iter().all(|p| pid_alive(*p)));

    let status = freshet(&["status", "--state-dir", state]);
    assert!(status.status.success(), "{}", text(&status.stdout));
    let status_text = text(&status.stdout);
    assert!(
        status_text.contains(&format!("127.0.0.1:{broker}"))
            && status_text.matches(" ready").count() == 8,
        "{status_text}"
    );

    // The two processors share the source's 3 partitions through the consumer group, and
    // status says which instance has which.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status_text = text(&freshet(&["status", "--state-dir", state]).stdout);
        let owned: Vec<Vec<String>> = status_text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("partitions: "))
            .map(|l| {
                l.split(", ")
                    .filter(|p| p.starts_with("user_events/"))
                    .map(str::to_string)
                    .collect()
            })
            .collect();
        let mut all: Vec<&String> = owned.iter().flatten().collect();
        all.sort();
        if owned.len() == 2
            && owned.iter().all(|o| !o.is_empty())
            && all == ["user_events/0", "user_events/1", "user_events/2"]
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the processors did not split the partitions: {status_text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The demo producer sends events and the processor turns them into updates.
    wait_for_updates(&producer, &processor);

    // ... and the serving API answers with values from the store: the whole pipeline.
    let deadline = Instant::now() + Duration::from_secs(60);
    let serving_address = format!("127.0.0.1:{serving}");
    'served: loop {
        for user in 1..=20 {
            if let Some((200, body)) = http_get(&serving_address, &format!("/features/{user}")) {
                let body: serde_json::Value = serde_json::from_str(&body).unwrap();
                if body["views"]["user_click_stats"]["status"] == "found" {
                    let feature = &body["views"]["user_click_stats"]["features"]["click_count_10m"];
                    assert!(
                        feature["source"] == "store" || feature["source"] == "cache",
                        "{body}"
                    );
                    assert!(feature["value"].is_i64(), "{body}");
                    break 'served;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no user among 1..=20 has served values after 60 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Freshness of the near cache against the real processor's writes: whatever version
    // Redis holds for a user at some moment, a lookup begun a staleness bound (100 ms)
    // later serves it or a newer one, for 12 s of live updates.
    let client = redis::Client::open(format!("redis://127.0.0.1:{redis}")).unwrap();
    let mut conn = client.get_connection().unwrap();
    let deadline = Instant::now() + Duration::from_secs(12);
    let (mut checks, mut from_cache, mut changes) = (0, 0, 0);
    let mut last_seen: std::collections::HashMap<u32, u64> = Default::default();
    while Instant::now() < deadline {
        for user in 1..=20u32 {
            let stored: Option<String> = redis::cmd("HGET")
                .arg(format!("fe:user:{user}"))
                .arg("user_click_stats:_version")
                .query(&mut conn)
                .unwrap();
            let Some(stored) = stored.and_then(|v| v.parse::<u64>().ok()) else {
                continue;
            };
            std::thread::sleep(Duration::from_millis(100));
            let Some((200, body)) = http_get(&serving_address, &format!("/features/{user}")) else {
                panic!("no answer from serving");
            };
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            let view = &body["views"]["user_click_stats"];
            let served = view["version"].as_u64().unwrap_or(0);
            assert!(
                served >= stored,
                "user {user}: Redis held version {stored}, and 100 ms later serving answered {served}: {body}"
            );
            checks += 1;
            from_cache += usize::from(view["features"]["click_count_10m"]["source"] == "cache");
            if last_seen
                .insert(user, stored)
                .is_some_and(|before| before != stored)
            {
                changes += 1;
            }
        }
    }
    assert!(checks > 20, "{checks} checks");
    assert!(
        changes > 0,
        "the processor wrote new versions while checking"
    );
    assert!(from_cache > 0, "the near cache answered some lookups");

    let again = freshet(&up);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("is already running"));

    let down = freshet(&["down", "--state-dir", state]);
    assert!(down.status.success());
    assert_eq!(
        text(&down.stdout),
        "producer: stopped\nprometheus: stopped\nserving: stopped\nprocessor-2: stopped\nprocessor: stopped\nregistry: stopped\nredis: stopped\nbroker: stopped\n"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| pid_alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "components still alive after down"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = freshet(&["status", "--state-dir", state]);
    assert_eq!(status.status.code(), Some(1));
    assert!(
        !Path::new(state).join("stack.env").exists(),
        "stale addresses are removed"
    );

    // Up again on the same folder: a new, empty broker, and a processor that starts over
    // with it rather than waiting at the last run's offsets.
    let out = freshet(&up);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for_updates(&producer, &processor);
    // Where it resumed: the last run's offsets are small, so a processor resuming from
    // them would soon process events too, skipping the first ones.
    let log = std::fs::read_to_string(Path::new(state).join("logs/processor.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let joined = lines
        .iter()
        .rposition(|l| l.contains("joining the group"))
        .expect("the processor logs that it joins the group");
    let assigned = lines[joined..]
        .iter()
        .find(|l| l.contains("assigned by the group"))
        .expect("the processor logs where its partitions resume");
    let at: Vec<&str> = assigned
        .split("partitions=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .split(", ")
        .collect();
    assert!(
        !at.is_empty() && at.iter().all(|p| p.ends_with(" at 0")),
        "the second run starts at the new topic's beginning: {assigned}"
    );
    assert!(freshet(&["down", "--state-dir", state]).status.success());
}

/// Waits until the demo producer's events have come through the processor as updates
/// (events processed in this run: a restarted processor also counts the updates of an
/// epoch it finishes for the last run).
fn wait_for_updates(producer_port: &str, processor_port: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let delivered = scrape(
            &format!("127.0.0.1:{producer_port}"),
            "freshet_producer_events_delivered_total",
        );
        let processor = format!("127.0.0.1:{processor_port}");
        let events = scrape(&processor, "freshet_processor_events_total");
        let updates = scrape(&processor, "freshet_processor_updates_total");
        if [delivered, events, updates]
            .iter()
            .all(|n| n.is_some_and(|n| n > 0.0))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no traffic through the pipeline: delivered {delivered:?}, events {events:?}, updates {updates:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn up_in_the_foreground_stops_every_component_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("stack");
    let mut child = Command::new(env!("CARGO_BIN_EXE_freshet"))
        .args(["up", "--state-dir", state.to_str().unwrap()])
        .args([
            "--broker-port",
            &free_port().to_string(),
            "--redis-port",
            &free_port().to_string(),
            "--registry-port",
            &free_port().to_string(),
            "--processor-metrics-port",
            &free_port().to_string(),
            "--serving-port",
            &free_port().to_string(),
            "--prometheus-port",
            &free_port().to_string(),
            "--demo-rate",
            "0",
        ])
        .current_dir(repo())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("up prints until it is ready").unwrap();
        if line == "Press Ctrl-C to stop." {
            break;
        }
    }
    let pids = recorded_pids(&state);
    assert_eq!(pids.len(), 6);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert_eq!(rest, ["freshet up: stopping the local stack", "stopped"]);
    assert!(
        pids.iter().all(|p| !pid_alive(*p)),
        "components stopped with freshet up"
    );
    assert!(!state.join("stack.json").exists());
}
