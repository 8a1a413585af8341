//! The copilot against a local server speaking OpenAI's chat-completions protocol (plain and
//! streaming), scripted per test: valid answers pass through, invalid ones are repaired or
//! refused, 429s are retried, and without a key nothing is called.

use freshet_copilot::{
    Copilot, CopilotConfig, CopilotError, CopilotMetrics, Message, SchemaOrigin,
};
use freshet_core::definitions::Definitions;
use freshet_testkit::llm::{FakeLlm, Reply};
use futures::StreamExt;
use std::path::Path;
use std::time::Duration;

pub const VALID_VIEW: &str = r#"[view]
name = "user_activity_10m"
entity = "user"
source = "user_events"
ttl = "1h"
description = "Clicks and purchases per user in the last ten minutes."

[[feature]]
name = "clicks_10m"
description = "Clicks in the last ten minutes."
aggregation = "count"
filter = 'action_type == "click"'
window = { type = "sliding", size = "10m", step = "1m" }

[[feature]]
name = "purchases_10m"
description = "Purchases in the last ten minutes."
aggregation = "count"
filter = 'action_type == "purchase"'
window = { type = "sliding", size = "10m", step = "1m" }
"#;

fn answer(reasoning: &str, toml: &str) -> String {
    format!("{reasoning}\n```toml\n{toml}```\n")
}

fn definitions() -> Definitions {
    freshet_core::load_dir(
        &Path::new(
            &std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../features"),
    )
    .unwrap()
}

fn configured(llm: &FakeLlm) -> (Copilot, prometheus::Registry) {
    let registry = prometheus::Registry::new();
    let config = CopilotConfig {
        base_url: llm.base_url(),
        model: "fake-model".into(),
        api_key: Some("test-key".into()),
        timeout: Duration::from_secs(10),
        max_retries: 3,
        max_repairs: 2,
    };
    let copilot = Copilot::new(config, CopilotMetrics::new(&registry).unwrap()).unwrap();
    (copilot, registry)
}

fn metric(registry: &prometheus::Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| {
            labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            })
        })
        .map(|m| {
            if m.get_counter().is_some() {
                m.get_counter().value()
            } else {
                m.get_histogram().get_sample_count() as f64
            }
        })
        .sum()
}

#[tokio::test]
async fn a_valid_definition_comes_back_as_the_model_wrote_it() {
    let llm = FakeLlm::start(vec![Reply::text(answer(
        "Two sliding counts, filtered by action.",
        VALID_VIEW,
    ))]);
    let (copilot, registry) = configured(&llm);
    let defs = definitions();
    let generated = copilot
        .generate(
            &defs,
            "count clicks and purchases per user in the last 10 minutes",
            None,
            &SchemaOrigin::Definitions,
        )
        .await
        .unwrap();
    assert_eq!(generated.toml, VALID_VIEW);
    assert_eq!(generated.view, "user_activity_10m");
    assert_eq!(
        generated.reasoning,
        "Two sliding counts, filtered by action."
    );
    assert_eq!(generated.attempts, 1);

    let received = llm.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].authorization.as_deref(),
        Some("Bearer test-key")
    );
    assert_eq!(received[0].body["model"], "fake-model");
    let messages = received[0].messages();
    assert_eq!(messages[0].0, "system");
    for grounding in [
        "- action_type: string",
        "- amount: double, may be null",
        "approx_count_distinct",
        "user_click_stats on source user_events",
        "window = { type = \"sliding\"",
    ] {
        assert!(
            messages[0].1.contains(grounding),
            "the prompt is grounded in {grounding:?}"
        );
    }
    assert_eq!(
        messages[1],
        (
            "user".to_string(),
            "count clicks and purchases per user in the last 10 minutes".to_string()
        )
    );
    let prompt_words = messages
        .iter()
        .map(|(_, c)| freshet_testkit::llm::tokens(c))
        .sum::<u32>();
    assert_eq!(
        metric(&registry, "freshet_llm_tokens_total", &[("kind", "prompt")]),
        prompt_words as f64
    );
    assert_eq!(
        metric(
            &registry,
            "freshet_llm_tokens_total",
            &[("kind", "completion")]
        ),
        freshet_testkit::llm::tokens(&answer(
            "Two sliding counts, filtered by action.",
            VALID_VIEW
        )) as f64
    );
    assert_eq!(
        metric(
            &registry,
            "freshet_llm_operations_total",
            &[("operation", "generate"), ("outcome", "ok")]
        ),
        1.0
    );
}

