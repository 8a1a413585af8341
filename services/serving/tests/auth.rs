//! Every door of the serving API: API keys on every route but the probes (and, by
//! choice, /metrics), the copilot off unless enabled and then only for keys allowed to use
//! it, limited per key; keys never shown back in errors, metrics or logs.

mod common;

use common::*;
use freshet_serving::auth::{AccessConfig, ApiKey, AuthConfig};
use freshet_testkit::TestRedis;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RANKER: &str = "rk-5c1f9e0b-secret";
const ANALYST: &str = "an-77aa0d2e-secret";

fn keys() -> AuthConfig {
    AuthConfig::Keys(vec![
        ApiKey {
            name: "ranker".into(),
            sha256: ApiKey::hash(RANKER),
            copilot: false,
        },
        ApiKey {
            name: "analyst".into(),
            sha256: ApiKey::hash(ANALYST),
            copilot: true,
        },
    ])
}

async fn status_of(
    serving: &Serving,
    method: &str,
    path: &str,
    key: Option<(&str, &str)>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let url = format!("{}{path}", serving.base);
    let mut request = match method {
        "GET" => serving.http.get(url),
        _ => serving
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(r#"{"description": "clicks in the last hour"}"#),
    };
    if let Some((header, value)) = key {
        request = request.header(header, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_need_a_valid_key_and_the_probes_do_not() {
    let redis = TestRedis::start();
    write(
        &redis.url(),
        &[(click_update("7", 3, now_ms(), 4), HOUR_MS)],
    )
    .await;
    let serving = Serving::start_with(&redis.url(), |config| {
        config.access = AccessConfig {
            auth: keys(),
            ..AccessConfig::open()
        };
    })
    .await;
    let bearer = format!("Bearer {RANKER}");

    // No key, a wrong key, a key in the wrong scheme: 401, saying how to send one.
    for key in [
        None,
        Some(("authorization", "Bearer not-a-key")),
        Some(("x-api-key", "not-a-key")),
        Some(("authorization", "Basic cmFua2VyOnB3")),
    ] {
        let (status, headers, body) = status_of(&serving, "GET", "/features/7", key).await;
        assert_eq!(status, 401, "{key:?}: {body}");
        assert_eq!(headers["www-authenticate"], "Bearer");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{key:?}");
    }
    let (_, _, body) = status_of(&serving, "GET", "/features/7", None).await;
    assert!(body.contains("Authorization: Bearer <key>"), "{body}");

    // The right key, either way: the values.
    for key in [("authorization", bearer.as_str()), ("x-api-key", RANKER)] {
        let (status, _, body) = status_of(&serving, "GET", "/features/7", Some(key)).await;
        assert_eq!(status, 200, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            body["views"][CLICKS]["features"]["click_count_1m"]["value"],
            4
        );
    }
    let batch = serving
        .http
        .post(format!("{}/features/batch", serving.base))
        .json(&serde_json::json!({"entity_ids": ["7"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(batch.status(), 401, "batches need a key too");
    for path in ["/openapi.json", "/docs/", "/nowhere"] {
        let (status, _, _) = status_of(&serving, "GET", path, None).await;
        assert_eq!(status, 401, "{path}");
    }
    // The probes and, by default, Prometheus's scrape need none.
    for path in ["/health", "/ready", "/metrics"] {
        let (status, _, _) = status_of(&serving, "GET", path, None).await;
        assert_eq!(status, 200, "{path}");
    }
    // Keys appear nowhere the service answers.
    let (_, _, metrics) = status_of(&serving, "GET", "/metrics", None).await;
    let (_, _, refused) =
        status_of(&serving, "GET", "/features/7", Some(("x-api-key", ANALYST))).await;
    for text in [&metrics, &refused] {
        assert!(!text.contains(RANKER) && !text.contains(ANALYST));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copilot_is_off_by_default_then_for_allowed_keys_only_and_limited_per_key() {
    let redis = TestRedis::start();
    let off = Serving::start_with(&redis.url(), |config| {
        config.access = AccessConfig {
            auth: keys(),
            copilot_enabled: false,
            ..AccessConfig::open()
        };
    })
    .await;
    let (status, _, body) = status_of(
        &off,
        "POST",
        "/api/llm/generate",
        Some(("x-api-key", ANALYST)),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("copilot_disabled"), "{body}");
    let (status, _, _) = status_of(&off, "POST", "/api/llm/generate", None).await;
    assert_eq!(
        status, 401,
        "no key: not even whether the copilot is on is told"
    );

    let on = Serving::start_with(&redis.url(), |config| {
        config.access = AccessConfig {
            auth: keys(),
            copilot_enabled: true,
            copilot_per_minute: 2,
            ..AccessConfig::open()
        };
    })
    .await;
    let (status, _, body) = status_of(
        &on,
        "POST",
        "/api/llm/generate",
        Some(("x-api-key", RANKER)),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("\"forbidden\""), "{body}");
    // An allowed key reaches the copilot (which has no LLM configured here: 503 saying
    // so), twice a minute; the third is 429 with when to retry.
    for _ in 0..2 {
        let (status, _, body) = status_of(
            &on,
            "POST",
            "/api/llm/generate",
            Some(("x-api-key", ANALYST)),
        )
        .await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("llm_not_configured"), "{body}");
    }
    let (status, headers, body) = status_of(
        &on,
        "POST",
        "/api/llm/generate",
        Some(("x-api-key", ANALYST)),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("\"rate_limited\""), "{body}");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "retry after {retry} s");
    // Lookups are not limited by it.
    let (status, _, _) = status_of(&on, "GET", "/features/7", Some(("x-api-key", ANALYST))).await;
    assert_eq!(status, 200);
}

/// The binary: keys from a file (hashes) and the environment (plain, hashed at start);
/// without keys it does not start unless told to serve without them; the plain keys are
/// never logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_takes_keys_from_a_file_and_the_environment_and_refuses_to_start_without() {
    let redis = TestRedis::start();
    let features = std::path::Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../features");
    let serving = |extra: &[&str], env: &[(&str, &str)]| {
        let port = freshet_localstack::free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_freshet-serving"));
        command
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--redis-url", &redis.url()])
            .arg("--features-dir")
            .arg(&features)
            .args(extra)
            .env_remove("FRESHET_API_KEYS")
            .env_remove("FRESHET_API_KEYS_FILE")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        (command, format!("http://127.0.0.1:{port}"))
    };

    let (mut command, _) = serving(&[], &[]);
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("error: no API keys: give --api-keys-file"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys");
    let hash: String = ApiKey::hash(RANKER)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(&file, format!("ranker {hash}\n")).unwrap();
    let env_keys = format!("analyst:{ANALYST}:copilot");
    let (mut command, base) = serving(
        &["--api-keys-file", file.to_str().unwrap()],
        &[("FRESHET_API_KEYS", &env_keys)],
    );
    let mut child = command.spawn().unwrap();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http.get(format!("{base}/health")).send().await.is_err() {
        assert!(Instant::now() < deadline, "freshet-serving did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let get = |key: &'static str| {
        let http = http.clone();
        let url = format!("{base}/features/1");
        async move {
            http.get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(get(RANKER).await, 200, "the key from the file");
    assert_eq!(get(ANALYST).await, 200, "the key from the environment");
    assert_eq!(get("rk-wrong").await, 401);
    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(logs.contains("serving features"), "{logs}");
    assert!(
        !logs.contains(RANKER) && !logs.contains(ANALYST) && !logs.contains(&hash),
        "{logs}"
    );
}
