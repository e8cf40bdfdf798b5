"""Usage wire contracts: CloudEvents on ``usage.events``, priced facts on ``usage.billable``, quota counters.

The gateway and the inference workers produce :class:`UsageEvent` (CloudEvents 1.0, structured JSON mode).
An event's ``id`` is deterministic per billable fact (``<request_id>:accepted``,
``<request_id>:inference``; a refusal has no request, so its id is minted once per refusal), so a re-run or re-delivery carries the same id
and every stage downstream can deduplicate on it. The Faust app turns each distinct, valid event into one
:class:`BillableUsage`, sent on ``usage.billable`` inside a :class:`BillableBatch` (one tenant's facts of
one processing batch: one Kafka message instead of one per fact), and keeps per-tenant
:class:`QuotaState` on the compacted ``usage.quota-state`` (key: tenant id), which gateway replicas read
to enforce token quotas.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.events import WireModel

CLOUDEVENTS_SPECVERSION = "1.0"
# A usage.events message is one structured CloudEvent or a CloudEvents batch (a JSON array of them); the
# Kafka `content-type` header names which, and the first byte of the value tells the same.
CLOUDEVENT_CONTENT_TYPE = "application/cloudevents+json"
CLOUDEVENTS_BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
USAGE_EVENT_SOURCE_GATEWAY = "/lotabots/gateway"
USAGE_EVENT_SOURCE_INFERENCE = "/lotabots/inference"
DEFAULT_AUTONOMY_LEVEL = "agent"  # until the autonomy issue lands, every request runs at the top level

_Id = Annotated[str, Field(min_length=1, max_length=200)]
_Name = Annotated[str, Field(min_length=1, max_length=64)]


class UsageEventType(StrEnum):
    """The billable facts. Each one's ``id`` suffix is fixed so it is unique per fact, not per delivery."""

    REQUEST_ACCEPTED = "lotabots.request.accepted"
    REQUEST_REJECTED = "lotabots.request.rejected"
    INFERENCE_COMPLETED = "lotabots.inference.completed"


