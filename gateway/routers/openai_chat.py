"""`POST /v1/chat/completions`: OpenAI's chat completions, streaming or not, over the request lifecycle.

The body becomes a native request (gateway.openai_compat.submit_as_request); a non-streaming call holds
until the request ends and answers a `chat.completion`; a streaming call answers `chat.completion.chunk`
events from the token stream, then `data: [DONE]`. The completion's id is the request's id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from gateway.api_models import ChatCompletion
from gateway.openai_compat import (
    failure_error,
    openai_error_body,
    refuse_unattended,
    resolve_model,
    submit_as_request,
    unix,
    wait_settled,
)
from gateway.openapi_docs import SSE_CONTENT, SUBMIT_HEADERS, body_ref, errors, success
from gateway.responses import JSONBytes
from gateway.routers.streaming import cancel_when_gone, output_items
from gateway.sse import KEEPALIVE, EventStreamResponse
from gateway.text_follower import Delta, Done, KeepAlive, Restart, StreamItem
from schemas.autonomy_levels import AutonomyLevel

router = APIRouter(prefix="/v1/chat", tags=["openai"])

Text = Annotated[str, Field(max_length=32_768)]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: Text


class ChatCompletionMessage(BaseModel):
    """A message as OpenAI sends it; `developer` is the newer name of `system`."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | Annotated[list[TextPart], Field(min_length=1, max_length=64)]
    name: Annotated[str, Field(max_length=64)] | None = None

    def as_chat_message(self) -> dict[str, str]:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


def _bool_only(value: object) -> object:
    """`Literal[False]` alone would take 0 (0 == False in Python); JSON's `false` is no number."""
    if not isinstance(value, bool):
        raise ValueError("a boolean is expected")
    return value


