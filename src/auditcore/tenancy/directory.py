"""Workspaces and API keys: create, list, revoke, and authenticate a presented key.

A key is ``ack_<id>_<secret>``: the id finds the row, the secret is compared with its stored
SHA-256 in constant time. The full key is returned once, when it is created, and never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from auditcore.errors import ConfigurationError, NotFoundError
from auditcore.events.envelope import WORKSPACE_PATTERN
from auditcore.store.control import control_engine, create_tables
from auditcore.store.settings import Settings
from auditcore.tenancy.scopes import Scope as Scope  # noqa: PLC0414 - re-exported
from auditcore.tenancy.tables import ApiKeyRow, Base, WorkspaceRow
from auditcore.tenancy.viewer import (
    ViewerTokens,
    is_viewer_session,
    is_viewer_token_id,
    viewer_scopes,
)

_TOKEN = re.compile(r"ack_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class Principal:
    """Who a request authenticated as: one key of one workspace."""

    workspace_id: str
    key_id: str
    key_name: str
    scopes: frozenset[Scope]
    entitlements: frozenset[str] | None
    """None: every read model."""
    fixed_filters: tuple[tuple[str, str], ...] = ()
    """A viewer session's ``audit_events`` filters that narrow every read (``tenancy.viewer``)."""


@dataclass(frozen=True)
class KeyInfo:
    id: str
    workspace_id: str
    name: str
    scopes: tuple[Scope, ...]
    entitlements: tuple[str, ...] | None
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class IssuedKey:
    info: KeyInfo
    token: str
    """The full key: shown to its owner once, stored nowhere."""


