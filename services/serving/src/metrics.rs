//! The serving API's metrics, defined once. Per-view series are resolved to handles when
//! the service starts, so a request pays for atomic adds, not label look-ups; per-request
//! counts are added up first and emitted once per view.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Latency buckets from 50 µs to 5 s: lookups are expected in the sub-millisecond range.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];
const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0,
];
const AGE_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3_600.0, 21_600.0, 86_400.0,
];

#[derive(Clone)]
pub struct ServingMetrics {
    pub registry: Registry,
    /// `freshet_serving_request_duration_seconds{endpoint, status}`.
    pub requests: HistogramVec,
    /// `freshet_serving_batch_size`: entity ids per batch request.
    pub batch_size: Histogram,
    lookups: IntCounterVec,
    fetch: HistogramVec,
    age: HistogramVec,
    /// `freshet_serving_store_errors_total`: requests that failed because Redis did not
    /// answer or answered with an error.
    pub store_errors: IntCounter,
    /// The near cache's series.
    pub cache: CacheMetrics,
}

/// The near cache's series (see `crate::near_cache`).
#[derive(Clone)]
pub struct CacheMetrics {
    /// `freshet_serving_cache_hits_total`: entity reads answered from the cache.
    pub hits: IntCounter,
    /// `freshet_serving_cache_misses_total`: entity reads the cache could not answer
    /// (not cached, or the cache was not confirmed fresh), read from Redis.
    pub misses: IntCounter,
    /// `freshet_serving_cache_invalidations_total`: cached entities removed because Redis
    /// said they changed.
    pub invalidations: IntCounter,
    /// `freshet_serving_cache_entries`: entities in the cache.
    pub entries: IntGauge,
}

/// The series of one feature view, resolved once.
#[derive(Clone)]
pub struct ViewMetrics {
    pub found: IntCounter,
    pub missing: IntCounter,
    pub expired: IntCounter,
    pub unreadable: IntCounter,
    /// Lookups whose latency budget ran out before the view's values arrived.
    pub timeout: IntCounter,
    /// Time the view's values took to arrive from Redis (the request's one round trip).
    pub redis_seconds: Histogram,
    /// Time spent decoding the view's hashes and building its part of the response.
    pub compute_seconds: Histogram,
    /// Age of served stored values: now minus their event time.
    pub age_seconds: Histogram,
}

impl ServingMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = HistogramVec::new(
            HistogramOpts::new(
                "freshet_serving_request_duration_seconds",
                "Time to answer a request, by endpoint and HTTP status.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["endpoint", "status"],
        )
        .expect("valid metric");
        let batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "freshet_serving_batch_size",
                "Entity ids per batch request.",
            )
            .buckets(BATCH_SIZE_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let lookups = IntCounterVec::new(
            Opts::new(
                "freshet_serving_view_lookups_total",
                "Entity lookups per feature view, by outcome: found (served from the store or the near cache), missing, expired (older than the view's TTL), unreadable, or timeout (the request's latency budget ran out first); all but found serve defaults.",
            ),
            &["view", "outcome"],
        )
        .expect("valid metric");
        let fetch = HistogramVec::new(
            HistogramOpts::new(
                "freshet_serving_view_fetch_seconds",
                "Cost of fetching one feature view for one request, by phase: redis (the round trip its values came in) or compute (decoding and building the response; an entity's time is shared equally between its views).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["view", "phase"],
        )
        .expect("valid metric");
        let age = HistogramVec::new(
            HistogramOpts::new(
                "freshet_serving_value_age_seconds",
                "Age of served stored values: serving time minus the event time of the latest event they reflect.",
            )
            .buckets(AGE_BUCKETS.to_vec()),
            &["view"],
        )
        .expect("valid metric");
        let store_errors = IntCounter::new(
            "freshet_serving_store_errors_total",
            "Requests that failed because the feature store (Redis) was unavailable or failed.",
        )
        .expect("valid metric");
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let cache = CacheMetrics {
            hits: counter(
                "freshet_serving_cache_hits_total",
                "Entity reads answered from the near cache.",
            ),
            misses: counter(
                "freshet_serving_cache_misses_total",
                "Entity reads the near cache could not answer (not cached, or not confirmed fresh), read from Redis.",
            ),
            invalidations: counter(
                "freshet_serving_cache_invalidations_total",
                "Cached entities removed because Redis reported a write to them.",
            ),
            entries: IntGauge::new(
                "freshet_serving_cache_entries",
                "Entities held in the near cache.",
            )
            .expect("valid metric"),
        };
        for m in [
            Box::new(cache.hits.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(cache.misses.clone()),
            Box::new(cache.invalidations.clone()),
            Box::new(cache.entries.clone()),
            Box::new(requests.clone()),
            Box::new(batch_size.clone()),
            Box::new(lookups.clone()),
            Box::new(fetch.clone()),
            Box::new(age.clone()),
            Box::new(store_errors.clone()),
        ] {
            registry.register(m).expect("unique metric");
        }
        Self {
            registry,
            requests,
            batch_size,
            lookups,
            fetch,
            age,
            store_errors,
            cache,
        }
    }

    /// The series of `view`, created at zero so dashboards see every view from the start.
    pub fn view(&self, view: &str) -> ViewMetrics {
        let lookups = |outcome| self.lookups.with_label_values(&[view, outcome]);
        ViewMetrics {
            found: lookups("found"),
            missing: lookups("missing"),
            expired: lookups("expired"),
            unreadable: lookups("unreadable"),
            timeout: lookups("timeout"),
            redis_seconds: self.fetch.with_label_values(&[view, "redis"]),
            compute_seconds: self.fetch.with_label_values(&[view, "compute"]),
            age_seconds: self.age.with_label_values(&[view]),
        }
    }
}

impl Default for ServingMetrics {
    fn default() -> Self {
        Self::new()
    }
}