class _Data(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class RequestAcceptedData(_Data):
    """The gateway answered 202: one billable request."""

    tenant_id: _Id
    tier: _Name
    request_id: _Id
    api_key_id: str | None = Field(default=None, max_length=200, description="the credential's subject")
    max_tokens_reserved: int = Field(ge=0)


class RequestRejectedData(_Data):
    """The gateway refused a request (rate limit, quota, ...): counted, never billed."""

    tenant_id: _Id
    tier: _Name
    reason: _Name = Field(description="the stable API error code, e.g. rate_limited, quota_exceeded")
    request_id: str | None = Field(default=None, max_length=200)
    api_key_id: str | None = Field(default=None, max_length=200)


class InferenceCompletedData(_Data):
    """A request reached a terminal state in a worker: the tokens it consumed."""

    tenant_id: _Id
    tier: _Name
    request_id: _Id
    model: _Name
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    latency_ms: int = Field(ge=0)
    finish_reason: str = Field(max_length=32)
    status: str = Field(max_length=24, description="terminal request status: succeeded, failed, canceled")
    autonomy_level: _Name = DEFAULT_AUTONOMY_LEVEL


UsageData = RequestAcceptedData | RequestRejectedData | InferenceCompletedData

DATA_MODELS: dict[UsageEventType, type[_Data]] = {
    UsageEventType.REQUEST_ACCEPTED: RequestAcceptedData,
    UsageEventType.REQUEST_REJECTED: RequestRejectedData,
    UsageEventType.INFERENCE_COMPLETED: InferenceCompletedData,
}


class UsageEvent(WireModel):
    """One usage fact on ``usage.events`` (key: tenant id), as a CloudEvents 1.0 structured JSON message."""

    SCHEMA_NAME: ClassVar[str] = "usage_event"
    SCHEMA_VERSION: ClassVar[int] = 1
    specversion: Literal["1.0"] = CLOUDEVENTS_SPECVERSION
    id: _Id
    source: Annotated[str, Field(min_length=1, max_length=200)]
    type: UsageEventType
    subject: str | None = Field(default=None, max_length=200, description="the request id")
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    dataschemaversion: int = Field(default=1, ge=1, description="extension attribute: version of `data`")
    data: UsageData

    @model_validator(mode="before")
    @classmethod
    def _data_matches_type(cls, value: Any) -> Any:
        # CloudEvents keeps the discriminator on the envelope: validate `data` against the model its type names.
        if isinstance(value, dict) and isinstance(value.get("data"), dict):
            model = DATA_MODELS.get(value.get("type"))  # type: ignore[call-overload]
            if model is not None:
                value = {**value, "data": model.model_validate(value["data"])}
        return value

    @model_validator(mode="after")
    def _time_is_aware(self) -> UsageEvent:
        if self.time.tzinfo is None:
            raise ValueError("time must carry a UTC offset (RFC 3339)")
        if not isinstance(self.data, DATA_MODELS[self.type]):
            raise ValueError(f"data does not match type {self.type.value}")
        return self

    @property
    def tenant_id(self) -> str:
        return self.data.tenant_id


def usage_message_events(raw: bytes | None) -> list[Any]:
    """The CloudEvents (decoded JSON, not yet validated) of one ``usage.events`` message, in order.

    Raises ``ValueError`` when the value is not JSON, or neither an object nor a non-empty array.
    """
    value = orjson.loads(raw or b"")
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and value:
        return value
    raise ValueError("a usage.events message is a CloudEvent (an object) or a CloudEvents batch (an array)")


def accepted_event_id(request_id: str) -> str:
    return f"{request_id}:accepted"


def inference_event_id(request_id: str) -> str:
    return f"{request_id}:inference"


class UsageKind(StrEnum):
    """What a billable row counts (the ClickHouse `kind` column)."""

    REQUEST = "request"
    REJECTION = "rejection"
    INFERENCE = "inference"


KIND_OF: dict[UsageEventType, UsageKind] = {
    UsageEventType.REQUEST_ACCEPTED: UsageKind.REQUEST,
    UsageEventType.REQUEST_REJECTED: UsageKind.REJECTION,
    UsageEventType.INFERENCE_COMPLETED: UsageKind.INFERENCE,
}


class BillableUsage(WireModel):
    """One validated, deduplicated, priced fact on ``usage.billable`` (key: tenant id); one ClickHouse row.

    Amounts are decimal strings in USD, priced with the tenant's tier at the time of the fact.
    ``requests`` is 1 for an accepted request, 0 otherwise; tokens are non-zero only for inference.
    """

    SCHEMA_NAME: ClassVar[str] = "billable_usage"
    SCHEMA_VERSION: ClassVar[int] = 1
    schema_version: Literal[1] = 1
    event_id: _Id
    event_type: UsageEventType
    kind: UsageKind
    tenant_id: _Id
    tier: _Name
    request_id: str = ""
    api_key_id: str = ""
    model: str = ""
    autonomy_level: str = ""
    status: str = ""
    finish_reason: str = ""
    reason: str = ""
    event_time: datetime
    requests: int = Field(ge=0)
    rejections: int = Field(ge=0)
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    latency_ms: int = Field(ge=0)
    price_per_request: Decimal
    price_per_1k_input: Decimal
    price_per_1k_output: Decimal
    request_cost: Decimal
    input_cost: Decimal
    output_cost: Decimal
    cost: Decimal = Field(description="request_cost + input_cost + output_cost")


class BillableBatch(WireModel):
    """The value on ``usage.billable`` (key: tenant id): priced facts of one tenant, in source order."""

    SCHEMA_NAME: ClassVar[str] = "billable_batch"
    SCHEMA_VERSION: ClassVar[int] = 1
    schema_version: Literal[1] = 1
    tenant_id: _Id
    facts: list[BillableUsage] = Field(min_length=1, max_length=1000)


class QuotaState(WireModel):
    """A tenant's token and request counters for the current UTC day and month (compacted ``usage.quota-state``).

    Tumbling windows aligned to the UTC calendar: when a fact of a later day (month) arrives, the day
    (month) counters restart from it. Tokens are prompt + completion tokens of completed inferences;
    requests are accepted requests.
    """

    SCHEMA_NAME: ClassVar[str] = "quota_state"
    SCHEMA_VERSION: ClassVar[int] = 1
    schema_version: Literal[1] = 1
    tenant_id: _Id
    day: Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$")]
    month: Annotated[str, Field(pattern=r"^\d{4}-\d{2}$")]
    tokens_day: int = Field(default=0, ge=0)
    tokens_month: int = Field(default=0, ge=0)
    requests_day: int = Field(default=0, ge=0)
    requests_month: int = Field(default=0, ge=0)
    updated_at: datetime


USAGE_WIRE_MODELS: list[type[WireModel]] = [UsageEvent, BillableUsage, BillableBatch, QuotaState]