class Directory:
    """The control plane's tables, in the event store's database (PostgreSQL or SQLite)."""

    def __init__(self, settings: Settings) -> None:
        self.engine = control_engine(settings)
        self.migrate()
        self.viewer_tokens = ViewerTokens(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def migrate(self) -> None:
        create_tables(self.engine, Base.metadata)

    # Workspaces.

    def create_workspace(self, workspace_id: str, name: str | None = None) -> WorkspaceRow:
        if not re.fullmatch(WORKSPACE_PATTERN, workspace_id):
            raise ConfigurationError(
                f"workspace id {workspace_id!r} is not valid: use 1-64 letters, digits, "
                "'_', '.', ':' or '-', starting with a letter or digit"
            )
        row = WorkspaceRow(id=workspace_id, name=name or workspace_id, created_at=_now())
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                session.add(row)
        except IntegrityError:
            raise ConfigurationError(f"workspace {workspace_id!r} already exists") from None
        return row

    def ensure_workspace(self, workspace_id: str, name: str | None = None) -> None:
        """Create the workspace unless it exists (for auditcore's own, e.g. the security one)."""
        with Session(self.engine) as session:
            if session.get(WorkspaceRow, workspace_id) is not None:
                return
        try:
            self.create_workspace(workspace_id, name)
        except ConfigurationError:
            with Session(self.engine) as session:
                if session.get(WorkspaceRow, workspace_id) is None:
                    raise

    def workspaces(self) -> list[WorkspaceRow]:
        with Session(self.engine) as session:
            return list(session.scalars(select(WorkspaceRow).order_by(WorkspaceRow.id)))

    def workspace(self, workspace_id: str) -> WorkspaceRow:
        with Session(self.engine) as session:
            row = session.get(WorkspaceRow, workspace_id)
        if row is None:
            raise NotFoundError(
                f"no workspace {workspace_id!r}; create it with "
                f"`auditcore workspaces create {workspace_id}`"
            )
        return row

    # Keys.

    def create_key(
        self,
        workspace_id: str,
        name: str,
        scopes: Iterable[Scope],
        entitlements: Iterable[str] | None = None,
    ) -> IssuedKey:
        self.workspace(workspace_id)
        chosen = sorted(set(scopes))
        if not chosen:
            raise ConfigurationError("a key needs at least one scope: read and/or write")
        if Scope.VIEW in chosen:
            raise ConfigurationError(
                "the view scope is a viewer session's, never a key's: give a key embed to "
                "mint viewer tokens"
            )
        if not 0 < len(name) <= 100:
            raise ConfigurationError("a key's name must be 1 to 100 characters")
        key_hex, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        row = ApiKeyRow(
            id=f"key_{key_hex}",
            workspace_id=workspace_id,
            name=name,
            secret_sha256=_digest(secret),
            scopes=[str(scope) for scope in chosen],
            entitlements=sorted(set(entitlements)) if entitlements is not None else None,
            created_at=_now(),
            revoked_at=None,
        )
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            session.add(row)
        return IssuedKey(_info(row), f"ack_{key_hex}_{secret}")

    def keys(self, workspace_id: str | None = None) -> list[KeyInfo]:
        query = select(ApiKeyRow).order_by(ApiKeyRow.workspace_id, ApiKeyRow.created_at)
        if workspace_id is not None:
            query = query.where(ApiKeyRow.workspace_id == workspace_id)
        with Session(self.engine) as session:
            return [_info(row) for row in session.scalars(query)]

    def revoke_key(self, key_id: str) -> KeyInfo:
        """Revoke a key at once: the next request presenting it is refused."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            row = session.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFoundError(f"no API key {key_id!r}; `auditcore keys list` shows them")
            if row.revoked_at is None:
                row.revoked_at = _now()
        return _info(row)

    def revoke_workspace_keys(self, workspace_id: str) -> list[KeyInfo]:
        """Revoke every key of a workspace at once (e.g. it left, or was compromised)."""
        self.workspace(workspace_id)
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            rows = list(
                session.scalars(
                    select(ApiKeyRow).where(
                        ApiKeyRow.workspace_id == workspace_id, ApiKeyRow.revoked_at.is_(None)
                    )
                )
            )
            for row in rows:
                row.revoked_at = _now()
        return [_info(row) for row in rows]

    def revoked_among(self, key_ids: Iterable[str]) -> set[str]:
        """Which of these keys (or viewer tokens) can no longer authenticate (revoked,
        expired, or gone)."""
        wanted = set(key_ids)
        tokens = {key_id for key_id in wanted if is_viewer_token_id(key_id)}
        ended = self.viewer_tokens.ended_among(tokens)
        wanted -= tokens
        if not wanted:
            return ended
        with Session(self.engine) as session:
            valid = set(
                session.scalars(
                    select(ApiKeyRow.id).where(
                        ApiKeyRow.id.in_(wanted), ApiKeyRow.revoked_at.is_(None)
                    )
                )
            )
        return (wanted - valid) | ended

    def key_workspaces(self, key_ids: Iterable[str]) -> dict[str, str]:
        """The workspace of each of these key ids that exists."""
        wanted = set(key_ids)
        if not wanted:
            return {}
        with Session(self.engine) as session:
            rows = session.execute(
                select(ApiKeyRow.id, ApiKeyRow.workspace_id).where(ApiKeyRow.id.in_(wanted))
            )
            return {row[0]: row[1] for row in rows}

    def authenticate(self, token: str) -> Principal | None:
        """The key's principal, or None for a malformed, unknown or revoked key (or viewer
        session: expired, revoked, or its minting key revoked)."""
        if is_viewer_session(token):
            viewer = self.viewer_tokens.authenticate(token)
            if viewer is None:
                return None
            return Principal(
                workspace_id=viewer.workspace_id,
                key_id=viewer.id,
                key_name=f"viewer: {viewer.name}",
                scopes=viewer_scopes(),
                entitlements=frozenset(viewer.entitlements)
                if viewer.entitlements is not None
                else None,
                fixed_filters=tuple(sorted(viewer.filters.items())),
            )
        match = _TOKEN.fullmatch(token)
        if match is None:
            return None
        with Session(self.engine) as session:
            row = session.get(ApiKeyRow, f"key_{match.group(1)}")
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(row.secret_sha256, _digest(match.group(2))):
            return None
        return Principal(
            workspace_id=row.workspace_id,
            key_id=row.id,
            key_name=row.name,
            scopes=frozenset(Scope(scope) for scope in row.scopes),
            entitlements=frozenset(row.entitlements) if row.entitlements is not None else None,
        )


def presented_key_id(token: str) -> str | None:
    """The key id a presented token names, if it is shaped like a key (valid or not)."""
    match = _TOKEN.fullmatch(token)
    return f"key_{match.group(1)}" if match else None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _info(row: ApiKeyRow) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        workspace_id=row.workspace_id,
        name=row.name,
        scopes=tuple(Scope(scope) for scope in row.scopes),
        entitlements=tuple(row.entitlements) if row.entitlements is not None else None,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )
