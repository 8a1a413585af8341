//! Bearer tokens, as a registry behind an identity-aware gateway takes them (Confluent
//! Cloud with OAuth, for one). Freshet's registry takes basic auth only, so the test puts
//! a gate in front of it that passes a request on only with the right bearer token; what
//! answers is the real registry.

use apache_avro::types::Value;
use apache_avro::Schema;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use freshet_avro::{Registry, RegistryAuth, RegistryError, WireDecoder, WireEncoder};
use serde::Serialize;

const SCHEMA: &str = r#"{"type":"record","name":"E","fields":[{"name":"id","type":"long"}]}"#;
const TOKEN: &str = "eyJ.test-token.sig";

#[derive(Serialize)]
struct E {
    id: i64,
}

/// A gate on a free port: requests with `Authorization: Bearer TOKEN` go on to `upstream`,
/// others get 401.
async fn bearer_gate(upstream: String) -> String {
    let forward = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let upstream = upstream.clone();
        async move {
            let authorized = headers
                .get("authorization")
                .is_some_and(|v| v.as_bytes() == format!("Bearer {TOKEN}").as_bytes());
            if !authorized {
                return (
                    StatusCode::UNAUTHORIZED,
                    [("content-type", "application/json")],
                    Bytes::from_static(br#"{"error_code":401,"message":"Unauthorized"}"#),
                );
            }
            let mut request = reqwest::Client::new()
                .request(method, format!("{upstream}{uri}"))
                .body(body);
            if let Some(t) = headers.get("content-type") {
                request = request.header("content-type", t);
            }
            let response = request.send().await.unwrap();
            let status = response.status();
            (
                status,
                [("content-type", "application/vnd.schemaregistry.v1+json")],
                response.bytes().await.unwrap(),
            )
        }
    };
    let app = axum::Router::new().fallback(forward);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bearer_token_is_sent_on_every_registry_request() {
    let dir = tempfile::tempdir().unwrap();
    let registry = freshet_testkit::Registry::start_at(dir.path().join("journal.jsonl"));
    let gate = bearer_gate(registry.url()).await;
    let with_token = Registry::new(gate.clone()).with_auth(RegistryAuth::Bearer {
        token: TOKEN.into(),
    });
    let without = Registry::new(gate.clone());

    with_token.check().await.unwrap();
    match without.check().await {
        Err(RegistryError::Refused { status: 401, .. }) => {}
        other => panic!("expected a 401 refusal, got {other:?}"),
    }

    // Registration, the latest schema, and decoding all go through with the token.
    let bytes = WireEncoder::new(&with_token, "t", Some(SCHEMA))
        .encode(&E { id: 9 })
        .await
        .unwrap();
    let latest = with_token.latest_schema("t-value").await.unwrap();
    assert_eq!(
        Schema::parse_str(&latest).unwrap(),
        Schema::parse_str(SCHEMA).unwrap()
    );
    let decoded = WireDecoder::new(&with_token, Schema::parse_str(SCHEMA).unwrap())
        .decode(Some(&bytes))
        .await
        .unwrap();
    assert_eq!(
        decoded.value,
        Value::Record(vec![("id".into(), Value::Long(9))])
    );

    // Without it, nothing: the encoder names the refusal and what to set.
    let error = WireEncoder::new(&without, "t", Some(SCHEMA))
        .encode(&E { id: 1 })
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("401") && error.contains("--registry-bearer-token"),
        "{error}"
    );
    let error = WireDecoder::new(&without, Schema::parse_str(SCHEMA).unwrap())
        .decode(Some(&bytes))
        .await
        .unwrap_err();
    assert!(
        error.is_transient() && error.to_string().contains("401"),
        "{error}"
    );
}
