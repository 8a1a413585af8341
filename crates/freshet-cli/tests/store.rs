//! `freshet store migrate` against a real Redis holding values in the previous layout.

mod common;
use common::{freshet, text};
use freshet_testkit::TestRedis;
use std::collections::HashMap;

#[test]
fn migrate_moves_legacy_hashes_of_the_shipped_views_into_entity_hashes() {
    let redis = TestRedis::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let mut legacy = |key: &str, fields: &[(&str, &str)]| {
        let _: () = redis::pipe()
            .cmd("HSET")
            .arg(key)
            .arg(fields)
            .ignore()
            .cmd("PEXPIRE")
            .arg(key)
            .arg(3_600_000)
            .ignore()
            .query(&mut conn)
            .unwrap();
    };
    legacy(
        "fv:user_click_stats:7",
        &[
            ("_version", "00000000000000000012"),
            ("_event_time", "1700000000000"),
            ("click_count_1m", "4"),
        ],
    );
    legacy(
        "fv:user_purchase_stats:7",
        &[
            ("_version", "00000000000000000003"),
            ("_event_time", "1700000000001"),
            ("avg_purchase_amount_1h", "12.5"),
        ],
    );
    legacy(
        "fv:retired_view:7",
        &[("_version", "1"), ("_event_time", "1")],
    );
    let url = redis.url();
    let out = freshet(&["store", "migrate", "--redis-url", &url]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("2 legacy hashes moved into entity hashes")
            && stdout.contains("1 left in place (1 of views not in the definitions"),
        "{stdout}"
    );
    assert!(
        stderr.contains("left fv:retired_view:7 in place: its view is not in the definitions"),
        "{stderr}"
    );
    let hash: HashMap<String, String> = redis::cmd("HGETALL")
        .arg("fe:user:7")
        .query(&mut conn)
        .unwrap();
    let expected: HashMap<String, String> = [
        ("user_click_stats:_version", "00000000000000000012"),
        ("user_click_stats:_event_time", "1700000000000"),
        ("user_click_stats:click_count_1m", "4"),
        ("user_purchase_stats:_version", "00000000000000000003"),
        ("user_purchase_stats:_event_time", "1700000000001"),
        ("user_purchase_stats:avg_purchase_amount_1h", "12.5"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(hash, expected);
    let left: Vec<String> = redis::cmd("KEYS").arg("fv:*").query(&mut conn).unwrap();
    assert_eq!(left, ["fv:retired_view:7"]);

    // Redis that cannot be reached: one clear line, exit 1.
    let out = freshet(&["store", "migrate", "--redis-url", "redis://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: cannot connect to Redis at redis://127.0.0.1:1"),
        "{stderr}"
    );
}
