"""The embeddable viewer: ``/v1/viewer-tokens`` (mint, list, revoke), ``/v1/viewer-sessions``
(exchange a one-time link for a session), ``/v1/me`` (who the page is signed in as) and the
page itself at ``/embed/{token_id}``.

The link secret travels in the URL's fragment, which browsers send to no server and put in no
``Referer``; the page swaps it for a session at once and removes it from the address bar. The
page's ``frame-ancestors`` are the token's origins (``'none'`` without them, or once the token
has ended).

Failure semantics: a bad link answers 401 and counts as a failed authentication for the
caller's address (the same throttle as bad keys); a token of another workspace answers 404;
revoking a token ends its live streams and exports within the revocation check's interval
(at once in this process).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from auditcore.api.deps import Services, ServicesDep, Viewing, authenticated, client_address
from auditcore.api.errors import ApiError
from auditcore.api.headers import content_security_policy
from auditcore.errors import ConfigurationError, InvalidQueryError
from auditcore.readmodel.queries import check_filter_value
from auditcore.readmodel.registry import UnknownReadModelError
from auditcore.tenancy.directory import Principal, Scope
from auditcore.tenancy.viewer import MAX_LIFETIME, ViewerToken

router = APIRouter(tags=["viewer"])


class ViewerTokenIn(BaseModel):
    """What a viewer token may show, to whom, and for how long."""

    model_config = {"extra": "forbid"}

    name: str = Field(default="viewer", min_length=1, max_length=100)
    filters: dict[str, str] = Field(
        default_factory=dict,
        description="Fixed `audit_events` filters (e.g. actor_id, target, target_type): every "
        "read of the token is narrowed by them; the page cannot widen them.",
    )
    read_models: list[str] | None = Field(
        default=None,
        max_length=50,
        description="The read models it may read (default: the minting key's).",
    )
    expires_in: int = Field(
        default=3600,
        ge=1,
        le=int(MAX_LIFETIME.total_seconds()),
        description="Seconds until it ends: at most 86400 (24 hours).",
    )
    origins: list[str] = Field(
        default_factory=list,
        max_length=10,
        description="Origins that may embed the viewer in a frame, e.g. https://app.example.com "
        "(default: none; the link then opens only as a page of its own).",
    )


class ViewerTokenOut(BaseModel):
    id: str
    workspace_id: str
    workspace_name: str
    name: str
    filters: dict[str, str]
    entitlements: list[str] | None
    origins: list[str]
    created_at: datetime
    expires_at: datetime
    exchanged_at: datetime | None
    revoked_at: datetime | None


class IssuedViewerTokenOut(ViewerTokenOut):
    url: str = Field(description="Opens the viewer signed in, once: give it to one person.")


class ExchangeIn(BaseModel):
    model_config = {"extra": "forbid"}

    link: str = Field(max_length=200, description="The secret in the viewer URL's fragment.")


class ViewerSessionOut(BaseModel):
    session: str = Field(description="Bearer token for the API until `expires_at`.")
    expires_at: datetime
    token: ViewerTokenOut


class MeOut(BaseModel):
    workspace_id: str
    workspace_name: str
    key_id: str
    key_name: str
    scopes: list[str]
    fixed_filters: dict[str, str]
    expires_at: datetime | None


Authenticated = Annotated[Principal, Depends(authenticated)]
TokenId = Annotated[str, Path(max_length=32, description="e.g. vt_3f2a…")]


def _embedding(principal: Principal) -> Principal:
    if Scope.EMBED not in principal.scopes:
        raise ApiError(
            403, "missing_scope", f"this API key ({principal.key_id}) lacks the 'embed' scope"
        )
    return principal


@router.post(
    "/v1/viewer-tokens",
    status_code=201,
    response_model=IssuedViewerTokenOut,
    summary="Mint a short-lived viewer link",
)
def mint_viewer_token(
    request: Request,
    found: ServicesDep,
    principal: Authenticated,
    body: Annotated[ViewerTokenIn, Body()],
) -> IssuedViewerTokenOut:
    """A key with the ``embed`` and ``read`` scopes mints a read-only link to this workspace's
    viewer, never reading more than the key itself. The URL carries the one-time secret in its
    fragment; it is shown once."""
    _embedding(principal)
    if Scope.READ not in principal.scopes:
        raise ApiError(
            403,
            "missing_scope",
            f"this API key ({principal.key_id}) lacks the 'read' scope: a viewer token reads "
            "no more than the key that mints it",
        )
    model = found.audit.read_models.get("audit_events")
    for name, value in body.filters.items():
        try:
            check_filter_value(model, name, value)
        except InvalidQueryError as error:
            raise ApiError(400, "invalid_request", f"filters.{error}") from None
    entitlements = _entitlements(found, principal, body.read_models)
    try:
        issued = found.directory.viewer_tokens.mint(
            principal.workspace_id,
            principal.key_id,
            name=body.name,
            filters=body.filters,
            entitlements=entitlements,
            origins=body.origins,
            lifetime=timedelta(seconds=body.expires_in),
        )
    except ConfigurationError as error:
        raise ApiError(400, "invalid_request", str(error)) from None
    # The page's address as this request reached us; behind a proxy the caller may rebase it.
    base = str(request.base_url).rstrip("/")
    url = f"{base}/embed/{issued.info.id}#{issued.link}"
    return IssuedViewerTokenOut(**_out(issued.info).model_dump(), url=url)


def _entitlements(
    found: Services, principal: Principal, read_models: list[str] | None
) -> list[str] | None:
    if read_models is None:
        return sorted(principal.entitlements) if principal.entitlements is not None else None
    chosen = []
    for name in read_models:
        try:
            model = found.audit.read_models.get(name)
        except UnknownReadModelError:
            raise ApiError(
                400, "invalid_request", f"read_models: no read model {name!r}; see /v1/models"
            ) from None
        needed = model.required_entitlement
        if principal.entitlements is not None and needed not in principal.entitlements:
            raise ApiError(
                403,
                "not_entitled",
                f"this API key may not read {name!r}, so its viewer tokens may not either",
            )
        chosen.append(needed)
    return sorted(set(chosen))


@router.get(
    "/v1/viewer-tokens", response_model=list[ViewerTokenOut], summary="This workspace's tokens"
)
def list_viewer_tokens(found: ServicesDep, principal: Authenticated) -> list[ViewerTokenOut]:
    _embedding(principal)
    return [_out(token) for token in found.directory.viewer_tokens.list(principal.workspace_id)]


@router.delete(
    "/v1/viewer-tokens/{token_id}", response_model=ViewerTokenOut, summary="Revoke a viewer token"
)
async def revoke_viewer_token(
    token_id: TokenId, found: ServicesDep, principal: Authenticated
) -> ViewerTokenOut:
    """Its session's next request is refused; its live streams and exports are cut."""
    _embedding(principal)
    token = await run_in_threadpool(
        found.directory.viewer_tokens.revoke, token_id, principal.workspace_id
    )
    found.keys.forget()
    await run_in_threadpool(found.sessions.end_revoked)
    return _out(token)


