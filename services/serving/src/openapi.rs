//! The OpenAPI document, exact for this deployment: utoipa derives the shapes from the
//! handlers' types, and the parts only the running service knows are filled in here,
//! from the definitions and the configuration: which view and feature names exist, the
//! largest batch, the limits on entity ids and budgets. A request the document calls
//! valid is answered as documented (2xx, or 404 for an unknown feature service, or 503
//! while Redis is down); every status and body the service can send is listed.
//!
//! One rule cannot be written in OpenAPI: a request that names both views and features
//! must name features of those views; else it is answered 404 `unknown_feature` (what
//! was asked for does not exist), which the descriptions say.

use crate::api::{ApiDoc, BUDGET_HEADER, MAX_BUDGET_MS, MAX_ENTITY_ID_CHARS};
use freshet_core::Definitions;
use serde_json::{json, Value};
use utoipa::OpenApi as _;

/// An entity id: 1 to 512 characters, none of them a control character.
fn entity_id_schema() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_ENTITY_ID_CHARS,
        "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]+$",
        "description": "An entity id: 1 to 512 characters, no control characters."
    })
}

/// An entity id in a JSON body: a string as above, or an integer (taken as its decimal
/// text).
fn body_entity_id_schema() -> Value {
    json!({ "anyOf": [
        entity_id_schema(),
        { "type": "integer", "minimum": i64::MIN, "maximum": u64::MAX }
    ] })
}

/// A comma-separated list of `names`.
fn name_list_pattern(names: &[&str]) -> String {
    let one = format!("({})", names.join("|"));
    format!("^{one}(,{one})*$")
}

fn budget_schema() -> Value {
    json!({ "type": "integer", "minimum": 1, "maximum": MAX_BUDGET_MS })
}

fn budget_parameters() -> Vec<Value> {
    vec![
        json!({
            "name": "budget_ms",
            "in": "query",
            "required": false,
            "description": "Latency budget in milliseconds: what is not read from the store within it comes back with status `timeout` and defaults.",
            "schema": budget_schema()
        }),
        json!({
            "name": BUDGET_HEADER,
            "in": "header",
            "required": false,
            "description": "The latency budget as a header (the query's `budget_ms` wins when both are given).",
            "schema": budget_schema()
        }),
    ]
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } }
    })
}

/// Feast's errors: a JSON string holding `{module, class, message}`.
fn feast_error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "type": "string" } } }
    })
}

const TIMEOUT_408: &str = "The request took longer than the server's request timeout (no body)";