#[tokio::test]
async fn an_invalid_definition_is_sent_back_with_the_validators_words() {
    let invalid = VALID_VIEW.replace(
        "aggregation = \"count\"\nfilter = 'action_type == \"click\"'",
        "aggregation = \"sum\"\nfield = \"price\"\nfilter = 'action_type == \"click\"'",
    );
    let llm = FakeLlm::start(vec![
        Reply::text(answer("Sums prices.", &invalid)),
        Reply::text(answer("Fixed: counts instead.", VALID_VIEW)),
    ]);
    let (copilot, registry) = configured(&llm);
    let generated = copilot
        .generate(
            &definitions(),
            "clicks and purchases",
            None,
            &SchemaOrigin::Definitions,
        )
        .await
        .unwrap();
    assert_eq!(generated.attempts, 2);
    assert_eq!(generated.toml, VALID_VIEW);
    assert_eq!(generated.reasoning, "Fixed: counts instead.");

    let second = &llm.received()[1];
    let messages = second.messages();
    assert_eq!(
        messages.len(),
        4,
        "system, user, the invalid answer, the problems"
    );
    assert_eq!(messages[2].0, "assistant");
    assert!(messages[2].1.contains("field = \"price\""));
    let feedback = second.last_message();
    assert!(
        feedback.contains(
            "- 12:9: feature \"clicks_10m\" > field: field `price` is not in the source schema"
        ),
        "the problem names the field: {feedback}"
    );
    assert_eq!(
        metric(
            &registry,
            "freshet_llm_repairs_total",
            &[("operation", "generate")]
        ),
        1.0
    );
}

