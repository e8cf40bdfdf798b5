"""`GET /v1/models`, `GET /v1/models/{id}`: the models this deployment serves (OpenAI's list shape)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from gateway.api_models import ModelList, ModelObject
from gateway.openai_compat import model_object, resolve_model, served_models
from gateway.openapi_docs import errors
from gateway.responses import JSONBytes
from gateway.security import authenticate

router = APIRouter(prefix="/v1/models", tags=["openai"])


@router.get("", response_model=ModelList)
async def list_models(request: Request) -> JSONBytes:
    """Every model id a chat completion or response may name."""
    await authenticate(request)
    return JSONBytes({"object": "list", "data": [model_object(m) for m in served_models(request.app.state.settings)]})


@router.get("/{model_id:path}", response_model=ModelObject,
            responses=errors(404, openai=True, e404="no such model (`model_not_found`)"))
async def get_model(model_id: str, request: Request) -> JSONBytes:
    await authenticate(request)
    return JSONBytes(model_object(resolve_model(request.app.state.settings, model_id)))
