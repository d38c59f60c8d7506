"""OCSF (Open Cybersecurity Schema Framework) 1.3: every event as an API Activity (class 6003,
category Application Activity, 6).

The mapping, field by field, is the README's table ("Destinations and formats"). Whatever has
no OCSF attribute goes to ``unmapped``, so nothing of the envelope is lost. An erased (or
unreadable) IP address is not an IP, so it never goes to ``src_endpoint.ip`` (which a consumer
validates as one): it goes to ``unmapped.ip`` as its marker.

Failure semantics: ``format`` is a pure function of the stored event; it raises nothing for any
event the store holds (erased fields, any Unicode, empty and maximal sizes).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any, ClassVar

from auditcore.events.envelope import ERASED, UNREADABLE
from auditcore.projection.records import EventRecord
from auditcore.streams.base import PayloadFormat

OCSF_VERSION = "1.3.0"
CATEGORY_UID = 6
CATEGORY_NAME = "Application Activity"
CLASS_UID = 6003
CLASS_NAME = "API Activity"

CREATE, READ, UPDATE, DELETE, OTHER = 1, 2, 3, 4, 99
ACTIVITY_NAMES = {
    CREATE: "Create",
    READ: "Read",
    UPDATE: "Update",
    DELETE: "Delete",
    OTHER: "Other",
}
VERBS: dict[str, int] = {
    verb: activity
    for activity, verbs in (
        (
            CREATE,
            "create created add added open opened issue issued register registered invite "
            "invited generate generated upload uploaded insert inserted start started",
        ),
        (
            READ,
            "read view viewed export exported list listed access accessed download "
            "downloaded search searched fetch fetched get",
        ),
        (
            UPDATE,
            "update updated change changed modify modified rename renamed resolve resolved "
            "assign assigned edit edited enable enabled disable disabled acknowledge "
            "acknowledged close closed reopen reopened move moved set restore restored "
            "rotate rotated grant granted",
        ),
        (
            DELETE,
            "delete deleted remove removed revoke revoked erase erased destroy destroyed "
            "purge purged",
        ),
    )
    for verb in verbs.split()
}
"""An action's last word (``incident.resolved`` → ``resolved``) to its OCSF activity; any
other word is Other (99)."""

USER_TYPES = {"user": (1, "User"), "system": (3, "System")}
"""auditcore actor types with an OCSF user type; any other (api_key, service, IAMUser) is
Other (99) with the type's own word as its name."""
SEVERITY_INFORMATIONAL = 1
STATUS_SUCCESS = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def activity_id(action: str) -> int:
    """The OCSF API Activity ``activity_id`` of an action, from its last word."""
    return VERBS.get(action.rpartition(".")[2], OTHER)


def epoch_milliseconds(moment: datetime) -> int:
    """OCSF's ``timestamp_t``: whole milliseconds since the epoch (earlier moments negative)."""
    return (moment - _EPOCH) // _MILLISECOND


def _product_version() -> str:
    try:
        return version("auditcore")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


class OcsfApiActivity(PayloadFormat):
    """OCSF 1.3 API Activity (6003)."""

    name: ClassVar[str] = "ocsf"

    def __init__(self) -> None:
        self._product = {
            "name": "auditcore",
            "vendor_name": "auditcore",
            "version": _product_version(),
        }

    def format(self, event: EventRecord) -> dict[str, Any]:
        activity = activity_id(event.action)
        context = event.context
        unmapped: dict[str, Any] = {
            "version": event.version,
            "schema_version": event.schema_version,
            "metadata": event.metadata,
        }
        if event.actor_metadata:
            unmapped["actor_metadata"] = event.actor_metadata
        user_type_id, user_type = USER_TYPES.get(event.actor_type, (OTHER, event.actor_type))
        user: dict[str, Any] = {
            "uid": event.actor_id,
            "type_id": user_type_id,
            "type": user_type,
            "org": {"uid": event.workspace_id},
        }
        if event.actor_name is not None:
            user["name"] = event.actor_name
        api: dict[str, Any] = {"operation": event.action}
        request_id = context.get("request_id")
        if request_id is not None:
            api["request"] = {"uid": request_id}
        src_endpoint: dict[str, Any] = {"svc_name": event.source}
        ip = context.get("ip")
        if ip in (ERASED, UNREADABLE):
            unmapped["ip"] = ip
        elif ip is not None:
            src_endpoint["ip"] = ip
        for field in ("api_key_id", "location"):
            if context.get(field) is not None:
                unmapped[field] = context[field]
        payload: dict[str, Any] = {
            "activity_id": activity,
            "activity_name": ACTIVITY_NAMES[activity],
            "category_uid": CATEGORY_UID,
            "category_name": CATEGORY_NAME,
            "class_uid": CLASS_UID,
            "class_name": CLASS_NAME,
            "type_uid": CLASS_UID * 100 + activity,
            "type_name": f"{CLASS_NAME}: {ACTIVITY_NAMES[activity]}",
            "time": epoch_milliseconds(event.occurred_at),
            # The datetime profile: the same moment with its microseconds.
            "time_dt": event.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "severity_id": SEVERITY_INFORMATIONAL,
            "severity": "Informational",
            "status_id": STATUS_SUCCESS,
            "status": "Success",
            "message": event.action,
            "metadata": {
                "product": self._product,
                "version": OCSF_VERSION,
                "profiles": ["datetime"],
                "uid": str(event.event_id),
                "correlation_uid": str(event.stream_id),
                "event_code": event.action,
                "sequence": event.position,
                "logged_time": epoch_milliseconds(event.recorded_at),
            },
            "actor": {"user": user},
            "api": api,
            "src_endpoint": src_endpoint,
            "resources": [_resource(target) for target in event.targets],
            "unmapped": unmapped,
        }
        user_agent = context.get("user_agent")
        if user_agent is not None:
            payload["http_request"] = {"user_agent": user_agent}
        return payload


def _resource(target: dict[str, Any]) -> dict[str, Any]:
    resource: dict[str, Any] = {"uid": target["id"], "type": target["type"]}
    if target.get("name") is not None:
        resource["name"] = target["name"]
    if target.get("metadata") is not None:
        resource["data"] = target["metadata"]
    return resource
