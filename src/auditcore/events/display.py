"""Display templates: an action's one-line, human-readable description of its events
(Retraced's ``display_template``), e.g. ``{actor.name} resolved {targets[0].name}``.

A placeholder is a path into the event's own JSON (its envelope as the API returns it): names
joined by ``.`` and list indexes in ``[n]``. Nothing else is evaluated: no attribute access on
Python objects, no format specs, no calls (unlike ``str.format``). ``{{`` and ``}}`` are
literal braces. The result is plain text; escaping belongs to where it is shown (the viewer
sets it as text, the report's template engine escapes HTML, the CSV writer quotes it).

Failure semantics: a malformed template is refused when the action is registered
(``ValueError``); a missing field, a wrong type on the way or an index out of range renders as
nothing, never as an error; a description is at most ``MAX_LENGTH`` characters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

MAX_TEMPLATE = 500
MAX_LENGTH = 1000

_PATH = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*|\[[0-9]{1,3}\])*"
_TOKEN = re.compile(r"\{\{|\}\}|\{(" + _PATH + r")\}|[{}]")
_STEP = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]*)|\[([0-9]+)\]")


def check_template(template: str) -> str:
    """``template`` if it is well formed; ValueError saying where it is not."""
    if len(template) > MAX_TEMPLATE:
        raise ValueError(f"a display template holds at most {MAX_TEMPLATE} characters")
    for match in _TOKEN.finditer(template):
        if match.group(0) in ("{", "}"):
            rest = template[match.start() : match.start() + 30]
            raise ValueError(
                f"display template: {rest!r} at {match.start()} is not a placeholder such as "
                "{actor.name} or {targets[0].id} (write {{ or }} for a brace)"
            )
    return template


def render(template: str, event: Mapping[str, Any]) -> str:
    """``template`` filled from ``event`` (a JSON object), missing fields left empty."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        if match.group(1) is None:
            return token  # A stray brace (only an unchecked template has one): kept as text.
        return _text(_lookup(event, match.group(1)))

    rendered = _TOKEN.sub(replace, template)
    return rendered if len(rendered) <= MAX_LENGTH else rendered[: MAX_LENGTH - 1] + "…"


def _lookup(node: Any, path: str) -> Any:
    for name, index in _STEP.findall(path):
        if name:
            node = node.get(name) if isinstance(node, Mapping) else None
        else:
            position = int(index)
            node = node[position] if isinstance(node, list) and position < len(node) else None
        if node is None:
            return None
    return node


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
