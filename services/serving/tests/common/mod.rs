//! What the serving API's tests share: the service on a free port in the test's runtime,
//! and values written with the processor's versioned writes.
#![allow(dead_code)] // each test file uses its own part

use freshet_core::store_layout::{FeatureUpdate, ViewStorage, Writer};
use freshet_core::{Definitions, Value};
use freshet_serving::metrics::ServingMetrics;
use freshet_serving::ServingConfig;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

pub const CLICKS: &str = "user_click_stats";
pub const PURCHASES: &str = "user_purchase_stats";
pub const HOUR_MS: i64 = 3_600_000;

pub fn definitions() -> Definitions {
    let dir = std::path::Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../features");
    freshet_core::load_dir(&dir).expect("the shipped definitions load")
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The service on a free port, in this test's runtime.
pub struct Serving {
    pub base: String,
    pub address: String,
    pub http: reqwest::Client,
}

impl Serving {
    pub async fn start(redis_url: &str, max_batch_size: usize) -> Self {
        Self::start_with(redis_url, |config| config.max_batch_size = max_batch_size).await
    }

    /// The service with the default configuration changed by `configure`.
    pub async fn start_with(redis_url: &str, configure: impl FnOnce(&mut ServingConfig)) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let mut config = ServingConfig::new(redis_url);
        configure(&mut config);
        let definitions = definitions();
        tokio::spawn(async move {
            freshet_serving::serve(
                listener,
                &definitions,
                &config,
                ServingMetrics::new(),
                std::future::pending(),
            )
            .await
            .unwrap();
        });
        Self {
            base: format!("http://{address}"),
            address,
            // No pooled connections: an oversized body is answered without being read
            // and its connection closed; a pooled client could send the next request on it.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Json) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    pub async fn post(&self, path: &str, body: &Json) -> (u16, Json) {
        self.post_raw(path, "application/json", body.to_string())
            .await
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: String) -> (u16, Json) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("POST {path} answered {status} with non-JSON {text:?}"));
        (status, json)
    }
}

pub async fn write(redis_url: &str, updates: &[(FeatureUpdate, i64)]) {
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let storage: Vec<ViewStorage> = updates
        .iter()
        .map(|(_, ttl_ms)| ViewStorage {
            entity_type: "user".into(),
            ttl_ms: *ttl_ms,
        })
        .collect();
    freshet_store::write_updates(
        &mut conn,
        updates.iter().zip(&storage).map(|((u, _), s)| (u, s)),
        Writer::Processor,
    )
    .await
    .unwrap();
}

pub fn click_update(entity: &str, version: u64, event_time_ms: i64, clicks: i64) -> FeatureUpdate {
    FeatureUpdate {
        view: CLICKS.into(),
        entity: entity.into(),
        version,
        event_time_ms,
        values: BTreeMap::from([
            ("click_count_1m".to_string(), Value::Long(clicks)),
            ("view_count_1m".to_string(), Value::Long(clicks * 10)),
            ("click_count_10m".to_string(), Value::Long(clicks + 100)),
            ("distinct_items_viewed_10m".to_string(), Value::Long(7)),
        ]),
    }
}
