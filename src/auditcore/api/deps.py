"""What routes depend on: the services, the authenticated key, its reader and request context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from auditcore.api.client_ip import client_ip
from auditcore.api.config import ApiConfig
from auditcore.api.errors import ApiError
from auditcore.api.live import LiveHub
from auditcore.events.envelope import RequestContext
from auditcore.facade import AuditCore
from auditcore.readmodel.queries import WorkspaceReader
from auditcore.tenancy.directory import Directory, Principal, Scope


@dataclass(frozen=True)
class Services:
    audit: AuditCore
    directory: Directory
    hub: LiveHub
    config: ApiConfig


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


ServicesDep = Annotated[Services, Depends(services)]

_bearer = HTTPBearer(
    auto_error=False,
    description="An API key of one workspace: `Authorization: Bearer ack_…` "
    "(`auditcore keys create` issues one).",
)


def authenticated(
    found: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise ApiError(
            401,
            "unauthenticated",
            "send an API key as `Authorization: Bearer ack_…`",
            headers=challenge,
        )
    principal = found.directory.authenticate(credentials.credentials)
    if principal is None:
        raise ApiError(
            401,
            "unauthenticated",
            "the API key is not valid or has been revoked; ask for a new one",
            headers=challenge,
        )
    return principal


def _requiring(scope: Scope) -> object:
    def check(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
        if scope not in principal.scopes:
            raise ApiError(
                403,
                "missing_scope",
                f"this API key ({principal.key_id}) lacks the {scope.value!r} scope",
            )
        return principal

    return check


Reading = Annotated[Principal, Depends(_requiring(Scope.READ))]
Writing = Annotated[Principal, Depends(_requiring(Scope.WRITE))]


def workspace_reader(found: ServicesDep, principal: Reading) -> WorkspaceReader:
    return found.audit.reader(principal.workspace_id, entitlements=principal.entitlements)


ReaderDep = Annotated[WorkspaceReader, Depends(workspace_reader)]


def request_context(request: Request, found: ServicesDep) -> RequestContext:
    peer = request.client.host if request.client else None
    return RequestContext(
        ip=client_ip(peer, request.headers.get("x-forwarded-for"), found.config.trusted_proxies),
        user_agent=(request.headers.get("user-agent") or "")[:1024] or None,
        request_id=request.state.request_id,
    )
