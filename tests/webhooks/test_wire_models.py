"""The webhook topics' messages are versioned wire contracts: exported JSON Schema matches the models."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.compat import incompatibilities
from schemas.events import json_schema_of
from schemas.export import EXPORTED_MODELS, schema_path
from schemas.webhook_events import WEBHOOK_WIRE_MODELS, WebhookRetry

EXPORTED = Path(__file__).resolve().parents[2] / "schemas" / "jsonschema"


@pytest.mark.parametrize("model", WEBHOOK_WIRE_MODELS, ids=lambda m: m.SCHEMA_NAME)
def test_webhook_models_match_their_exported_schema(model) -> None:  # type: ignore[no-untyped-def]
    path = schema_path(EXPORTED, model.SCHEMA_NAME, model.SCHEMA_VERSION)
    committed = json.loads(path.read_text())
    assert committed == json_schema_of(model) or not incompatibilities(committed, json_schema_of(model))
    assert model in EXPORTED_MODELS  # `lotabots schemas export` keeps writing it


def test_a_retry_message_round_trips_with_its_due_time() -> None:
    message = WebhookRetry(delivery_id="msg_1", request_id="req_1", tenant_id="ten_1", attempt=2,
                           due_at=datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC))
    again = WebhookRetry.model_validate_json(message.model_dump_json())
    assert again == message and again.due_at.timestamp() == message.due_at.timestamp() and not again.replay
