"""Export every wire model's JSON Schema to `schemas/jsonschema/<name>.v<N>.json`."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.auth_events import AUTH_WIRE_MODELS
from schemas.events import WIRE_MODELS, WireModel, json_schema_of
from schemas.usage import USAGE_WIRE_MODELS
from schemas.webhook_events import WEBHOOK_WIRE_MODELS

# Every exported model: the spine's plus each area's (auth: schemas/auth_events.py, usage: schemas/usage.py,
# webhooks: schemas/webhook_events.py).
EXPORTED_MODELS: list[type[WireModel]] = [*WIRE_MODELS, *AUTH_WIRE_MODELS, *USAGE_WIRE_MODELS,
                                          *WEBHOOK_WIRE_MODELS]


def schema_path(directory: Path, name: str, version: int) -> Path:
    return directory / f"{name}.v{version}.json"


def render(model) -> str:  # type: ignore[no-untyped-def]
    return json.dumps(json_schema_of(model), indent=2, sort_keys=True) + "\n"


def export_json_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for model in EXPORTED_MODELS:
        path = schema_path(directory, model.SCHEMA_NAME, model.SCHEMA_VERSION)
        path.write_text(render(model))
        written.append(path)
    return written
