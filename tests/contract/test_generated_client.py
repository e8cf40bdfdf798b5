"""A client generated from docs/openapi.json by a standard generator (openapi-python-client) builds, and
its typed calls make a submit -> poll round trip through the live stack (the real model)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

EXPORTED = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
GENERATOR = Path(sys.executable).with_name("openapi-python-client")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("client")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    done = subprocess.run([str(GENERATOR), "generate", "--path", str(EXPORTED), "--output-path",
                           str(root / "lotabots_api"), "--meta", "none"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module("lotabots_api")
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == "lotabots_api" or m.startswith("lotabots_api.")]:
            del sys.modules[name]


def test_the_generated_client_submits_and_polls_to_the_final_text(generated: Any, stack: Any,
                                                                  pro_tenant: tuple[str, str]) -> None:
    submit = importlib.import_module("lotabots_api.api.requests.submit_request")
    get = importlib.import_module("lotabots_api.api.requests.get_request")
    models = importlib.import_module("lotabots_api.models")
    client = generated.AuthenticatedClient(base_url=stack.gateway_url, token=pro_tenant[1])

    body = models.SubmitRequestBody(messages=[models.ChatMessage(role=models.ChatMessageRole.USER,
                                                                 content="What is 2+2?")], max_tokens=8)
    answer = submit.sync_detailed(client=client, body=body)
    assert answer.status_code == 202, answer.content
    queued = answer.parsed
    assert isinstance(queued, models.RequestResource) and queued.id.startswith("req_")
    assert answer.headers["location"] == f"/v1/requests/{queued.id}"

    deadline = time.monotonic() + 120
    final = queued
    while final.status not in (models.RequestStatus.SUCCEEDED, models.RequestStatus.FAILED) \
            and time.monotonic() < deadline:
        final = get.sync(request_id=queued.id, client=client, wait=10)
        assert isinstance(final, models.RequestResource)
    assert final.status == models.RequestStatus.SUCCEEDED
    assert final.output.text and final.usage.completion_tokens >= 1
    assert final.usage.total_tokens == final.usage.prompt_tokens + final.usage.completion_tokens

    refused = get.sync_detailed(request_id="req_doesnotexist", client=client)
    assert refused.status_code == 404 and isinstance(refused.parsed, models.ErrorBody)
    assert refused.parsed.error.code == "request_not_found"
