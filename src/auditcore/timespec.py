"""Moments as people type them: ISO 8601 (UTC unless a zone is given) or "this long ago".

Failure semantics: anything that is not such a moment, or that Python's ``datetime`` cannot
hold (an age of a million years, a year-1 time east of UTC), raises ``ValueError`` with a
one-line explanation; whether a moment is in a range the caller can use is the caller's check.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_RELATIVE = re.compile(r"^(\d+)\s*(s|m|h|d|w)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_HOW = "use ISO 8601 like 2026-11-25T10:00:00Z, or an age like 30m, 6h, 7d"


def parse_moment(text: str, now: datetime | None = None) -> datetime:
    """``2026-11-25T10:00:00Z``, ``2026-11-25`` (UTC) or ``90m`` / ``6h`` / ``7d`` ago."""
    text = text.strip()
    match = _RELATIVE.match(text)
    if match:
        digits, unit = match.group(1), match.group(2)
        too_far = ValueError(f"{_shown(text)} is further back than any date")
        if len(digits) > 12:  # more seconds than 30,000 years (and int() may refuse the digits)
            raise too_far
        try:
            return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: int(digits)})
        except OverflowError:
            raise too_far from None
    try:
        moment = datetime.fromisoformat(text)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except ValueError:
        raise ValueError(f"{_shown(text)} is not a time: {_HOW}") from None
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise ValueError(f"{_shown(text)} is outside the dates a time can have") from None


def _shown(text: str) -> str:
    """The input as an error message quotes it: a long one cut short."""
    return repr(text if len(text) <= 40 else text[:40] + "…")
