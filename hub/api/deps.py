"""Request dependencies: the hub of this app and the authenticated principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from catalog.errors import Unauthenticated
from catalog.store import Principal
from hub.context import Hub

_bearer = HTTPBearer(auto_error=False, description="API token: `Authorization: Bearer bh_...`")


def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


HubDep = Annotated[Hub, Depends(get_hub)]


def current_principal(
    hub: HubDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise Unauthenticated("missing bearer token")
    return hub.store.authenticate(credentials.credentials)


PrincipalDep = Annotated[Principal, Depends(current_principal)]