/// The service's OpenAPI document for these definitions and this largest batch.
pub fn document(
    definitions: &Definitions,
    max_batch_size: usize,
    access: &crate::auth::AccessConfig,
) -> utoipa::openapi::OpenApi {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document to JSON");
    let views: Vec<&str> = definitions.views.iter().map(|v| v.name.as_str()).collect();
    let mut features: Vec<&str> = definitions
        .views
        .iter()
        .flat_map(|v| v.features.iter().map(|f| f.name.as_str()))
        .collect();
    features.sort();
    features.dedup();

    // A served value is a JSON scalar.
    doc["components"]["schemas"]["FeatureValue"]["properties"]["value"] = json!({
        "type": ["number", "string", "boolean", "null"],
        "description": "The value: a JSON number, string, boolean, or null."
    });

    // GET /features/{entity_id}
    let get = &mut doc["paths"]["/features/{entity_id}"]["get"];
    let mut parameters = vec![
        json!({
            "name": "entity_id", "in": "path", "required": true,
            "description": "The entity's id, e.g. a user id.",
            "schema": entity_id_schema()
        }),
        json!({
            "name": "view", "in": "query", "required": false,
            "description": "Feature views to return, comma-separated (all when not given).",
            "schema": { "type": "string", "pattern": name_list_pattern(&views) }
        }),
        json!({
            "name": "features", "in": "query", "required": false,
            "description": "Features to return, comma-separated (all of the selected views' when not given); each must be a feature of a selected view.",
            "schema": { "type": "string", "pattern": name_list_pattern(&features) }
        }),
    ];
    parameters.extend(budget_parameters());
    get["parameters"] = Value::Array(parameters);
    let responses = &mut get["responses"];
    responses["408"] = json!({ "description": TIMEOUT_408 });
    responses["500"] = error_response("Redis answered the lookup with an error");

    // POST /features/batch
    let request = |ids: &str, other: &str| {
        json!({
            "type": "object",
            "required": [ids],
            "additionalProperties": false,
            "properties": {
                ids: {
                    "type": "array", "minItems": 1, "maxItems": max_batch_size,
                    "items": body_entity_id_schema(),
                    "description": "Entity ids, answered in the same order."
                },
                other: { "type": "null" },
                "views": {
                    "type": ["array", "null"], "minItems": 1,
                    "items": { "type": "string", "enum": views },
                    "description": "Feature views to return (all when not given)."
                },
                "features": {
                    "type": ["array", "null"], "minItems": 1,
                    "items": { "type": "string", "enum": features },
                    "description": "Features to return (all of the selected views' when not given); each must be a feature of a selected view."
                }
            }
        })
    };
    doc["components"]["schemas"]["BatchRequest"] = json!({
        "description": "A batch lookup: `entity_ids` (or its older spelling `user_ids`, not both).",
        "oneOf": [request("entity_ids", "user_ids"), request("user_ids", "entity_ids")]
    });
    let batch = &mut doc["paths"]["/features/batch"]["post"];
    batch["parameters"] = Value::Array(budget_parameters());
    let responses = &mut batch["responses"];
    responses["408"] = json!({ "description": TIMEOUT_408 });
    responses["413"] = error_response("More entity ids than the server's maximum batch size, or a body larger than the server accepts");
    responses["415"] = error_response("A body without `Content-Type: application/json`");
    responses["500"] = error_response("Redis answered the lookup with an error");

    // POST /get-online-features: one request shape per join key, naming that key's views'
    // features.
    let mut join_keys: Vec<&str> = Vec::new();
    for view in &definitions.views {
        let key = definitions.source_of(view).entity_key_field.as_str();
        if !join_keys.contains(&key) {
            join_keys.push(key);
        }
    }
    let shapes: Vec<Value> = join_keys
        .iter()
        .map(|key| {
            let refs: Vec<String> = definitions
                .views
                .iter()
                .filter(|v| definitions.source_of(v).entity_key_field == *key)
                .flat_map(|v| {
                    v.features
                        .iter()
                        .map(move |f| format!("{}:{}", v.name, f.name))
                })
                .collect();
            json!({
                "type": "object",
                "required": ["features", "entities"],
                "properties": {
                    "features": {
                        "type": "array", "minItems": 1, "uniqueItems": true,
                        "items": { "type": "string", "enum": refs },
                        "description": "Feature references, `view:feature`."
                    },
                    "entities": {
                        "type": "object",
                        "required": [key],
                        "additionalProperties": false,
                        "properties": {
                            *key: {
                                "type": "array", "minItems": 1, "maxItems": max_batch_size,
                                "items": body_entity_id_schema()
                            }
                        },
                        "description": "The entities' join key values, one column."
                    },
                    "feature_service": {
                        "type": ["string", "null"],
                        "description": "Freshet has no feature services: any name answers 404."
                    },
                    "full_feature_names": { "type": "boolean" },
                    "include_feature_view_version_metadata": { "type": "boolean" }
                }
            })
        })
        .collect();
    doc["components"]["schemas"]["GetOnlineFeaturesRequest"] = if shapes.len() == 1 {
        shapes.into_iter().next().expect("one shape")
    } else {
        json!({ "oneOf": shapes })
    };
    let feast = &mut doc["paths"]["/get-online-features"]["post"];
    feast["parameters"] = Value::Array(budget_parameters()[1..].to_vec());
    let responses = &mut feast["responses"];
    for (status, description) in [
        (
            "400",
            "A bad reference, entity key or entity value, or a bad budget",
        ),
        ("404", "An unknown feature view, feature or feature service"),
        (
            "413",
            "More entities than the server's maximum batch size, or a body too large",
        ),
        ("422", "A body that is not a GetOnlineFeaturesRequest"),
        ("503", "Redis is unavailable"),
    ] {
        responses[status] = feast_error_response(description);
    }
    responses["408"] = json!({ "description": TIMEOUT_408 });
    responses["500"] = feast_error_response("Redis answered the lookup with an error");

    if access.requires_keys() {
        require_keys(&mut doc, access);
    }
    serde_json::from_value(doc).expect("the patched document is an OpenAPI document")
}

