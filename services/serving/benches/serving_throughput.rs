//! Serving benchmark: `cargo bench -p freshet-serving`.
//!
//! In one run, against one real Redis holding 10,000 entities in both shipped views:
//!
//! 1. baseline: raw Redis from a Rust client (the redis crate's multiplexed connection,
//!    the one the service uses), at the same concurrency as the load generator, each
//!    operation the same pipelined HMGETs a lookup makes (one per view: version, event
//!    time and every feature);
//! 2. `GET /features/{id}` through the real `freshet-serving` binary, driven by wrk (an
//!    HTTP load generator in its own process) at the same concurrency;
//!
//! alternated twice, printing throughput and the ratio (2) / (1); then single-lookup
//! latency at moderate load (wrk, 4 connections, each pausing 1 ms between requests: a
//! few thousand requests/s, about a tenth of what the service sustains here) and, for
//! comparison, with the same 4 connections unpaced (which saturates these 2 cores); then
//! 1,000-entity batch latency (sequential requests from an HTTP client, with the server's
//! own latency figure beside it), against the same reads pipelined straight to Redis, and
//! Redis's own CPU time per batch.
//!
//! Then Feast's protocol (`POST /get-online-features`, what Feast's SDK sends, all eight
//! features) against Freshet's own endpoints in the same run: single lookups by wrk at
//! the same concurrency, alternated with `GET /features/{id}`, and 1,000-entity requests
//! (sequential, as above) alternated with `POST /features/batch` for the same ids.
//!
//! Figures are ratios within one run because these machines are noisy. Aims: ratio >= 0.5,
//! single-lookup p99 < 1 ms at moderate load, batch p99 < 10 ms, Feast's protocol at no
//! less than 0.9 of Freshet's own endpoints' throughput.

