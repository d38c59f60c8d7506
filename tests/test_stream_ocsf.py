"""The OCSF payload format: events recorded through auditcore (SQLite store) and read back the
way a stream reads them (the log, decoded) become valid OCSF 1.3 API Activity (class 6003)
objects, for every built-in action, hostile text in every Unicode script, empty and maximal
sizes, and erased personal fields; the mapping holds field by field."""

from __future__ import annotations

import dataclasses
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from auditcore import AuditCore, Settings
from auditcore.events.envelope import ERASED, UNREADABLE
from auditcore.projection.log import LogReader
from auditcore.projection.records import EventRecord, decode_logged
from auditcore.streams.formats.ocsf import OcsfApiActivity, activity_id

# Written from OCSF 1.3.0: the base event's required attributes, API Activity's (actor, api,
# src_endpoint) and those of the objects they hold; enums as the schema defines them.
_UID = {"type": "string", "minLength": 1}
_TIMESTAMP = {"type": "integer"}
OCSF_API_ACTIVITY_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": [
        "activity_id",
        "category_uid",
        "class_uid",
        "type_uid",
        "time",
        "severity_id",
        "metadata",
        "actor",
        "api",
        "src_endpoint",
    ],
    "properties": {
        "activity_id": {"enum": [0, 1, 2, 3, 4, 99]},
        "activity_name": {"enum": ["Unknown", "Create", "Read", "Update", "Delete", "Other"]},
        "category_uid": {"const": 6},
        "category_name": {"const": "Application Activity"},
        "class_uid": {"const": 6003},
        "class_name": {"const": "API Activity"},
        "type_uid": {"enum": [600300, 600301, 600302, 600303, 600304, 600399]},
        "type_name": {"type": "string"},
        "time": _TIMESTAMP,
        "time_dt": {"type": "string", "format": "date-time"},
        "severity_id": {"enum": [0, 1, 2, 3, 4, 5, 6, 99]},
        "severity": {"type": "string"},
        "status_id": {"enum": [0, 1, 2, 99]},
        "status": {"type": "string"},
        "message": {"type": "string"},
        "metadata": {
            "type": "object",
            "required": ["product", "version"],
            "properties": {
                "product": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string"},
                        "vendor_name": {"type": "string"},
                        "version": {"type": "string"},
                    },
                },
                "version": {"type": "string", "pattern": r"^1\.\d+\.\d+$"},
                "uid": _UID,
                "correlation_uid": _UID,
                "event_code": {"type": "string"},
                "sequence": {"type": "integer"},
                "logged_time": _TIMESTAMP,
                "profiles": {"type": "array", "items": {"type": "string"}},
            },
            "additionalProperties": False,
        },
        "actor": {
            "type": "object",
            "required": ["user"],
            "properties": {
                "user": {
                    "type": "object",
                    "required": ["uid", "type_id"],
                    "properties": {
                        "uid": _UID,
                        "name": {"type": "string"},
                        "type_id": {"enum": [0, 1, 2, 3, 99]},
                        "type": {"type": "string"},
                        "org": {
                            "type": "object",
                            "required": ["uid"],
                            "properties": {"uid": _UID},
                        },
                    },
                    "additionalProperties": False,
                }
            },
            "additionalProperties": False,
        },
        "api": {
            "type": "object",
            "required": ["operation"],
            "properties": {
                "operation": {"type": "string", "minLength": 1},
                "request": {
                    "type": "object",
                    "required": ["uid"],
                    "properties": {"uid": {"type": "string"}},
                },
            },
            "additionalProperties": False,
        },
        "src_endpoint": {
            "type": "object",
            "minProperties": 1,  # OCSF: at least one of its attributes
            "properties": {
                "ip": {"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}], "type": "string"},
                "svc_name": {"type": "string"},
            },
            "additionalProperties": False,
        },
        "http_request": {
            "type": "object",
            "properties": {"user_agent": {"type": "string"}},
            "additionalProperties": False,
        },
        "resources": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["uid", "type"],
                "properties": {
                    "uid": _UID,
                    "type": {"type": "string"},
                    "name": {"type": "string"},
                    "data": {},
                },
                "additionalProperties": False,
            },
        },
        "unmapped": {"type": "object"},
    },
    "additionalProperties": False,
}
VALIDATOR = Draft202012Validator(OCSF_API_ACTIVITY_SCHEMA, format_checker=FormatChecker())


