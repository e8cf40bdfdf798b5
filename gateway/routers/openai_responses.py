"""`/v1/responses`: OpenAI's Responses API, background mode included, over the request lifecycle.

A response IS a request: its id is the request id, so `GET /v1/requests/{id}` shows the same thing.
Status: queued/awaiting_approval → `queued`, running → `in_progress`, succeeded → `completed` (or
`incomplete` when it stopped at `max_output_tokens`), failed → `failed`, canceled → `cancelled`.

Streams number their events so any replica can resume from a number alone (`starting_after=N`):
`response.created` 0, `response.in_progress` 1, `response.output_item.added` 2,
`response.content_part.added` 3; an `output_text.delta` is numbered 3 + the text position after it;
after the text (length L) come `output_text.done` L+4, `content_part.done` L+5, `output_item.done` L+6
and the final `response.completed` (or `.incomplete` / `.failed`) L+7. Numbers strictly increase but
are not consecutive.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.api_models import ResponseObject
from gateway.errors import ApiError
from gateway.openai_compat import (
    openai_error_body,
    refuse_unattended,
    resolve_model,
    served_models,
    submit_as_request,
    unix,
    wait_settled,
)
from gateway.openapi_docs import SSE_CONTENT, SUBMIT_HEADERS, body_ref, errors, success
from gateway.request_models import request_resource
from gateway.responses import JSONBytes
from gateway.routers.streaming import output_items
from gateway.security import Principal, authorize
from gateway.sse import KEEPALIVE, EventStreamResponse, sse_event
from gateway.text_follower import Delta, Done, KeepAlive, Restart, StreamItem
from schemas.autonomy_levels import AutonomyLevel

router = APIRouter(prefix="/v1/responses", tags=["openai"])

Text = Annotated[str, Field(max_length=32_768)]
LEAD = 3  # sequence number of the last event before the text


class InputText(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["input_text", "output_text", "text"]
    text: Text
    annotations: list[Any] | None = None


class InputMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["message"] = "message"
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | Annotated[list[InputText], Field(min_length=1, max_length=64)]
    id: str | None = None
    status: str | None = None

    def as_chat_message(self) -> dict[str, str]:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: TextFormat | None = None


class CreateResponseBody(BaseModel):
    """What `POST /v1/responses` accepts (docs/openai.md)."""

    model_config = ConfigDict(extra="forbid", strict=True)  # strict: `true` is no 1, `0` no false
    model: Annotated[str, Field(min_length=1, max_length=200)]
    input: Text | Annotated[list[InputMessage], Field(min_length=1, max_length=256)]
    instructions: Text | None = None
    background: bool = False
    stream: bool = False
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    text: TextConfig | None = None
    store: bool | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(default=None, max_length=16)
    user: Annotated[str, Field(max_length=256)] | None = None
    tools: Annotated[list[Any], Field(max_length=0)] | None = None
    parallel_tool_calls: bool | None = None
    # LotaBots extensions (`extra_body`)
    conversation_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    task: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    context: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    autonomy_level: AutonomyLevel | None = None

    def as_request_fields(self) -> dict[str, Any]:
        messages = [{"role": "system", "content": self.instructions}] if self.instructions else []
        if isinstance(self.input, str):
            messages.append({"role": "user", "content": self.input})
        else:
            messages += [m.as_chat_message() for m in self.input]
        fields: dict[str, Any] = {
            "messages": messages, "max_tokens": self.max_output_tokens, "temperature": self.temperature,
            "top_p": self.top_p, "conversation_id": self.conversation_id, "task": self.task,
            "context": self.context, "autonomy_level": self.autonomy_level,
        }
        return {k: v for k, v in fields.items() if v is not None}


_STATUS = {"queued": "queued", "awaiting_approval": "queued", "running": "in_progress", "succeeded": "completed",
           "failed": "failed", "canceled": "cancelled"}


def response_status(resource: dict[str, Any]) -> str:
    status = _STATUS[resource["status"]]
    if status == "completed" and (resource.get("output") or {}).get("finish_reason") == "length":
        return "incomplete"
    return status


def _message_id(resource: dict[str, Any]) -> str:
    return "msg_" + resource["id"].split("_", 1)[-1]


def _message(resource: dict[str, Any], status: str, text: str | None) -> dict[str, Any]:
    content = [] if text is None else [{"type": "output_text", "text": text, "annotations": []}]
    return {"id": _message_id(resource), "type": "message", "status": status, "role": "assistant",
            "content": content}


def response_object(resource: dict[str, Any], model: str, *, background: bool | None = None,
                    text: str | None = None) -> dict[str, Any]:
    """The request as an OpenAI `response` object."""
    status = response_status(resource)
    params = resource.get("params") or {}
    output = resource.get("output") or {}
    final = output.get("text") if text is None else text
    usage = resource.get("usage")
    messages = (resource.get("input") or {}).get("messages") or []
    error = resource.get("error")
    return {
        "id": resource["id"], "object": "response", "created_at": unix(resource.get("created_at")),
        "status": status, "background": background, "model": model,
        "output": [_message(resource, "completed" if status == "completed" else "incomplete", final)]
        if final is not None and status in ("completed", "incomplete", "cancelled") else [],
        "usage": None if usage is None else {
            "input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"],
            "total_tokens": usage["total_tokens"], "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}},
        "error": None if status != "failed" or not error else {"code": error.get("code"), "message": error.get("message")},
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": next((m["content"] for m in messages if m.get("role") == "system"), None),
        "max_output_tokens": params.get("max_tokens"), "temperature": params.get("temperature"),
        "top_p": params.get("top_p"), "parallel_tool_calls": False, "tool_choice": "auto", "tools": [],
        "text": {"format": {"type": "text"}}, "metadata": {"lotabots_status": resource["status"]},
    }


def _model_for(request: Request, resource: dict[str, Any]) -> str:
    return served_models(request.app.state.settings)[0].id


@router.post(
    "", response_model=ResponseObject,
    openapi_extra=body_ref(CreateResponseBody, {"model": "smollm2-135m-instruct", "input": "Say hi",
                                                "max_output_tokens": 4},
                           {"model": "smollm2-135m-instruct", "input": "Say hi", "background": True,
                            "max_output_tokens": 4}),
    responses={**success(200, "The response (`background: true`: at once, `queued`); with `stream: true` "
                              "`text/event-stream` response events",
                         *SUBMIT_HEADERS, "LotaBots-Request-Id",
                         content=SSE_CONTENT),
               **errors(400, 403, 404, 409, 429, 503, 504, openai=True,
                        e403="missing scope, or the autonomy level No AI applies (`autonomy_no_ai`)",
                        e404="no such model (`model_not_found`)",
                        e409="the autonomy level needs a human decision (`approval_required`)")},
)
async def create_response(request: Request) -> JSONBytes | EventStreamResponse:
    """Create a response; `background: true` answers at once (`queued`) and the work goes on."""
    try:
        body = CreateResponseBody.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
    resolve_model(request.app.state.settings, body.model)
    who, _, resource, headers = await submit_as_request(request, body.as_request_fields())
    level = (resource.get("autonomy") or {}).get("level")
    if level == "no_ai" or (level in ("collaborator", "expert") and not body.background):
        refuse_unattended(resource)  # background mode may wait for the human: it polls anyway
    if body.stream:
        return _stream(request, who, resource, body.model, -1, body.background, headers)
    if body.background:
        return JSONBytes(response_object(resource, body.model, background=True), headers=headers)
    resource = await wait_settled(request, who, resource)
    return JSONBytes(response_object(resource, body.model, background=False), headers=headers)


async def _own(request: Request, response_id: str, scope: str) -> tuple[Principal, dict[str, Any]]:
    who = await authorize(request, scope)
    return who, request_resource(await request.app.state.request_service.get(who, response_id))


@router.get("/{response_id}", response_model=ResponseObject,
            responses={**success(200, "The response; with `stream=true` its events (`text/event-stream`)",
                                 content=SSE_CONTENT),
                       **errors(400, openai=True)})
async def retrieve_response(
    response_id: str, request: Request,
    stream: Annotated[bool, Query(description="stream the response's events")] = False,
    starting_after: Annotated[int | None, Query(ge=-1, description="resume after this sequence number")] = None,
) -> JSONBytes | EventStreamResponse:
    who, resource = await _own(request, response_id, "requests:read")
    model = _model_for(request, resource)
    if stream:
        return _stream(request, who, resource, model, -1 if starting_after is None else starting_after, None)
    return JSONBytes(response_object(resource, model))


@router.post("/{response_id}/cancel", response_model=ResponseObject,
             responses=errors(400, 409, openai=True, e400="the response already ended (`response_already_finished`)"))
async def cancel_response(response_id: str, request: Request) -> JSONBytes:
    """Cancel a response that is still going; a finished one is answered as it is (OpenAI: 400)."""
    who, resource = await _own(request, response_id, "requests:write")
    if resource["status"] in ("succeeded", "failed"):
        raise ApiError(400, "response_already_finished", f"response {response_id} already ended "
                       f"{response_status(resource)}; only a queued or in-progress response can be cancelled")
    row = await request.app.state.request_service.cancel(who, response_id)
    return JSONBytes(response_object(request_resource(row), _model_for(request, resource)))


def _stream(request: Request, who: Principal, resource: dict[str, Any], model: str, starting_after: int,
            background: bool | None, headers: dict[str, str] | None = None) -> EventStreamResponse:
    after = max(0, starting_after - LEAD)
    return EventStreamResponse(_events(output_items(request, who, resource, after), resource, model, starting_after,
                                       background), headers=headers)


async def _events(items: AsyncIterator[list[StreamItem]], first: dict[str, Any], model: str, starting_after: int,
                  background: bool | None) -> AsyncIterator[bytes]:
    message_id = _message_id(first)
    where = {"item_id": message_id, "output_index": 0, "content_index": 0}

    def event(kind: str, seq: int, **fields: Any) -> bytes:
        if seq <= starting_after:
            return b""
        return sse_event(orjson.dumps({"type": kind, "sequence_number": seq, **fields}), kind)

    yield b"".join([
        event("response.created", 0, response=response_object(first, model, background=background)),
        event("response.in_progress", 1, response={**response_object(first, model, background=background),
                                                   "status": "in_progress"}),
        event("response.output_item.added", 2, output_index=0, item=_message(first, "in_progress", None)),
        event("response.content_part.added", 3, **where, part={"type": "output_text", "text": "", "annotations": []}),
    ])
    last = LEAD - 1  # the sequence number of the last event this stream numbered
    async for batch in items:
        out = []
        for item in batch:
            if isinstance(item, Delta):
                last = LEAD + item.end
                out.append(event("response.output_text.delta", last, **where, delta=item.text, logprobs=[]))
            elif isinstance(item, KeepAlive):
                out.append(KEEPALIVE)
            elif isinstance(item, Restart):
                error = openai_error_body(409, "generation_restarted", "the generation was restarted on another "
                                          f"worker and wrote different text; GET /v1/responses/{first['id']} has it")
                out.append(sse_event(orjson.dumps({**error["error"], "type": "error", "sequence_number": last + 1}),
                                     "error"))
                yield b"".join(out)
                return
            elif isinstance(item, Done):
                resource = item.resource
                text = (resource.get("output") or {}).get("text") or ""
                n = LEAD + len(text)
                status = response_status(resource)
                part = {"type": "output_text", "text": text, "annotations": []}
                item_status = "completed" if status == "completed" else "incomplete"
                final = response_object(resource, model, background=background)
                kind = {"completed": "response.completed", "incomplete": "response.incomplete"}.get(
                    status, "response.failed" if status in ("failed", "cancelled") else "response.incomplete")
                out += [
                    event("response.output_text.done", n + 1, **where, text=text, logprobs=[]),
                    event("response.content_part.done", n + 2, **where, part=part),
                    event("response.output_item.done", n + 3, output_index=0,
                          item={**_message(resource, item_status, text)}),
                    event(kind, n + 4, response=final),
                ]
        yield b"".join(out)

