//! The registry through real clients: schema_registry_converter (as Rust producers and
//! consumers use it) and plain HTTP for every status and error code.

use freshet_testkit::Registry;
use reqwest::StatusCode;
use schema_registry_converter::async_impl::schema_registry::{
    get_all_subjects, get_all_versions, get_schema_by_guid, get_schema_by_id,
    get_schema_by_id_and_type, get_schema_by_subject, get_schema_by_subject_and_version,
    is_compatible_schema, post_schema, SrSettings,
};
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use serde_json::{json, Value};

const V1: &str = include_str!("../../../features/schemas/user_event.v1.avsc");
const V2: &str = include_str!("../../../features/schemas/user_event.v2.avsc");
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

fn incompatible() -> String {
    // user_id changes from long to string: old data cannot be read.
    V2.replace(
        r#""name": "user_id", "type": "long""#,
        r#""name": "user_id", "type": "string""#,
    )
}

fn supplied(schema: &str) -> SuppliedSchema {
    SuppliedSchema::new(None, SchemaType::Avro, schema.to_string())
}

fn registry() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start_at(dir.path().join("journal.jsonl"));
    (dir, registry)
}

async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (StatusCode, Value) {
    let client = reqwest::Client::new();
    let mut request = client
        .request(method, url)
        .header("content-type", CONTENT_TYPE);
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    assert_eq!(
        response.headers()["content-type"],
        CONTENT_TYPE,
        "every response has the registry content type"
    );
    (status, response.json().await.unwrap())
}

