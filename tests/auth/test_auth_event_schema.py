"""`auth.events` is a versioned wire contract like the others: its exported JSON Schema matches the model."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.auth_events import AUTH_WIRE_MODELS, AuthEvent, AuthEventType
from schemas.compat import incompatibilities
from schemas.events import json_schema_of
from schemas.export import schema_path

EXPORTED = Path(__file__).resolve().parents[2] / "schemas" / "jsonschema"


def test_auth_event_matches_its_exported_schema() -> None:
    for model in AUTH_WIRE_MODELS:
        path = schema_path(EXPORTED, model.SCHEMA_NAME, model.SCHEMA_VERSION)
        committed = json.loads(path.read_text())
        assert committed == json_schema_of(model) or not incompatibilities(committed, json_schema_of(model))


def test_auth_event_round_trips_and_is_keyed_by_user() -> None:
    event = AuthEvent(event_id="aev_1", type=AuthEventType.PASSWORD_CHANGED, at="2026-01-01T00:00:00Z",
                      user_id="usr_1")
    assert AuthEvent.model_validate_json(event.model_dump_json()) == event
    assert event.kafka_key == "usr_1"
    anonymous = AuthEvent(event_id="aev_2", type=AuthEventType.PASSWORD_RESET_UNKNOWN_EMAIL,
                          at="2026-01-01T00:00:00Z", email="x@example.com")
    assert anonymous.kafka_key != "x@example.com" and len(anonymous.kafka_key) == 64
