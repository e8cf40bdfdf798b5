"""FastAPI dependencies shared by the auth routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gateway.auth.services import AuthServices


def auth_services(request: Request) -> AuthServices:
    services: AuthServices = request.app.state.auth
    return services


def client_address(request: Request) -> str:
    """The peer address (behind a proxy, run uvicorn with --proxy-headers/--forwarded-allow-ips)."""
    return request.client.host if request.client else "unknown"


Services = Annotated[AuthServices, Depends(auth_services)]
ClientAddress = Annotated[str, Depends(client_address)]
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
