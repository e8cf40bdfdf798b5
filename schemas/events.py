"""Versioned wire models. Producers and consumers import these; nothing else defines a wire format.

Each model carries ``SCHEMA_VERSION``. Its JSON Schema is exported to ``schemas/jsonschema/<name>.v<N>.json``
(``lotabots schemas export``); ``tests/test_schema_versions.py`` fails when a model changes incompatibly
without a version bump.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class RequestStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def rank(self) -> int:
        """Lifecycle order: state only ever moves to a higher rank (a late `started` never wins)."""
        return _RANK[self]

    @property
    def terminal(self) -> bool:
        return self.rank >= 3


_RANK = {
    RequestStatus.QUEUED: 0,
    RequestStatus.RUNNING: 1,
    RequestStatus.AWAITING_APPROVAL: 2,
    RequestStatus.SUCCEEDED: 3,
    RequestStatus.FAILED: 3,
    RequestStatus.CANCELED: 3,
}


class WireModel(BaseModel):
    """Base for every message on a topic."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    SCHEMA_VERSION: ClassVar[int] = 1
    SCHEMA_NAME: ClassVar[str] = ""


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    role: Literal["system", "user", "assistant"]
    content: Annotated[str, Field(max_length=32_768)]


class GenerationParams(BaseModel):
    """Sampling parameters as the worker applies them (max_tokens already capped by the tier)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_tokens: int = Field(default=128, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list, max_length=8)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)


class InferenceRequest(WireModel):
    """A request on ``requests.<tier>``, keyed by conversation id (else request id)."""

    SCHEMA_NAME: ClassVar[str] = "inference_request"
    SCHEMA_VERSION: ClassVar[int] = 1
    schema_version: Literal[1] = 1
    request_id: str
    tenant_id: str
    tier: str
    conversation_id: str | None = None
    messages: list[ChatMessage]
    params: GenerationParams
    submitted_at: datetime
    # levels of autonomy (docs/autonomy.md): the level the gateway resolved; absent = the platform default
    autonomy_level: str | None = None


class ControlAction(StrEnum):
    CANCEL = "cancel"


class ControlSignal(WireModel):
    """A signal on ``requests.control`` (compacted, keyed by request id)."""

    SCHEMA_NAME: ClassVar[str] = "control_signal"
    schema_version: Literal[1] = 1
    request_id: str
    tenant_id: str
    tier: str
    action: ControlAction
    at: datetime


class LifecycleType(StrEnum):
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    AWAITING_APPROVAL = "awaiting_approval"

    @property
    def status(self) -> RequestStatus:
        return RequestStatus.RUNNING if self is LifecycleType.STARTED else RequestStatus(self.value)


class RequestLifecycleEvent(WireModel):
    """A request's lifecycle event on ``results`` (keyed by request id)."""

    SCHEMA_NAME: ClassVar[str] = "request_lifecycle_event"
    schema_version: Literal[1] = 1
    event_id: str
    request_id: str
    tenant_id: str
    tier: str
    type: LifecycleType
    at: datetime
    worker: str | None = None
    output: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    started_at: datetime | None = None
    first_token_at: datetime | None = None
    finished_at: datetime | None = None


class TokenChunk(BaseModel):
    """One request's text delta from one decode step (or the first token of its prefill).

    ``attempt`` names one run of the request on one worker: a request taken over by another member of
    the group after a crash starts a new attempt at ``seq`` 1 and ``position`` 0. ``position`` is the
    number of characters of output text before ``delta`` (so chunks of one attempt tile the text with
    no gap); ``tokens`` is how many generated tokens the delta covers (a token that ends inside a
    multi-byte character or could start a stop string is held back and rides with a later chunk).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)
    request_id: Annotated[str, Field(min_length=1, max_length=64)]
    attempt: Annotated[str, Field(min_length=1, max_length=64)]
    seq: int = Field(ge=1)
    position: int = Field(ge=0)
    delta: str
    tokens: int = Field(ge=0)


class TokenChunkBatch(WireModel):
    """A message on ``results.tokens``: the chunks of one decode step whose request ids share a partition.

    Keyed by the first chunk's request id and sent to the partition every chunk's request id hashes to,
    so one request's chunks keep their order; several requests advancing together share one message.
    """

    SCHEMA_NAME: ClassVar[str] = "token_chunk_batch"
    schema_version: Literal[1] = 1
    worker: str
    chunks: Annotated[list[TokenChunk], Field(min_length=1)]


class DeadLetter(WireModel):
    """A poison message: the original payload, why it was refused, and where it came from."""

    SCHEMA_NAME: ClassVar[str] = "dead_letter"
    schema_version: Literal[1] = 1
    source_topic: str
    source_partition: int
    source_offset: int
    source_index: int | None = Field(default=None, ge=0,
                                     description="the fact's position when the message was a batch of facts")
    key: str | None = None
    payload: str
    error_code: str
    error_message: str
    consumer: str
    at: datetime


WIRE_MODELS: list[type[WireModel]] = [InferenceRequest, ControlSignal, RequestLifecycleEvent, TokenChunkBatch, DeadLetter]


def json_schema_of(model: type[WireModel]) -> dict[str, Any]:
    schema = model.model_json_schema(mode="serialization")
    schema["x-schema-version"] = model.SCHEMA_VERSION
    return schema
