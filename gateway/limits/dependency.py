"""The FastAPI dependency that puts `POST /v1/requests` under the caller's limits.

The route submits under ``admission.request_id`` and calls ``admission.bind(replayed)`` once the submit
returned, then adds ``admission.headers`` (the RateLimit fields) to its response. Declared with
``scope="function"`` so the exit runs before the response is sent: a submit that failed, or turned out to be
an idempotent replay of an earlier request, gives its admission back at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from gateway.limits.admission import Admission
from gateway.request_models import SubmitRequestBody
from gateway.security import Principal, require_scope

_submit_scope = require_scope("requests:write")


async def admit_submission(
    request: Request, body: SubmitRequestBody, who: Annotated[Principal, Depends(_submit_scope)]
) -> AsyncIterator[Admission]:
    limits = request.app.state.limits
    admission = await limits.admit(who, body)  # raises the 429s
    try:
        yield admission
    finally:
        # Not bound: the submit failed before a request existed. Replayed: the request it names was
        # admitted when first submitted. Either way this admission holds nothing.
        if not admission.bound or admission.replayed:
            await limits.give_back(admission)


Admitted = Annotated[Admission, Depends(admit_submission, scope="function")]
