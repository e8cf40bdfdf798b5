"""The JSON response class: orjson-rendered bytes (FastAPI's JSONBytes is deprecated)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class JSONBytes(JSONResponse):  # a JSONResponse so FastAPI documents the routes' response models
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
