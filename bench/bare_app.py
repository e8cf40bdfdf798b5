"""The baseline for the submit benchmark: a bare FastAPI JSON endpoint, served the same way as the gateway."""

from __future__ import annotations

import gc
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway.responses import JSONBytes


@asynccontextmanager
async def _lifespan(_: FastAPI) -> AsyncIterator[None]:
    # the gateway freezes its start-up heap and raises the GC threshold; the baseline gets the same
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    yield


# the gateway runs with FastAPI's built-in OpenTelemetry off; the baseline does too (apples to apples)
app = FastAPI(default_response_class=JSONBytes, lifespan=_lifespan,
              telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False})


@app.post("/v1/requests", status_code=202)
async def submit(body: dict) -> JSONBytes:
    rid = f"req_{uuid.uuid4().hex}"
    return JSONBytes({"id": rid, "status": "queued"}, status_code=202, headers={"Location": f"/v1/requests/{rid}"})


@app.get("/healthz")
async def healthz() -> dict:
    return {"ok": True}