def _number_only(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("a number is expected")
    return value


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text"]


class ChatCompletionBody(BaseModel):
    """What `POST /v1/chat/completions` accepts (docs/openai.md lists what is refused and why).
    `stream_options` only with `stream: true`."""

    model_config = ConfigDict(extra="forbid", strict=True)  # strict: `true` is no 1, `0` no false
    model: Annotated[str, Field(min_length=1, max_length=200)]
    messages: Annotated[list[ChatCompletionMessage], Field(min_length=1, max_length=256)]
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)  # OpenAI's default (the native API's is 0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: Annotated[str, Field(min_length=1, max_length=64)] | Annotated[
        list[Annotated[str, Field(min_length=1, max_length=64)]], Field(max_length=4)] | None = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    n: Literal[1] = 1
    user: Annotated[str, Field(max_length=256)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    presence_penalty: Annotated[Literal[0], BeforeValidator(_number_only)] = 0
    frequency_penalty: Annotated[Literal[0], BeforeValidator(_number_only)] = 0
    logprobs: Annotated[Literal[False], BeforeValidator(_bool_only)] = False
    # accepted and ignored: what the platform already does or does not keep
    store: bool | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(default=None, max_length=16)
    # LotaBots extensions (the SDKs' `extra_body`): conversation order and levels of autonomy
    conversation_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    task: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    context: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    autonomy_level: AutonomyLevel | None = None
    cancel_on_disconnect: bool = False

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> ChatCompletionBody:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream: true")
        return self

    def as_request_fields(self) -> dict[str, Any]:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        fields: dict[str, Any] = {
            "messages": [m.as_chat_message() for m in self.messages],
            "max_tokens": self.max_completion_tokens or self.max_tokens, "temperature": self.temperature,
            "top_p": self.top_p, "stop": stop, "seed": self.seed, "conversation_id": self.conversation_id,
            "task": self.task, "context": self.context, "autonomy_level": self.autonomy_level,
        }
        return {k: v for k, v in fields.items() if v is not None}


def _finish_reason(resource: dict[str, Any]) -> str:
    reason = (resource.get("output") or {}).get("finish_reason") or "stop"
    return reason if reason in ("stop", "length") else "stop"


def _usage(resource: dict[str, Any]) -> dict[str, int]:
    usage = resource.get("usage") or {}
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_object(resource: dict[str, Any], model: str, fingerprint: str) -> dict[str, Any]:
    return {
        "id": resource["id"], "object": "chat.completion", "created": unix(resource.get("created_at")),
        "model": model, "system_fingerprint": fingerprint,
        "choices": [{"index": 0, "logprobs": None, "finish_reason": _finish_reason(resource),
                     "message": {"role": "assistant", "content": (resource.get("output") or {}).get("text") or "",
                                 "refusal": None}}],
        "usage": _usage(resource),
    }


def _parse(raw: bytes) -> ChatCompletionBody:
    try:
        return ChatCompletionBody.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


@router.post(
    "/completions", response_model=ChatCompletion,
    openapi_extra=body_ref(ChatCompletionBody, {"model": "smollm2-135m-instruct", "max_tokens": 4,
                                                "messages": [{"role": "user", "content": "Say hi"}]}),
    responses={**success(200, "A `chat.completion`; with `stream: true` `chat.completion.chunk` events "
                              "(`text/event-stream`), then `data: [DONE]`",
                         *SUBMIT_HEADERS, "LotaBots-Request-Id",
                         content=SSE_CONTENT),
               **errors(400, 403, 404, 409, 429, 500, 503, 504, openai=True,
                        e403="missing scope, or the autonomy level No AI applies (`autonomy_no_ai`)",
                        e404="no such model (`model_not_found`)",
                        e409="the autonomy level needs a human decision (`approval_required`)",
                        e500="the generation failed (its code, e.g. `inference_error`)")},
)
async def create_chat_completion(request: Request) -> JSONBytes | EventStreamResponse:
    """OpenAI chat completions: the official SDKs work with `base_url=<gateway>/v1`."""
    body = _parse(await request.body())
    model = resolve_model(request.app.state.settings, body.model)
    who, _, resource, headers = await submit_as_request(request, body.as_request_fields())
    refuse_unattended(resource)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        on_disconnect = cancel_when_gone(request, who, resource["id"]) if body.cancel_on_disconnect else None
        return EventStreamResponse(
            _chunks(output_items(request, who, resource, 0), resource, body.model, model.variant, include_usage),
            headers=headers, on_disconnect=on_disconnect)
    resource = await wait_settled(request, who, resource)
    if resource["status"] == "failed":
        raise failure_error(resource)
    refuse_unattended(resource)
    return JSONBytes(completion_object(resource, body.model, model.variant), headers=headers)


async def _chunks(items: AsyncIterator[list[StreamItem]], first: dict[str, Any], model: str, fingerprint: str,
                  include_usage: bool) -> AsyncIterator[bytes]:
    base = {"id": first["id"], "object": "chat.completion.chunk", "created": unix(first.get("created_at")),
            "model": model, "system_fingerprint": fingerprint}
    if include_usage:
        base["usage"] = None

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        body = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
        return b"data: " + orjson.dumps(body) + b"\n\n"

    yield chunk({"role": "assistant", "content": ""})
    async for batch in items:
        out = []
        for item in batch:
            if isinstance(item, Delta):
                out.append(chunk({"content": item.text}))
            elif isinstance(item, KeepAlive):
                out.append(KEEPALIVE)
            elif isinstance(item, Restart):  # OpenAI's protocol cannot take text back: end with an error
                out.append(_error_event(409, "generation_restarted", "the generation was restarted on another "
                                        f"worker and wrote different text; GET /v1/requests/{first['id']} has it"))
                yield b"".join(out)
                return
            elif isinstance(item, Done):
                resource = item.resource
                if resource["status"] == "failed":
                    e = failure_error(resource)
                    out.append(_error_event(e.status, e.code, e.message))
                    yield b"".join(out)
                    return
                out.append(chunk({}, _finish_reason(resource)))
                if include_usage:
                    out.append(b"data: " + orjson.dumps({**base, "choices": [], "usage": _usage(resource)}) + b"\n\n")
                out.append(b"data: [DONE]\n\n")
        yield b"".join(out)


def _error_event(status: int, code: str, message: str) -> bytes:
    return b"data: " + orjson.dumps(openai_error_body(status, code, message)) + b"\n\n"

