"""Drives Confluent's Python client (confluent-kafka, pinned in scripts/bootstrap.sh)
through every public SchemaRegistryClient call that a self-managed registry serves,
plus AvroSerializer / AvroDeserializer, against Freshet's registry at argv[1].

Every call asserts the answer's content. Prints one line per call and exits non-zero on
the first failure, naming the call.
"""

import json
import sys

from confluent_kafka.schema_registry import (
    ConfigCompatibilityLevel,
    Schema,
    SchemaReference,
    SchemaRegistryClient,
    ServerConfig,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

URL = sys.argv[1]
client = SchemaRegistryClient({"url": URL})
calls = 0


def check(name, condition, detail=""):
    global calls
    if not condition:
        print(f"FAILED {name}: {detail}")
        sys.exit(1)
    calls += 1
    print(f"ok {name}")


def error_of(function):
    """The SchemaRegistryError a call raises (None if it does not raise)."""
    try:
        function()
    except SchemaRegistryError as e:
        return e
    return None


V1 = {
    "type": "record",
    "name": "User",
    "namespace": "test.compat",
    "fields": [{"name": "id", "type": "long"}],
}
V2 = dict(V1, fields=V1["fields"] + [{"name": "email", "type": ["null", "string"], "default": None}])
INCOMPATIBLE = dict(V1, fields=V1["fields"] + [{"name": "age", "type": "int"}])
SUBJECT = "users-value"

s1 = Schema(json.dumps(V1), "AVRO")
s2 = Schema(json.dumps(V2), "AVRO")
bad = Schema(json.dumps(INCOMPATIBLE), "AVRO")

# Registration and reading back.
id1 = client.register_schema(SUBJECT, s1)
check("register_schema", isinstance(id1, int) and id1 > 0, id1)
full = client.register_schema_full_response(SUBJECT, s1)
check("register_schema_full_response", full.schema_id == id1, full)
schema = client.get_schema(id1)
check("get_schema", json.loads(schema.schema_str) == V1 and schema.schema_type == "AVRO", schema)
check("get_schema_types", "AVRO" in client.get_schema_types(), client.get_schema_types())
check("get_subjects", client.get_subjects() == [SUBJECT], client.get_subjects())
check("get_subjects(subject_prefix)", client.get_subjects(subject_prefix="users") == [SUBJECT]
      and client.get_subjects(subject_prefix="orders") == [], "")
check("get_versions", client.get_versions(SUBJECT) == [1], client.get_versions(SUBJECT))
version = client.get_version(SUBJECT, 1)
check("get_version", (version.schema_id, version.subject, version.version) == (id1, SUBJECT, 1), version)
latest = client.get_latest_version(SUBJECT)
check("get_latest_version", (latest.schema_id, latest.version) == (id1, 1), latest)
found = client.lookup_schema(SUBJECT, s1)
check("lookup_schema", (found.schema_id, found.version, found.subject) == (id1, 1, SUBJECT), found)
check("lookup_schema(normalize_schemas)",
      client.lookup_schema(SUBJECT, s1, normalize_schemas=True).schema_id == id1, "")
check("get_subjects_by_schema_id", client.get_subjects_by_schema_id(id1) == [SUBJECT],
      client.get_subjects_by_schema_id(id1))
uses = client.get_schema_versions(id1)
check("get_schema_versions", [(u.subject, u.version) for u in uses] == [(SUBJECT, 1)], uses)
check("get_referenced_by", client.get_referenced_by(SUBJECT, 1) == [], "")
check("get_contexts", client.get_contexts() == ["."], client.get_contexts())

# Compatibility.
check("test_compatibility (compatible)", client.test_compatibility(SUBJECT, s2) is True, "")
check("test_compatibility (incompatible)", client.test_compatibility(SUBJECT, bad) is False, "")
check("test_compatibility(verbose)", client.test_compatibility(SUBJECT, bad, version=1, verbose=True) is False, "")
check("test_compatibility_all_versions", client.test_compatibility_all_versions(SUBJECT, s2) is True, "")
e = error_of(lambda: client.register_schema(SUBJECT, bad))
check("register_schema (incompatible)", e is not None and e.http_status_code == 409 and e.error_code == 409, e)
id2 = client.register_schema(SUBJECT, s2)
check("register_schema (second version)", id2 != id1 and client.get_versions(SUBJECT) == [1, 2], id2)

# Configuration and mode.
check("set_compatibility", client.set_compatibility(SUBJECT, "FULL") == {"compatibility": "FULL"}, "")
check("get_compatibility", client.get_compatibility(SUBJECT) == "FULL", client.get_compatibility(SUBJECT))
check("get_compatibility (global)", client.get_compatibility() == "BACKWARD", client.get_compatibility())
config = client.get_config(SUBJECT)
check("get_config", config.compatibility_level.value == "FULL", config)
updated = client.set_config(SUBJECT, ServerConfig(compatibility=ConfigCompatibilityLevel.FORWARD))
check("set_config", client.get_compatibility(SUBJECT) == "FORWARD", updated)
deleted = client.delete_config(SUBJECT)
check("delete_config", deleted.compatibility_level.value == "FORWARD"
      and error_of(lambda: client.get_compatibility(SUBJECT)).error_code == 40408, deleted)
client.set_config(None, ServerConfig(compatibility=ConfigCompatibilityLevel.NONE))
check("set_config (global)", client.get_compatibility() == "NONE", "")
previous = client.delete_config()
check("delete_config (global)", previous.compatibility_level.value == "NONE"
      and client.get_compatibility() == "BACKWARD", previous)
check("get_global_mode", client.get_global_mode() == "READWRITE", client.get_global_mode())
check("get_mode", client.get_mode(SUBJECT) == "READWRITE", client.get_mode(SUBJECT))
check("update_mode (READWRITE)", client.update_mode(SUBJECT, "READWRITE") == "READWRITE", "")
check("update_global_mode (READWRITE)", client.update_global_mode("READWRITE") == "READWRITE", "")
e = error_of(lambda: client.update_mode(SUBJECT, "IMPORT"))
check("update_mode (IMPORT refused)", e is not None and e.http_status_code == 422 and e.error_code == 42204, e)
check("delete_mode", client.delete_mode(SUBJECT) == "READWRITE", "")

# References are refused clearly.
with_reference = Schema(json.dumps({"type": "record", "name": "Order", "fields": [{"name": "user", "type": "test.compat.User"}]}),
                        "AVRO", [SchemaReference("test.compat.User", SUBJECT, 1)])
e = error_of(lambda: client.register_schema("orders-value", with_reference))
check("register_schema (references refused)", e is not None and e.http_status_code == 422
      and e.error_code == 42201 and "references" in e.error_message, e)

# Serialisation through the registry, as producers in production run it.
ctx = SerializationContext("users", MessageField.VALUE)
# The client caches "latest" (read above, before version 2 existed).
client.clear_latest_caches()
latest_serializer = AvroSerializer(client, json.dumps(V2),
                                   conf={"auto.register.schemas": False, "use.latest.version": True})
payload = latest_serializer({"id": 7, "email": "a@b.c"}, ctx)
check("AvroSerializer(use.latest.version)", payload[0] == 0 and int.from_bytes(payload[1:5], "big") == id2, payload[:5])
lookup_serializer = AvroSerializer(client, json.dumps(V1), conf={"auto.register.schemas": False})
payload_v1 = lookup_serializer({"id": 8}, ctx)
check("AvroSerializer(auto.register.schemas off)", int.from_bytes(payload_v1[1:5], "big") == id1, payload_v1[:5])
deserializer = AvroDeserializer(client)
check("AvroDeserializer", deserializer(payload, ctx) == {"id": 7, "email": "a@b.c"}
      and deserializer(payload_v1, ctx) == {"id": 8}, "")
e = error_of(lambda: AvroSerializer(client, json.dumps(INCOMPATIBLE), conf={"auto.register.schemas": False})({"id": 1, "age": 2}, ctx))
check("AvroSerializer (unregistered schema)", e is not None and e.error_code == 40403, e)

# Deletes, soft then permanent.
check("delete_version (soft)", client.delete_version(SUBJECT, 2) == 2 and client.get_versions(SUBJECT) == [1], "")
check("get_versions(deleted)", client.get_versions(SUBJECT, deleted=True) == [1, 2], "")
check("get_versions(deleted_only)", client.get_versions(SUBJECT, deleted_only=True) == [2], "")
check("get_version(deleted)", client.get_version(SUBJECT, 2, deleted=True).schema_id == id2, "")
check("lookup_schema(deleted)", client.lookup_schema(SUBJECT, s2, deleted=True).version == 2, "")
check("delete_version (permanent)", client.delete_version(SUBJECT, 2, permanent=True) == 2
      and client.get_versions(SUBJECT, deleted=True) == [1], "")
check("delete_subject (soft)", client.delete_subject(SUBJECT) == [1] and client.get_subjects() == [], "")
check("get_subjects(deleted)", client.get_subjects(deleted=True) == [SUBJECT], "")
check("get_subjects(deleted_only)", client.get_subjects(deleted_only=True) == [SUBJECT], "")
check("delete_subject (permanent)", client.delete_subject(SUBJECT, permanent=True) == [1]
      and client.get_subjects(deleted=True) == [], "")

# Errors carry Confluent's codes.
e = error_of(lambda: client.get_version("nope", 1))
check("error: unknown subject", e is not None and e.http_status_code == 404 and e.error_code == 40401, e)
e = error_of(lambda: client.get_schema(99999))
check("error: unknown schema id", e is not None and e.http_status_code == 404 and e.error_code == 40403, e)

# Data contracts and schema GUIDs are not served: a 404 the client can read.
e = error_of(lambda: client.get_latest_with_metadata("nope", {"owner": "x"}))
check("get_latest_with_metadata (not served)", e is not None and e.http_status_code == 404 and e.error_code > 0, e)
e = error_of(lambda: client.get_schema_by_guid("0f2b3c4d-0000-0000-0000-000000000000"))
check("get_schema_by_guid (not served)", e is not None and e.http_status_code == 404 and e.error_code > 0, e)

print(f"{calls} calls passed")
