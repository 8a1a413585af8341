//! Flink's results reach the serving API: the rows a real Flink run of the compiled views
//! wrote, produced onto the topic as the job's upsert-kafka sink writes them (JSON key and
//! value), applied by the sink and served by the serving API: every entity's values are
//! its latest Flink window of each group. Then, live: an older row changes nothing, a bad
//! row is refused and counted without stopping the sink, a newer row is served, and a
//! restarted sink (reading the topic again) serves the same.

use freshet_core::{load_dir, Definitions, Value};
use freshet_flink_sink::metrics::SinkMetrics;
use freshet_flink_sink::SinkConfig;
use freshet_serving::metrics::ServingMetrics;
use freshet_serving::ServingConfig;
use freshet_testkit::{flink, TestStack};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOPIC: &str = "flink_feature_windows";
const USERS: u64 = 30;

fn definitions() -> Definitions {
    load_dir(
        &Path::new(
            &std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../features"),
    )
    .unwrap()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Seeded events over the last 40 minutes (recent, so no view's TTL has passed when they
/// are served), a few out of order and late.
fn write_events(path: &Path) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut t = now_ms() - 40 * 60_000;
    let mut lines = Vec::new();
    for _ in 0..1_500 {
        t += rng.random_range(0..3_000);
        let action = ["view", "view", "click", "purchase"][rng.random_range(0..4)];
        let time = match rng.random_range(0..100) {
            0..3 => t - rng.random_range(6_000..60_000),
            3..10 => t - rng.random_range(0..4_000),
            _ => t,
        };
        lines.push(
            json!({
                "user_id": rng.random_range(1..=USERS),
                "action_type": action,
                "item_id": rng.random_range(1..60),
                "amount": (action == "purchase").then(|| rng.random_range(1..10_000) as f64 / 100.0 + 0.001),
                "timestamp": time,
                "session_id": null,
            })
            .to_string(),
        );
    }
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// Flink's rows for every window of every shipped view, in window-end order (the order
/// the job emits them, as its watermark passes their ends).
fn flink_rows(defs: &Definitions, python: &Path, dir: &Path) -> Vec<Json> {
    let events = dir.join("events.jsonl");
    write_events(&events);
    let out = flink::run_views(defs, python, &events, dir);
    let mut rows: Vec<Json> = defs
        .views
        .iter()
        .flat_map(|v| v.windows().into_iter().map(move |w| (v, w)))
        .flat_map(|(v, w)| flink::rows(&out.join(format!("{}__{}", v.name, w.slug()))))
        .collect();
    rows.sort_by(|a, b| a["window_end"].as_str().cmp(&b["window_end"].as_str()));
    rows
}

async fn produce(producer: &FutureProducer, row: &Json) {
    let key = json!({
        "view_name": row["view_name"],
        "entity_id": row["entity_id"],
        "window_group": row["window_group"],
    })
    .to_string();
    produce_raw(producer, &key, &row.to_string()).await;
}

async fn produce_raw(producer: &FutureProducer, key: &str, value: &str) {
    producer
        .send(
            FutureRecord::to(TOPIC).key(key).payload(value),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// What the API must serve for each (entity, view, feature): per group, the row with the
/// latest window end; a null or a group without a row is the feature's default.
fn expected(defs: &Definitions, rows: &[Json]) -> BTreeMap<(String, String, String), Json> {
    let mut latest: BTreeMap<(String, String, String), &Json> = BTreeMap::new();
    for row in rows {
        let key = (
            row["entity_id"].as_str().unwrap().to_string(),
            row["view_name"].as_str().unwrap().to_string(),
            row["window_group"].as_str().unwrap().to_string(),
        );
        let newer = latest
            .get(&key)
            .is_none_or(|r| r["window_end"].as_str() < row["window_end"].as_str());
        if newer {
            latest.insert(key, row);
        }
    }
    let entities: std::collections::BTreeSet<&String> = latest.keys().map(|k| &k.0).collect();
    let mut out = BTreeMap::new();
    for entity in entities {
        for view in &defs.views {
            for feature in &view.features {
                let row = latest.get(&(entity.clone(), view.name.clone(), feature.window.slug()));
                let value = match row.map(|r| &r[&feature.name]) {
                    None | Some(Json::Null) => serde_json::to_value(&feature.default).unwrap(),
                    Some(v) => {
                        serde_json::to_value(Value::from_json_as(v, feature.value_type).unwrap())
                            .unwrap()
                    }
                };
                out.insert(
                    (entity.clone(), view.name.clone(), feature.name.clone()),
                    value,
                );
            }
        }
    }
    out
}

struct RunningSink {
    metrics: SinkMetrics,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

fn start_sink(stack: &TestStack, defs: &Definitions) -> RunningSink {
    let metrics = SinkMetrics::new();
    let stop = Arc::new(AtomicBool::new(false));
    let config = SinkConfig {
        brokers: stack.brokers(),
        topic: TOPIC.into(),
        partitions: 3,
    };
    let store = freshet_store::StoreTarget::parse(&stack.redis_url(), None).unwrap();
    let (defs, m, s) = (defs.clone(), metrics.clone(), stop.clone());
    let task = tokio::spawn(async move {
        freshet_flink_sink::run(&defs, &config, &store, &m, &s)
            .await
            .unwrap();
    });
    RunningSink {
        metrics,
        stop,
        task,
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn served(http: &reqwest::Client, base: &str, entity: &str) -> Json {
    let response = http
        .get(format!("{base}/features/{entity}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn check_all_served(
    http: &reqwest::Client,
    base: &str,
    expected: &BTreeMap<(String, String, String), Json>,
) {
    let mut entity_body: Option<(String, Json)> = None;
    for ((entity, view, feature), value) in expected {
        if entity_body.as_ref().is_none_or(|(e, _)| e != entity) {
            entity_body = Some((entity.clone(), served(http, base, entity).await));
        }
        let body = &entity_body.as_ref().unwrap().1;
        assert_eq!(
            body["views"][view]["status"], "found",
            "{entity} {view}: {body}"
        );
        assert_eq!(
            body["views"][view]["features"][feature]["value"], *value,
            "{entity} {view} {feature}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serving_api_answers_flinks_latest_window_of_every_entity() {
    let Some(python) = flink::python_or_skip("flink sink") else {
        return;
    };
    let defs = definitions();
    let dir = tempfile::tempdir().unwrap();
    let rows = flink_rows(&defs, &python, dir.path());
    assert!(rows.len() > 1_000, "Flink wrote only {} rows", rows.len());
    let expected = expected(&defs, &rows);

    let stack = TestStack::start();
    stack.create_topic(TOPIC, 3).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", stack.brokers())
        .create()
        .unwrap();
    for row in &rows {
        produce(&producer, row).await;
    }

    let sink = start_sink(&stack, &defs);
    wait_for("the sink has read the topic", || {
        sink.metrics.caught_up.get() == 1
    })
    .await;
    let applied = sink.metrics.rows.with_label_values(&["applied"]).get();
    let not_newer = sink.metrics.rows.with_label_values(&["not_newer"]).get();
    assert_eq!(applied + not_newer, rows.len() as u64);
    assert_eq!(sink.metrics.rows.with_label_values(&["refused"]).get(), 0);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut config = ServingConfig::new(stack.redis_url());
    config.near_cache_entries = 0;
    let serving_defs = defs.clone();
    tokio::spawn(async move {
        freshet_serving::serve(
            listener,
            &serving_defs,
            &config,
            ServingMetrics::new(),
            std::future::pending(),
        )
        .await
        .unwrap();
    });
    let http = reqwest::Client::new();
    check_all_served(&http, &base, &expected).await;
    let entities = expected
        .keys()
        .map(|k| &k.0)
        .collect::<std::collections::BTreeSet<_>>();
    println!(
        "flink sink: {} rows of {} entities served as Flink computed them",
        rows.len(),
        entities.len()
    );

    // Live: an older row of an entity's one-minute window (replayed with other values)
    // changes nothing; a bad row is refused; then a newer window is served.
    let oldest = rows
        .iter()
        .find(|r| r["window_group"] == "tumble_1m")
        .unwrap()
        .clone();
    let entity = oldest["entity_id"].as_str().unwrap().to_string();
    let mut replayed = oldest.clone();
    replayed["click_count_1m"] = json!(999_999);
    produce(&producer, &replayed).await;
    produce_raw(&producer, "{}", "not a row").await;
    let mut newer = oldest.clone();
    newer["window_start"] = json!("2099-01-01 00:00:00");
    newer["window_end"] = json!("2099-01-01 00:01:00");
    newer["click_count_1m"] = json!(12_345);
    produce(&producer, &newer).await;
    wait_for("the newer row is applied", || {
        sink.metrics.rows.with_label_values(&["applied"]).get() == applied + 1
    })
    .await;
    assert_eq!(sink.metrics.rows.with_label_values(&["refused"]).get(), 1);
    assert_eq!(
        sink.metrics.rows.with_label_values(&["not_newer"]).get(),
        not_newer + 1
    );
    let key = |feature: &str| {
        (
            entity.clone(),
            "user_click_stats".to_string(),
            feature.to_string(),
        )
    };
    let mut expected = expected;
    expected.insert(key("click_count_1m"), json!(12_345));
    expected.insert(key("view_count_1m"), newer["view_count_1m"].clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = served(&http, &base, &entity).await;
        if body["views"]["user_click_stats"]["features"]["click_count_1m"]["value"] == 12_345 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the newer window is not served: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check_all_served(&http, &base, &expected).await;

    // A restarted sink reads the topic again and serves exactly the same.
    sink.stop.store(true, Ordering::Relaxed);
    sink.task.await.unwrap();
    let again = start_sink(&stack, &defs);
    wait_for("the restarted sink has read the topic", || {
        again.metrics.caught_up.get() == 1
    })
    .await;
    assert_eq!(again.metrics.rows.with_label_values(&["refused"]).get(), 1);
    check_all_served(&http, &base, &expected).await;
    again.stop.store(true, Ordering::Relaxed);
    again.task.await.unwrap();
}