def assert_valid_ocsf(payload: dict[str, Any]) -> None:
    errors = sorted(VALIDATOR.iter_errors(payload), key=str)
    assert not errors, errors[0]
    orjson.dumps(payload)  # and JSON-serialisable as a destination sends it


def scripts_sample() -> str:
    """One letter of every Unicode script block that has one, with marks and controls-free."""
    seen: dict[str, str] = {}
    for point in range(0x20, 0x30000):
        char = chr(point)
        if unicodedata.category(char) in ("Cn", "Cs", "Co", "Cc"):
            continue
        script = unicodedata.name(char, "").split(" ")[0]
        seen.setdefault(script, char)
    return "".join(seen.values())


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditCore]:
    with AuditCore(Settings(str(tmp_path / "events.sqlite"), f"chdb://{tmp_path}/ch")) as core:
        for action in (
            "ticket.opened",
            "ticket.viewed",
            "ticket.resolved",
            "ticket.deleted",
            "ticket.escalated",
        ):
            core.registry.register(action)
        yield core


def stored_records(audit: AuditCore) -> list[EventRecord]:
    return [
        decode_logged(audit.registry, logged) for logged in LogReader(audit.app).after(0, 10_000)
    ]


def test_an_event_maps_field_by_field(audit: AuditCore) -> None:
    recorded = audit.record(
        "ticket.resolved",
        workspace_id="acme",
        metadata={"severity": "high"},
        actor={"id": "u-1", "type": "user", "name": "Zoë", "metadata": {"team": "ops"}},
        targets=[
            {"type": "incident", "id": "i-9", "name": "Fire", "metadata": {"zone": "b"}},
            {"type": "team", "id": "t-1"},
        ],
        source="api",
        context={
            "ip": "2001:db8::1",
            "user_agent": "curl/8",
            "request_id": "req-1",
            "location": "Lyon, FR",
        },
    )
    [record] = stored_records(audit)
    payload = OcsfApiActivity().format(record)
    assert_valid_ocsf(payload)
    occurred_ms = int(recorded.occurred_at.timestamp() * 1000)
    assert payload["time"] in (occurred_ms - 1, occurred_ms, occurred_ms + 1)
    expected_subset = {
        "activity_id": 3,
        "activity_name": "Update",
        "category_uid": 6,
        "class_uid": 6003,
        "type_uid": 600303,
        "type_name": "API Activity: Update",
        "severity_id": 1,
        "status_id": 1,
        "actor": {
            "user": {
                "uid": "u-1",
                "name": "Zoë",
                "type_id": 1,
                "type": "User",
                "org": {"uid": "acme"},
            }
        },
        "api": {"operation": "ticket.resolved", "request": {"uid": "req-1"}},
        "src_endpoint": {"ip": "2001:db8::1", "svc_name": "api"},
        "http_request": {"user_agent": "curl/8"},
        "resources": [
            {"uid": "i-9", "type": "incident", "name": "Fire", "data": {"zone": "b"}},
            {"uid": "t-1", "type": "team"},
        ],
        "unmapped": {
            "version": 1,
            "schema_version": 1,
            "metadata": {"severity": "high"},
            "location": "Lyon, FR",
            "actor_metadata": {"team": "ops"},
        },
    }
    assert {key: payload[key] for key in expected_subset} == expected_subset
    metadata = payload["metadata"]
    assert metadata["uid"] == str(recorded.event_id)
    assert metadata["correlation_uid"] == str(recorded.stream_id)
    assert metadata["sequence"] == record.position
    assert metadata["event_code"] == "ticket.resolved"
    assert metadata["version"] == "1.3.0"
    assert metadata["product"]["name"] == "auditcore"
    assert payload["time_dt"].endswith("Z")


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("ticket.opened", 1),
        ("auditcore.api_key.created", 1),
        ("ticket.viewed", 2),
        ("auditcore.export.created", 1),
        ("document.exported", 2),
        ("ticket.resolved", 3),
        ("user.role.changed", 3),
        ("ticket.deleted", 4),
        ("auditcore.api_key.revoked", 4),
        ("auditcore.subject.erased", 4),
        ("ticket.escalated", 99),
        ("auditcore.auth.failures_throttled", 99),
        ("created.elsewhere", 99),  # the verb is the action's last word, not any word
    ],
)
def test_activity_comes_from_the_action_verb(action: str, expected: int) -> None:
    assert activity_id(action) == expected


