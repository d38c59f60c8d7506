"""What an API key may do: its scopes (apart from the directory, so the command line can
name them without importing SQLAlchemy)."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"
    """The operator's view of the installation (``/readyz`` details: paths, positions, errors)."""
    EMBED = "embed"
    """Mint and revoke viewer tokens: short-lived, read-only links to the viewer, never
    reading more than the minting key."""
    VIEW = "view"
    """A viewer session's only scope (never a key's): the read routes the embeddable viewer
    calls, narrowed by the token's fixed filters."""
