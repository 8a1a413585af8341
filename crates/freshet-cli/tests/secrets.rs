//! Secrets stay secret: every service runs with every credential it can be given (the
//! registry's password, a Redis ACL user's password, serving's API key, a Kafka SASL
//! password passed through to librdkafka), with debug logs on and spans exported; then
//! each service's log, its `/metrics`, serving's error bodies, every exported span and the
//! registry's own log are searched for each secret. Wrong credentials are tried too: what
//! a service says about a refused password must not repeat it.
//!
//! The test also checks that what it searched is real (logs that say the services
//! worked, metrics with their series, spans), so it cannot pass by searching nothing.

use freshet_testkit::otlp::OtlpReceiver;
use freshet_testkit::TestStack;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REGISTRY_PASSWORD: &str = "reg-Secret-81946";
const REDIS_PASSWORD: &str = "redis-Secret-55120";
const API_KEY: &str = "key-Secret-30771";
const KAFKA_PASSWORD: &str = "kafka-Secret-66402";
const WRONG_PASSWORD: &str = "wrong-Secret-19033";
const SECRETS: [&str; 5] = [
    REGISTRY_PASSWORD,
    REDIS_PASSWORD,
    API_KEY,
    KAFKA_PASSWORD,
    WRONG_PASSWORD,
];

fn repo() -> PathBuf {
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../..")
}

/// A binary of the same build: the test's is in `<target>/<profile>/deps/`, the services'
/// in `<target>/<profile>/` (`cargo test --workspace` builds them all).
fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        binary.is_file(),
        "no {} (build the workspace first)",
        binary.display()
    );
    binary
}

/// Starts `program` with its output (stdout and stderr) to `log`, debug logs on.
fn spawn(program: &Path, args: &[&str], env: &[(&str, &str)], log: &Path) -> Child {
    let file = std::fs::File::create(log).unwrap();
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(repo())
        .env("RUST_LOG", "debug")
        .env_remove("FRESHET_REGISTRY_BASIC_AUTH")
        .env_remove("FRESHET_API_KEYS")
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    command.spawn().unwrap()
}