fn as_json(schema: &str) -> Value {
    serde_json::from_str(schema).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_client_registers_fetches_and_is_refused_an_incompatible_change() {
    let (_dir, registry) = registry();
    let sr = SrSettings::new(registry.url());

    let v1 = post_schema(&sr, "user_events-value".into(), supplied(V1))
        .await
        .unwrap();
    let again = post_schema(&sr, "user_events-value".into(), supplied(V1))
        .await
        .unwrap();
    assert_eq!(again.id, v1.id, "the same schema gets the same id");

    let fetched = get_schema_by_id(v1.id, &sr).await.unwrap();
    assert_eq!(as_json(&fetched.schema), as_json(V1));

    assert!(
        is_compatible_schema(&sr, "user_events-value".into(), supplied(V2))
            .await
            .unwrap()
    );
    let v2 = post_schema(&sr, "user_events-value".into(), supplied(V2))
        .await
        .unwrap();
    assert_ne!(v2.id, v1.id);

    assert!(
        !is_compatible_schema(&sr, "user_events-value".into(), supplied(&incompatible()))
            .await
            .unwrap()
    );
    let refused = post_schema(&sr, "user_events-value".into(), supplied(&incompatible())).await;
    assert!(refused.is_err(), "an incompatible schema is not registered");

    let (status, body) = call(
        reqwest::Method::POST,
        format!("{}/subjects/user_events-value/versions", registry.url()),
        Some(json!({"schema": incompatible()})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error_code"], 409);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("cannot read data written with version 2"),
        "{body}"
    );

    assert_eq!(get_all_subjects(&sr).await.unwrap(), ["user_events-value"]);
    assert_eq!(
        get_all_versions(&sr, "user_events-value".into())
            .await
            .unwrap(),
        [1, 2]
    );

    // The same schema under another subject keeps its global id.
    let other = post_schema(&sr, "other-value".into(), supplied(V2))
        .await
        .unwrap();
    assert_eq!(other.id, v2.id);
}

#[tokio::test(flavor = "multi_thread")]
async fn look_ups_find_versions_by_schema_and_number() {
    let (_dir, registry) = registry();
    let url = registry.url();
    let post =
        |path: &str, body: Value| call(reqwest::Method::POST, format!("{url}{path}"), Some(body));
    let (_, r1) = post("/subjects/s/versions", json!({"schema": V1})).await;
    let (_, r2) = post(
        "/subjects/s/versions",
        json!({"schema": V2, "schemaType": "AVRO"}),
    )
    .await;

    // Whitespace and key order do not matter to a look-up.
    let reformatted = serde_json::to_string_pretty(&as_json(V1)).unwrap();
    let (status, found) = post("/subjects/s", json!({"schema": reformatted})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            found["subject"].clone(),
            found["version"].clone(),
            found["id"].clone()
        ),
        (json!("s"), json!(1), r1["id"].clone())
    );

    let (_, latest) = call(
        reqwest::Method::GET,
        format!("{url}/subjects/s/versions/latest"),
        None,
    )
    .await;
    assert_eq!(latest["version"], 2);
    assert_eq!(latest["id"], r2["id"]);
    assert_eq!(as_json(latest["schema"].as_str().unwrap()), as_json(V2));

    let (_, raw) = call(
        reqwest::Method::GET,
        format!("{url}/schemas/ids/{}/schema", r1["id"]),
        None,
    )
    .await;
    assert_eq!(raw, as_json(V1));
    let (_, uses) = call(
        reqwest::Method::GET,
        format!("{url}/schemas/ids/{}/versions", r2["id"]),
        None,
    )
    .await;
    assert_eq!(uses, json!([{"subject": "s", "version": 2}]));

    let (status, body) = post("/subjects/s", json!({"schema": incompatible()})).await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (StatusCode::NOT_FOUND, json!(40403))
    );
    let (status, body) = post("/subjects/nope", json!({"schema": V1})).await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (StatusCode::NOT_FOUND, json!(40401))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ids_and_subjects_survive_a_restart_and_ids_are_never_reused() {
    let (_dir, mut registry) = registry();
    let sr = SrSettings::new(registry.url());
    let a = post_schema(&sr, "a-value".into(), supplied(V1))
        .await
        .unwrap();
    let b = post_schema(&sr, "b-value".into(), supplied(V2))
        .await
        .unwrap();
    let (status, _) = call(
        reqwest::Method::PUT,
        format!("{}/config/b-value", registry.url()),
        Some(json!({"compatibility": "FULL"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Remove b for good, so its id must not be handed out again.
    for query in ["", "?permanent=true"] {
        let (status, _) = call(
            reqwest::Method::DELETE,
            format!("{}/subjects/b-value{query}", registry.url()),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }

    registry.restart();
    let sr = SrSettings::new(registry.url());
    assert_eq!(
        as_json(&get_schema_by_id(a.id, &sr).await.unwrap().schema),
        as_json(V1)
    );
    assert_eq!(get_all_subjects(&sr).await.unwrap(), ["a-value"]);
    assert_eq!(get_all_versions(&sr, "a-value".into()).await.unwrap(), [1]);
    let (_, config) = call(
        reqwest::Method::GET,
        format!("{}/config/b-value", registry.url()),
        None,
    )
    .await;
    assert_eq!(config, json!({"compatibilityLevel": "FULL"}));

    let c = post_schema(&sr, "c-value".into(), supplied(&incompatible()))
        .await
        .unwrap();
    assert!(
        c.id > b.id,
        "a new schema gets a new id ({} after {})",
        c.id,
        b.id
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_the_confluent_status_and_error_code() {
    let (_dir, registry) = registry();
    let url = registry.url();
    // No pooled connections: the server answers the oversized body without reading it and
    // closes that connection, and a pooled client could send the next case on it.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let raw = |method: reqwest::Method, path: &str, body: Vec<u8>| {
        client
            .request(method, format!("{url}{path}"))
            .header("content-type", CONTENT_TYPE)
            .body(body)
            .send()
    };
    let post = reqwest::Method::POST;
    let cases: Vec<(reqwest::Method, &str, Vec<u8>, StatusCode, i64)> = vec![
        (
            post.clone(),
            "/subjects/s/versions",
            br#"{"schema": "{\"type\": \"recrod\"}"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
        ),
        (
            post.clone(),
            "/subjects/s/versions",
            br#"{"schema": "not json"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
        ),
        (
            post.clone(),
            "/subjects/s/versions",
            br#"{"schema": "\"long\"", "schemaType": "PROTOBUF"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
        ),
        (
            post.clone(),
            "/subjects/s/versions",
            br#"{}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
        ),
        (
            post.clone(),
            "/subjects/s/versions",
            b"{garbage".to_vec(),
            StatusCode::BAD_REQUEST,
            400,
        ),
        (
            post.clone(),
            "/subjects/s/versions",
            vec![b' '; 5 * 1024 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
            413,
        ),
        (
            reqwest::Method::GET,
            "/subjects/none/versions",
            vec![],
            StatusCode::NOT_FOUND,
            40401,
        ),
        (
            reqwest::Method::GET,
            "/subjects/none/versions/abc",
            vec![],
            StatusCode::UNPROCESSABLE_ENTITY,
            42202,
        ),
        (
            reqwest::Method::GET,
            "/schemas/ids/999",
            vec![],
            StatusCode::NOT_FOUND,
            40403,
        ),
        (
            reqwest::Method::PUT,
            "/config",
            br#"{"compatibility": "SIDEWAYS"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            42203,
        ),
        (
            reqwest::Method::GET,
            "/config/none",
            vec![],
            StatusCode::NOT_FOUND,
            40408,
        ),
        (
            reqwest::Method::GET,
            "/no/such/endpoint",
            vec![],
            StatusCode::NOT_FOUND,
            404,
        ),
        (
            reqwest::Method::PATCH,
            "/subjects",
            vec![],
            StatusCode::METHOD_NOT_ALLOWED,
            405,
        ),
    ];
    for (method, path, body, status, code) in cases {
        let response = raw(method.clone(), path, body).await.unwrap();
        assert_eq!(response.status(), status, "{method} {path}");
        assert_eq!(
            response.headers()["content-type"],
            CONTENT_TYPE,
            "{method} {path}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error_code"], code, "{method} {path}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
    // After all that, the registry still works.
    let (status, _) = call(
        post,
        format!("{url}/subjects/s/versions"),
        Some(json!({"schema": V1})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, version) = call(
        reqwest::Method::GET,
        format!("{url}/subjects/s/versions/2"),
        None,
    )
    .await;
    assert_eq!(version["error_code"], 40402);
}

#[tokio::test(flavor = "multi_thread")]
async fn deletes_are_soft_first_then_permanent() {
    let (_dir, registry) = registry();
    let url = registry.url();
    call(
        reqwest::Method::POST,
        format!("{url}/subjects/s/versions"),
        Some(json!({"schema": V1})),
    )
    .await;
    call(
        reqwest::Method::POST,
        format!("{url}/subjects/s/versions"),
        Some(json!({"schema": V2})),
    )
    .await;

    let (status, body) = call(
        reqwest::Method::DELETE,
        format!("{url}/subjects/s/versions/1?permanent=true"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (StatusCode::NOT_FOUND, json!(40407))
    );
    let (status, body) = call(
        reqwest::Method::DELETE,
        format!("{url}/subjects/s/versions/1"),
        None,
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, json!(1)));
    let (_, versions) = call(
        reqwest::Method::GET,
        format!("{url}/subjects/s/versions"),
        None,
    )
    .await;
    assert_eq!(versions, json!([2]));
    let (_, versions) = call(
        reqwest::Method::GET,
        format!("{url}/subjects/s/versions?deleted=true"),
        None,
    )
    .await;
    assert_eq!(versions, json!([1, 2]));

    let (status, body) = call(reqwest::Method::DELETE, format!("{url}/subjects/s"), None).await;
    assert_eq!((status, body), (StatusCode::OK, json!([2])));
    let (_, subjects) = call(reqwest::Method::GET, format!("{url}/subjects"), None).await;
    assert_eq!(subjects, json!([]));
    let (status, body) = call(reqwest::Method::DELETE, format!("{url}/subjects/s"), None).await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (StatusCode::NOT_FOUND, json!(40404))
    );
    let (status, body) = call(
        reqwest::Method::DELETE,
        format!("{url}/subjects/s?permanent=true"),
        None,
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, json!([1, 2])));
    let (status, body) = call(
        reqwest::Method::GET,
        format!("{url}/subjects/s/versions?deleted=true"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (StatusCode::NOT_FOUND, json!(40401))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn compatibility_levels_are_configurable_per_subject_and_checked_on_request() {
    let (_dir, registry) = registry();
    let url = registry.url();
    let (_, global) = call(reqwest::Method::GET, format!("{url}/config"), None).await;
    assert_eq!(global, json!({"compatibilityLevel": "BACKWARD"}));
    call(
        reqwest::Method::POST,
        format!("{url}/subjects/s/versions"),
        Some(json!({"schema": V1})),
    )
    .await;

    let (_, verdict) = call(
        reqwest::Method::POST,
        format!("{url}/compatibility/subjects/s/versions/latest?verbose=true"),
        Some(json!({"schema": incompatible()})),
    )
    .await;
    assert_eq!(verdict["is_compatible"], false);
    assert_eq!(verdict["messages"].as_array().unwrap().len(), 1);

    let (_, set) = call(
        reqwest::Method::PUT,
        format!("{url}/config/s"),
        Some(json!({"compatibility": "none"})),
    )
    .await;
    assert_eq!(set, json!({"compatibility": "NONE"}));
    let (status, _) = call(
        reqwest::Method::POST,
        format!("{url}/subjects/s/versions"),
        Some(json!({"schema": incompatible()})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "NONE accepts any change");

    let (_, removed) = call(reqwest::Method::DELETE, format!("{url}/config/s"), None).await;
    assert_eq!(removed, json!({"compatibilityLevel": "NONE"}));
    let (_, fallback) = call(
        reqwest::Method::GET,
        format!("{url}/config/s?defaultToGlobal=true"),
        None,
    )
    .await;
    assert_eq!(fallback, json!({"compatibilityLevel": "BACKWARD"}));
}

/// The rest of schema_registry_converter's calls, as its encoders and decoders make them.
#[tokio::test(flavor = "multi_thread")]
async fn every_lookup_call_of_schema_registry_converter_answers_with_content() {
    let (_dir, registry) = registry();
    let sr = SrSettings::new(registry.url());
    let v1 = post_schema(&sr, "user_events-value".into(), supplied(V1))
        .await
        .unwrap();
    let v2 = post_schema(&sr, "user_events-value".into(), supplied(V2))
        .await
        .unwrap();

    let typed = get_schema_by_id_and_type(v2.id, &sr, SchemaType::Avro)
        .await
        .unwrap();
    assert_eq!((typed.id, typed.schema_type), (v2.id, SchemaType::Avro));
    let wrong_type = get_schema_by_id_and_type(v2.id, &sr, SchemaType::Json).await;
    assert!(
        wrong_type.is_err(),
        "a JSON schema is asked for, an AVRO one is there"
    );

    // What an encoder with TopicNameStrategy asks: the subject's latest.
    let strategy = SubjectNameStrategy::TopicNameStrategy("user_events".into(), false);
    let latest = get_schema_by_subject(&sr, &strategy).await.unwrap();
    assert_eq!(
        (latest.id, latest.version, latest.subject.as_deref()),
        (v2.id, Some(2), Some("user_events-value"))
    );
    let parsed = |text: &str| serde_json::from_str::<Value>(text).unwrap();
    assert_eq!(parsed(&latest.schema), parsed(V2));
    // With a schema, the strategy registers it (or finds it registered).
    let with_schema =
        SubjectNameStrategy::TopicNameStrategyWithSchema("user_events".into(), false, supplied(V1));
    assert_eq!(
        get_schema_by_subject(&sr, &with_schema).await.unwrap().id,
        v1.id
    );

    let first = get_schema_by_subject_and_version(&sr, "user_events-value", Some(1))
        .await
        .unwrap();
    assert_eq!((first.id, first.version), (v1.id, Some(1)));
    assert_eq!(parsed(&first.schema), parsed(V1));
    let newest = get_schema_by_subject_and_version(&sr, "user_events-value", None)
        .await
        .unwrap();
    assert_eq!((newest.id, newest.version), (v2.id, Some(2)));
    let missing = get_schema_by_subject_and_version(&sr, "user_events-value", Some(9)).await;
    let missing = format!("{:?}", missing.unwrap_err());
    assert!(
        missing.contains("Version 9 not found"),
        "Confluent's message for a missing version: {missing}"
    );

    // Schema GUIDs are not served: a clear error, not a wrong schema.
    assert!(
        get_schema_by_guid("0f2b3c4d-0000-0000-0000-000000000000", &sr)
            .await
            .is_err()
    );
}