use freshet_core::store_layout::{entity_key, FeatureUpdate, ViewStorage, Writer};
use freshet_core::Value;
use freshet_testkit::TestRedis;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ENTITIES: usize = 10_000;
const CONCURRENCY: usize = 32;
const ROUND: Duration = Duration::from_secs(8);
const BATCH: usize = 1_000;
/// Batches per round (two rounds, each the raw baseline then the service): enough that
/// p99 is not just the slowest one or two.
const BATCH_REQUESTS: usize = 500;
const VIEWS: [&str; 2] = ["user_click_stats", "user_purchase_stats"];
/// The features of each view.
const FEATURES: [&[&str]; 2] = [
    &[
        "click_count_1m",
        "view_count_1m",
        "click_count_10m",
        "distinct_items_viewed_10m",
    ],
    &[
        "purchase_count_5m",
        "purchase_amount_sum_1h",
        "avg_purchase_amount_1h",
        "events_per_session",
    ],
];
/// The fields of an entity's hash a lookup of all features reads: per view, its version,
/// event time and features (one `HMGET`, as the service sends it).
const FIELDS: [&str; 12] = [
    "user_click_stats:_version",
    "user_click_stats:_event_time",
    "user_click_stats:click_count_1m",
    "user_click_stats:view_count_1m",
    "user_click_stats:click_count_10m",
    "user_click_stats:distinct_items_viewed_10m",
    "user_purchase_stats:_version",
    "user_purchase_stats:_event_time",
    "user_purchase_stats:purchase_count_5m",
    "user_purchase_stats:purchase_amount_sum_1h",
    "user_purchase_stats:avg_purchase_amount_1h",
    "user_purchase_stats:events_per_session",
];

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!(
            "the serving benchmark needs wrk: run scripts/bootstrap.sh (or apt-get install wrk)"
        );
        std::process::exit(1);
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let redis = TestRedis::start();
    runtime.block_on(fill(&redis.url()));

    let port = freshet_localstack::free_port();
    let features = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../features");
    let serving = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_freshet-serving"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--redis-url", &redis.url()])
            .arg("--features-dir")
            .arg(&features)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start freshet-serving"),
    );
    let base = format!("http://127.0.0.1:{port}");
    runtime.block_on(wait_ready(&base));
    let script = std::env::temp_dir().join(format!("freshet-bench-{port}.lua"));
    let requests = format!(
        "math.randomseed(7)\nrequest = function()\n  return wrk.format(\"GET\", \"/features/\" .. math.random(0, {}))\nend\n",
        ENTITIES - 1
    );
    std::fs::write(&script, &requests).expect("wrk script");
    // wrk waits `delay()` ms before each request of a connection (not counted in latency).
    let paced = std::env::temp_dir().join(format!("freshet-bench-{port}-paced.lua"));
    std::fs::write(
        &paced,
        format!("{requests}delay = function()\n  return 1\nend\n"),
    )
    .expect("wrk script");

    println!("serving benchmark: {ENTITIES} entities x {} views, concurrency {CONCURRENCY}, rounds of {}s", VIEWS.len(), ROUND.as_secs());
    let (mut redis_total, mut serving_total) = (0.0, 0.0);
    for round in 1..=2 {
        let raw = runtime.block_on(raw_redis(&redis.url()));
        let http = wrk(&base, &script, CONCURRENCY, 2);
        println!(
            "  round {round}: raw Redis {:>9.0} lookups/s (p50 {:.3} ms, p99 {:.3} ms) | GET /features/{{id}} {:>9.0} req/s (p50 {:.3} ms, p99 {:.3} ms) | ratio {:.2}",
            raw.per_second, raw.p50_ms, raw.p99_ms, http.per_second, http.p50_ms, http.p99_ms,
            http.per_second / raw.per_second
        );
        redis_total += raw.per_second;
        serving_total += http.per_second;
    }
    println!(
        "throughput ratio (serving / raw Redis, both rounds): {:.2}  (aim >= 0.5)",
        serving_total / redis_total
    );
    let moderate = wrk(&base, &paced, 4, 1);
    println!(
        "single lookup at moderate load (4 connections, 1 ms pause between a connection's requests): {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms  (aim p99 < 1 ms)",
        moderate.per_second, moderate.p50_ms, moderate.p99_ms
    );
    let saturating = wrk(&base, &script, 4, 1);
    println!(
        "  the same 4 connections unpaced (saturating the 2 cores): {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms",
        saturating.per_second, saturating.p50_ms, saturating.p99_ms
    );
    let (mut raw_ms, mut client_ms, mut server_ms) = (Vec::new(), Vec::new(), Vec::new());
    let (mut redis_cpu, mut phases) = (0.0, [0.0; 2]);
    for _ in 0..2 {
        raw_ms.extend(runtime.block_on(raw_batches(&redis.url())));
        let cpu_before = runtime.block_on(redis_cpu_seconds(&redis.url()));
        let before = runtime.block_on(phase_seconds(&base));
        let (client, server) = runtime.block_on(batches(&base));
        let after = runtime.block_on(phase_seconds(&base));
        redis_cpu += runtime.block_on(redis_cpu_seconds(&redis.url())) - cpu_before;
        client_ms.extend(client);
        server_ms.extend(server);
        phases = [0, 1].map(|i| phases[i] + after[i] - before[i]);
    }
    for latencies in [&mut raw_ms, &mut client_ms, &mut server_ms] {
        latencies.sort_by(f64::total_cmp);
    }
    let batches_run = client_ms.len() as f64;
    println!(
        "batch of {BATCH} (both views, {} requests): p50 {:.2} ms, p99 {:.2} ms at the client; server p50 {:.2} ms, p99 {:.2} ms  (aim p99 < 10 ms)",
        client_ms.len(),
        percentile(&client_ms, 0.5), percentile(&client_ms, 0.99),
        percentile(&server_ms, 0.5), percentile(&server_ms, 0.99)
    );
    println!(
        "  baseline, the same {} HMGETs pipelined straight to Redis (freshet_store::BatchConnection, no HTTP, no JSON): p50 {:.2} ms, p99 {:.2} ms; service / baseline: p50 {:.2}, p99 {:.2}",
        BATCH,
        percentile(&raw_ms, 0.5), percentile(&raw_ms, 0.99),
        percentile(&client_ms, 0.5) / percentile(&raw_ms, 0.5),
        percentile(&client_ms, 0.99) / percentile(&raw_ms, 0.99)
    );
    println!(
        "  Redis's own CPU per service batch (INFO cpu): {:.2} ms; in the service (mean per batch): Redis round trip {:.2} ms, during which the answer is built as replies arrive (building the values and writing their JSON: {:.2} ms over both views)",
        redis_cpu * 1_000.0 / batches_run,
        phases[0] * 1_000.0 / batches_run,
        phases[1] * 1_000.0 / batches_run
    );

    // Feast's protocol beside Freshet's own endpoints.
    // Both request kinds made once per wrk thread, so the load generator (on the same
    // cores) spends as little, and the same, on each.
    let prebuilt = |name: &str, request: &str| {
        let path = std::env::temp_dir().join(format!("freshet-bench-{port}-{name}.lua"));
        std::fs::write(
            &path,
            format!(
                "local requests = {{}}\ninit = function(args)\n  math.randomseed(7)\n  for id = 0, {last} do\n    requests[id] = {request}\n  end\nend\nrequest = function()\n  return requests[math.random(0, {last})]\nend\n",
                last = ENTITIES - 1
            ),
        )
        .expect("wrk script");
        path
    };
    let own_script = prebuilt("own", "wrk.format(\"GET\", \"/features/\" .. id)");
    let feast_script = prebuilt(
        "feast",
        &format!(
            "wrk.format(\"POST\", \"/get-online-features\", {{[\"Content-Type\"] = \"application/json\"}}, '{{\"entities\":{{\"user_id\":[' .. id .. ']}},\"features\":{}}}')",
            serde_json::to_string(&feast_features()).unwrap()
        ),
    );
    println!("Feast's protocol (POST /get-online-features, all {} features) against Freshet's own endpoints, alternated:", feast_features().len());
    let (mut own_total, mut feast_total) = (0.0, 0.0);
    let (mut own_cpu, mut feast_cpu) = (0.0, 0.0);
    let pid = serving.0.id();
    for round in 1..=3 {
        let cpu = cpu_seconds(pid);
        let own = wrk(&base, &own_script, CONCURRENCY, 2);
        let own_us = (cpu_seconds(pid) - cpu) * 1e6 / own.requests;
        let cpu = cpu_seconds(pid);
        let feast = wrk(&base, &feast_script, CONCURRENCY, 2);
        let feast_us = (cpu_seconds(pid) - cpu) * 1e6 / feast.requests;
        println!(
            "  round {round}: GET /features/{{id}} {:>7.0} req/s (p50 {:.3} ms, p99 {:.3} ms, {own_us:.1} us of service CPU each) | POST /get-online-features {:>7.0} req/s (p50 {:.3} ms, p99 {:.3} ms, {feast_us:.1} us each) | ratio {:.2}",
            own.per_second, own.p50_ms, own.p99_ms, feast.per_second, feast.p50_ms, feast.p99_ms,
            feast.per_second / own.per_second
        );
        own_total += own.per_second;
        feast_total += feast.per_second;
        own_cpu += own_us;
        feast_cpu += feast_us;
    }
    println!(
        "single lookups, Feast's protocol / GET /features/{{id}} (all rounds): throughput {:.2}  (aim >= 0.9); service CPU per request {:.2}",
        feast_total / own_total,
        feast_cpu / own_cpu
    );
    let (mut own_ms, mut feast_ms) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        own_ms.extend(runtime.block_on(batches(&base)).0);
        feast_ms.extend(runtime.block_on(feast_batches(&base)));
    }
    let per_second = |ms: &[f64]| ms.len() as f64 / (ms.iter().sum::<f64>() / 1_000.0);
    let (own_rate, feast_rate) = (per_second(&own_ms), per_second(&feast_ms));
    for latencies in [&mut own_ms, &mut feast_ms] {
        latencies.sort_by(f64::total_cmp);
    }
    println!(
        "  {BATCH}-entity requests ({} each): POST /features/batch {:.0} requests/s (p50 {:.2} ms, p99 {:.2} ms) | POST /get-online-features {:.0} requests/s (p50 {:.2} ms, p99 {:.2} ms)",
        own_ms.len(),
        own_rate, percentile(&own_ms, 0.5), percentile(&own_ms, 0.99),
        feast_rate, percentile(&feast_ms, 0.5), percentile(&feast_ms, 0.99),
    );
    println!(
        "{BATCH}-entity requests, Feast's protocol / POST /features/batch: {:.2}  (aim >= 0.9)",
        feast_rate / own_rate
    );
    for file in [script, paced, own_script, feast_script] {
        let _ = std::fs::remove_file(file);
    }
}

