"""Writes the Iceberg tables the lake test reads, with pyiceberg (the Python library users
write tables with): a SQL catalog on SQLite, the warehouse on the test's S3 server.

    iceberg_tables.py CATALOG_DB S3_ENDPOINT EVENTS_JSONL SPLIT

`lake.events` gets two appends of the events in EVENTS_JSONL: first the events from
SPLIT on, then the events before SPLIT (so the commit order is not the event-time order).
The time is a `timestamptz` column and an extra column is there that the source does not
know. `lake.no_time` has the events without their time column. Prints the snapshot ids of
`lake.events`, oldest first, as JSON. The S3 keys come from the AWS environment variables.
"""

import json
import os
import sys

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog

catalog_db, endpoint, events_path, split = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

catalog = SqlCatalog(
    "default",
    uri=f"sqlite:///{catalog_db}",
    warehouse="s3://lake/warehouse",
    **{
        "s3.endpoint": endpoint,
        "s3.access-key-id": os.environ["AWS_ACCESS_KEY_ID"],
        "s3.secret-access-key": os.environ["AWS_SECRET_ACCESS_KEY"],
        "s3.region": "us-east-1",
    },
)
catalog.create_namespace("lake")

with open(events_path) as f:
    events = [json.loads(line) for line in f if line.strip()]


def as_table(rows, with_time=True):
    columns = {
        "user_id": pa.array([r["user_id"] for r in rows], pa.int64()),
        "action_type": pa.array([r["action_type"] for r in rows], pa.string()),
        "item_id": pa.array([r["item_id"] for r in rows], pa.int64()),
        "amount": pa.array([r["amount"] for r in rows], pa.float64()),
        "note": pa.array(["lake"] * len(rows), pa.string()),
    }
    if with_time:
        columns["timestamp"] = pa.array(
            [r["timestamp"] * 1000 for r in rows], pa.timestamp("us", tz="UTC")
        )
    return pa.table(columns)


table = catalog.create_table("lake.events", schema=as_table(events[:1]).schema)
table.append(as_table(events[split:]))
table.append(as_table(events[:split]))
table = catalog.load_table("lake.events")
snapshots = [s.snapshot_id for s in sorted(table.snapshots(), key=lambda s: s.sequence_number)]

no_time = catalog.create_table("lake.no_time", schema=as_table(events[:1], False).schema)
no_time.append(as_table(events[:10], False))

print(json.dumps({"snapshots": snapshots}))
