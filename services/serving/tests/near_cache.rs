//! The near cache and latency budgets against a real Redis: what is cached is served
//! from memory, a write to Redis reaches lookups within the staleness bound, a lost
//! tracker never serves stale values, and a budget that runs out answers `timeout`.

use freshet_testkit::{metrics, TestRedis};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::*;

const BOUND: Duration = Duration::from_millis(100);

async fn connection(redis: &TestRedis) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The served version and click count of entity `id`'s clicks view, and their source.
async fn served(serving: &Serving, id: &str) -> (u64, i64, String) {
    let (status, body) = serving.get(&format!("/features/{id}")).await;
    assert_eq!(status, 200, "{body}");
    let view = &body["views"][CLICKS];
    (
        view["version"].as_u64().unwrap_or(0),
        view["features"]["click_count_1m"]["value"]
            .as_i64()
            .unwrap(),
        view["features"]["click_count_1m"]["source"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

/// Waits until the cache has confirmed its tracker (it serves nothing before).
async fn until_cache_serves(serving: &Serving, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while served(serving, id).await.2 != "cache" {
        assert!(Instant::now() < deadline, "the near cache never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_values_follow_every_write_within_the_staleness_bound() {
    let redis = TestRedis::start();
    let serving = Serving::start_with(&redis.url(), |c| c.near_cache_staleness = BOUND).await;
    let now = now_ms();
    write(&redis.url(), &[(click_update("1", 1, now, 1), HOUR_MS)]).await;
    until_cache_serves(&serving, "1").await;
    assert_eq!(served(&serving, "1").await, (1, 1, "cache".into()));

    // A writer bumps the version every 2 ms, recording when each write had completed;
    // a reader checks that no lookup serves a version older than the newest one Redis
    // held a full bound before the lookup began.
    let completed: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (completed, writing, url) = (completed.clone(), writing.clone(), redis.url());
        tokio::spawn(async move {
            let mut conn = redis::Client::open(url)
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let storage = freshet_core::store_layout::ViewStorage {
                entity_type: "user".into(),
                ttl_ms: HOUR_MS,
            };
            let mut version = 1;
            while writing.load(Ordering::Relaxed) {
                version += 1;
                let update = click_update("1", version, now, version as i64);
                freshet_store::write_updates(
                    &mut conn,
                    [(&update, &storage)],
                    freshet_core::store_layout::Writer::Processor,
                )
                .await
                .unwrap();
                completed.lock().unwrap().push((Instant::now(), version));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            version
        })
    };
    let (mut lookups, mut from_cache, mut newest_served) = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let began = Instant::now();
        let (version, clicks, source) = served(&serving, "1").await;
        assert_eq!(
            clicks as u64, version,
            "values and version come from one write"
        );
        let required = completed
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at + BOUND < began)
            .map(|(_, v)| *v)
            .max()
            .unwrap_or(1);
        assert!(
            version >= required,
            "served version {version} from the {source} at lookup {lookups}, but Redis held {required} more than {BOUND:?} before"
        );
        newest_served = newest_served.max(version);
        lookups += 1;
        from_cache += usize::from(source == "cache");
    }
    writing.store(false, Ordering::Relaxed);
    let last = writer.await.unwrap();
    assert!(last > 100, "the writer wrote {last} versions");
    assert!(
        newest_served > 100,
        "lookups followed the writes: {newest_served}"
    );
    assert!(lookups > 100, "{lookups} lookups");
    // The last write is served once it is in, from the store and then from the cache.
    tokio::time::sleep(BOUND).await;
    assert_eq!(served(&serving, "1").await.0, last);
    assert_eq!(
        served(&serving, "1").await,
        (last, last as i64, "cache".into())
    );
    let scrape = metrics::scrape(&serving.address);
    let series = |name: &str| metrics::value(&scrape, name).unwrap_or(0.0);
    assert!(series("freshet_serving_cache_hits_total") >= from_cache as f64);
    assert!(
        series("freshet_serving_cache_invalidations_total") > 50.0,
        "{scrape}"
    );
    assert_eq!(series("freshet_serving_cache_entries"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_tracker_sends_lookups_to_redis_until_it_is_back() {
    let redis = TestRedis::start();
    let serving = Serving::start_with(&redis.url(), |c| c.near_cache_staleness = BOUND).await;
    let now = now_ms();
    write(&redis.url(), &[(click_update("2", 1, now, 1), HOUR_MS)]).await;
    until_cache_serves(&serving, "2").await;
    // An outage of invalidations: the tracker's connection (the client with tracking on)
    // is killed.
    let mut conn = connection(&redis).await;
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    let tracker = clients
        .lines()
        .find(|l| {
            l.split(' ')
                .any(|f| f.starts_with("flags=") && f.contains('t'))
        })
        .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .unwrap_or_else(|| panic!("no tracking client in {clients}"))
        .to_string();
    let killed: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "ID", &tracker][..])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    // Written while no invalidation can reach the cache: never served from it.
    write(&redis.url(), &[(click_update("2", 2, now, 2), HOUR_MS)]).await;
    tokio::time::sleep(BOUND).await;
    let (version, _, _) = served(&serving, "2").await;
    assert_eq!(
        version, 2,
        "the write is served although its invalidation was lost"
    );
    // The tracker reconnects and the cache serves again, with the new value.
    until_cache_serves(&serving, "2").await;
    assert_eq!(served(&serving, "2").await, (2, 2, "cache".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_is_off_by_configuration_and_serves_the_store() {
    let redis = TestRedis::start();
    let serving = Serving::start_with(&redis.url(), |c| c.near_cache_entries = 0).await;
    write(
        &redis.url(),
        &[(click_update("3", 1, now_ms(), 1), HOUR_MS)],
    )
    .await;
    for _ in 0..5 {
        assert_eq!(served(&serving, "3").await, (1, 1, "store".into()));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let scrape = metrics::scrape(&serving.address);
    assert_eq!(
        metrics::value(&scrape, "freshet_serving_cache_hits_total"),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_that_runs_out_answers_timeout_with_defaults_and_is_counted() {
    let redis = TestRedis::start();
    let serving = Serving::start(&redis.url(), 100).await;
    let now = now_ms();
    write(&redis.url(), &[(click_update("4", 1, now, 9), HOUR_MS)]).await;
    // Within budget: the usual answer.
    let (status, body) = serving.get("/features/4?budget_ms=2000").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["views"][CLICKS]["status"], "found");

    // Redis stops answering for 400 ms: a 50 ms budget answers in time, with `timeout`.
    let mut conn = connection(&redis).await;
    let _: () = redis::cmd("CLIENT")
        .arg(&["PAUSE", "400", "ALL"][..])
        .query_async(&mut conn)
        .await
        .unwrap();
    let started = Instant::now();
    let (status, body) = serving.get("/features/5?budget_ms=50").await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(took < Duration::from_millis(300), "answered after {took:?}");
    for view in [CLICKS, PURCHASES] {
        assert_eq!(body["views"][view]["status"], "timeout", "{body}");
    }
    assert_eq!(feature_source(&body), "default");
    // The header does the same, for batches too.
    let response = serving
        .http
        .post(format!("{}/features/batch", serving.base))
        .header("x-freshet-budget-ms", "50")
        .json(&json!({ "entity_ids": ["6", "7"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body["results"][1]["views"][CLICKS]["status"], "timeout",
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Bad budgets are refused, naming the problem.
    for query in ["budget_ms=0", "budget_ms=soon", "budget_ms=60001"] {
        let (status, body) = serving.get(&format!("/features/4?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "bad_budget");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("budget"));
    }
    let scrape = metrics::scrape(&serving.address);
    let timeouts = metrics::value(
        &scrape,
        &format!("freshet_serving_view_lookups_total{{outcome=\"timeout\",view=\"{CLICKS}\"}}"),
    );
    assert_eq!(
        timeouts,
        Some(3.0),
        "one single lookup and two batch entities"
    );
}

fn feature_source(body: &serde_json::Value) -> &str {
    body["views"][CLICKS]["features"]["click_count_1m"]["source"]
        .as_str()
        .unwrap()
}
