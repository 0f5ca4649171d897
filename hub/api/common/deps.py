"""Request dependencies: the hub of this app and the authenticated principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from catalog.errors import Unauthenticated
from catalog.identity.store import Principal
from hub.api.common.limits import Limiter
from hub.assembly.context import Hub

_bearer = HTTPBearer(auto_error=False, description="API token: `Authorization: Bearer bh_...`")


def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


HubDep = Annotated[Hub, Depends(get_hub)]


CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def bearer_token(credentials: HTTPAuthorizationCredentials | None) -> str:
    """The request's bearer token (Unauthenticated, a 401, when there is none)."""
    if credentials is None:
        raise Unauthenticated("missing bearer token")
    return credentials.credentials


def authenticate(hub: Hub, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    """The principal of the request's bearer token (Unauthenticated: 401).  Blocking."""
    return hub.store.identity.authenticate(bearer_token(credentials))


def current_principal(hub: HubDep, credentials: CredentialsDep) -> Principal:
    return authenticate(hub, credentials)


PrincipalDep = Annotated[Principal, Depends(current_principal)]
"""The authenticated principal, looked up in a worker thread before the endpoint runs.
An endpoint whose own work runs in a worker thread may take ``CredentialsDep`` and call
:func:`authenticate` there instead (the query endpoints: one thread hop per answer)."""


def get_limiter(request: Request) -> Limiter:
    limiter: Limiter = request.app.state.limiter
    return limiter


LimiterDep = Annotated[Limiter, Depends(get_limiter)]
"""The per-principal limits of query and export answers (hub.api.common.limits)."""
