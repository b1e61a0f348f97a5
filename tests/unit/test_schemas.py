"""The checked-in JSON Schemas match the Structs they are generated from."""

from pathlib import Path

from switchboard.jsonschema import schemas

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_checked_in_schemas_match_the_code() -> None:
    generated = schemas()
    on_disk = {p.name: p.read_bytes() for p in SCHEMAS.glob("*.schema.json")}
    assert set(on_disk) == set(generated), "run ./switchboard schemas --write"
    for name, data in generated.items():
        assert on_disk[name] == data, f"{name} drifted: run ./switchboard schemas --write"


def test_activity_schema_names_the_wire_fields() -> None:
    import orjson

    activity = orjson.loads(schemas()["activity.schema.json"])
    props = activity["$defs"]["Activity"]["properties"]
    assert {"activityId", "hubId", "integrationId", "conversationId", "type"} <= set(props)
