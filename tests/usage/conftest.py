"""Usage tests: chDB in-process, and a free-tier worker (the pipeline itself: tests/usage_pipeline.py)."""

from __future__ import annotations

import pytest

from tests.stack import Stack, StackProcess
from tests.usage_pipeline import UsagePipeline  # noqa: F401 - the usage tests import it from here


@pytest.fixture(scope="session")
def chdb_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One chDB directory for every in-process test: chDB serves a single data path per process."""
    return f"chdb://{tmp_path_factory.mktemp('chdb')}"


@pytest.fixture(scope="session")
def free_worker(stack: Stack) -> StackProcess:
    """An inference worker for the free tier (the stack runs pro only)."""
    for process in stack.processes:
        if process.name == "inference-free" and process.alive():
            return process
    return stack.spawn("inference-free", "worker", "inference", "--tier", "free")
