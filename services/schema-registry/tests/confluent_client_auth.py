"""Confluent's Python client (confluent-kafka) against Freshet's registry with basic auth,
configured as users configure it for a managed registry (`basic.auth.user.info`).

argv: URL, a write user's USER:PASSWORD, a read user's USER:PASSWORD. Every call asserts
the answer; prints one line per call and "N calls passed", exits non-zero on a failure.
"""

import json
import sys
import urllib.request

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

URL, WRITER, READER = sys.argv[1:4]
writer = SchemaRegistryClient({"url": URL, "basic.auth.user.info": WRITER})
reader = SchemaRegistryClient({"url": URL, "basic.auth.user.info": READER})
anonymous = SchemaRegistryClient({"url": URL})
wrong = SchemaRegistryClient({"url": URL, "basic.auth.user.info": WRITER.split(":")[0] + ":not-the-password"})
calls = 0


def check(name, condition, detail=""):
    global calls
    if not condition:
        print(f"FAILED {name}: {detail}")
        sys.exit(1)
    calls += 1
    print(f"ok {name}")


def error_of(function):
    try:
        function()
    except SchemaRegistryError as e:
        return e
    return None


SCHEMA = {
    "type": "record",
    "name": "Click",
    "namespace": "test.auth",
    "fields": [{"name": "user_id", "type": "long"}, {"name": "page", "type": "string"}],
}
SUBJECT = "clicks-value"
schema = Schema(json.dumps(SCHEMA), "AVRO")

for name, client in [("no credentials", anonymous), ("wrong password", wrong)]:
    e = error_of(lambda: client.get_subjects())
    check(f"get_subjects ({name}) is 401", e is not None and e.http_status_code == 401 and e.error_code == 401, e)
    e = error_of(lambda: client.register_schema(SUBJECT, schema))
    check(f"register_schema ({name}) is 401", e is not None and e.http_status_code == 401, e)

schema_id = writer.register_schema(SUBJECT, schema)
check("register_schema (write user)", schema_id > 0, schema_id)
check("get_subjects (read user)", reader.get_subjects() == [SUBJECT], reader.get_subjects())
check("get_schema (read user)", json.loads(reader.get_schema(schema_id).schema_str) == SCHEMA, "")
check("lookup_schema (read user, a POST that only reads)", reader.lookup_schema(SUBJECT, schema).schema_id == schema_id, "")
check("test_compatibility (read user, a POST that only reads)", reader.test_compatibility(SUBJECT, schema) is True, "")
check("get_latest_version (read user)", reader.get_latest_version(SUBJECT).version == 1, "")

v2 = Schema(json.dumps(dict(SCHEMA, fields=SCHEMA["fields"] + [{"name": "ref", "type": ["null", "string"], "default": None}])), "AVRO")
for call, function in [
    ("register_schema", lambda: reader.register_schema(SUBJECT, v2)),
    ("set_compatibility", lambda: reader.set_compatibility(SUBJECT, "NONE")),
    ("delete_subject", lambda: reader.delete_subject(SUBJECT)),
]:
    e = error_of(function)
    check(f"{call} (read user) is 403", e is not None and e.http_status_code == 403 and e.error_code == 40301, e)
check("nothing changed by the read user", writer.get_versions(SUBJECT) == [1], writer.get_versions(SUBJECT))

ctx = SerializationContext("clicks", MessageField.VALUE)
serialize = AvroSerializer(writer, json.dumps(SCHEMA))
deserialize = AvroDeserializer(reader)
record = {"user_id": 42, "page": "/home"}
check("AvroSerializer (write user) -> AvroDeserializer (read user)", deserialize(serialize(record, ctx), ctx) == record, "")
e = error_of(lambda: AvroDeserializer(anonymous)(serialize(record, ctx), ctx))
check("AvroDeserializer (no credentials) is 401", e is not None and e.http_status_code == 401, e)

with urllib.request.urlopen(URL + "/health") as response:
    check("/health needs no credentials", response.status == 200, response.status)

print(f"{calls} calls passed")
