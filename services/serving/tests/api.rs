//! The serving API against a real Redis, over real HTTP. Values are written with the same
//! versioned writes the processor uses (freshet-store over the core's layout).

use freshet_core::store_layout::{entity_key, FeatureUpdate};
use freshet_core::Value;
use freshet_testkit::{metrics, TestRedis};
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

mod common;
use common::*;

/// A feature of one view in a served entity.
fn feature<'a>(entity: &'a Json, view: &str, name: &str) -> &'a Json {
    &entity["views"][view]["features"][name]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_written_by_the_processors_writer_come_back_exactly() {
    let redis = TestRedis::start();
    let serving = Serving::start(&redis.url(), 1_000).await;
    let event_time = now_ms() - 2_000;
    let purchase = FeatureUpdate {
        view: PURCHASES.into(),
        entity: "42".into(),
        version: 9,
        event_time_ms: event_time - 1_000,
        values: BTreeMap::from([
            ("purchase_count_5m".to_string(), Value::Long(2)),
            (
                "purchase_amount_sum_1h".to_string(),
                Value::Double(0.1 + 0.2),
            ),
            (
                "avg_purchase_amount_1h".to_string(),
                Value::Double(12.345678901234567),
            ),
        ]),
    };
    write(
        &redis.url(),
        &[
            (click_update("42", 17, event_time, 3), HOUR_MS),
            (purchase, 0),
        ],
    )
    .await;

    let (status, body) = serving.get("/features/42").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entity_id"], "42");
    let clicks = &body["views"][CLICKS];
    assert_eq!(clicks["status"], "found");
    assert_eq!(clicks["version"], 17);
    assert_eq!(clicks["event_time_ms"], event_time);
    let age = clicks["age_ms"].as_i64().unwrap();
    assert!((2_000..12_000).contains(&age), "age {age}");
    for (name, value) in [
        ("click_count_1m", json!(3)),
        ("view_count_1m", json!(30)),
        ("click_count_10m", json!(103)),
        ("distinct_items_viewed_10m", json!(7)),
    ] {
        let f = feature(&body, CLICKS, name);
        assert_eq!(f["value"], value, "{name}");
        assert_eq!(f["source"], "store", "{name}");
        assert_eq!(f["age_ms"], age, "{name}");
    }
    // Floats come back bit for bit; a feature the hash lacks serves its default.
    assert_eq!(
        feature(&body, PURCHASES, "purchase_amount_sum_1h")["value"],
        json!(0.1 + 0.2)
    );
    assert_eq!(
        feature(&body, PURCHASES, "avg_purchase_amount_1h")["value"],
        json!(12.345678901234567)
    );
    let session = feature(&body, PURCHASES, "events_per_session");
    assert_eq!(session["value"], 0);
    assert_eq!(session["source"], "default");
    assert_eq!(session["age_ms"], Json::Null);

    // An older version written later never replaces the served values.
    write(
        &redis.url(),
        &[(click_update("42", 16, event_time, 99), HOUR_MS)],
    )
    .await;
    let (_, body) = serving.get("/features/42").await;
    assert_eq!(feature(&body, CLICKS, "click_count_1m")["value"], 3);

    // Selection by view and feature.
    let (status, body) = serving
        .get("/features/42?view=user_click_stats&features=click_count_1m,click_count_10m")
        .await;
    assert_eq!(status, 200, "{body}");
    let views = body["views"].as_object().unwrap();
    assert_eq!(views.keys().collect::<Vec<_>>(), [CLICKS]);
    let features = views[CLICKS]["features"].as_object().unwrap();
    assert_eq!(
        features.keys().collect::<Vec<_>>(),
        ["click_count_10m", "click_count_1m"]
    );
    // ... listed in the order of the definition.
    let raw = serving
        .http
        .get(format!("{}/features/42", serving.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let at = |name: &str| raw.find(&format!("\"{name}\"")).unwrap();
    assert!(at(CLICKS) < at(PURCHASES), "{raw}");
    assert!(at("click_count_1m") < at("view_count_1m"), "{raw}");
    assert!(at("view_count_1m") < at("click_count_10m"), "{raw}");
    // Features alone select the views that have them.
    let (_, body) = serving.get("/features/42?features=purchase_count_5m").await;
    assert_eq!(body["views"].as_object().unwrap().len(), 1);
    assert_eq!(feature(&body, PURCHASES, "purchase_count_5m")["value"], 2);

    // An entity with nothing stored gets every default, not an error.
    let (status, body) = serving.get("/features/nobody").await;
    assert_eq!(status, 200);
    assert_eq!(body["views"][CLICKS]["status"], "missing");
    assert_eq!(
        feature(&body, PURCHASES, "avg_purchase_amount_1h")["value"],
        Json::Null
    );
    assert_eq!(
        feature(&body, PURCHASES, "purchase_amount_sum_1h")["value"],
        json!(0.0)
    );
    assert_eq!(
        feature(&body, CLICKS, "click_count_1m")["source"],
        "default"
    );

    // A corrupt entry serves defaults (and is logged) instead of failing the lookup.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let now = now_ms().to_string();
    let _: () = redis::cmd("HSET")
        .arg(entity_key("user", "bad"))
        .arg(&[
            "user_click_stats:_version",
            "1",
            "user_click_stats:_event_time",
            &now,
            "user_click_stats:click_count_1m",
            "{oops",
        ])
        .query_async(&mut conn)
        .await
        .unwrap();
    let (status, body) = serving.get("/features/bad").await;
    assert_eq!(status, 200);
    assert_eq!(body["views"][CLICKS]["status"], "unreadable");
    assert_eq!(feature(&body, CLICKS, "click_count_1m")["value"], 0);
    assert_eq!(
        feature(&body, CLICKS, "click_count_1m")["source"],
        "default"
    );
    assert_eq!(body["views"][PURCHASES]["status"], "missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_a_thousand_mixes_present_missing_and_expired_entities_in_order() {
    let redis = TestRedis::start();
    let serving = Serving::start(&redis.url(), 1_000).await;
    let now = now_ms();
    // Entity i: i % 3 == 0 fresh, == 1 nothing stored, == 2 older than the view's 1 h TTL
    // (its key has not expired in Redis: a backfill wrote old values).
    let mut updates = Vec::new();
    for i in (0..1_000).filter(|i| i % 3 != 1) {
        let event_time = if i % 3 == 0 {
            now - 1_000 - i
        } else {
            now - HOUR_MS - 60_000
        };
        updates.push((
            click_update(&format!("u{i}"), 100 + i as u64, event_time, i),
            0,
        ));
    }
    write(&redis.url(), &updates).await;
    // Ids in a scrambled order, to see that answers follow the request, not the store.
    let order: Vec<i64> = (0..1_000).map(|k| (k * 7919) % 1_000).collect();
    let ids: Vec<String> = order.iter().map(|i| format!("u{i}")).collect();

    let started = Instant::now();
    let (status, body) = serving
        .post(
            "/features/batch",
            &json!({ "entity_ids": ids, "views": [CLICKS] }),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["batch_size"], 1_000);
    let latency = body["server_latency_ms"].as_f64().unwrap();
    assert!(
        latency > 0.0 && latency <= took.as_secs_f64() * 1_000.0,
        "{latency}"
    );
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 1_000);
    for (result, &i) in results.iter().zip(&order) {
        assert_eq!(result["entity_id"], format!("u{i}"));
        let view = &result["views"][CLICKS];
        let clicks = feature(result, CLICKS, "click_count_1m");
        match i % 3 {
            0 => {
                assert_eq!(view["status"], "found", "u{i}");
                assert_eq!(view["version"], 100 + i);
                assert_eq!(clicks["value"], i, "u{i}");
                assert_eq!(clicks["source"], "store");
                let age = clicks["age_ms"].as_i64().unwrap();
                assert!(
                    age >= 1_000 + i && age < 1_000 + i + 30_000,
                    "u{i}: age {age}"
                );
                assert_eq!(feature(result, CLICKS, "view_count_1m")["value"], i * 10);
            }
            1 => {
                assert_eq!(view["status"], "missing", "u{i}");
                assert_eq!(clicks["value"], 0);
                assert_eq!(clicks["source"], "default");
            }
            _ => {
                assert_eq!(view["status"], "expired", "u{i}");
                assert_eq!(clicks["value"], 0, "u{i}: expired values are not served");
                assert_eq!(clicks["source"], "default");
                assert_eq!(clicks["age_ms"], Json::Null);
            }
        }
    }

    // The older spelling, integer ids, and a feature selection.
    write(&redis.url(), &[(click_update("7", 1, now, 5), 0)]).await;
    let (status, body) = serving
        .post(
            "/features/batch",
            &json!({ "user_ids": [7, "7", 8], "features": ["click_count_1m"] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["entity_id"], "7");
    assert_eq!(feature(&results[0], CLICKS, "click_count_1m")["value"], 5);
    assert_eq!(feature(&results[1], CLICKS, "click_count_1m")["value"], 5);
    assert_eq!(
        feature(&results[2], CLICKS, "click_count_1m")["source"],
        "default"
    );
    assert_eq!(results[0]["views"].as_object().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_is_not_a_hash_is_served_as_unreadable_alone_and_in_a_batch() {
    let redis = TestRedis::start();
    let serving = Serving::start(&redis.url(), 1_000).await;
    let now = now_ms();
    let updates: Vec<_> = (1..=20)
        .map(|i| (click_update(&i.to_string(), 10, now - 1_000, i), 0))
        .collect();
    write(&redis.url(), &updates).await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(entity_key("user", "5"))
        .arg("not a hash")
        .query_async(&mut conn)
        .await
        .unwrap();

    let (status, body) = serving.get("/features/5").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["views"][CLICKS]["status"], "unreadable");
    assert_eq!(
        feature(&body, CLICKS, "click_count_1m")["source"],
        "default"
    );

    // 20 entities and both views: 20 reads, one per entity.
    let ids: Vec<String> = (1..=20).map(|i| i.to_string()).collect();
    let (status, body) = serving
        .post("/features/batch", &json!({ "entity_ids": ids }))
        .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results[4]["entity_id"], "5");
    assert_eq!(results[4]["views"][CLICKS]["status"], "unreadable");
    assert_eq!(feature(&results[4], CLICKS, "click_count_1m")["value"], 0);
    assert_eq!(results[4]["views"][PURCHASES]["status"], "unreadable");
    for (k, result) in results.iter().enumerate().filter(|(k, _)| *k != 4) {
        assert_eq!(result["views"][CLICKS]["status"], "found", "{result}");
        assert_eq!(feature(result, CLICKS, "click_count_1m")["value"], k + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_json_error_naming_the_problem() {
    let redis = TestRedis::start();
    let serving = Serving::start(&redis.url(), 10).await;
    let check = |(status, body): (u16, Json), want_status: u16, code: &str, mentions: &str| {
        assert_eq!(status, want_status, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(mentions),
            "{message:?} should mention {mentions:?}"
        );
    };
    let batch = "/features/batch";
    check(
        serving
            .post_raw(batch, "application/json", "{\"entity_ids\": [1,".into())
            .await,
        400,
        "bad_request",
        "EOF",
    );
    check(
        serving.post(batch, &json!({"entity_ids": "u1"})).await,
        422,
        "bad_request",
        "entity_ids",
    );
    check(
        serving.post(batch, &json!({"entity_ids": [true]})).await,
        422,
        "bad_request",
        "an entity id (a string or an integer)",
    );
    check(
        serving
            .post(batch, &json!({"entity_ids": ["1"], "colour": "red"}))
            .await,
        422,
        "bad_request",
        "colour",
    );
    check(
        serving.post_raw(batch, "text/plain", "{}".into()).await,
        415,
        "unsupported_media_type",
        "application/json",
    );
    check(
        serving.post(batch, &json!({"entity_ids": []})).await,
        400,
        "empty_batch",
        "entity_ids",
    );
    check(
        serving.post(batch, &json!({})).await,
        400,
        "no_entity_ids",
        "entity_ids",
    );
    check(
        serving
            .post(batch, &json!({"entity_ids": ["1"], "user_ids": ["2"]}))
            .await,
        400,
        "both_id_lists",
        "user_ids",
    );
    check(
        serving.post(batch, &json!({"entity_ids": ["1", ""]})).await,
        400,
        "bad_entity_id",
        "entity id 1 is empty",
    );
    let eleven: Vec<String> = (0..11).map(|i| i.to_string()).collect();
    check(
        serving.post(batch, &json!({ "entity_ids": eleven })).await,
        413,
        "batch_too_large",
        "maximum of 10",
    );
    let huge = format!("{{\"entity_ids\": [\"{}\"]}}", "x".repeat(200_000));
    check(
        serving.post_raw(batch, "application/json", huge).await,
        413,
        "body_too_large",
        "length limit",
    );
    check(
        serving
            .post(batch, &json!({"entity_ids": ["1"], "views": ["nope"]}))
            .await,
        404,
        "unknown_view",
        "`nope`; known views: user_click_stats, user_purchase_stats",
    );
    check(
        serving.get("/features/1?view=nope").await,
        404,
        "unknown_view",
        "nope",
    );
    check(
        serving
            .get("/features/1?view=user_click_stats&features=purchase_count_5m")
            .await,
        404,
        "unknown_feature",
        "`purchase_count_5m` in view(s) user_click_stats",
    );
    check(
        serving.get("/features/1?features=click_count_1m,").await,
        400,
        "empty_name",
        "feature",
    );
    check(
        serving.get("/features/1?veiw=x").await,
        400,
        "bad_request",
        "veiw",
    );
    check(
        serving.get("/nothing/here").await,
        404,
        "not_found",
        "/nothing/here",
    );
    let (status, body) = {
        let r = serving
            .http
            .delete(format!("{}/features/1", serving.base))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Json>().await.unwrap())
    };
    check((status, body), 405, "method_not_allowed", "DELETE");
    // After all that, the service still answers.
    assert_eq!(serving.get("/features/1").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_gives_fast_503s_and_the_service_recovers_by_itself() {
    let mut redis = TestRedis::start();
    let serving = Serving::start(&redis.url(), 1_000).await;
    write(&redis.url(), &[(click_update("1", 1, now_ms(), 4), 0)]).await;
    assert_eq!(serving.get("/features/1").await.0, 200);
    assert_eq!(serving.get("/ready").await.0, 200);
    assert_eq!(clicks_of_1_in_a_large_batch(&serving).await, 4);

    redis.stop();
    for _ in 0..5 {
        let started = Instant::now();
        let (status, body) = serving.get("/features/1").await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "store_unavailable");
        assert!(body["error"]["message"].as_str().unwrap().contains("Redis"));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "503 took {:?}",
            started.elapsed()
        );
        let (status, _) = serving
            .post("/features/batch", &json!({"entity_ids": ["1"]}))
            .await;
        assert_eq!(status, 503);
        // Large batches read over their own pooled connections; the same policy holds.
        let started = Instant::now();
        let (status, body) = serving
            .post("/features/batch", &json!({"entity_ids": hundred_ids()}))
            .await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "store_unavailable");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    let (status, body) = serving.get("/ready").await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "not_ready");
    assert_eq!(
        serving.get("/health").await.0,
        200,
        "the process itself is fine"
    );

    redis.restart();
    write(&redis.url(), &[(click_update("1", 2, now_ms(), 6), 0)]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = serving.get("/features/1").await;
        if status == 200 {
            assert_eq!(feature(&body, CLICKS, "click_count_1m")["value"], 6);
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(serving.get("/ready").await.0, 200);
    assert_eq!(clicks_of_1_in_a_large_batch(&serving).await, 6);
}

/// Ids 1 to 100: a batch large enough to be read over a pooled batch connection.
fn hundred_ids() -> Vec<String> {
    (1..=100).map(|i| i.to_string()).collect()
}

/// Entity 1's `click_count_1m` from a batch of [`hundred_ids`], which must succeed.
async fn clicks_of_1_in_a_large_batch(serving: &Serving) -> Json {
    let (status, body) = serving
        .post("/features/batch", &json!({"entity_ids": hundred_ids()}))
        .await;
    assert_eq!(status, 200, "{body}");
    feature(&body["results"][0], CLICKS, "click_count_1m")["value"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_right_after_redis_restarted_is_answered() {
    let mut redis = TestRedis::start();
    let serving = Serving::start(&redis.url(), 1_000).await;
    write(&redis.url(), &[(click_update("1", 1, now_ms(), 4), 0)]).await;
    assert_eq!(clicks_of_1_in_a_large_batch(&serving).await, 4);
    // Redis restarts while nothing is asked: the pooled batch connection is dead, and
    // the service has not noticed. Reads are idempotent, so it retries on a new one.
    redis.stop();
    redis.restart();
    write(&redis.url(), &[(click_update("1", 2, now_ms(), 6), 0)]).await;
    assert_eq!(clicks_of_1_in_a_large_batch(&serving).await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_traffic_show_latency_batches_hits_costs_and_ages() {
    let redis = TestRedis::start();
    let serving = Serving::start(&redis.url(), 1_000).await;
    let now = now_ms();
    write(
        &redis.url(),
        &[
            (click_update("a", 1, now - 5_000, 1), 0),
            (click_update("b", 1, now - 5_000, 1), 0),
            (click_update("old", 1, now - 2 * HOUR_MS, 1), 0),
        ],
    )
    .await;
    for _ in 0..3 {
        assert_eq!(serving.get("/features/a").await.0, 200);
    }
    let ids = json!({"entity_ids": ["a", "b", "old", "none"], "views": [CLICKS]});
    assert_eq!(serving.post("/features/batch", &ids).await.0, 200);
    assert_eq!(serving.get("/features/a?view=nope").await.0, 404);

    let text = metrics::scrape(&serving.address);
    let value = |series: &str| {
        metrics::value(&text, series).unwrap_or_else(|| panic!("no series {series} in\n{text}"))
    };
    let single = "endpoint=\"GET /features/{entity_id}\"";
    assert_eq!(
        value(&format!(
            "freshet_serving_request_duration_seconds_count{{{single},status=\"200\"}}"
        )),
        3.0
    );
    assert_eq!(
        value(&format!(
            "freshet_serving_request_duration_seconds_count{{{single},status=\"404\"}}"
        )),
        1.0
    );
    let single_sum = value(&format!(
        "freshet_serving_request_duration_seconds_sum{{{single},status=\"200\"}}"
    ));
    assert!(single_sum > 0.0 && single_sum < 3.0, "{single_sum}");
    assert_eq!(
        value("freshet_serving_request_duration_seconds_count{endpoint=\"POST /features/batch\",status=\"200\"}"),
        1.0
    );
    assert_eq!(value("freshet_serving_batch_size_count"), 1.0);
    assert_eq!(value("freshet_serving_batch_size_sum"), 4.0);
    // Three single lookups of `a` (both views) and the batch (clicks only).
    let lookups = |view: &str, outcome: &str| {
        value(&format!(
            "freshet_serving_view_lookups_total{{outcome=\"{outcome}\",view=\"{view}\"}}"
        ))
    };
    assert_eq!(lookups(CLICKS, "found"), 3.0 + 2.0);
    assert_eq!(lookups(CLICKS, "expired"), 1.0);
    assert_eq!(lookups(CLICKS, "missing"), 1.0);
    assert_eq!(lookups(PURCHASES, "missing"), 3.0);
    assert_eq!(lookups(PURCHASES, "found"), 0.0);
    for phase in ["redis", "compute"] {
        let series = format!("{{phase=\"{phase}\",view=\"{CLICKS}\"}}");
        assert_eq!(
            value(&format!("freshet_serving_view_fetch_seconds_count{series}")),
            4.0
        );
        let sum = value(&format!("freshet_serving_view_fetch_seconds_sum{series}"));
        assert!(sum > 0.0 && sum < 2.0, "{phase}: {sum}");
    }
    let ages = format!("{{view=\"{CLICKS}\"}}");
    assert_eq!(
        value(&format!("freshet_serving_value_age_seconds_count{ages}")),
        5.0
    );
    let age_sum = value(&format!("freshet_serving_value_age_seconds_sum{ages}"));
    assert!(
        (25.0..60.0).contains(&age_sum),
        "five values about 5 s old: {age_sum}"
    );
    assert_eq!(value("freshet_serving_store_errors_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_and_docs_page_describe_the_api() {
    let redis = TestRedis::start();
    let serving = Serving::start(&redis.url(), 1_000).await;
    let (status, doc) = serving.get("/openapi.json").await;
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/features/{entity_id}",
        "/features/batch",
        "/get-online-features",
        "/health",
        "/ready",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from {:?}",
            paths.keys()
        );
    }
    // Either id list, not both; at most the server's largest batch.
    let batch = &doc["components"]["schemas"]["BatchRequest"]["oneOf"];
    assert_eq!(batch[0]["required"], json!(["entity_ids"]), "{batch}");
    assert_eq!(batch[0]["properties"]["entity_ids"]["maxItems"], 1_000);
    assert_eq!(batch[1]["required"], json!(["user_ids"]), "{batch}");
    // A served value is a scalar.
    assert_eq!(
        doc["components"]["schemas"]["FeatureValue"]["properties"]["value"]["type"],
        json!(["number", "string", "boolean", "null"])
    );
    let feast = &doc["components"]["schemas"]["GetOnlineFeaturesRequest"]["properties"];
    for field in [
        "entities",
        "features",
        "feature_service",
        "full_feature_names",
    ] {
        assert!(feast.get(field).is_some(), "{field} missing from {feast}");
    }
    // Feast's values are numbers, strings, booleans or null: any JSON value, not `object`.
    let values = &doc["components"]["schemas"]["FeastColumn"]["properties"]["values"];
    assert_eq!(values["type"], "array", "{values}");
    assert!(values["items"].get("type").is_none(), "{values}");
    let page = serving
        .http
        .get(format!("{}/docs/", serving.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    // The page's assets are served by the service itself, not fetched from the internet.
    let asset = serving
        .http
        .get(format!("{}/docs/swagger-ui-bundle.js", serving.base))
        .send()
        .await
        .unwrap();
    assert_eq!(asset.status(), 200);
    assert!(asset.text().await.unwrap().len() > 100_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_redis_does_not_answer_in_time_get_408_after_the_request_timeout() {
    use nix::sys::signal::{kill, Signal};
    let redis = TestRedis::start();
    write(&redis.url(), &[(click_update("1", 1, now_ms(), 4), 0)]).await;
    let serving = Serving::start_with(&redis.url(), |config| {
        config.request_timeout = Duration::from_millis(300);
        // Longer than the request's, so the request timeout is what ends the wait.
        config.redis_timeout = Duration::from_secs(10);
        config.near_cache_entries = 0;
    })
    .await;
    assert_eq!(serving.get("/features/1").await.0, 200);

    // Redis stalls (its process stopped): nothing it should answer comes back.
    let redis_process = nix::unistd::Pid::from_raw(redis.server.pid().expect("Redis runs"));
    kill(redis_process, Signal::SIGSTOP).unwrap();
    let single = format!("{}/features/1", serving.base);
    let batch = format!("{}/features/batch", serving.base);
    for request in [
        serving.http.get(&single),
        serving.http.get(format!("{single}?view={CLICKS}")),
        serving
            .http
            .post(&batch)
            .json(&json!({"entity_ids": ["1", "2"]})),
    ] {
        let started = Instant::now();
        let response = request.send().await.unwrap();
        let waited = started.elapsed();
        assert_eq!(response.status().as_u16(), 408);
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
            "408 after {waited:?}, the request timeout is 300 ms"
        );
    }
    kill(redis_process, Signal::SIGCONT).unwrap();
    // Redis back: lookups are answered again, with the value it holds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = serving.get("/features/1").await;
        if status == 200 {
            assert_eq!(feature(&body, CLICKS, "click_count_1m")["value"], 4);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
