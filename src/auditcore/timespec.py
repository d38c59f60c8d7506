"""Moments as people type them: an ISO 8601 date or date and time (UTC unless a zone is given)
or "this long ago" (``30m``, ``6h``, ``7d``).

``MOMENT_PATTERN`` is exactly what is accepted (every real calendar date of years 0001-9999, a
time to the microsecond, a zone ``Z`` or ``±HH:MM``): the OpenAPI document states it, and
nothing else is read, so the document and the server agree on every input.

Failure semantics: a text that does not match raises ``ValueError`` with a one-line
explanation. A matching one always gives a moment; an age further back than any date
(``999999999999w``) gives the earliest moment there is. Whether a moment is in a range the
caller can use is the caller's concern (queries clamp to the times events can have).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_YEAR = "(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})"
_LEAP_YEAR = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_MONTH_DAY = (
    "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    "|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
_DATE = f"(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
_ZONE = "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
_TIME = f"(?:[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:[.][0-9]{{1,6}})?)?{_ZONE}?)"
_AGE = "(?:[0-9]{1,12}[smhdw])"
MOMENT_PATTERN = f"^(?:{_DATE}{_TIME}?|{_AGE})$"
"""Every text ``parse_moment`` reads, and nothing else (for OpenAPI and the server alike)."""

_MOMENT = re.compile(MOMENT_PATTERN)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_EARLIEST = datetime.min.replace(tzinfo=UTC)


def parse_moment(text: str, now: datetime | None = None) -> datetime:
    """``2026-11-25T10:00:00Z``, ``2026-11-25`` (UTC) or ``90m`` / ``6h`` / ``7d`` ago."""
    if not _MOMENT.fullmatch(text):
        shown = repr(text if len(text) <= 40 else text[:40] + "…")
        raise ValueError(
            f"{shown} is not a time: use ISO 8601 like 2026-11-25T10:00:00Z or 2026-11-25, "
            "or an age like 30m, 6h, 7d"
        )
    if text[-1] in _UNITS:
        try:
            return (now or datetime.now(UTC)) - timedelta(**{_UNITS[text[-1]]: int(text[:-1])})
        except OverflowError:
            return _EARLIEST  # further back than any date
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # year 1 east of UTC, year 9999 west of it: kept in its own zone
        return moment
