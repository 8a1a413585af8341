//! The OpenAPI contract, checked from outside: schemathesis (from PyPI, in
//! `$FRESHET_TOOLS_DIR/schemathesis-venv`) generates requests from the service's own
//! `/openapi.json`, valid and invalid, and runs all its checks on every answer: no server
//! errors, every status and body as documented, valid requests accepted and invalid ones
//! refused. Some entities hold values, so found, missing and defaults are all answered.
//!
//! The service requires API keys here, as in production: schemathesis sends one, and its
//! `ignored_auth` check finds every protected operation refusing requests without it.
//! The copilot's endpoints answer 503 `llm_not_configured` here (no LLM key: the
//! documented answer), so they get every check but `not_a_server_error`.
//!
//! Without that venv the test says so and passes, unless `FRESHET_REQUIRE_TOOLS=1` (set
//! by the project's test command).

mod common;

use common::*;
use freshet_testkit::TestRedis;
use std::path::PathBuf;
use std::process::Command;

/// `schemathesis-venv/bin/st` under `$FRESHET_TOOLS_DIR` (default
/// `~/.cache/freshet/tools`).
fn schemathesis() -> Option<PathBuf> {
    let tools = freshet_testkit::tools_dir();
    let st = tools.join("schemathesis-venv/bin/st");
    let works = Command::new(&st)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    works.then_some(st)
}

/// The API key schemathesis sends (a key with the copilot permission).
const KEY: &str = "contract-test-key";

/// Runs `st run` with `args`, sending [`KEY`]; panics with its report unless it found
/// nothing.
async fn run(st: &PathBuf, base: &str, args: &[&str]) -> String {
    // Schemathesis keeps a cache of what it found in its working folder: not the crate's.
    let scratch = std::env::temp_dir().join("freshet-schemathesis");
    std::fs::create_dir_all(&scratch).expect("a scratch folder");
    // The document itself needs the key: fetched here, given to schemathesis as a file.
    let document = reqwest::Client::new()
        .get(format!("{base}/openapi.json"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let document_path = scratch.join(format!("openapi-{}.json", std::process::id()));
    std::fs::write(&document_path, document).unwrap();
    let mut command = tokio::process::Command::new(st);
    command
        .current_dir(&scratch)
        .arg("run")
        .arg(&document_path)
        .args(["--url", base])
        .args(["--header", &format!("Authorization: Bearer {KEY}")])
        .args([
            "--checks",
            "all",
            "--max-examples",
            "60",
            "--seed",
            "20261206",
        ])
        // One worker: CPython 3.11 before 3.11.8 can fail hypothesis's AST work with
        // "AST constructor recursion depth mismatch" when two threads build ASTs at once
        // (python/cpython#106905); with one worker nothing shares the interpreter.
        .args(["--no-color", "--workers", "1"])
        .args(args)
        .env("SCHEMATHESIS_TELEMETRY", "false");
    let output = command.output().await.expect("schemathesis runs");
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "schemathesis found failures (st run {args:?}):\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_every_answer_as_the_openapi_document_says() {
    let Some(st) = schemathesis() else {
        let reason =
            "no schemathesis-venv with schemathesis found (run scripts/bootstrap.sh --with-flink)";
        if std::env::var("FRESHET_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("{reason}");
        }
        eprintln!("SKIPPED contract check: {reason}");
        return;
    };
    let redis = TestRedis::start();
    let now = now_ms();
    let updates: Vec<_> = (0..20)
        .map(|i| (click_update(&i.to_string(), 2, now - 500, i), HOUR_MS))
        .collect();
    write(&redis.url(), &updates).await;
    let serving = Serving::start_with(&redis.url(), |config| {
        config.max_batch_size = 100;
        config.access = freshet_serving::auth::AccessConfig {
            auth: freshet_serving::auth::AuthConfig::Keys(vec![freshet_serving::auth::ApiKey {
                name: "contract".into(),
                sha256: freshet_serving::auth::ApiKey::hash(KEY),
                copilot: true,
            }]),
            metrics_need_key: false,
            copilot_enabled: true,
            copilot_per_minute: 100_000,
        };
    })
    .await;

    let lookups = run(&st, &serving.base, &["--exclude-path-regex", "^/api/llm"]).await;
    // It ran every lookup operation and generated many requests.
    assert!(lookups.contains("Tested: 5"), "{lookups}");
    let generated: u64 = lookups
        .lines()
        .find_map(|l| l.trim().split_once(" generated"))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count of generated cases in:\n{lookups}"));
    assert!(generated >= 200, "{generated} cases:\n{lookups}");

    let copilot = run(
        &st,
        &serving.base,
        &[
            "--include-path-regex",
            "^/api/llm",
            "--exclude-checks",
            "not_a_server_error",
        ],
    )
    .await;
    assert!(copilot.contains("Tested: 4"), "{copilot}");
}