@router.post(
    "/v1/viewer-sessions",
    response_model=ViewerSessionOut,
    summary="Exchange a viewer link for a session (once)",
)
def exchange_link(
    request: Request, found: ServicesDep, body: Annotated[ExchangeIn, Body()]
) -> ViewerSessionOut:
    """No key needed: the link is the credential, and it works once."""
    address = client_address(request, found)
    if found.guard.failures.retry_after(address):
        raise ApiError(
            429,
            "too_many_failed_authentications",
            "too many requests from this address presented an invalid credential; wait",
        )
    exchanged = found.directory.viewer_tokens.exchange(body.link)
    if exchanged is None:
        found.guard.failures.failed(address, None)
        raise ApiError(
            401,
            "unauthenticated",
            "this viewer link is not valid: it was already used, has expired or was revoked; "
            "ask for a new one",
        )
    token, session = exchanged
    return ViewerSessionOut(session=session, expires_at=token.expires_at, token=_out(token))


@router.get("/v1/me", response_model=MeOut, summary="Who this key or session is")
def me(found: ServicesDep, principal: Viewing) -> MeOut:
    workspace = found.directory.workspace(principal.workspace_id)
    expires_at = None
    if Scope.VIEW in principal.scopes:
        expires_at = found.directory.viewer_tokens.get(principal.key_id).expires_at
    return MeOut(
        workspace_id=principal.workspace_id,
        workspace_name=workspace.name,
        key_id=principal.key_id,
        key_name=principal.key_name,
        scopes=sorted(str(scope) for scope in principal.scopes),
        fixed_filters=dict(principal.fixed_filters),
        expires_at=expires_at,
    )


def embed_page(found: Services, token_id: str, html: str) -> HTMLResponse:
    """The viewer's page for one token: framable by the token's origins while it is valid."""
    ancestors = "'none'"
    if not found.directory.viewer_tokens.ended_among({token_id}):
        origins = found.directory.viewer_tokens.get(token_id).origins
        ancestors = " ".join(origins) or "'none'"
    policy = content_security_policy(ancestors)
    return HTMLResponse(
        html, headers={"Content-Security-Policy": policy, "Cache-Control": "no-store"}
    )


def _out(token: ViewerToken) -> ViewerTokenOut:
    return ViewerTokenOut(
        id=token.id,
        workspace_id=token.workspace_id,
        workspace_name=token.workspace_name,
        name=token.name,
        filters=token.filters,
        entitlements=list(token.entitlements) if token.entitlements is not None else None,
        origins=list(token.origins),
        created_at=token.created_at,
        expires_at=token.expires_at,
        exchanged_at=token.exchanged_at,
        revoked_at=token.revoked_at,
    )