/// CPU time (user and system) process `pid` has used so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the service's stat");
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("a stat line") + 2..]
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    static TICKS_PER_SECOND: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let per_second = TICKS_PER_SECOND.get_or_init(|| {
        let out = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .expect("getconf");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(100.0)
    });
    ticks / per_second
}

/// Every feature of both views, as Feast references them.
fn feast_features() -> Vec<String> {
    VIEWS
        .iter()
        .zip(FEATURES)
        .flat_map(|(view, features)| features.iter().map(move |f| format!("{view}:{f}")))
        .collect()
}

/// Sequential 1,000-entity requests in Feast's protocol, for the ids of [`batches`];
/// client-side latencies.
async fn feast_batches(base: &str) -> Vec<f64> {
    let http = reqwest::Client::new();
    let features = feast_features();
    let mut client_ms = Vec::new();
    for r in 0..BATCH_REQUESTS {
        let ids: Vec<i64> = batch_ids(r).iter().map(|id| id.parse().unwrap()).collect();
        let started = Instant::now();
        let response = http
            .post(format!("{base}/get-online-features"))
            .json(&serde_json::json!({ "entities": { "user_id": ids }, "features": features }))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let bytes = response.bytes().await.unwrap();
        client_ms.push(started.elapsed().as_secs_f64() * 1_000.0);
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let results = body["results"].as_array().unwrap();
        assert_eq!(results.len(), 1 + features.len());
        assert_eq!(results[1]["values"].as_array().unwrap().len(), BATCH);
    }
    client_ms
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Both views for every entity, as the processor would write them.
async fn fill(url: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let now = now_ms();
    let updates: Vec<FeatureUpdate> = (0..ENTITIES)
        .flat_map(|i| {
            let clicks = FeatureUpdate {
                view: VIEWS[0].into(),
                entity: i.to_string(),
                version: 1,
                event_time_ms: now,
                values: BTreeMap::from([
                    ("click_count_1m".to_string(), Value::Long(i as i64 % 7)),
                    ("view_count_1m".to_string(), Value::Long(i as i64 % 31)),
                    ("click_count_10m".to_string(), Value::Long(i as i64 % 50)),
                    ("distinct_items_viewed_10m".to_string(), Value::Long(3)),
                ]),
            };
            let purchases = FeatureUpdate {
                view: VIEWS[1].into(),
                entity: i.to_string(),
                version: 1,
                event_time_ms: now,
                values: BTreeMap::from([
                    ("purchase_count_5m".to_string(), Value::Long(1)),
                    ("purchase_amount_sum_1h".to_string(), Value::Double(42.5)),
                    ("avg_purchase_amount_1h".to_string(), Value::Double(21.25)),
                    ("events_per_session".to_string(), Value::Long(12)),
                ]),
            };
            [clicks, purchases]
        })
        .collect();
    let storage = ViewStorage {
        entity_type: "user".into(),
        ttl_ms: 0,
    };
    freshet_store::write_updates(
        &mut conn,
        updates.iter().map(|u| (u, &storage)),
        Writer::Processor,
    )
    .await
    .unwrap();
}

async fn wait_ready(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{base}/ready"))
        .await
        .map(|r| !r.status().is_success())
        .unwrap_or(true)
    {
        assert!(
            Instant::now() < deadline,
            "freshet-serving did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Figures {
    per_second: f64,
    /// Requests answered in the round.
    requests: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// CONCURRENCY tasks, each looping over lookups of random entities: one pipelined round
/// trip with an HMGET per view, as the service does for a lookup.
async fn raw_redis(url: &str) -> Figures {
    let client = redis::Client::open(url).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..CONCURRENCY {
        let (mut conn, stop, count) = (conn.clone(), stop.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut entity = t * 7919;
            while !stop.load(Ordering::Relaxed) {
                entity = (entity * 31 + 17) % ENTITIES;
                let reads: Vec<(String, &[&str])> =
                    vec![(entity_key("user", &entity.to_string()), &FIELDS)];
                let started = Instant::now();
                let hashes = freshet_store::read_fields(&mut conn, &reads).await.unwrap();
                latencies.push(started.elapsed().as_secs_f64() * 1_000.0);
                assert_eq!(hashes.len(), 1);
                count.fetch_add(1, Ordering::Relaxed);
            }
            latencies
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(ROUND).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Figures {
        per_second: count.load(Ordering::Relaxed) as f64 / elapsed,
        requests: count.load(Ordering::Relaxed) as f64,
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
    }
}

/// Runs wrk against `GET /features/{random id}` and reads its figures.
fn wrk(base: &str, script: &std::path::Path, connections: usize, threads: usize) -> Figures {
    let out = Command::new("wrk")
        .args(["-t", &threads.to_string(), "-c", &connections.to_string()])
        .args(["-d", &format!("{}s", ROUND.as_secs()), "--latency", "-s"])
        .arg(script)
        .arg(base)
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("Non-2xx"),
        "the service answered errors under load:\n{text}"
    );
    let field = |prefix: &str| -> &str {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in wrk's output:\n{text}"))
            .split_whitespace()
            .next()
            .unwrap()
    };
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk's output:\n{text}"));
    Figures {
        per_second: field("Requests/sec:").parse().expect("requests/s"),
        requests,
        p50_ms: duration_ms(field("50%")),
        p99_ms: duration_ms(field("99%")),
    }
}

/// wrk's durations: `812.00us`, `1.20ms`, `2.01s`.
fn duration_ms(text: &str) -> f64 {
    for (unit, scale) in [("us", 0.001), ("ms", 1.0), ("s", 1_000.0)] {
        if let Some(number) = text.strip_suffix(unit) {
            return number.parse::<f64>().expect("a number") * scale;
        }
    }
    panic!("unknown duration {text:?} from wrk")
}

/// The entity ids of the `r`-th batch.
fn batch_ids(r: usize) -> Vec<String> {
    (0..BATCH)
        .map(|i| ((r * 7919 + i * 13) % ENTITIES).to_string())
        .collect()
}

/// Sequential 1,000-entity batches; client-side and server-reported latencies.
async fn batches(base: &str) -> (Vec<f64>, Vec<f64>) {
    let http = reqwest::Client::new();
    let (mut client_ms, mut server_ms) = (Vec::new(), Vec::new());
    for r in 0..BATCH_REQUESTS {
        let ids = batch_ids(r);
        let started = Instant::now();
        let response = http
            .post(format!("{base}/features/batch"))
            .json(&serde_json::json!({ "entity_ids": ids }))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let bytes = response.bytes().await.unwrap();
        client_ms.push(started.elapsed().as_secs_f64() * 1_000.0);
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        server_ms.push(body["server_latency_ms"].as_f64().unwrap());
        assert_eq!(body["results"].as_array().unwrap().len(), BATCH);
    }
    (client_ms, server_ms)
}

/// The reads of the same batches as [`batches`], sent straight to Redis, one pipeline
/// each; their latencies.
async fn raw_batches(url: &str) -> Vec<f64> {
    let client = redis::Client::open(url).unwrap();
    let mut connection = freshet_store::BatchConnection::connect(client.get_connection_info())
        .await
        .unwrap();
    let mut latencies = Vec::new();
    for r in 0..BATCH_REQUESTS {
        let ids = batch_ids(r);
        let started = Instant::now();
        let reads: Vec<(String, &[&str])> = ids
            .iter()
            .map(|id| (entity_key("user", id), &FIELDS[..]))
            .collect();
        let read = connection.read_fields(&reads).await.unwrap();
        latencies.push(started.elapsed().as_secs_f64() * 1_000.0);
        assert_eq!(read.len(), BATCH);
        assert!(
            read.iter().all(|r| !r.is_empty()),
            "every entity was filled"
        );
    }
    latencies
}

/// Redis's CPU time so far (`INFO cpu`: user plus system), in seconds.
async fn redis_cpu_seconds(url: &str) -> f64 {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            matches!(name, "used_cpu_user" | "used_cpu_sys")
                .then(|| value.trim().parse::<f64>().unwrap())
        })
        .sum()
}

/// Seconds spent so far in the Redis and compute phases of all views (from /metrics; the
/// Redis round trip is counted once per view, so it is divided by the view count).
async fn phase_seconds(base: &str) -> [f64; 2] {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sum = |phase: &str| -> f64 {
        VIEWS
            .iter()
            .filter_map(|v| {
                freshet_testkit::metrics::value(
                    &text,
                    &format!(
                        "freshet_serving_view_fetch_seconds_sum{{phase=\"{phase}\",view=\"{v}\"}}"
                    ),
                )
            })
            .sum()
    };
    [sum("redis") / VIEWS.len() as f64, sum("compute")]
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}
