"""docs/openapi.json is the app's document, and the document describes every operation fully."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from openapi_spec_validator import validate

from gateway.openapi_docs import openapi_json

EXPORTED = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def _document() -> dict[str, Any]:
    return json.loads(openapi_json())


def test_docs_openapi_json_is_the_apps_document() -> None:
    assert EXPORTED.read_text() == openapi_json(), "docs/openapi.json is stale: run `lotabots schemas openapi`"


def test_the_document_is_valid_and_every_reference_resolves() -> None:
    doc = _document()
    validate(doc)
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(doc)))
    assert refs - set(doc["components"]["schemas"]) == set()


def test_every_operation_declares_its_security_answers_and_errors() -> None:
    doc = _document()
    operations = [(path, method, op) for path, ops in doc["paths"].items() for method, op in ops.items()]
    assert len(operations) >= 60
    public = {("/v1/auth/register", "post"), ("/v1/auth/verify-email", "post"), ("/v1/auth/login", "post"),
              ("/v1/auth/refresh", "post"), ("/v1/auth/password/reset-request", "post"),
              ("/v1/auth/password/reset", "post"), ("/.well-known/jwks.json", "get")}
    for path, method, op in operations:
        where = f"{method.upper()} {path}"
        responses = op["responses"]
        success = [status for status in responses if status.startswith("2")]
        assert success, where
        for status in success:
            for media, content in responses[status].get("content", {}).items():
                schema = content.get("schema", {})
                assert schema not in ({}, {"type": "string"}), f"{where} {status} {media} has no real schema"
        if (path, method) in public:
            assert op["security"] == [], where
        else:
            assert op["security"] == [{"bearerAuth": []}], where
            assert "401" in responses and "WWW-Authenticate" in responses["401"]["headers"], where
        assert "503" in responses and "Retry-After" in responses["503"]["headers"], where
        if "{" in path:
            assert "404" in responses, where
        if "requestBody" in op:
            assert "400" in responses and ("422" in responses or path.startswith(("/v1/chat", "/v1/responses"))), where
        for status, entry in responses.items():
            if status[0] in "45":
                assert list(entry["content"]) == ["application/json"], where
        assert op["operationId"] and op.get("description"), where


def test_submit_documents_its_headers_and_the_error_body_of_each_refusal() -> None:
    op = _document()["paths"]["/v1/requests"]["post"]
    assert op["operationId"] == "submit_request"
    headers = op["responses"]["202"]["headers"]
    assert {"Location", "RateLimit-Policy", "RateLimit", "Idempotent-Replayed", "Preference-Applied"} <= set(headers)
    assert {p["name"] for p in op["parameters"]} >= {"Idempotency-Key", "Prefer"}
    assert "Retry-After" in op["responses"]["429"]["headers"]
    for status in ("401", "403", "409", "422", "429", "503"):
        assert op["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"}
    assert op["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SubmitRequestBody"}
    chat = _document()["paths"]["/v1/chat/completions"]["post"]
    assert chat["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OpenAIErrorBody"}
