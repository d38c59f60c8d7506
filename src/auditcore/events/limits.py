"""Bounds on what a new event may hold: its metadata (so one careless caller cannot bloat the
audit trail, and every value survives JSON), its targets and its whole size (likewise), and
when it may say it occurred (what the read side can store, and no further ahead than clock skew
explains). Stored events are never checked again: history stays readable whatever the bounds
become.

Failure semantics: each check returns one ``(location, message)`` problem per bound breached;
the event builders raise them together as one ``InvalidEventError`` (the API answers 422) and
store nothing."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from pydantic import JsonValue, TypeAdapter

from auditcore.errors import ConfigurationError
from auditcore.events.envelope import Target

Problem = tuple[str, str]

EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2299, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
"""The ``occurred_at`` range of new events: what ClickHouse's ``DateTime64`` holds."""

MAX_FUTURE_VARIABLE = "AUDITCORE_MAX_FUTURE_SECONDS"
DEFAULT_MAX_FUTURE = timedelta(minutes=5)


def default_max_future(environ: Mapping[str, str] = os.environ) -> timedelta:
    """How far ahead of this clock a new event may say it occurred, unless a registry says."""
    raw = environ.get(MAX_FUTURE_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_MAX_FUTURE
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= 10 * 365 * 86400:
        raise ConfigurationError(
            f"{MAX_FUTURE_VARIABLE}={raw!r}: expected seconds, from 0 to ten years (default "
            f"{DEFAULT_MAX_FUTURE.total_seconds():g})"
        )
    return timedelta(seconds=seconds)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def occurred_at_problems(
    occurred_at: datetime, now: datetime, max_future: timedelta
) -> list[Problem]:
    """A new event's ``occurred_at`` (aware, UTC) against the storable range and ``now``."""
    if not EARLIEST <= occurred_at <= LATEST:
        return [
            (
                "occurred_at",
                f"{_iso(occurred_at)} is outside the range events can hold, "
                f"{_iso(EARLIEST)} to {_iso(LATEST)}",
            )
        ]
    if occurred_at > now + max_future:
        return [
            (
                "occurred_at",
                f"{_iso(occurred_at)} is in the future: more than "
                f"{max_future.total_seconds():g} s ahead of this server's clock, which clock "
                "skew does not explain. Send the moment it happened (a server whose clock is "
                f"behind can allow more with {MAX_FUTURE_VARIABLE} or "
                "ActionRegistry(max_future=...))",
            )
        ]
    return []


@dataclass(frozen=True)
class MetadataLimits:
    """Metadata bounds; the defaults are WorkOS Audit Logs' limits, plus a total size."""

    max_keys: int = 50
    max_key_length: int = 40
    max_value_length: int = 500
    max_bytes: int = 32_768

    def check(self, metadata: dict[str, JsonValue], path: str = "metadata") -> list[Problem]:
        """Return one problem per breached bound, located by its path in the metadata
        (``path``: where the metadata is, e.g. ``actor.metadata``)."""
        problems: list[Problem] = []
        keys_seen = self._walk(path, metadata, problems)
        if keys_seen > self.max_keys:
            problems.append(
                (
                    path,
                    f"has {keys_seen} keys; the limit is {self.max_keys} "
                    "(nested keys and list items count too)",
                )
            )
        try:
            size = len(orjson.dumps(metadata))
        except TypeError:  # an out-of-range integer, reported above
            return problems
        if size > self.max_bytes:
            problems.append((path, f"serializes to {size} bytes; the limit is {self.max_bytes}"))
        return problems

    def _walk(self, path: str, value: JsonValue, problems: list[Problem]) -> int:
        if isinstance(value, dict):
            count = len(value)
            for key, item in value.items():
                if len(key) > self.max_key_length:
                    problems.append(
                        (
                            f"{path}.{key[:20]}…",
                            f"key is {len(key)} characters long; "
                            f"the limit is {self.max_key_length}",
                        )
                    )
                count += self._walk(f"{path}.{key}", item, problems)
            return count
        if isinstance(value, list):
            count = len(value)
            for index, item in enumerate(value):
                count += self._walk(f"{path}[{index}]", item, problems)
            return count
        if isinstance(value, int) and not fits_64_bits(value):
            problems.append((path, "integer is outside the 64-bit range; send it as a string"))
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(
                (
                    path,
                    f"{value} is not allowed: JSON has no NaN or infinity; send null or a string",
                )
            )
        if isinstance(value, str) and len(value) > self.max_value_length:
            problems.append(
                (
                    path,
                    f"value is {len(value)} characters long; the limit is {self.max_value_length}",
                )
            )
        return 0


_TARGETS = TypeAdapter(tuple[Target, ...])


@dataclass(frozen=True)
class EventLimits:
    """Bounds on an event's targets and on its whole size, beside ``MetadataLimits``.

    A target's own fields are bounded by the envelope (type 64 characters, id and name 256);
    these bound how many an event lists and what they add up to, and the whole stored event
    (metadata, targets, actor, context and the rest, as the store holds it: compact JSON).
    """

    max_targets: int = 50
    max_targets_bytes: int = 16_384
    max_event_bytes: int = 40_960

    def check(self, targets: tuple[Target, ...], event_bytes: int) -> list[Problem]:
        """One problem per breached bound; ``event_bytes``: the event's stored size."""
        problems: list[Problem] = []
        if len(targets) > self.max_targets:
            problems.append(
                ("targets", f"has {len(targets)} targets; the limit is {self.max_targets}")
            )
        size = len(_TARGETS.dump_json(targets))
        if size > self.max_targets_bytes:
            problems.append(
                ("targets", f"serialize to {size} bytes; the limit is {self.max_targets_bytes}")
            )
        if event_bytes > self.max_event_bytes:
            problems.append(
                (
                    "event",
                    f"the whole event serializes to {event_bytes} bytes; the limit is "
                    f"{self.max_event_bytes} (metadata, targets, actor and context together)",
                )
            )
        return problems


def fits_64_bits(value: int) -> bool:
    """Whether an integer is stored exactly (signed or unsigned 64 bits)."""
    return -(2**63) <= value < 2**64
