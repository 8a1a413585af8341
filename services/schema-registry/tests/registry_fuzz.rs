//! A seeded fuzz of the HTTP API: thousands of requests mixing every route with valid and
//! broken ids, subjects, versions, query parameters, bodies and content types, and
//! methods the routes do not take. No answer may be a 5xx, and every rejection must be in
//! Confluent's shape (`{"error_code": int, "message": string}` as
//! `application/vnd.schemaregistry.v1+json`), which is what Confluent's clients parse.

use freshet_testkit::Registry;
use serde_json::Value;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
const REQUESTS: usize = 3_000;

/// xorshift64*: a deterministic sequence, so a failure is reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const SCHEMA: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"}]}"#;

fn body(rng: &mut Rng) -> Option<String> {
    let bodies = [
        None,
        Some(format!(
            r#"{{"schema": {}}}"#,
            serde_json::to_string(SCHEMA).unwrap()
        )),
        Some(format!(
            r#"{{"schema": {}, "schemaType": "PROTOBUF"}}"#,
            serde_json::to_string(SCHEMA).unwrap()
        )),
        Some(format!(
            r#"{{"schema": {}, "references": [{{"name": "x", "subject": "s", "version": 1}}]}}"#,
            serde_json::to_string(SCHEMA).unwrap()
        )),
        Some(r#"{"schema": "{\"type\": \"nope\"}"}"#.to_string()),
        Some(r#"{"schema": 5}"#.to_string()),
        Some(r#"{"compatibility": "FULL"}"#.to_string()),
        Some(r#"{"compatibility": "SIDEWAYS"}"#.to_string()),
        Some(r#"{"mode": "READWRITE"}"#.to_string()),
        Some(r#"{"mode": "IMPORT"}"#.to_string()),
        Some("{not json".to_string()),
        Some("[]".to_string()),
        Some("null".to_string()),
        Some(String::new()),
        Some("\u{0}\u{1}\u{7f}".to_string()),
    ];
    bodies[(rng.next() % bodies.len() as u64) as usize].clone()
}

fn path(rng: &mut Rng) -> String {
    let id = rng.pick(&[
        "1",
        "2",
        "0",
        "-1",
        "abc",
        "99999999999999999999",
        "%ZZ",
        "1.5",
        "",
    ]);
    let subject = rng.pick(&[
        "s",
        "users-value",
        "a%2Fb",
        "%E2%82%AC",
        "%ZZ",
        "x y",
        "..",
        "",
    ]);
    let version = rng.pick(&[
        "1",
        "2",
        "latest",
        "-1",
        "0",
        "-2",
        "x",
        "2147483648",
        "%ZZ",
    ]);
    let templates = [
        "/".to_string(),
        "/schemas/types".to_string(),
        format!("/schemas/ids/{id}"),
        format!("/schemas/ids/{id}/schema"),
        format!("/schemas/ids/{id}/versions"),
        format!("/schemas/ids/{id}/subjects"),
        "/subjects".to_string(),
        format!("/subjects/{subject}"),
        format!("/subjects/{subject}/versions"),
        format!("/subjects/{subject}/versions/{version}"),
        format!("/subjects/{subject}/versions/{version}/schema"),
        format!("/subjects/{subject}/versions/{version}/referencedby"),
        "/config".to_string(),
        format!("/config/{subject}"),
        "/mode".to_string(),
        format!("/mode/{subject}"),
        "/contexts".to_string(),
        format!("/compatibility/subjects/{subject}/versions"),
        format!("/compatibility/subjects/{subject}/versions/{version}"),
        format!("/no/such/{subject}"),
    ];
    let mut path = templates[(rng.next() % templates.len() as u64) as usize].clone();
    let params = rng.next() % 4;
    for i in 0..params {
        let name = rng.pick(&[
            "deleted",
            "deletedOnly",
            "deleted_only",
            "permanent",
            "verbose",
            "normalize",
            "defaultToGlobal",
            "subjectPrefix",
            "offset",
            "limit",
            "format",
            "fetchMaxId",
            "lookupDeletedSchema",
            "unknown",
            "%ZZ",
        ]);
        let value = rng.pick(&[
            "true",
            "True",
            "FALSE",
            "1",
            "abc",
            "-5",
            "",
            "%ZZ",
            "99999999999999999999",
        ]);
        path.push(if i == 0 { '?' } else { '&' });
        path.push_str(&format!("{name}={value}"));
    }
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn no_request_gets_a_5xx_and_every_rejection_has_confluents_shape() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start_at(dir.path().join("journal.jsonl"));
    let client = reqwest::Client::new();
    let mut rng = Rng(0x5eed_f00d);
    let (mut rejected, mut accepted) = (0, 0);
    let mut problems = Vec::new();
    for _ in 0..REQUESTS {
        let method = match rng.next() % 6 {
            0 | 1 => reqwest::Method::GET,
            2 => reqwest::Method::POST,
            3 => reqwest::Method::PUT,
            4 => reqwest::Method::DELETE,
            _ => reqwest::Method::PATCH,
        };
        let path = path(&mut rng);
        let content_type = rng.pick(&[
            CONTENT_TYPE,
            "application/json",
            "text/plain",
            "application/octet-stream",
        ]);
        let mut request = client
            .request(method.clone(), format!("{}{path}", registry.url()))
            .header("content-type", content_type);
        if let Some(body) = body(&mut rng) {
            request = request.body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let shape = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or_default().to_string());
        let text = response.text().await.unwrap();
        let what = format!("{method} {path} -> {status} {shape:?} {text}");
        if status.is_server_error() {
            problems.push(format!("5xx: {what}"));
            continue;
        }
        if status.is_success() {
            accepted += 1;
            continue;
        }
        rejected += 1;
        let body: Option<Value> = serde_json::from_str(&text).ok();
        let shaped = shape.as_deref() == Some(CONTENT_TYPE)
            && body.as_ref().is_some_and(|b| {
                b["error_code"].is_u64() && b["message"].as_str().is_some_and(|m| !m.is_empty())
            });
        if !shaped {
            problems.push(format!("not Confluent's shape: {what}"));
        }
    }
    println!(
        "{REQUESTS} requests: {accepted} accepted, {rejected} rejected, {} problems",
        problems.len()
    );
    assert!(
        problems.is_empty(),
        "{:#?}",
        &problems[..problems.len().min(10)]
    );
    assert!(
        accepted > REQUESTS / 10 && rejected > REQUESTS / 10,
        "both kinds were exercised"
    );
}
