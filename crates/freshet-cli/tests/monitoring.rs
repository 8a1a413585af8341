//! Monitoring proven against real data: the local stack runs with traffic, its Prometheus
//! scrapes it with the shipped `monitoring/` configuration, and every query of every
//! panel of the shipped Grafana dashboards returns data through Prometheus's HTTP API.

use freshet_localstack::free_port;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::{freshet, http_get, repo, text, DownOnDrop};

/// Percent-encodes a query-string value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The result of an instant query, or why there is none.
fn query(prometheus: &str, expr: &str) -> Result<Vec<serde_json::Value>, String> {
    let (status, body) = http_get(prometheus, &format!("/api/v1/query?query={}", encode(expr)))
        .ok_or("Prometheus does not answer")?;
    let body: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
    if body["status"] != "success" {
        return Err(format!("query failed: {body}"));
    }
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// (panel title, query) for every panel of every shipped dashboard.
fn dashboard_queries() -> Vec<(String, String)> {
    let dir = repo().join("monitoring/grafana/dashboards");
    let mut queries = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        for panel in dashboard["panels"].as_array().unwrap() {
            let title = panel["title"].as_str().unwrap().to_string();
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "panel {title:?} has no query");
            for target in targets {
                let expr = target["expr"].as_str().unwrap().to_string();
                queries.push((title.clone(), expr));
            }
        }
    }
    assert!(queries.len() >= 10, "the dashboards have too few queries");
    queries
}

#[test]
fn every_dashboard_panel_shows_data_from_a_running_stack() {
    let queries = dashboard_queries();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("stack");
    let state = state.to_str().unwrap();
    let _cleanup = DownOnDrop(state.to_string());
    let serving = free_port().to_string();
    let prometheus = free_port().to_string();
    let ports = [
        ("--broker-port", free_port().to_string()),
        ("--redis-port", free_port().to_string()),
        ("--registry-port", free_port().to_string()),
        ("--producer-metrics-port", free_port().to_string()),
        ("--processor-metrics-port", free_port().to_string()),
        ("--serving-port", serving.clone()),
        ("--prometheus-port", prometheus.clone()),
    ];
    let mut up = vec!["up", "--detach", "--state-dir", state, "--demo-rate", "200"];
    for (flag, port) in &ports {
        up.push(flag);
        up.push(port);
    }
    let out = freshet(&up);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let prometheus = format!("127.0.0.1:{prometheus}");

    // Models asking for features: single lookups and batches, all the while.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        let serving = format!("127.0.0.1:{serving}");
        std::thread::spawn(move || {
            let mut user = 0;
            while !stop.load(Ordering::Relaxed) {
                user = user % 50 + 1;
                let _ = http_get(&serving, &format!("/features/{user}"));
                if user % 10 == 0 {
                    let body = r#"{"entity_ids": ["1", "2", "3", "4", "5", "nobody"]}"#;
                    let _ = common::http_post_json(&serving, "/features/batch", body);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut empty: Vec<(String, String)>;
    loop {
        empty = queries
            .iter()
            .filter(|(_, expr)| query(&prometheus, expr).map_or(true, |r| r.is_empty()))
            .cloned()
            .collect();
        if empty.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
    assert!(
        empty.is_empty(),
        "panels without data after 120 s:\n{}",
        empty
            .iter()
            .map(|(title, expr)| format!("  {title}: {expr} -> {:?}", query(&prometheus, expr)))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Every service is scraped, and the alert rules are loaded (and none fires).
    for service in ["producer", "processor", "serving"] {
        let up = query(&prometheus, &format!("up{{service=\"{service}\"}}")).unwrap();
        assert_eq!(up.len(), 1, "{service}: {up:?}");
        assert_eq!(up[0]["value"][1], "1", "{service} is not up");
    }
    let (_, rules) = http_get(&prometheus, "/api/v1/rules").unwrap();
    for alert in [
        "FreshetServiceDown",
        "FreshetFreshnessAboveSLO",
        "FreshetConsumerLagGrowing",
        "FreshetServingErrors",
        "FreshetDeadLetters",
        "FreshetDeliveryStepSlow",
    ] {
        assert!(rules.contains(alert), "rule {alert} not loaded: {rules}");
    }
    // The delivery-step alert's expression, without its threshold, has a value per step:
    // its metric and labels are the processor's.
    let steps = query(
        &prometheus,
        "histogram_quantile(0.99, sum by (le, step) (rate(freshet_processor_delivery_step_seconds_bucket[5m])))",
    )
    .unwrap();
    let mut names: Vec<&str> = steps
        .iter()
        .filter_map(|s| s["metric"]["step"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["checkpoint", "kafka", "redis"], "{steps:?}");
    let firing = query(&prometheus, "ALERTS{alertstate=\"firing\"}").unwrap();
    assert!(
        firing.is_empty(),
        "alerts fire on a healthy stack: {firing:?}"
    );
}
