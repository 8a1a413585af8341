//! The real binary exports a span per request over OTLP, continuing the caller's trace,
//! and shuts down cleanly on SIGTERM (flushing its spans).

use freshet_testkit::otlp::OtlpReceiver;
use freshet_testkit::TestRedis;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn requests_are_spans_in_the_callers_trace_exported_over_otlp() {
    let redis = TestRedis::start();
    let receiver = OtlpReceiver::start();
    let port = freshet_localstack::free_port();
    let features = std::path::Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../features");
    let mut child = Command::new(env!("CARGO_BIN_EXE_freshet-serving"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--redis-url", &redis.url()])
        .arg("--features-dir")
        .arg(&features)
        .args(["--otlp-endpoint", &receiver.endpoint()])
        .arg("--no-auth")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http.get(format!("{base}/health")).send().await.is_err() {
        assert!(Instant::now() < deadline, "freshet-serving did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let response = http
        .get(format!("{base}/features/1"))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = http
        .post(format!("{base}/features/batch"))
        .json(&serde_json::json!({"entity_ids": ["1", "2"], "views": ["user_purchase_stats"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit 15 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "SIGTERM is a clean stop: {status}");

    // The spans were exported (flushed at shutdown): the lookup's in the caller's trace,
    // as a child of the caller's span; each with its route, entity count and views.
    let spans: Vec<_> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.name == "serving.request")
        .collect();
    let route = |s: &freshet_testkit::otlp::ReceivedSpan| s.attributes["http.route"].clone();
    let single = spans
        .iter()
        .find(|s| route(s) == "/features/{entity_id}")
        .unwrap_or_else(|| panic!("no span of the single lookup in {spans:#?}"));
    assert_eq!(single.service, "freshet-serving");
    assert_eq!(single.trace_id, TRACE_ID);
    assert_eq!(single.parent_span_id, PARENT_SPAN_ID);
    assert_eq!(single.attributes["entity_count"], "1");
    assert_eq!(
        single.attributes["views"],
        "user_click_stats,user_purchase_stats"
    );
    let batch = spans
        .iter()
        .find(|s| route(s) == "/features/batch")
        .unwrap_or_else(|| panic!("no span of the batch in {spans:#?}"));
    assert_ne!(
        batch.trace_id, TRACE_ID,
        "a request without traceparent starts a trace"
    );
    assert_eq!(batch.parent_span_id, "");
    assert_eq!(batch.attributes["entity_count"], "2");
    assert_eq!(batch.attributes["views"], "user_purchase_stats");
    assert_eq!(batch.attributes["http.method"], "POST");
}
