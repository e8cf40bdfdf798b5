"""The Python client of the LotaBots API (sync). `submit`, `get`, `wait`, `cancel`, `list`.

    from lotabots.client import LotaBotsClient
    with LotaBotsClient("http://127.0.0.1:8000", api_key) as lb:
        req = lb.submit([{"role": "user", "content": "Hi!"}], max_tokens=32)
        print(lb.wait(req["id"])["output"]["text"])
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from lotabots.webhook_verify import verify_webhook  # noqa: F401 - part of the client's public API

TERMINAL = frozenset({"succeeded", "failed", "canceled"})


class LotaBotsError(Exception):
    """An API refusal: `status` (HTTP), `code` (stable machine-readable), `message`."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


class AuthenticationError(LotaBotsError):
    pass


class PermissionDenied(LotaBotsError):
    pass


class NotFound(LotaBotsError):
    pass


class Conflict(LotaBotsError):
    pass


class RateLimited(LotaBotsError):
    pass


class InvalidRequest(LotaBotsError):
    pass


class ServiceUnavailable(LotaBotsError):
    pass


_BY_STATUS: dict[int, type[LotaBotsError]] = {
    401: AuthenticationError, 403: PermissionDenied, 404: NotFound, 409: Conflict, 422: InvalidRequest,
    429: RateLimited, 503: ServiceUnavailable,
}


class LotaBotsClient:
    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0) -> None:
        self._http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout)

    def __enter__(self) -> LotaBotsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        response = self._http.request(method, path, **kw)
        if response.status_code >= 400:
            try:
                err = response.json()["error"]
            except Exception:
                err = {"code": "http_error", "message": response.text[:200]}
            cls = _BY_STATUS.get(response.status_code, LotaBotsError)
            raise cls(response.status_code, err.get("code", "http_error"), err.get("message", ""), err.get("details"))
        return response.json()

    def submit(self, messages: list[dict[str, str]], *, idempotency_key: str | None = None, **params: Any) -> dict[str, Any]:
        """Queue a chat request; retries with the same idempotency key never create a second request."""
        key = idempotency_key or str(uuid.uuid4())
        body = {"messages": messages, **params}
        for attempt in range(5):
            try:
                return self._call("POST", "/v1/requests", json=body, headers={"Idempotency-Key": key})
            except (ServiceUnavailable, httpx.TransportError):
                if attempt == 4:
                    raise
                time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    def get(self, request_id: str, *, wait: float | None = None) -> dict[str, Any]:
        params = {"wait": wait} if wait else None
        return self._call("GET", f"/v1/requests/{request_id}", params=params)

    def cancel(self, request_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/requests/{request_id}/cancel")

    def list(self, *, limit: int = 20, cursor: str | None = None, status: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        if status:
            params["status"] = status
        return self._call("GET", "/v1/requests", params=params)

    def wait(self, request_id: str, *, timeout: float = 300.0, poll_wait: float = 20.0) -> dict[str, Any]:
        """Block until the request is terminal: long-poll first, then poll with growing intervals."""
        deadline = time.monotonic() + timeout
        interval = 0.1
        while True:
            remaining = deadline - time.monotonic()
            req = self.get(request_id, wait=min(poll_wait, max(0.0, remaining)) or None)
            if req["status"] in TERMINAL:
                return req
            if time.monotonic() >= deadline:
                raise TimeoutError(f"request {request_id} still {req['status']} after {timeout}s")
            time.sleep(interval)
            interval = min(interval * 1.5, 2.0)