def test_every_builtin_action_and_hostile_event_is_valid_ocsf(audit: AuditCore) -> None:
    hostile = scripts_sample()
    workspace = "w" * 64
    control: dict[str, dict[str, Any]] = {
        "auditcore.workspace.created": {"name": hostile[:200]},
        "auditcore.api_key.created": {"key_id": "k1", "name": "ci", "scopes": ["read"]},
        "auditcore.api_key.revoked": {"key_id": "k1", "name": "ci"},
        "auditcore.export.created": {"format": "csv"},
        "auditcore.report.generated": {"since": "a", "until": "b", "events": 0},
        "auditcore.auth.failures_throttled": {
            "address": "203.0.113.0",
            "failures": 9,
            "window_seconds": 60.0,
            "first_failure_at": "x",
            "last_failure_at": "y",
        },
        "auditcore.action_schema.registered": {"name": "ticket.opened", "version": 1},
        "auditcore.subject.erased": {"subject_id": "u-1", "requested_at": "now"},
    }
    for action, metadata in control.items():
        audit.record_control_event(action, workspace_id=workspace, metadata=metadata)
    # Maximal: the longest ids, names and user agent, fifty targets, every script.
    audit.record(
        "ticket.opened",
        workspace_id=workspace,
        metadata={
            "text": hostile[:500],
            "tail": hostile[-500:],
            "flag": True,
            "ratio": 1.5,
            "nothing": None,
        },
        actor={"id": "a" * 256, "type": "IAMUser", "name": hostile[:256]},
        targets=[
            # Fifty targets within the targets' 16 KiB: names of forty letters of any script.
            {"type": "T" * 64, "id": f"{index:03}" + "i" * 29, "name": hostile[40 * index :][:40]}
            for index in range(50)
        ],
        context={"ip": "255.255.255.255", "user_agent": hostile[:1024], "request_id": "r" * 256},
    )
    # Empty: no targets, no context, the system actor, no metadata.
    audit.record("ticket.escalated", workspace_id="w")
    audit.record(
        "ticket.deleted",
        workspace_id="w",
        actor={"id": "k", "type": "api_key"},
        context={"ip": "::ffff:192.0.2.1"},
        targets=[],
    )
    records = stored_records(audit)
    assert len(records) == len(control) + 3
    formatter = OcsfApiActivity()
    for record in records:
        assert_valid_ocsf(formatter.format(record))
    maximal = formatter.format(records[len(control)])
    assert maximal["actor"]["user"]["name"] == hostile[:256]
    assert maximal["actor"]["user"]["type_id"] == 99
    assert maximal["actor"]["user"]["type"] == "IAMUser"
    assert len(maximal["resources"]) == 50
    empty = formatter.format(records[len(control) + 1])
    assert empty["resources"] == []
    assert empty["src_endpoint"] == {"svc_name": "system"}
    assert "http_request" not in empty
    assert empty["actor"]["user"]["type"] == "System"


@pytest.mark.parametrize("marker", [ERASED, UNREADABLE])
def test_erased_fields_stay_valid_ocsf(audit: AuditCore, marker: str) -> None:
    audit.record(
        "ticket.viewed",
        workspace_id="acme",
        actor={"id": "u-1", "name": "Zoë"},
        context={"ip": "192.0.2.7", "user_agent": "Firefox"},
        metadata={"email": "zoe@example.com"},
    )
    [record] = stored_records(audit)
    # What a stream reads once the subject's keys were destroyed (or the sealed field altered).
    erased = dataclasses.replace(
        record,
        actor_name=marker,
        context={"ip": marker, "user_agent": marker},
        metadata={"email": marker},
    )
    payload = OcsfApiActivity().format(erased)
    assert_valid_ocsf(payload)
    assert "ip" not in payload["src_endpoint"]
    assert payload["unmapped"]["ip"] == marker
    assert payload["actor"]["user"]["name"] == marker
    assert payload["http_request"] == {"user_agent": marker}
    assert payload["unmapped"]["metadata"] == {"email": marker}
