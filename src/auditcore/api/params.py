"""Query-string parsing shared by the read routes: filters by the read model's declared names,
times as ISO 8601 or ages, and strictness (an unknown parameter is an error, not ignored)."""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import datetime

from starlette.datastructures import QueryParams

from auditcore.errors import InvalidQueryError
from auditcore.readmodel.model import ReadModel
from auditcore.timespec import parse_moment


def filters_from(
    params: QueryParams, model: ReadModel, reserved: Collection[str]
) -> dict[str, list[str]]:
    """Every parameter but the ``reserved`` ones must be one of ``model``'s filters."""
    filters: dict[str, list[str]] = {}
    for name in dict.fromkeys(params.keys()):
        if name in reserved:
            if len(params.getlist(name)) > 1:
                raise InvalidQueryError(name, "give it once")
            continue
        if model.filter(name) is None:
            known = ", ".join([*(f.name for f in model.filters), *sorted(reserved)])
            raise InvalidQueryError(name, f"unknown parameter; this route takes: {known}")
        filters[name] = params.getlist(name)
    return filters


def moment(params: QueryParams, name: str) -> datetime | None:
    text = params.get(name)
    if text is None:
        return None
    try:
        return parse_moment(text)
    except ValueError as error:
        raise InvalidQueryError(name, str(error)) from None


def integer(params: QueryParams, name: str, default: int) -> int:
    """Digits only, as the OpenAPI document's ``integer`` says (no sign, spaces or ``_``)."""
    text = params.get(name)
    if text is None:
        return default
    if not _DIGITS.fullmatch(text):
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise InvalidQueryError(name, f"{shown!r} is not a whole number")
    return int(text)


_DIGITS = re.compile(r"[0-9]{1,18}")
