//! Serving benchmark: `cargo bench -p freshet-serving`.
//!
//! In one run, against one real Redis holding 10,000 entities in both shipped views (one
//! hash per entity), two `freshet-serving` processes: one with the near cache (the
//! default) and one without (`--near-cache-entries 0`), each with one worker thread, as
//! Redis has one (on these 2 cores the load generator takes the other; with two threads
//! the service spends more on waking its threads than it gains). Figures are ratios
//! within the run because these machines are noisy.
//!
//! 1. Single lookups of an entity with both views, alternated twice: the baseline is raw
//!    Redis, `redis-benchmark` sending `HGETALL` of one entity hash (random entities) from
//!    the same number of connections; then `GET /features/{id}` driven by wrk at that
//!    concurrency, without and with the cache (and the cache's hit ratio). Aims: cache
//!    off at least 0.8 of raw Redis, cache on at least 1.0.
//! 2. Latency at a steady 10,000 requests/s, open loop: requests are scheduled at a fixed
//!    rate whatever the answers do, and a request held back because its connection was
//!    still busy is timed from when it was due (no coordinated omission). Aim p99 < 0.5 ms.
//! 3. Batches of 1,000 entities, both views (sequential requests), without and with the
//!    cache, beside the same reads pipelined straight to Redis. Aim p99 < 3 ms.
//! 4. Feast's protocol (`POST /get-online-features`) against Freshet's own endpoints,
//!    single lookups by wrk alternated with `GET /features/{id}`, and 1,000-entity
//!    requests alternated with `POST /features/batch` (cache on).

#[path = "serving_throughput/open_loop.rs"]
mod open_loop;

/// The allocator of `freshet-serving`, for the HTTP floor served from this process.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use freshet_core::store_layout::{entity_key, FeatureUpdate, ViewStorage, Writer};
use freshet_core::Value;
use freshet_testkit::TestRedis;
use open_loop::{open_loop, Protocol};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ENTITIES: usize = 10_000;
const CONCURRENCY: usize = 32;
const ROUND: Duration = Duration::from_secs(8);
const BATCH: usize = 1_000;
/// Batches per round (two rounds per service): enough that p99 is not just the slowest
/// one or two.
const BATCH_REQUESTS: usize = 400;
/// The open-loop rate and how long it is held.
const OPEN_LOOP_RATE: f64 = 10_000.0;
const OPEN_LOOP_TIME: Duration = Duration::from_secs(10);
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