/// API keys on every operation but the open ones: the schemes, and the 401 (and, on the
/// copilot's routes, 403 and 429) every such operation can answer.
fn require_keys(doc: &mut Value, access: &crate::auth::AccessConfig) {
    doc["components"]["securitySchemes"] = json!({
        "bearer": {
            "type": "http", "scheme": "bearer",
            "description": "An API key as a bearer token (`Authorization: Bearer <key>`); the service takes it as `X-API-Key: <key>` too."
        }
    });
    doc["security"] = json!([{ "bearer": [] }]);
    let open = |path: &str| {
        path == "/health" || path == "/ready" || (path == "/metrics" && !access.metrics_need_key)
    };
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, operations) in paths.iter_mut() {
        let Some(operations) = operations.as_object_mut() else {
            continue;
        };
        for operation in operations.values_mut() {
            if open(path) {
                operation["security"] = json!([]);
                continue;
            }
            let responses = &mut operation["responses"];
            responses["401"] = error_response("No API key, or one that is not valid");
            if path.starts_with("/api/llm") {
                responses["403"] = error_response("The API key may not use the copilot");
                responses["429"] = error_response(
                    "Too many copilot requests for this API key (see `Retry-After`)",
                );
                responses["503"] = error_response(
                    "The copilot is disabled on this server, or has no LLM configured",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_this_deployments_views_features_and_limits() {
        let dir = std::path::Path::new(
            &std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../features");
        let definitions = freshet_core::load_dir(&dir).unwrap();
        let open = crate::auth::AccessConfig::open();
        let doc = serde_json::to_value(document(&definitions, 250, &open)).unwrap();
        assert!(doc.get("security").is_none(), "no keys, no security");
        let batch = &doc["components"]["schemas"]["BatchRequest"]["oneOf"][0];
        assert_eq!(batch["properties"]["entity_ids"]["maxItems"], 250);
        assert_eq!(
            batch["properties"]["views"]["items"]["enum"],
            json!(["user_click_stats", "user_purchase_stats"])
        );
        let get = &doc["paths"]["/features/{entity_id}"]["get"]["parameters"];
        assert_eq!(get[1]["in"], "query");
        assert_eq!(
            get[1]["schema"]["pattern"],
            "^(user_click_stats|user_purchase_stats)(,(user_click_stats|user_purchase_stats))*$"
        );
        let feast = &doc["components"]["schemas"]["GetOnlineFeaturesRequest"];
        assert_eq!(
            feast["properties"]["entities"]["required"],
            json!(["user_id"])
        );
        assert_eq!(
            feast["properties"]["features"]["items"]["enum"]
                .as_array()
                .unwrap()
                .len(),
            8
        );
        assert_eq!(
            doc["components"]["schemas"]["FeatureValue"]["properties"]["value"]["type"],
            json!(["number", "string", "boolean", "null"])
        );
    }

    #[test]
    fn with_keys_every_operation_but_the_probes_documents_401() {
        let dir = std::path::Path::new(
            &std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../features");
        let definitions = freshet_core::load_dir(&dir).unwrap();
        let access = crate::auth::AccessConfig {
            auth: crate::auth::AuthConfig::Keys(Vec::new()),
            ..crate::auth::AccessConfig::open()
        };
        let doc = serde_json::to_value(document(&definitions, 250, &access)).unwrap();
        assert_eq!(doc["security"], json!([{ "bearer": [] }]));
        let get = &doc["paths"]["/features/{entity_id}"]["get"];
        assert_eq!(
            get["responses"]["401"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
        assert!(get["responses"].get("429").is_none());
        let generate = &doc["paths"]["/api/llm/generate"]["post"]["responses"];
        for status in ["401", "403", "429", "503"] {
            assert!(generate.get(status).is_some(), "{status}");
        }
        assert_eq!(doc["paths"]["/health"]["get"]["security"], json!([]));
        assert!(doc["paths"]["/health"]["get"]["responses"]
            .get("401")
            .is_none());
    }
}
