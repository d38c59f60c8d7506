"""Viewer tokens: short-lived, read-only grants to the embeddable viewer.

A key with the ``embed`` scope mints one (``mint``): the token names its workspace, fixed
``audit_events`` filters, the read models it may read (never more than the minting key's), the
origins that may frame the viewer and an expiry of at most 24 hours. Two secrets belong to it:

- the *link* ``avl_<hex>_<secret>``, carried in the viewer URL's fragment (a browser never sends
  a fragment to a server, nor in ``Referer``), exchanged **once** (``exchange``) for
- the *session* ``avs_<hex>_<secret>``, which the page presents as a bearer token.

Only SHA-256 digests of the secrets are stored. A session authenticates as a principal whose
only scope is ``view`` and whose reads are narrowed by the fixed filters (enforced by the
reader, see ``WorkspaceReader.fixed_filters``).

Failure semantics: a link exchanged twice, an expired or revoked token, or a token whose
minting key has been revoked authenticates nothing (None); the exchange is one conditional
UPDATE, so two racing exchanges cannot both win.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, select, update
from sqlalchemy.orm import Session

from auditcore.errors import ConfigurationError, NotFoundError
from auditcore.tenancy.scopes import Scope
from auditcore.tenancy.tables import ApiKeyRow, ViewerTokenRow, WorkspaceRow

MAX_LIFETIME = timedelta(hours=24)
MIN_LIFETIME = timedelta(seconds=1)
MAX_ORIGINS = 10
MAX_FILTERS = 10

_LINK = re.compile(r"avl_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_SESSION = re.compile(r"avs_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?")
_TOKEN_ID = re.compile(r"vt_[0-9a-f]{12}")


@dataclass(frozen=True)
class ViewerToken:
    id: str
    workspace_id: str
    workspace_name: str
    issued_by: str
    name: str
    filters: dict[str, str]
    entitlements: tuple[str, ...] | None
    origins: tuple[str, ...]
    created_at: datetime
    expires_at: datetime
    exchanged_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class IssuedViewerToken:
    info: ViewerToken
    link: str
    """The one-time link secret: shown once, stored only as a digest."""


class ViewerTokens:
    """Viewer tokens in the control database (the directory's engine)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def mint(
        self,
        workspace_id: str,
        issued_by: str,
        *,
        name: str,
        filters: Mapping[str, str],
        entitlements: Iterable[str] | None,
        origins: Iterable[str],
        lifetime: timedelta,
    ) -> IssuedViewerToken:
        """A new token; ConfigurationError for a lifetime, origin, filter or name out of
        bounds (the caller has checked the filters' names and the entitlements)."""
        if not MIN_LIFETIME <= lifetime <= MAX_LIFETIME:
            raise ConfigurationError("a viewer token lives 1 second to 24 hours")
        if not 0 < len(name) <= 100:
            raise ConfigurationError("a viewer token's name must be 1 to 100 characters")
        chosen_origins = sorted(set(origins))
        if len(chosen_origins) > MAX_ORIGINS:
            raise ConfigurationError(f"at most {MAX_ORIGINS} embedding origins")
        for origin in chosen_origins:
            if not _ORIGIN.fullmatch(origin):
                raise ConfigurationError(
                    f"embedding origin {origin!r}: give scheme, host and optional port, e.g. "
                    "https://app.example.com"
                )
        if len(filters) > MAX_FILTERS:
            raise ConfigurationError(f"at most {MAX_FILTERS} fixed filters")
        for value in filters.values():
            if not 0 < len(value) <= 1000:
                raise ConfigurationError("a fixed filter's value must be 1 to 1000 characters")
        token_hex, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        now = _now()
        row = ViewerTokenRow(
            id=f"vt_{token_hex}",
            workspace_id=workspace_id,
            issued_by=issued_by,
            name=name,
            filters=dict(filters),
            entitlements=sorted(set(entitlements)) if entitlements is not None else None,
            origins=chosen_origins,
            link_sha256=_digest(secret),
            session_sha256=None,
            created_at=now,
            expires_at=now + lifetime,
            exchanged_at=None,
            revoked_at=None,
        )
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            session.add(row)
            workspace_name = _workspace_name(session, workspace_id)
        return IssuedViewerToken(_info(row, workspace_name), f"avl_{token_hex}_{secret}")

    def exchange(self, link: str) -> tuple[ViewerToken, str] | None:
        """The token and a new session secret for a valid, unexchanged, unexpired link;
        None otherwise (a link works once)."""
        match = _LINK.fullmatch(link)
        if match is None:
            return None
        token_id = f"vt_{match.group(1)}"
        found = self._valid(token_id)
        if found is None or found[0].exchanged_at is not None:
            return None
        row, _ = found
        if not hmac.compare_digest(row.link_sha256, _digest(match.group(2))):
            return None
        secret = secrets.token_urlsafe(32)
        with Session(self.engine) as session, session.begin():
            result = session.execute(
                update(ViewerTokenRow)
                .where(ViewerTokenRow.id == token_id, ViewerTokenRow.exchanged_at.is_(None))
                .values(exchanged_at=_now(), session_sha256=_digest(secret))
            )
            won = cast("CursorResult[Any]", result).rowcount
        if won != 1:
            return None
        return self.get(token_id), f"avs_{match.group(1)}_{secret}"

    def authenticate(self, token: str) -> ViewerToken | None:
        """The token a session secret belongs to while it is valid; None otherwise."""
        match = _SESSION.fullmatch(token)
        if match is None:
            return None
        found = self._valid(f"vt_{match.group(1)}")
        if found is None:
            return None
        row, workspace_name = found
        stored = row.session_sha256
        if stored is None or not hmac.compare_digest(stored, _digest(match.group(2))):
            return None
        return _info(row, workspace_name)

    def get(self, token_id: str, workspace_id: str | None = None) -> ViewerToken:
        """One token (of ``workspace_id`` if given: another's answers as unknown)."""
        with Session(self.engine) as session:
            row = session.get(ViewerTokenRow, token_id) if _TOKEN_ID.fullmatch(token_id) else None
            if row is None or workspace_id not in (None, row.workspace_id):
                raise NotFoundError(f"no viewer token {token_id!r} in this workspace")
            return _info(row, _workspace_name(session, row.workspace_id))

    def revoke(self, token_id: str, workspace_id: str) -> ViewerToken:
        """End the token at once: its session's next request is refused."""
        self.get(token_id, workspace_id)
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(ViewerTokenRow)
                .where(ViewerTokenRow.id == token_id, ViewerTokenRow.revoked_at.is_(None))
                .values(revoked_at=_now())
            )
        return self.get(token_id, workspace_id)

    def list(self, workspace_id: str) -> list[ViewerToken]:
        with Session(self.engine) as session:
            rows = session.scalars(
                select(ViewerTokenRow)
                .where(ViewerTokenRow.workspace_id == workspace_id)
                .order_by(ViewerTokenRow.created_at)
            )
            name = _workspace_name(session, workspace_id)
            return [_info(row, name) for row in rows]

    def ended_among(self, token_ids: Iterable[str]) -> set[str]:
        """Which of these tokens no longer authenticate (expired, revoked, gone, or their
        minting key revoked)."""
        wanted = set(token_ids)
        return {token_id for token_id in wanted if self._valid(token_id) is None}

    def _valid(self, token_id: str) -> tuple[ViewerTokenRow, str] | None:
        with Session(self.engine) as session:
            found = session.execute(
                select(ViewerTokenRow, ApiKeyRow.revoked_at, WorkspaceRow.name)
                .join(ApiKeyRow, ApiKeyRow.id == ViewerTokenRow.issued_by)
                .join(WorkspaceRow, WorkspaceRow.id == ViewerTokenRow.workspace_id)
                .where(ViewerTokenRow.id == token_id)
            ).one_or_none()
        if found is None:
            return None
        row, key_revoked_at, workspace_name = found
        if row.revoked_at is not None or key_revoked_at is not None or row.expires_at <= _now():
            return None
        return row, workspace_name


def is_viewer_session(token: str) -> bool:
    return token.startswith("avs_")


def is_viewer_token_id(key_id: str) -> bool:
    return key_id.startswith("vt_")


def viewer_scopes() -> frozenset[Scope]:
    return frozenset({Scope.VIEW})


def _workspace_name(session: Session, workspace_id: str) -> str:
    row = session.get(WorkspaceRow, workspace_id)
    return row.name if row is not None else workspace_id


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _info(row: ViewerTokenRow, workspace_name: str) -> ViewerToken:
    return ViewerToken(
        id=row.id,
        workspace_id=row.workspace_id,
        workspace_name=workspace_name,
        issued_by=row.issued_by,
        name=row.name,
        filters=dict(row.filters),
        entitlements=tuple(row.entitlements) if row.entitlements is not None else None,
        origins=tuple(row.origins),
        created_at=row.created_at,
        expires_at=row.expires_at,
        exchanged_at=row.exchanged_at,
        revoked_at=row.revoked_at,
    )