/// Entity `i`'s id: zero-padded to 12 digits, as `redis-benchmark -r` writes its random
/// key numbers, so the baseline reads the very hashes the service reads.
fn entity_id(i: usize) -> String {
    format!("{i:012}")
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `freshet-serving` process on a free port with `flags`; its base URL.
fn start_serving(redis_url: &str, flags: &[&str]) -> (KillOnDrop, String) {
    let port = freshet_localstack::free_port();
    let features = std::path::Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../features");
    let child = Command::new(env!("CARGO_BIN_EXE_freshet-serving"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--redis-url", redis_url])
        .arg("--features-dir")
        .arg(&features)
        .args(["--worker-threads", "1"])
        .arg("--no-auth")
        .args(flags)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start freshet-serving");
    (KillOnDrop(child), format!("http://127.0.0.1:{port}"))
}

/// What every section measures against: Redis filled with the entities, the two services,
/// and the prebuilt single-lookup script.
struct Setup {
    runtime: tokio::runtime::Runtime,
    redis: TestRedis,
    cached: String,
    cached_service: KillOnDrop,
    uncached: String,
    uncached_service: KillOnDrop,
    /// `GET /features/{id}` of random entities, prebuilt per wrk thread.
    own_script: std::path::PathBuf,
}

impl Setup {
    /// A wrk script that sends one of `request` (a Lua expression of `id`) for a random
    /// entity: built once per wrk thread, so the load generator (on the same cores) spends
    /// as little, and the same, on each kind of request.
    fn prebuilt(&self, name: &str, request: &str) -> std::path::PathBuf {
        let port = self.cached.rsplit(':').next().unwrap();
        let path = std::env::temp_dir().join(format!("freshet-bench-{port}-{name}.lua"));
        std::fs::write(
            &path,
            format!(
                "local requests = {{}}\ninit = function(args)\n  math.randomseed(7)\n  for n = 0, {last} do\n    local id = string.format(\"%012d\", n)\n    requests[n] = {request}\n  end\nend\nrequest = function()\n  return requests[math.random(0, {last})]\nend\n",
                last = ENTITIES - 1
            ),
        )
        .expect("wrk script");
        path
    }
}

fn main() {
    for tool in ["wrk", "redis-benchmark"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("the serving benchmark needs {tool}: run scripts/bootstrap.sh");
            std::process::exit(1);
        }
    }
    // `cargo bench -p freshet-serving -- single open_loop`: only the sections whose name
    // holds one of the filters.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let runs = |section: &str| only.is_empty() || only.iter().any(|o| section.contains(o.as_str()));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let redis = TestRedis::start();
    runtime.block_on(fill(&redis.url()));
    let (cached_service, cached) = start_serving(&redis.url(), &[]);
    let (uncached_service, uncached) = start_serving(&redis.url(), &["--near-cache-entries", "0"]);
    runtime.block_on(wait_ready(&cached));
    runtime.block_on(wait_ready(&uncached));
    let mut setup = Setup {
        runtime,
        redis,
        cached,
        cached_service,
        uncached,
        uncached_service,
        own_script: std::path::PathBuf::new(),
    };
    setup.own_script = setup.prebuilt("own", "wrk.format(\"GET\", \"/features/\" .. id)");

    println!(
        "serving benchmark: {ENTITIES} entities x {} views (one hash each), concurrency {CONCURRENCY}, rounds of {}s",
        VIEWS.len(),
        ROUND.as_secs()
    );
    type Section = fn(&Setup);
    let sections: [(&str, Section); 5] = [
        ("single", single_lookups),
        ("open_loop", steady_load),
        ("freshness", cache_freshness),
        ("batch", batch_lookups),
        ("feast", feast_protocol),
    ];
    for (name, section) in sections {
        if runs(name) {
            section(&setup);
        }
    }
    let _ = std::fs::remove_file(&setup.own_script);
}

/// Runs one `round` and reads the CPU time process `pid` spent meanwhile: what the
/// round returned and the microseconds per answer (`answers` counts them).
fn cpu_per_answer<T>(
    pid: u32,
    round: impl FnOnce() -> T,
    answers: impl FnOnce(&T) -> f64,
) -> (T, f64) {
    let before = freshet_testkit::cpu::process_seconds(pid);
    let figures = round();
    let spent = freshet_testkit::cpu::process_seconds(pid) - before;
    let us = spent * 1e6 / answers(&figures);
    (figures, us)
}

/// Single lookups against raw Redis, with the HTTP floor: throughput and CPU per answer.
fn single_lookups(setup: &Setup) {
    let Setup {
        runtime,
        redis,
        cached,
        uncached,
        ..
    } = setup;
    // The floor answers with a real lookup's bytes.
    let answer = runtime.block_on(async {
        reqwest::get(format!("{cached}/features/{}", entity_id(0)))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    });
    let floor = start_http_floor(answer);
    let servers = [
        ("HTTP floor", floor.as_str(), std::process::id()),
        (
            "cache off",
            uncached.as_str(),
            setup.uncached_service.0.id(),
        ),
        ("cache on", cached.as_str(), setup.cached_service.0.id()),
    ];
    let redis_pid = redis.server.pid().expect("Redis runs") as u32;
    let mut totals = [0.0; 4];
    let mut cpu_us = [0.0; 4];
    let hits_before = runtime.block_on(cache_counts(cached));
    for round in 1..=2 {
        let (raw, raw_us) = cpu_per_answer(
            redis_pid,
            || redis_benchmark_hgetall(&redis.url()),
            |raw| raw.requests,
        );
        let mut line = format!(
            "  round {round}: raw Redis HGETALL {:>7.0}/s ({raw_us:.1} us of Redis CPU each)",
            raw.per_second
        );
        totals[0] += raw.per_second;
        cpu_us[0] += raw_us / 2.0;
        for (i, (name, base, pid)) in servers.iter().enumerate() {
            let (figures, us) = cpu_per_answer(
                *pid,
                || wrk(base, &setup.own_script, CONCURRENCY, 1),
                |f| f.requests,
            );
            line += &format!(
                " | {name} {:>7.0}/s ({us:.1} us, p99 {:.2} ms)",
                figures.per_second, figures.p99_ms
            );
            totals[i + 1] += figures.per_second;
            cpu_us[i + 1] += us / 2.0;
        }
        println!("{line}");
    }
    let hits_after = runtime.block_on(cache_counts(cached));
    let (hits, misses) = (hits_after.0 - hits_before.0, hits_after.1 - hits_before.1);
    let [raw, floor, off, on] = totals;
    println!(
        "single lookups / raw Redis HGETALL of one hash (both rounds): cache off {:.2} (aim >= 0.8), cache on {:.2} (aim >= 1.0; hit ratio {:.3} of {:.0} entity reads); HTTP floor {:.2}",
        off / raw,
        on / raw,
        hits / (hits + misses).max(1.0),
        hits + misses,
        floor / raw
    );
    println!(
        "  CPU per answer: raw Redis {:.1} us, HTTP floor {:.1} us, cache off {:.1} us, cache on {:.1} us; cache on / HTTP floor: throughput {:.2}, CPU {:.2}",
        cpu_us[0], cpu_us[1], cpu_us[2], cpu_us[3], on / floor, cpu_us[3] / cpu_us[1]
    );
}

/// Latency at a steady rate, open loop, with raw Redis under the same generator first.
fn steady_load(setup: &Setup) {
    println!(
        "open loop at {OPEN_LOOP_RATE:.0} requests/s for {}s each, the same generator against raw Redis HGETALL (the baseline) and the service:",
        OPEN_LOOP_TIME.as_secs()
    );
    let targets = [
        ("raw Redis HGETALL", setup.redis.url(), Protocol::Redis),
        ("cache on", setup.cached.clone(), Protocol::Http),
        ("cache off", setup.uncached.clone(), Protocol::Http),
    ];
    let mut p99 = Vec::new();
    for (name, address, protocol) in &targets {
        let open = open_loop(address, *protocol, OPEN_LOOP_RATE, OPEN_LOOP_TIME);
        println!(
            "  {name:<17}: achieved {:.0}/s, p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
            open.achieved, open.p50_ms, open.p99_ms, open.p999_ms, open.max_ms
        );
        p99.push(open.p99_ms);
    }
    let [raw, on, off] = p99[..] else {
        unreachable!("three targets")
    };
    println!(
        "open loop p99: cache on {on:.3} ms, cache off {off:.3} ms (aim < 0.5 ms), raw Redis {raw:.3} ms; cache on / raw Redis {:.2}",
        on / raw
    );
}

/// How soon a newer version written to Redis is served instead of the cached one.
fn cache_freshness(setup: &Setup) {
    let mut fresh = setup
        .runtime
        .block_on(freshness(&setup.redis.url(), &setup.cached));
    fresh.sort_by(f64::total_cmp);
    println!(
        "near cache freshness ({} writes to cached entities): the new version served {:.2} ms after the write at p50, {:.2} ms at p99, {:.2} ms at most  (bound 100 ms)",
        fresh.len(),
        percentile(&fresh, 0.5),
        percentile(&fresh, 0.99),
        fresh.last().unwrap()
    );
}

/// Batches of [`BATCH`] entities, cache off and on, beside the same reads straight to
/// Redis. From wrk too (one connection, one request at a time, each of
/// [`BATCH_REQUESTS`] bodies in turn), so the client's own cost (a 780 KB answer per
/// request) stays out of the service's process and runtime.
fn batch_lookups(setup: &Setup) {
    let Setup {
        runtime,
        redis,
        cached,
        uncached,
        ..
    } = setup;
    let port = cached.rsplit(':').next().unwrap();
    let batch_script = std::env::temp_dir().join(format!("freshet-bench-{port}-batch.lua"));
    std::fs::write(
        &batch_script,
        format!(
            "local bodies = {{}}\nlocal n = 0\ninit = function(args)\n  for r = 0, {last} do\n    local ids = {{}}\n    for i = 0, {batch_last} do\n      ids[#ids + 1] = string.format('\"%012d\"', (r * 7919 + i * 13) % {ENTITIES})\n    end\n    bodies[r] = '{{\"entity_ids\":[' .. table.concat(ids, ',') .. ']}}'\n  end\nend\nrequest = function()\n  n = (n + 1) % {requests}\n  return wrk.format('POST', '/features/batch', {{['Content-Type'] = 'application/json'}}, bodies[n])\nend\n",
            last = BATCH_REQUESTS - 1,
            batch_last = BATCH - 1,
            requests = BATCH_REQUESTS
        ),
    )
    .expect("wrk script");
    let mut raw_ms = Vec::new();
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let (mut hits, mut misses) = (0.0, 0.0);
    for round in 1..=2 {
        raw_ms.extend(runtime.block_on(raw_batches(&redis.url())));
        off.push(wrk(uncached, &batch_script, 1, 1));
        let before = runtime.block_on(cache_counts(cached));
        on.push(wrk(cached, &batch_script, 1, 1));
        let after = runtime.block_on(cache_counts(cached));
        hits += after.0 - before.0;
        misses += after.1 - before.1;
        let (off, on) = (off.last().unwrap(), on.last().unwrap());
        println!(
            "  batch round {round}: cache off {:.0} requests/s (p50 {:.2} ms, p99 {:.2} ms) | cache on {:.0} requests/s (p50 {:.2} ms, p99 {:.2} ms)",
            off.per_second, off.p50_ms, off.p99_ms, on.per_second, on.p50_ms, on.p99_ms
        );
    }
    println!(
        "  the cache's hit ratio over the cache-on batches: {:.3} of {:.0} entity reads",
        hits / (hits + misses).max(1.0),
        hits + misses
    );
    raw_ms.sort_by(f64::total_cmp);
    let worst =
        |figures: &[Figures], f: fn(&Figures) -> f64| figures.iter().map(f).fold(0.0, f64::max);
    let mean_rate = |figures: &[Figures]| {
        figures.iter().map(|f| f.per_second).sum::<f64>() / figures.len() as f64
    };
    println!(
        "batch of {BATCH} (both views, wrk, one request at a time, two rounds each): cache off {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms | cache on {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms (the worse round's percentiles)  (aim p99 < 3 ms)",
        mean_rate(&off),
        worst(&off, |f| f.p50_ms),
        worst(&off, |f| f.p99_ms),
        mean_rate(&on),
        worst(&on, |f| f.p50_ms),
        worst(&on, |f| f.p99_ms),
    );
    println!(
        "  baseline, the same {BATCH} HMGETs pipelined straight to Redis (no HTTP, no JSON): p50 {:.2} ms, p99 {:.2} ms; cache off / baseline p99 {:.2}",
        percentile(&raw_ms, 0.5),
        percentile(&raw_ms, 0.99),
        worst(&off, |f| f.p99_ms) / percentile(&raw_ms, 0.99)
    );
    let _ = std::fs::remove_file(batch_script);
}

/// Feast's protocol beside Freshet's own endpoints (cache on): single lookups by wrk,
/// then 1,000-entity requests.
fn feast_protocol(setup: &Setup) {
    let Setup {
        runtime, cached, ..
    } = setup;
    let feast_script = setup.prebuilt(
        "feast",
        &format!(
            "wrk.format(\"POST\", \"/get-online-features\", {{[\"Content-Type\"] = \"application/json\"}}, '{{\"entities\":{{\"user_id\":[\"' .. id .. '\"]}},\"features\":{}}}')",
            serde_json::to_string(&feast_features()).unwrap()
        ),
    );
    println!(
        "Feast's protocol (POST /get-online-features, all {} features) against Freshet's own endpoints, alternated (cache on):",
        feast_features().len()
    );
    let (mut own_total, mut feast_total) = (0.0, 0.0);
    let (mut own_cpu, mut feast_cpu) = (0.0, 0.0);
    let pid = setup.cached_service.0.id();
    for round in 1..=2 {
        let (own, own_us) = cpu_per_answer(
            pid,
            || wrk(cached, &setup.own_script, CONCURRENCY, 2),
            |f| f.requests,
        );
        let (feast, feast_us) = cpu_per_answer(
            pid,
            || wrk(cached, &feast_script, CONCURRENCY, 2),
            |f| f.requests,
        );
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
        own_ms.extend(runtime.block_on(batches(cached)).0);
        feast_ms.extend(runtime.block_on(feast_batches(cached)));
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
    let _ = std::fs::remove_file(feast_script);
}

/// `redis-benchmark` sending `HGETALL` of random entity hashes from [`CONCURRENCY`]
/// connections for about a round; its requests per second.
fn redis_benchmark_hgetall(url: &str) -> RawRound {
    let address = url.trim_start_matches("redis://");
    let (host, port) = address.split_once(':').expect("host:port");
    let requests = (90_000.0 * ROUND.as_secs_f64()) as u64;
    let out = Command::new("redis-benchmark")
        .args(["-h", host, "-p", port, "-c", &CONCURRENCY.to_string()])
        .args([
            "-n",
            &requests.to_string(),
            "-r",
            &ENTITIES.to_string(),
            "--csv",
        ])
        .args(["HGETALL", "fe:user:__rand_int__"])
        .output()
        .expect("run redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout);
    // CSV: a header line, then "HGETALL ...","<requests per second>",...
    let per_second = text
        .lines()
        .filter(|l| l.starts_with("\"HGETALL"))
        .find_map(|l| l.split(',').nth(1))
        .and_then(|v| v.trim_matches('"').parse().ok())
        .unwrap_or_else(|| panic!("no figure in redis-benchmark's output:\n{text}"));
    RawRound {
        per_second,
        requests: requests as f64,
    }
}

struct RawRound {
    per_second: f64,
    requests: f64,
}

/// The HTTP floor: the service's HTTP stack (axum on hyper, one worker thread, mimalloc)
/// answering every `GET /features/{id}` with the fixed bytes of a real lookup, with no
/// state, no middleware and no lookup. What a lookup served over HTTP/1.1 costs at least
/// on this machine; its base URL.
fn start_http_floor(answer: axum::body::Bytes) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port for the floor");
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("the floor's runtime");
        runtime.block_on(async move {
            let app = axum::Router::new().route(
                "/features/{entity_id}",
                axum::routing::get(move || {
                    let answer = answer.clone();
                    async move {
                        (
                            [(axum::http::header::CONTENT_TYPE, "application/json")],
                            answer,
                        )
                    }
                }),
            );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{address}")
}

/// The cache-on service's cache hits and misses so far.
async fn cache_counts(base: &str) -> (f64, f64) {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| freshet_testkit::metrics::value(&text, name).unwrap_or(0.0);
    (
        value("freshet_serving_cache_hits_total"),
        value("freshet_serving_cache_misses_total"),
    )
}

/// For 200 entities in the cache: a newer version written to Redis, then lookups every
/// 0.2 ms until it is served; the time from the write's answer to the first lookup that
/// served it.
async fn freshness(redis_url: &str, base: &str) -> Vec<f64> {
    let mut conn = redis::Client::open(redis_url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let storage = ViewStorage {
        entity_type: "user".into(),
        ttl_ms: 0,
    };
    let served_version = |id: String| {
        let http = http.clone();
        let url = format!("{base}/features/{id}");
        async move {
            let body: serde_json::Value = http.get(url).send().await.unwrap().json().await.unwrap();
            let view = &body["views"][VIEWS[0]];
            (
                view["version"].as_u64().unwrap(),
                view["features"]["click_count_1m"]["source"] == "cache",
            )
        }
    };
    let mut delays = Vec::new();
    for i in 0..200 {
        let id = entity_id((i * 37) % ENTITIES);
        // Read until the cache holds it.
        let (version, _) = served_version(id.clone()).await;
        while !served_version(id.clone()).await.1 {}
        let update = FeatureUpdate {
            view: VIEWS[0].into(),
            entity: id.clone(),
            version: version + 1,
            event_time_ms: now_ms(),
            values: BTreeMap::from([("click_count_1m".to_string(), Value::Long(1))]),
        };
        freshet_store::write_updates(&mut conn, [(&update, &storage)], Writer::Processor)
            .await
            .unwrap();
        let written = Instant::now();
        while served_version(id.clone()).await.0 != version + 1 {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        delays.push(written.elapsed().as_secs_f64() * 1_000.0);
    }
    delays
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
        let ids = batch_ids(r);
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
                entity: entity_id(i),
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
                entity: entity_id(i),
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
        .map(|i| entity_id((r * 7919 + i * 13) % ENTITIES))
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

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}
