"""Feast's own Python SDK against Freshet's serving API.

Run by tests/feast.rs with the Feast repository `freshet features export-feast` writes
(after `feast apply`) and the serving API's base URL:

    python feast_sdk.py REPO_DIR BASE_URL

Every answer the SDK gives is compared with what Freshet's own endpoints serve for the
same entities (GET /features/{id}, POST /features/batch). Prints the status counts of
the 1,000-entity request, then "N checks passed"; any mismatch raises.
"""

import json
import sys
import urllib.request
from collections import Counter
from datetime import datetime, timezone

from feast import FeatureStore
from feast.errors import (
    FeastError,
    FeastObjectNotFoundException,
    FeatureNameCollisionError,
    FeatureViewNotFoundException,
)
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

REPO, BASE = sys.argv[1], sys.argv[2]
VIEWS = {
    "user_click_stats": [
        "click_count_1m",
        "view_count_1m",
        "click_count_10m",
        "distinct_items_viewed_10m",
    ],
    "user_purchase_stats": [
        "purchase_count_5m",
        "purchase_amount_sum_1h",
        "avg_purchase_amount_1h",
        "events_per_session",
    ],
}
FEATURES = [f"{view}:{feature}" for view, features in VIEWS.items() for feature in features]

checks = 0


def check(condition, what):
    global checks
    if not condition:
        raise AssertionError(what)
    checks += 1


def http(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        BASE + path, data=data, method=method, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def expected_status(view, feature_value):
    """Feast's status for a feature of a view as Freshet's own endpoint serves it."""
    status = view["status"]
    if status == "found":
        return "PRESENT" if feature_value["source"] in ("store", "cache") else "NOT_FOUND"
    return {"missing": "NOT_FOUND", "expired": "OUTSIDE_MAX_AGE", "unreadable": "INVALID"}[status]


def event_time(view):
    ms = view["event_time_ms"] if view["status"] == "found" else None
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def compare(response, own_results, what):
    """The SDK's answer against Freshet's own, entity by entity and feature by feature."""
    names = list(response.proto.metadata.feature_names.val)
    check(names == ["user_id"] + [f for fs in VIEWS.values() for f in fs], f"{what}: names {names}")
    as_dict = response.to_dict()
    statuses = Counter()
    for column, name in enumerate(names[1:], start=1):
        view_name = next(v for v, fs in VIEWS.items() if name in fs)
        sdk_statuses = response.proto.results[column].statuses
        for row, own in enumerate(own_results):
            own_view = own["views"][view_name]
            own_value = own_view["features"][name]
            got = as_dict[name][row]
            check(
                got == own_value["value"] and type(got) is type(own_value["value"]),
                f"{what}: {own['entity_id']} {name}: SDK {got!r}, Freshet {own_value['value']!r}",
            )
            status = FieldStatus.Name(sdk_statuses[row])
            check(
                status == expected_status(own_view, own_value),
                f"{what}: {own['entity_id']} {name}: SDK status {status}, Freshet {own_view['status']}/{own_value['source']}",
            )
            statuses[status] += 1
    check(
        as_dict["user_id"] == [int(own["entity_id"]) for own in own_results],
        f"{what}: the entity column echoes the request",
    )
    return statuses


store = FeatureStore(repo_path=REPO)

# Single entities, one of each kind (0 fresh, 1 missing, 2 expired and null, 3 lacking a
# feature), each with every feature.
for entity in range(8):
    response = store.get_online_features(features=FEATURES, entity_rows=[{"user_id": entity}])
    compare(response, [http("GET", f"/features/{entity}")], f"entity {entity}")

# 1,000 entities in one request, against Freshet's batch endpoint.
ids = list(range(1000))
response = store.get_online_features(
    features=FEATURES, entity_rows=[{"user_id": i} for i in ids]
)
own = http("POST", "/features/batch", {"entity_ids": ids})["results"]
statuses = compare(response, own, "batch of 1000")
print("batch statuses: " + json.dumps(dict(sorted(statuses.items()))))

# Event timestamps: the SDK's get_online_features drops them, so read them as its
# online_read does (one entity per call: it takes the first row's time for all)...
provider = store._get_provider()
for view_name, features in VIEWS.items():
    table = store.get_feature_view(view_name)
    for entity in range(8):
        key = EntityKey(join_keys=["user_id"], entity_values=[ValueProto(int64_val=entity)])
        [(timestamp, values)] = provider.online_read(store.config, table, [key], features)
        expected = event_time(own[entity]["views"][view_name])
        check(
            timestamp == (expected or datetime(1970, 1, 1, tzinfo=timezone.utc)),
            f"online_read {view_name} {entity}: time {timestamp}, Freshet {expected}",
        )
# ... and from the answer to the very request the SDK sends, for all 1,000.
answer = http("POST", "/get-online-features", {"entities": {"user_id": ids}, "features": FEATURES})
names = answer["metadata"]["feature_names"]
for column, name in enumerate(names[1:], start=1):
    view_name = next(v for v, fs in VIEWS.items() if name in fs)
    for row, stamp in enumerate(answer["results"][column]["event_timestamps"]):
        expected = event_time(own[row]["views"][view_name])
        got = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        check(
            got == (expected or datetime(1970, 1, 1, tzinfo=timezone.utc)),
            f"{name} of {row}: time {stamp}, Freshet {expected}",
        )

# Full feature names.
response = store.get_online_features(
    features=FEATURES[:2], entity_rows=[{"user_id": 0}], full_feature_names=True
)
check(
    sorted(response.to_dict()) == ["user_click_stats__click_count_1m", "user_click_stats__view_count_1m", "user_id"],
    f"full names: {sorted(response.to_dict())}",
)

# Mistakes come back as the Feast exceptions they are.
def raises(kind, features, rows, text):
    try:
        store.get_online_features(features=features, entity_rows=rows)
    except kind as e:
        check(type(e) is kind, f"{features}: raised {type(e).__name__}, not {kind.__name__}")
        check(text in str(e), f"{features}: {str(e)!r} lacks {text!r}")
        return
    raise AssertionError(f"{features} {rows}: no {kind.__name__}")


raises(FeatureViewNotFoundException, ["nope:x"], [{"user_id": 1}], "Feature view nope does not exist")
raises(FeastObjectNotFoundException, ["user_click_stats:nope"], [{"user_id": 1}], "Feature nope not found")
raises(FeastError, ["user_click_stats:click_count_1m"], [{"driver_id": 1}], "`driver_id` is not the join key")
raises(
    FeatureNameCollisionError,
    ["user_click_stats:click_count_1m", "user_click_stats:click_count_1m"],
    [{"user_id": 1}],
    "Duplicate features named click_count_1m",
)

print(f"{checks} checks passed")
