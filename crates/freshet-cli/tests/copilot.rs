//! `freshet copilot` as a user runs it, against a local server speaking OpenAI's protocol:
//! a generated definition saved with `--write` is listed and compiles to Flink SQL; chat
//! streams and keeps its history; without a key it says how to configure one.

mod common;
use common::{repo, text};
use freshet_testkit::llm::{FakeLlm, Reply};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const VIEW: &str = r#"[view]
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

/// `freshet` with the LLM settings of `llm` (or none), in `features`.
fn freshet_with(llm: Option<&FakeLlm>, features: &Path, args: &[&str], stdin: &str) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_freshet"));
    command
        .arg("--features-dir")
        .arg(features)
        .args(args)
        .current_dir(repo())
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("FRESHET_LLM_MODEL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(llm) = llm {
        command
            .env("OPENAI_API_KEY", "test-key")
            .env("OPENAI_BASE_URL", llm.base_url())
            .env("FRESHET_LLM_MODEL", "fake-model");
    }
    let mut child = command.spawn().expect("freshet runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A copy of the shipped definitions to write into.
fn features_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let source = repo().join("features");
    std::fs::create_dir(dir.path().join("schemas")).unwrap();
    for entry in std::fs::read_dir(&source).unwrap().flatten() {
        let path = entry.path();
        if path.is_file() {
            std::fs::copy(&path, dir.path().join(entry.file_name())).unwrap();
        }
    }
    for entry in std::fs::read_dir(source.join("schemas")).unwrap().flatten() {
        std::fs::copy(
            entry.path(),
            dir.path().join("schemas").join(entry.file_name()),
        )
        .unwrap();
    }
    dir
}

#[test]
fn a_generated_definition_written_to_features_is_listed_and_compiles() {
    let invalid = VIEW.replace("ttl = \"1h\"", "ttl = \"an hour\"");
    let llm = FakeLlm::start(vec![
        Reply::text(format!("Sliding counts.\n```toml\n{invalid}```")),
        Reply::text(format!("Fixed the ttl.\n```toml\n{VIEW}```")),
    ]);
    let features = features_copy();
    let out = freshet_with(
        Some(&llm),
        features.path(),
        &[
            "copilot",
            "generate",
            "count clicks and purchases per user in the last 10 minutes",
            "--write",
        ],
        "",
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(text(&out.stdout), VIEW, "stdout is the definition alone");
    assert!(stderr.contains("copilot: Fixed the ttl."), "{stderr}");
    assert!(
        stderr.contains("view `user_activity_10m` is valid (answer 2 of at most 3)"),
        "{stderr}"
    );
    let saved = features.path().join("user_activity_10m.toml");
    assert_eq!(std::fs::read_to_string(&saved).unwrap(), VIEW);

    let list = freshet_with(None, features.path(), &["features", "list"], "");
    assert!(list.status.success(), "{}", text(&list.stderr));
    assert!(
        text(&list.stdout).contains("user_activity_10m  (entity: user, source: user_events"),
        "{}",
        text(&list.stdout)
    );
    let sql = freshet_with(
        None,
        features.path(),
        &[
            "compile",
            "--target",
            "flink-sql",
            "--view",
            "user_activity_10m",
        ],
        "",
    );
    assert!(sql.status.success(), "{}", text(&sql.stderr));
    let sql = text(&sql.stdout);
    assert!(
        sql.contains("HOP("),
        "sliding windows compile to HOP: {sql}"
    );
    assert!(sql.contains("clicks_10m"), "{sql}");

    // Generating the same view again does not overwrite the saved one.
    let llm = FakeLlm::start(vec![Reply::text(format!("Again.\n```toml\n{VIEW}```")); 3]);
    let out = freshet_with(
        Some(&llm),
        features.path(),
        &["copilot", "generate", "the same", "--write"],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error: the model's definition was still invalid after 3 attempt(s)")
            && stderr.contains("user_activity_10m"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&saved).unwrap(), VIEW);
}

#[test]
fn chat_streams_answers_and_keeps_the_conversation() {
    let llm = FakeLlm::start(vec![
        Reply::text("Run freshet features list to see them."),
        Reply::text("Yes, with --json."),
    ]);
    let features = features_copy();
    let out = freshet_with(
        Some(&llm),
        features.path(),
        &["copilot", "chat"],
        "how do I see my features?\ncan it print JSON?\n/exit\nnever sent\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "Run freshet features list to see them.\nYes, with --json.\n"
    );
    let received = llm.received();
    assert_eq!(received.len(), 2, "/exit ends the conversation");
    let messages = received[1].messages();
    assert_eq!(messages.len(), 4, "system, question, answer, question");
    assert_eq!(messages[2].1, "Run freshet features list to see them.");
    assert_eq!(messages[3].1, "can it print JSON?");
}

#[test]
fn without_a_key_every_copilot_command_says_how_to_configure_one() {
    let features = features_copy();
    for args in [
        &["copilot", "generate", "clicks per user"][..],
        &["copilot", "recommend", "CTR prediction"][..],
        &["copilot", "chat"][..],
    ] {
        let out = freshet_with(None, features.path(), args, "hello\n");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: the copilot has no API key: set OPENAI_API_KEY"),
            "{args:?}: {stderr}"
        );
    }
}
