"""Wire models are versioned: an incompatible change without a version bump fails here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas.compat import incompatibilities
from schemas.events import json_schema_of
from schemas.export import EXPORTED_MODELS, schema_path

EXPORTED = Path(__file__).resolve().parent.parent / "schemas" / "jsonschema"


@pytest.mark.parametrize("model", EXPORTED_MODELS, ids=lambda m: m.SCHEMA_NAME)
def test_model_matches_its_exported_schema_of_the_same_version(model) -> None:  # type: ignore[no-untyped-def]
    path = schema_path(EXPORTED, model.SCHEMA_NAME, model.SCHEMA_VERSION)
    assert path.exists(), f"{path.name} missing: run `lotabots schemas export`"
    committed = json.loads(path.read_text())
    current = json_schema_of(model)
    if committed == current:
        return
    problems = incompatibilities(committed, current)
    assert not problems, (
        f"{model.__name__} changed incompatibly without a version bump: {problems}; "
        "bump SCHEMA_VERSION (and the schema_version literal) and export"
    )
    pytest.fail(f"{model.__name__} changed compatibly: re-run `lotabots schemas export` and commit")


def test_every_exported_version_is_kept() -> None:
    names = {p.name for p in EXPORTED.glob("*.json")}
    for model in EXPORTED_MODELS:
        for v in range(1, model.SCHEMA_VERSION + 1):
            assert f"{model.SCHEMA_NAME}.v{v}.json" in names


BASE = {
    "type": "object",
    "properties": {"a": {"type": "string"}, "b": {"anyOf": [{"type": "integer"}, {"type": "null"}]}},
    "required": ["a"],
}


def test_adding_an_optional_field_is_compatible() -> None:
    new = json.loads(json.dumps(BASE))
    new["properties"]["c"] = {"type": "string"}
    assert incompatibilities(BASE, new) == []


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda s: s["properties"].pop("b"), "removed"),
        (lambda s: s["properties"].__setitem__("a", {"type": "integer"}), "type"),
        (lambda s: s["required"].append("b"), "became required"),
        (lambda s: s["properties"].__setitem__("b", {"type": "integer"}), "type"),
    ],
)
def test_incompatible_changes_are_detected(change, reason: str) -> None:  # type: ignore[no-untyped-def]
    new = json.loads(json.dumps(BASE))
    change(new)
    problems = incompatibilities(BASE, new)
    assert problems and reason in problems[0]


def test_a_real_model_change_is_caught() -> None:
    from schemas.events import RequestLifecycleEvent

    committed = json.loads(schema_path(EXPORTED, "request_lifecycle_event", 1).read_text())
    mutated = json_schema_of(RequestLifecycleEvent)
    del mutated["properties"]["output"]
    assert any("output" in p for p in incompatibilities(committed, mutated))