fn stop(mut child: Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn free_port() -> u16 {
    freshet_localstack::free_port()
}

/// Everything searched, by where it came from.
#[derive(Default)]
struct Seen(Vec<(String, String)>);

impl Seen {
    fn add(&mut self, origin: impl Into<String>, text: impl Into<String>) {
        self.0.push((origin.into(), text.into()));
    }

    fn file(&mut self, origin: &str, path: &Path) -> String {
        let text = String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned();
        self.add(origin, text.clone());
        text
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_service_shows_a_configured_secret_in_logs_metrics_errors_or_traces() {
    let stack = TestStack::start_with_registry_users(&[("svc", "write", REGISTRY_PASSWORD)]);
    stack.create_topic("user_events", 3).await;
    let otlp = OtlpReceiver::start();
    let dir = tempfile::tempdir().unwrap();
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    let mut seen = Seen::default();

    // A Redis ACL user with a password.
    let redis = redis::Client::open(stack.redis_url()).unwrap();
    let mut admin = redis.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("ACL")
        .arg(
            &[
                "SETUSER",
                "svc",
                "on",
                &format!(">{REDIS_PASSWORD}"),
                "~*",
                "&*",
                "+@all",
            ][..],
        )
        .query_async(&mut admin)
        .await
        .unwrap();
    let redis_address = stack.redis_url().trim_start_matches("redis://").to_string();
    let redis_url = format!("redis://svc:{REDIS_PASSWORD}@{redis_address}/0");
    let wrong_redis_url = format!("redis://svc:{WRONG_PASSWORD}@{redis_address}/0");
    let registry_auth = format!("svc:{REGISTRY_PASSWORD}");
    let kafka_password = format!("sasl.password={KAFKA_PASSWORD}");
    let brokers = stack.brokers();
    let registry_url = stack.registry_url();
    let otlp_endpoint = otlp.endpoint();
    let common = [
        "--brokers",
        &brokers,
        "--registry-url",
        &registry_url,
        "--kafka-option",
        &kafka_password,
        "--otlp-endpoint",
        &otlp_endpoint,
        "--stack-dir",
        "/nonexistent",
    ];
    let registry_env = [("FRESHET_REGISTRY_BASIC_AUTH", registry_auth.as_str())];

    // The producer: credentials from the environment and a flag.
    let mut args = common.to_vec();
    args.extend(["--metrics-listen", "off", "--count", "400", "--rate", "0"]);
    let mut producer = spawn(
        &sibling("freshet-producer"),
        &args,
        &registry_env,
        &log("producer"),
    );
    assert!(producer.wait().unwrap().success());
    let text = seen.file("producer log", &log("producer"));
    assert!(text.contains("done"), "{text}");

    // The processor, until Redis holds values; its metrics meanwhile.
    let metrics_port = free_port();
    let metrics_listen = format!("127.0.0.1:{metrics_port}");
    let state = dir.path().join("processor-state");
    let mut args = common.to_vec();
    args.extend([
        "--redis-url",
        &redis_url,
        "--metrics-listen",
        &metrics_listen,
    ]);
    args.extend(["--state-dir", state.to_str().unwrap(), "--epoch-ms", "50"]);
    let processor = spawn(
        &sibling("freshet-processor"),
        &args,
        &registry_env,
        &log("processor"),
    );
    wait_for(
        "the processor's first values",
        Duration::from_secs(120),
        || {
            let keys: Vec<String> = redis::Commands::keys(
                &mut redis::Client::open(stack.redis_url())
                    .unwrap()
                    .get_connection()
                    .unwrap(),
                "fe:user:*",
            )
            .unwrap_or_default();
            keys.len() > 20
        },
    );
    let metrics = reqwest::get(format!("http://{metrics_listen}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("freshet_processor"), "{metrics}");
    seen.add("processor /metrics", metrics);
    stop(processor);
    seen.file("processor log", &log("processor"));

    // The serving API with an API key; every kind of answer it gives.
    let serving_port = free_port();
    let listen = format!("127.0.0.1:{serving_port}");
    let keys = format!("ci:{API_KEY}:copilot");
    let serving = spawn(
        &sibling("freshet-serving"),
        &[
            "--listen",
            &listen,
            "--redis-url",
            &redis_url,
            "--otlp-endpoint",
            &otlp_endpoint,
            "--stack-dir",
            "/nonexistent",
        ],
        &[("FRESHET_API_KEYS", keys.as_str())],
        &log("serving"),
    );
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    wait_for("serving", Duration::from_secs(60), || {
        std::net::TcpStream::connect(&listen).is_ok()
    });
    let mut statuses = Vec::new();
    for (method, path, key, body) in [
        ("GET", "/features/1", Some(API_KEY), None),
        ("GET", "/features/1", None, None),
        ("GET", "/features/1", Some(WRONG_PASSWORD), None),
        (
            "POST",
            "/features/batch",
            Some(API_KEY),
            Some("{\"entity_ids\": [1, {}]}"),
        ),
        ("POST", "/features/batch", Some(API_KEY), Some("not json")),
        ("GET", "/no-such-route", Some(API_KEY), None),
        (
            "POST",
            "/api/llm/generate",
            Some(API_KEY),
            Some("{\"description\": \"x\"}"),
        ),
        ("GET", "/metrics", None, None),
        ("GET", "/openapi.json", Some(API_KEY), None),
    ] {
        let mut request = match method {
            "GET" => http.get(format!("{base}{path}")),
            _ => http
                .post(format!("{base}{path}"))
                .header("content-type", "application/json")
                .body(body.unwrap_or_default().to_string()),
        };
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        statuses.push(response.status().as_u16());
        let origin = format!("serving {method} {path}");
        let text = response.text().await.unwrap();
        seen.add(origin, text);
    }
    assert_eq!(
        statuses[..6],
        [200, 401, 401, 422, 400, 404],
        "{statuses:?}"
    );
    stop(serving);
    seen.file("serving log", &log("serving"));

    // The CLI's backfill, through the same doors.
    let mut args = vec![
        "backfill",
        "--view",
        "user_click_stats",
        "--state-dir",
        "/nonexistent",
        "--from",
        "earliest",
    ];
    args.extend(["--brokers", &brokers, "--registry-url", &registry_url]);
    args.extend(["--kafka-option", &kafka_password, "--redis-url", &redis_url]);
    let mut backfill = spawn(&sibling("freshet"), &args, &registry_env, &log("backfill"));
    assert!(
        backfill.wait().unwrap().success(),
        "{}",
        std::fs::read_to_string(log("backfill")).unwrap()
    );
    seen.file("backfill log", &log("backfill"));

    // The Flink sink, briefly.
    let sink_metrics = format!("127.0.0.1:{}", free_port());
    let sink = spawn(
        &sibling("freshet-flink-sink"),
        &[
            "--brokers",
            &brokers,
            "--kafka-option",
            &kafka_password,
            "--redis-url",
            &redis_url,
            "--metrics-listen",
            &sink_metrics,
            "--stack-dir",
            "/nonexistent",
        ],
        &[],
        &log("flink-sink"),
    );
    wait_for("the sink's metrics", Duration::from_secs(60), || {
        std::net::TcpStream::connect(&sink_metrics).is_ok()
    });
    let metrics = reqwest::get(format!("http://{sink_metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    seen.add("flink-sink /metrics", metrics);
    stop(sink);
    seen.file("flink-sink log", &log("flink-sink"));

    // Wrong passwords: what each service says about the refusal.
    let wrong_registry = format!("svc:{WRONG_PASSWORD}");
    let mut args = common.to_vec();
    args.extend(["--metrics-listen", "off", "--count", "1"]);
    let mut refused = spawn(
        &sibling("freshet-producer"),
        &args,
        &[("FRESHET_REGISTRY_BASIC_AUTH", wrong_registry.as_str())],
        &log("producer-refused"),
    );
    assert!(!refused.wait().unwrap().success());
    let text = seen.file(
        "producer log (wrong registry password)",
        &log("producer-refused"),
    );
    assert!(text.contains("HTTP 401"), "{text}");
    let mut args = common.to_vec();
    let state = dir.path().join("refused-state");
    args.extend(["--redis-url", &wrong_redis_url, "--metrics-listen", "off"]);
    args.extend(["--state-dir", state.to_str().unwrap()]);
    let refused = spawn(
        &sibling("freshet-processor"),
        &args,
        &registry_env,
        &log("processor-refused"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log("processor-refused")).unwrap_or_default();
        if text.contains("Redis refused the user or password of the URL") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the processor never reported the refused password:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop(refused);
    seen.file(
        "processor log (wrong Redis password)",
        &log("processor-refused"),
    );

    // Exported spans, and the registry's own log.
    let spans = otlp.spans();
    assert!(
        spans.iter().any(|s| s.service == "freshet-producer")
            && spans.iter().any(|s| s.service == "freshet-serving"),
        "{} spans",
        spans.len()
    );
    for body in otlp.bodies() {
        seen.add(
            "exported spans",
            String::from_utf8_lossy(&body).into_owned(),
        );
    }
    seen.add("spans (decoded)", format!("{spans:?}"));
    let registry_log = stack.registry.journal.with_extension("log");
    seen.file("registry log", &registry_log);

    let mut leaks = Vec::new();
    for (origin, text) in &seen.0 {
        for secret in SECRETS {
            if let Some(at) = text.find(secret) {
                let from = text[..at]
                    .char_indices()
                    .rev()
                    .nth(80)
                    .map_or(0, |(i, _)| i);
                leaks.push(format!(
                    "{secret} in {origin}: ...{}",
                    &text[from..(at + secret.len())]
                ));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets shown:\n{}", leaks.join("\n"));
    assert!(seen.0.len() >= 20, "{} texts searched", seen.0.len());
}