#[tokio::test]
async fn an_answer_that_never_validates_ends_in_a_clear_error_after_the_bound() {
    let no_source = VALID_VIEW.replace("source = \"user_events\"", "source = \"clickstream\"");
    let llm = FakeLlm::start(vec![
        Reply::text(answer("Try one.", &no_source)),
        Reply::text("I cannot write TOML today."),
        Reply::text(answer("Try three.", &no_source)),
        Reply::text(answer("Never asked for.", VALID_VIEW)),
    ]);
    let (copilot, registry) = configured(&llm);
    let error = copilot
        .generate(&definitions(), "anything", None, &SchemaOrigin::Definitions)
        .await
        .unwrap_err();
    match &error {
        CopilotError::NeverValid { attempts, problems } => {
            assert_eq!(*attempts, 3);
            assert!(
                problems.iter().any(|p| p.contains("clickstream")),
                "{problems:?}"
            );
        }
        other => panic!("expected NeverValid, got {other:?}"),
    }
    assert!(error
        .to_string()
        .starts_with("the model's definition was still invalid after 3 attempt(s)"));
    assert_eq!(llm.remaining(), 1, "the bound stopped the asking");
    assert!(llm.received()[2]
        .last_message()
        .contains("no ```toml block"));
    assert_eq!(
        metric(
            &registry,
            "freshet_llm_operations_total",
            &[("operation", "generate"), ("outcome", "invalid")]
        ),
        1.0
    );
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried() {
    let llm = FakeLlm::start(vec![
        Reply::error(429, "slow down"),
        Reply::error(503, "overloaded"),
        Reply::text(answer("Fine.", VALID_VIEW)),
    ]);
    let (copilot, registry) = configured(&llm);
    let generated = copilot
        .generate(&definitions(), "clicks", None, &SchemaOrigin::Definitions)
        .await
        .unwrap();
    assert_eq!(generated.view, "user_activity_10m");
    assert_eq!(llm.received().len(), 3);
    for (status, count) in [("429", 1.0), ("503", 1.0), ("200", 1.0)] {
        assert_eq!(
            metric(
                &registry,
                "freshet_llm_http_attempts_total",
                &[("status", status)]
            ),
            count,
            "status {status}"
        );
    }

    // Past the retries, the server's own message is the error.
    let llm = FakeLlm::start(vec![Reply::error(500, "model exploded"); 4]);
    let (copilot, _) = configured(&llm);
    let error = copilot
        .generate(&definitions(), "clicks", None, &SchemaOrigin::Definitions)
        .await
        .unwrap_err();
    assert!(matches!(error, CopilotError::Model { .. }), "{error:?}");
    assert_eq!(llm.received().len(), 4, "one try and three retries");
}

#[tokio::test]
async fn without_a_key_nothing_is_called_and_the_error_says_how_to_configure_one() {
    let llm = FakeLlm::start(vec![Reply::text("unused")]);
    let registry = prometheus::Registry::new();
    let config = CopilotConfig {
        base_url: llm.base_url(),
        api_key: None,
        ..CopilotConfig::default()
    };
    let copilot = Copilot::new(config, CopilotMetrics::new(&registry).unwrap()).unwrap();
    assert!(!copilot.is_configured());
    let error = copilot
        .generate(&definitions(), "clicks", None, &SchemaOrigin::Definitions)
        .await
        .unwrap_err();
    assert!(matches!(error, CopilotError::NotConfigured));
    assert!(error.to_string().contains("set OPENAI_API_KEY"), "{error}");
    let error = copilot
        .chat(&definitions(), &[Message::user("hi")])
        .await
        .unwrap_err();
    assert!(matches!(error, CopilotError::NotConfigured));
    assert!(llm.received().is_empty());
}

#[tokio::test]
async fn chat_streams_the_answer_as_it_arrives_and_takes_the_history() {
    let text = "Use freshet features list to see every view and its features.";
    let llm = FakeLlm::start(vec![Reply::text(text)]);
    let (copilot, registry) = configured(&llm);
    let history = vec![
        Message::user("hello"),
        Message::assistant("Hi! Ask me about Freshet."),
        Message::user("how do I see my features?"),
    ];
    let mut stream = copilot.chat_stream(&definitions(), &history).await.unwrap();
    let mut pieces = Vec::new();
    while let Some(piece) = stream.next().await {
        pieces.push(piece.unwrap());
    }
    assert!(pieces.len() > 5, "streamed in pieces: {pieces:?}");
    assert_eq!(pieces.concat(), text);

    let received = &llm.received()[0];
    assert_eq!(received.body["stream"], true);
    let messages = received.messages();
    assert_eq!(messages.len(), 4);
    assert!(messages[0].1.contains("freshet backfill"), "knows the CLI");
    assert!(
        messages[0].1.contains("user_purchase_stats"),
        "knows the views"
    );
    assert_eq!(messages[3].1, "how do I see my features?");
    assert_eq!(
        metric(
            &registry,
            "freshet_llm_tokens_total",
            &[("kind", "completion")]
        ),
        freshet_testkit::llm::tokens(text) as f64
    );

    let error = copilot
        .chat(&definitions(), &[Message::assistant("I speak first")])
        .await
        .unwrap_err();
    assert!(error.is_bad_request(), "{error:?}");
}

#[tokio::test]
async fn recommendations_use_only_real_fields_and_are_repaired_when_not() {
    let first = r#"[
      {"name": "ctr_10m", "description": "Clicks in ten minutes", "aggregation": "count",
       "field": null, "filter": "action_type == \"click\"",
       "window": {"type": "sliding", "size": "10m", "step": "1m"}, "rationale": "Recent intent."},
      {"name": "avg_price_1h", "description": "Mean price", "aggregation": "mean",
       "field": "price", "filter": null,
       "window": {"type": "tumbling", "size": "1h"}, "rationale": "Price sensitivity."}
    ]"#;
    let second = r#"```json
    [
      {"name": "ctr_10m", "description": "Clicks in ten minutes", "aggregation": "count",
       "field": null, "filter": "action_type == \"click\"",
       "window": {"type": "sliding", "size": "10m", "step": "1m"}, "rationale": "Recent intent."},
      {"name": "avg_amount_1h", "description": "Mean purchase amount", "aggregation": "mean",
       "field": "amount", "filter": "action_type == \"purchase\"",
       "window": {"type": "tumbling", "size": "1h"}, "rationale": "Spend level."},
      {"name": "items_seen_30m", "description": "Distinct items viewed", "aggregation": "approx_count_distinct",
       "field": "item_id", "filter": "action_type == \"view\"",
       "window": {"type": "session", "gap": "30m"}, "rationale": "Breadth of browsing."}
    ]
    ```"#;
    let llm = FakeLlm::start(vec![Reply::text(first), Reply::text(second)]);
    let (copilot, _) = configured(&llm);
    let recommendations = copilot
        .recommend(&definitions(), "CTR prediction for e-commerce", None, 5)
        .await
        .unwrap();
    assert_eq!(recommendations.attempts, 2);
    let names: Vec<&str> = recommendations
        .ideas
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(names, ["ctr_10m", "avg_amount_1h", "items_seen_30m"]);
    assert!(recommendations.dropped.is_empty());
    let feedback = llm.received()[1].last_message();
    assert!(
        feedback.contains("avg_price_1h") && feedback.contains("price"),
        "{feedback}"
    );
    // Each idea is a valid feature, and a description generate can take.
    let idea = &recommendations.ideas[1];
    assert!(idea.feature_toml().contains("field = \"amount\""));
    assert!(idea.as_description().contains("mean of amount"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sources_fields_can_come_from_the_schema_registry() {
    let dir = tempfile::tempdir().unwrap();
    let registry = freshet_testkit::Registry::start_at(dir.path().join("journal.jsonl"));
    // The registry holds a newer schema with a field the definitions' file lacks.
    let schema = std::fs::read_to_string(
        Path::new(
            &std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../features/schemas/user_event.v2.avsc"),
    )
    .unwrap()
    .replacen(
        "\"fields\": [",
        "\"fields\": [{\"name\": \"device\", \"type\": [\"null\", \"string\"], \"default\": null},",
        1,
    );
    assert!(schema.contains("device"), "the schema was extended");
    let response = reqwest::Client::new()
        .post(format!(
            "{}/subjects/user_events-value/versions",
            registry.url()
        ))
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .json(&serde_json::json!({ "schema": schema }))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{:?}",
        response.text().await
    );

    let llm = FakeLlm::start(vec![Reply::text(answer("Counts.", VALID_VIEW))]);
    let (copilot, _) = configured(&llm);
    copilot
        .generate(
            &definitions(),
            "clicks",
            Some("user_events"),
            &SchemaOrigin::Registry(registry.url().into()),
        )
        .await
        .unwrap();
    let prompt = &llm.received()[0].messages()[0].1;
    assert!(prompt.contains("- device: string, may be null"), "{prompt}");

    let error = copilot
        .generate(
            &definitions(),
            "clicks",
            None,
            &SchemaOrigin::Registry("http://127.0.0.1:1".into()),
        )
        .await
        .unwrap_err();
    assert!(
        error.to_string().starts_with(
            "cannot read the schema of `user_events-value` from the registry at http://127.0.0.1:1"
        ),
        "{error}"
    );
}
