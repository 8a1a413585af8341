//! Quiet partitions: with a source's `idle_timeout`, the last tumbling window and the last
//! session of every entity are served once events stop, under the version of the
//! partition's last record; without it nothing changes. On the real stack (tansu, Redis,
//! the registry), with the processor binary, a kill -9 in between and traffic resuming.

mod common;

use common::*;
use freshet_core::Value;
use freshet_producer::event::UserEvent;
use freshet_testkit::TestStack;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const VIEW: &str = "quiet_stats";
const IDLE_TIMEOUT_MS: u64 = 2_000;
const WINDOW_MS: i64 = 5_000;
const USERS: i64 = 30;

/// A definitions folder with one view over the shipped schema: a count over tumbling
/// windows of 5 s and a count over sessions with a gap of 2 s; the watermark trails the
/// clock by 1 s.
fn definitions_with(dir: &Path, idle_timeout: Option<&str>) {
    std::fs::create_dir_all(dir.join("schemas")).unwrap();
    std::fs::copy(
        features_dir().join("schemas/user_event.v2.avsc"),
        dir.join("schemas/user_event.v2.avsc"),
    )
    .unwrap();
    let idle = idle_timeout.map_or(String::new(), |t| format!("idle_timeout = \"{t}\"\n"));
    std::fs::write(
        dir.join("sources.toml"),
        format!(
            r#"[[source]]
name = "user_events"
schema = "schemas/user_event.v2.avsc"
event_time_field = "timestamp"
entity_key_field = "user_id"
watermark_delay = "1s"
{idle}"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("quiet_stats.toml"),
        format!(
            r#"[view]
name = "{VIEW}"
entity = "user"
source = "user_events"
ttl = "1h"
description = "Counts that close with the window or the session."

[[feature]]
name = "count_5s"
description = "Events in the last closed five-second window."
aggregation = "count"
window = {{ type = "tumbling", size = "5s" }}
default = 0

[[feature]]
name = "session_events"
description = "Events in the latest closed session."
aggregation = "count"
window = {{ type = "session", gap = "2s" }}
default = 0
"#
        ),
    )
    .unwrap();
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn event(user: i64, timestamp: i64) -> UserEvent {
    UserEvent {
        user_id: user,
        action_type: "view".into(),
        item_id: 7,
        amount: None,
        timestamp,
        session_id: None,
    }
}

fn keys() -> impl Iterator<Item = (String, String)> {
    (1..=USERS).map(|u| (VIEW.to_string(), u.to_string()))
}

/// (count_5s, session_events, version) per user, as Redis holds them.
async fn served(
    deployment: &Deployment,
    stack: &TestStack,
) -> BTreeMap<String, (Value, Value, u64)> {
    redis_values(&deployment.redis_url(stack), keys())
        .await
        .into_iter()
        .filter_map(|((_, user), stored)| {
            let (version, values) = stored?;
            Some((
                user,
                (
                    values["count_5s"].clone(),
                    values["session_events"].clone(),
                    version,
                ),
            ))
        })
        .collect()
}

/// Waits until every user is served `expected` (count_5s, session_events, version);
/// returns how long that took.
async fn wait_until_served(
    deployment: &Deployment,
    stack: &TestStack,
    expected: &BTreeMap<String, (Value, Value, u64)>,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let got = served(deployment, stack).await;
        if &got == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "not served within {limit:?}; differences (user: got, expected):\n{}",
            expected
                .iter()
                .filter(|(u, e)| got.get(*u) != Some(e))
                .map(|(u, e)| format!("{u}: {:?}, {e:?}", got.get(u)))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Per user: its partition's next offset, and its own last record's offset + 1.
fn versions(stack: &TestStack) -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    for records in read_topic(stack, TOPIC, PARTITIONS) {
        let Some((last, _, _)) = records.last() else {
            continue;
        };
        let partition_next = (*last + 1) as u64;
        for (offset, key, _) in &records {
            let user = String::from_utf8(key.clone()).unwrap();
            out.insert(user, (partition_next, (*offset + 1) as u64));
        }
    }
    out
}

fn idle_advances(deployment: &Deployment) -> f64 {
    metric(
        &scrape_metrics(deployment.metrics_port),
        "freshet_processor_idle_advances_total{topic=\"user_events\"}",
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_partition_closes_its_last_window_and_session_after_the_idle_timeout() {
    let stack = TestStack::start();
    stack.create_topic(TOPIC, PARTITIONS).await;
    let dir = tempfile::tempdir().unwrap();
    let mut idle = Deployment::new(dir.path(), "idle", 0);
    idle.features_dir = dir.path().join("features-idle");
    definitions_with(&idle.features_dir, Some(&format!("{IDLE_TIMEOUT_MS}ms")));
    let mut waiting = Deployment::new(dir.path(), "waiting", 1);
    waiting.features_dir = dir.path().join("features-waiting");
    definitions_with(&waiting.features_dir, None);
    let mut idle_processor = idle.start(&stack);
    let _waiting_processor = waiting.start(&stack);

    // Every user's events fall in one five-second window and one session: user u has
    // 1 + u % 4 events 700 ms apart, from a time 500 ms into a window.
    let base = (now_ms() / WINDOW_MS + 1) * WINDOW_MS + 500;
    let per_user = |u: i64| 1 + u % 4;
    let events: Vec<UserEvent> = (0..4)
        .flat_map(|j| {
            (1..=USERS)
                .filter(move |&u| j < per_user(u))
                .map(move |u| event(u, base + j * 700))
        })
        .collect();
    let count = events.len() as u64;
    produce_events(&stack, events.into_iter(), count, 0.0, None).await;
    let produced = Instant::now();
    wait_for_events(&idle, count).await;
    let processed = Instant::now();
    wait_for_events(&waiting, count).await;

    let versions = versions(&stack);
    assert_eq!(
        versions.len(),
        USERS as usize,
        "every user's records are read back"
    );
    let closed: BTreeMap<String, (Value, Value, u64)> = versions
        .iter()
        .map(|(user, (partition_next, _))| {
            let n = Value::Long(per_user(user.parse().unwrap()));
            (user.clone(), (n.clone(), n, *partition_next))
        })
        .collect();
    // Closing needs the clock 2.5 s (the window) and 3 s (the sessions) past the last
    // event: after the idle timeout, within the window's length.
    let bound = Duration::from_millis(IDLE_TIMEOUT_MS + WINDOW_MS as u64 + 1_000);
    wait_until_served(&idle, &stack, &closed, bound).await;
    let took = processed.elapsed();
    eprintln!(
        "served closed windows and sessions {:.1} s after the last event was processed",
        took.as_secs_f64()
    );
    assert!(
        took >= Duration::from_millis(IDLE_TIMEOUT_MS - 500),
        "not before the idle timeout: {took:?}"
    );
    let advances = idle_advances(&idle);
    assert!(advances >= 1.0, "idle advances counted: {advances}");

    // Without the option, the same records leave every window and session open: the
    // values are the defaults, under each user's own last record.
    let open: BTreeMap<String, (Value, Value, u64)> = versions
        .iter()
        .map(|(user, (_, own))| (user.clone(), (Value::Long(0), Value::Long(0), *own)))
        .collect();
    assert_eq!(served(&waiting, &stack).await, open);
    assert_eq!(
        idle_advances(&waiting),
        0.0,
        "no advance without the option"
    );

    // The clock goes on following processing time: 5 s later the window after the
    // events' closes too, empty, and the tumbling count falls back to its default, while
    // the session stays served (for the view's TTL). Across a kill -9 and a restart
    // (restored from the checkpoint the advances wrote), no value ever moves back.
    idle_processor.kill();
    let idle_processor_again = idle.start(&stack);
    let decayed: BTreeMap<String, (Value, Value, u64)> = closed
        .iter()
        .map(|(user, (_, session, version))| {
            (user.clone(), (Value::Long(0), session.clone(), *version))
        })
        .collect();
    let started = Instant::now();
    loop {
        let got = served(&idle, &stack).await;
        for (user, (count, session, version)) in &got {
            let (closed_count, closed_session, closed_version) = &closed[user];
            assert!(
                count == closed_count || *count == Value::Long(0),
                "{user}: count {count:?}"
            );
            assert_eq!(
                (session, version),
                (closed_session, closed_version),
                "{user}"
            );
        }
        if got == decayed {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the window after the events never closed: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An event from the first window is now late, while events ahead of the partitions'
    // clocks (which are at most the last event's time plus the time since) open new
    // windows and sessions, which close again once the partitions are quiet.
    let late = metric(
        &scrape_metrics(idle.metrics_port),
        "freshet_processor_late_events_total{topic=\"user_events\"}",
    )
    .unwrap_or(0.0);
    let again = base + 2_100 + produced.elapsed().as_millis() as i64 + 3_000;
    let second: Vec<UserEvent> = std::iter::once(event(1, base + 100))
        .chain((1..=USERS).map(|u| event(u, again)))
        .collect();
    let second_count = second.len() as u64;
    produce_events(&stack, second.into_iter(), second_count, 0.0, None).await;
    let versions = self::versions(&stack);
    let reopened: BTreeMap<String, (Value, Value, u64)> = versions
        .iter()
        .map(|(user, (partition_next, _))| {
            (
                user.clone(),
                (Value::Long(1), Value::Long(1), *partition_next),
            )
        })
        .collect();
    wait_until_served(
        &idle,
        &stack,
        &reopened,
        Duration::from_millis(IDLE_TIMEOUT_MS) + Duration::from_millis(WINDOW_MS as u64 + 5_000),
    )
    .await;
    let late_now = metric(
        &scrape_metrics(idle.metrics_port),
        "freshet_processor_late_events_total{topic=\"user_events\"}",
    )
    .unwrap_or(0.0);
    assert_eq!(
        late_now - late,
        1.0,
        "the event from the first window is late"
    );
    drop(idle_processor_again);
}
