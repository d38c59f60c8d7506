"""What routes depend on: the services, the authenticated key, its reader and request context.

They are ``async``: FastAPI runs a plain ``def`` dependency in its thread pool, one hop per
dependency per request, which cost more than the work of these. Only what may wait on a
database goes to the pool: a key not verified within the last second (``VerifiedKeys``), a
refused key's bookkeeping, and a reader's first migration."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from auditcore.api.client_ip import client_ip
from auditcore.api.config import ApiConfig
from auditcore.api.errors import ApiError
from auditcore.api.limits import RequestGuard, record_throttled, retry_after
from auditcore.api.live import LiveHub
from auditcore.api.pacing import CpuPacer
from auditcore.api.sessions import Sessions
from auditcore.events.envelope import RequestContext
from auditcore.facade import AuditCore
from auditcore.readmodel.queries import WorkspaceReader
from auditcore.tenancy.directory import Directory, Principal, Scope, presented_key_id
from auditcore.tenancy.keycache import VerifiedKeys

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Services:
    audit: AuditCore
    directory: Directory
    hub: LiveHub
    config: ApiConfig
    guard: RequestGuard
    sessions: Sessions
    pacer: CpuPacer
    keys: VerifiedKeys


async def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


ServicesDep = Annotated[Services, Depends(services)]

bearer = HTTPBearer(
    auto_error=False,
    description="An API key of one workspace: `Authorization: Bearer ack_…` "
    "(`auditcore keys create` issues one).",
)


async def authenticated(
    request: Request,
    found: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The key's principal; 401 without a valid key, 429 for an address that failed too
    often (before its key is even looked at) or a key over its request rate."""
    challenge = {"WWW-Authenticate": "Bearer"}
    address = _client_address(request, found)
    wait = found.guard.failures.retry_after(address)
    if wait:
        raise ApiError(
            429,
            "too_many_failed_authentications",
            "too many requests from this address presented an invalid API key; wait "
            "(Retry-After) and use a valid key",
            headers=retry_after(wait),
        )
    if credentials is None:
        raise ApiError(
            401,
            "unauthenticated",
            "send an API key as `Authorization: Bearer ack_…`",
            headers=challenge,
        )
    token = credentials.credentials
    principal = found.keys.remembered(token)
    if principal is None:
        principal = await run_in_threadpool(_verified, found, address, token)
    if principal is None:
        raise ApiError(
            401,
            "unauthenticated",
            "the API key is not valid or has been revoked; ask for a new one",
            headers=challenge,
        )
    wait = found.guard.rate.take(principal.key_id)
    if wait:
        raise ApiError(
            429,
            "rate_limited",
            f"this API key ({principal.key_id}) is over its rate of "
            f"{found.config.limits.rate_per_second:g} requests per second; retry after the "
            "Retry-After header's seconds",
            headers=retry_after(wait),
        )
    return principal


def _verified(found: Services, address: str | None, token: str) -> Principal | None:
    """The key looked up in the database; a refusal counted against the address (and recorded
    when the address is throttled)."""
    principal = found.keys.authenticate(token)
    if principal is None:
        throttled = found.guard.failures.failed(address, presented_key_id(token))
        if throttled is not None:
            try:
                record_throttled(
                    found.audit, found.directory, throttled, found.config.limits.security_workspace
                )
            except Exception:  # The refusal stands even if it could not be recorded.
                logger.exception("could not record throttled authentication failures")
    return principal


def _requiring(scope: Scope) -> object:
    async def check(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
        if scope not in principal.scopes:
            raise ApiError(
                403,
                "missing_scope",
                f"this API key ({principal.key_id}) lacks the {scope.value!r} scope",
            )
        return principal

    return check


async def _viewing(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
    """A read key, or a viewer session (scope ``view``): the routes the viewer calls."""
    if not {Scope.READ, Scope.VIEW} & principal.scopes:
        raise ApiError(
            403, "missing_scope", f"this API key ({principal.key_id}) lacks the 'read' scope"
        )
    return principal


Reading = Annotated[Principal, Depends(_requiring(Scope.READ))]
Viewing = Annotated[Principal, Depends(_viewing)]
"""Routes a viewer session may call too: each reads through ``ReaderDep`` (or a reader made
by ``principal_reader``), which narrows every read by the session's fixed filters."""
Writing = Annotated[Principal, Depends(_requiring(Scope.WRITE))]
Administering = Annotated[Principal, Depends(_requiring(Scope.ADMIN))]


def client_address(request: Request, found: Services) -> str | None:
    """The caller's address (the forwarding proxy's word only if it is trusted)."""
    return _client_address(request, found)


def _client_address(request: Request, found: Services) -> str | None:
    peer = request.client.host if request.client else None
    return client_ip(peer, request.headers.get("x-forwarded-for"), found.config.trusted_proxies)


async def workspace_reader(found: ServicesDep, principal: Viewing) -> WorkspaceReader:
    reader = partial(principal_reader, found, principal, query_limits(found.config))
    # The first reader creates the read models' tables where missing: a ClickHouse round trip.
    return reader() if found.audit.migrated else await run_in_threadpool(reader)


def principal_reader(
    found: Services, principal: Principal, limits: dict[str, int | float]
) -> WorkspaceReader:
    """The reader of ``principal``: its workspace, entitlements and fixed filters."""
    return found.audit.reader(
        principal.workspace_id,
        entitlements=principal.entitlements,
        limits=limits,
        fixed_filters=dict(principal.fixed_filters),
    )


ReaderDep = Annotated[WorkspaceReader, Depends(workspace_reader)]


def query_limits(config: ApiConfig) -> dict[str, int | float]:
    """ClickHouse settings that bound each query the API runs (0: that limit is off)."""
    limits = config.limits
    return {
        "max_execution_time": limits.query_timeout,
        "max_memory_usage": limits.query_memory_bytes,
        "max_result_rows": limits.query_result_rows,
    }


async def request_context(
    request: Request,
    found: ServicesDep,
    principal: Annotated[Principal, Depends(authenticated)],
) -> RequestContext:
    """This request's context for the events it writes, with the id of the key writing them
    (the same authentication as the route's: FastAPI runs it once per request)."""
    return RequestContext(
        ip=_client_address(request, found),
        user_agent=(request.headers.get("user-agent") or "")[:1024] or None,
        request_id=request.state.request_id,
        api_key_id=principal.key_id,
    )
