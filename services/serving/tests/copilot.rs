//! The copilot's REST endpoints over real HTTP, with a local server speaking OpenAI's
//! chat-completions protocol in place of the LLM API: 503 without a key, validated
//! definitions, 422 when the model never gets one right, streamed chat, and the endpoints
//! in the OpenAPI document.

use freshet_copilot::CopilotConfig;
use freshet_serving::metrics::ServingMetrics;
use freshet_serving::ServingConfig;
use freshet_testkit::llm::{FakeLlm, Reply};
use serde_json::{json, Value as Json};
use std::time::Duration;

const VIEW: &str = r#"[view]
name = "user_clicks_5m"
entity = "user"
source = "user_events"
ttl = "1h"
description = "Clicks per user in five-minute windows."

[[feature]]
name = "clicks_5m"
description = "Clicks in the last closed five-minute window."
aggregation = "count"
filter = 'action_type == "click"'
window = { type = "tumbling", size = "5m" }
"#;

/// The service on a free port, its copilot pointed at `llm` (no key when `None`).
async fn start(llm: Option<&FakeLlm>) -> (String, ServingMetrics) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    // Redis is never needed by these endpoints.
    let mut config = ServingConfig::new("redis://127.0.0.1:1");
    config.copilot = CopilotConfig {
        base_url: llm.map_or("http://127.0.0.1:1/v1".into(), FakeLlm::base_url),
        model: "fake-model".into(),
        api_key: llm.map(|_| "test-key".into()),
        timeout: Duration::from_secs(10),
        max_retries: 2,
        max_repairs: 1,
    };
    let definitions = freshet_core::load_dir(
        &std::path::Path::new(
            &std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../features"),
    )
    .unwrap();
    let metrics = ServingMetrics::new();
    let served = metrics.clone();
    tokio::spawn(async move {
        freshet_serving::serve(
            listener,
            &definitions,
            &config,
            served,
            std::future::pending(),
        )
        .await
        .unwrap();
    });
    (base, metrics)
}

async fn post(base: &str, path: &str, body: Json) -> (u16, Json) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn get(base: &str, path: &str) -> (u16, Json) {
    let response = reqwest::get(format!("{base}{path}")).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_every_copilot_endpoint_answers_503_saying_how_to_configure_one() {
    let (base, _) = start(None).await;
    let answers = [
        get(&base, "/api/llm/health").await,
        post(&base, "/api/llm/generate", json!({"description": "clicks"})).await,
        post(&base, "/api/llm/recommend", json!({"use_case": "CTR"})).await,
        post(
            &base,
            "/api/llm/chat",
            json!({"messages": [{"role": "user", "content": "hi"}]}),
        )
        .await,
    ];
    for (status, body) in answers {
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "llm_not_configured");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("set OPENAI_API_KEY"),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_answers_a_validated_definition_or_422_with_the_problems() {
    let wrong_window = VIEW.replace("size = \"5m\"", "size = \"5 minutes\"");
    let llm = FakeLlm::start(vec![
        Reply::error(429, "slow down"),
        Reply::text(format!("Tumbling count.\n```toml\n{VIEW}```")),
        Reply::text(format!("Try.\n```toml\n{wrong_window}```")),
        Reply::text(format!("Again.\n```toml\n{wrong_window}```")),
    ]);
    let (base, _) = start(Some(&llm)).await;
    let (status, health) = get(&base, "/api/llm/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["model"], "fake-model");

    let (status, body) = post(
        &base,
        "/api/llm/generate",
        json!({"description": "clicks per user every five minutes"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["view"], "user_clicks_5m");
    assert_eq!(body["definition"], VIEW);
    assert_eq!(body["reasoning"], "Tumbling count.");
    assert_eq!(body["attempts"], 1);

    let (status, body) = post(&base, "/api/llm/generate", json!({"description": "again"})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_definition");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("invalid after 2 attempt(s)") && message.contains("5 minutes"),
        "{message}"
    );

    let (status, body) = post(&base, "/api/llm/generate", json!({"descriptio": "typo"})).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `descriptio`"),
        "{body}"
    );
    let (status, body) = post(
        &base,
        "/api/llm/generate",
        json!({"description": "clicks", "source": "nope"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no source named `nope`"));
    assert_eq!(llm.remaining(), 0);

    let scrape = freshet_testkit::metrics::scrape(base.trim_start_matches("http://"));
    for series in [
        "freshet_llm_http_attempts_total{status=\"429\"}",
        "freshet_llm_operations_total{operation=\"generate\",outcome=\"ok\"}",
        "freshet_llm_operations_total{operation=\"generate\",outcome=\"invalid\"}",
        "freshet_llm_repairs_total{operation=\"generate\"}",
    ] {
        assert_eq!(
            freshet_testkit::metrics::value(&scrape, series),
            Some(1.0),
            "{series} in:\n{scrape}"
        );
    }
    assert!(freshet_testkit::metrics::value(
        &scrape,
        "freshet_llm_tokens_total{kind=\"completion\"}"
    )
    .is_some_and(|t| t > 0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_answers_whole_or_as_server_sent_events() {
    let llm = FakeLlm::start(vec![
        Reply::text("Views are TOML files in features/."),
        Reply::text("Run freshet features validate."),
    ]);
    let (base, _) = start(Some(&llm)).await;
    let (status, body) = post(
        &base,
        "/api/llm/chat",
        json!({"messages": [{"role": "user", "content": "where are views defined?"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reply"], "Views are TOML files in features/.");

    let response = reqwest::Client::new()
        .post(format!("{base}/api/llm/chat"))
        .json(&json!({
            "messages": [
                {"role": "user", "content": "where are views defined?"},
                {"role": "assistant", "content": "Views are TOML files in features/."},
                {"role": "user", "content": "how do I check them?"}
            ],
            "stream": true
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = response.text().await.unwrap();
    let deltas: Vec<&str> = events
        .split("\n\n")
        .filter(|e| e.starts_with("event: delta"))
        .filter_map(|e| e.split_once("data: ").map(|(_, d)| d))
        .collect();
    assert!(deltas.len() > 2, "{events}");
    assert_eq!(deltas.concat(), "Run freshet features validate.");
    assert!(events.trim_end().ends_with("event: done"), "{events}");
    assert_eq!(llm.received()[1].messages().len(), 4);

    let (status, body) = post(
        &base,
        "/api/llm/chat",
        json!({"messages": [{"role": "assistant", "content": "me first"}]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copilot_endpoints_are_in_the_openapi_document() {
    let (base, _) = start(None).await;
    let (status, doc) = get(&base, "/openapi.json").await;
    assert_eq!(status, 200);
    for path in [
        "/api/llm/health",
        "/api/llm/generate",
        "/api/llm/recommend",
        "/api/llm/chat",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is documented");
    }
    assert!(
        doc["components"]["schemas"]["GenerateRequest"]["properties"]
            .get("description")
            .is_some()
    );
}
