"""``auditcore.*`` actions are auditcore's own control plane: workspaces created, keys issued
and revoked, exports, reports, throttled authentication. Nobody else may record them — not an
API key, not ``record``/``dispatch``/``record_many``, not ``auditcore import``, not an
aggregate — so such an event in a trail is always what auditcore itself did.

Failure semantics: a reserved action on any public path is an ``InvalidEventError`` at
``action`` (the API answers 422) and nothing is stored; auditcore records its own through
``AuditCore.record_control_event``, which in turn accepts nothing else.
"""

from __future__ import annotations

from typing import Any

RESERVED_PREFIX = "auditcore."


def is_reserved(action: Any) -> bool:
    return isinstance(action, str) and action.startswith(RESERVED_PREFIX)


def reserved_problem(action: str) -> tuple[str, str]:
    return (
        "action",
        f"{action!r} is reserved: {RESERVED_PREFIX}* actions are recorded only by auditcore "
        "itself (its workspaces, keys, exports and reports); name your own actions after your "
        "application, e.g. 'myapp.key_revoked'",
    )


def not_reserved_problem(action: Any) -> tuple[str, str]:
    return (
        "action",
        f"{action!r} is not one of auditcore's own ({RESERVED_PREFIX}*) actions; "
        "record it with record() or dispatch()",
    )
