"""Events written with an old schema version are read upcast by a newer process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from uuid import UUID

import pytest

from auditcore import ActionRegistry, AuditCore, AuditEvent, Settings
from auditcore.readmodel.queries import EventQuery

WRITER_V1 = """
from pydantic import BaseModel
from auditcore import AuditCore, ActionRegistry, Settings

class Renamed(BaseModel):
    name: str

registry = ActionRegistry()
registry.register("widget.renamed", Renamed)
with AuditCore(Settings(event_store={store!r}), registry=registry) as audit:
    event = audit.record("widget.renamed", workspace_id="acme", metadata={{"name": "Blue"}})
print(event.stream_id)
"""

READER_V3 = """
import json
from uuid import UUID
from pydantic import BaseModel
from auditcore import AuditCore, ActionRegistry, Settings

class RenamedV3(BaseModel):
    new_name: str
    previous_name: str | None
    reason: str

registry = ActionRegistry()
registry.register(
    "widget.renamed",
    RenamedV3,
    version=3,
    upcasters={{
        1: lambda old: {{"new_name": old["name"], "previous_name": None}},
        2: lambda old: {{**old, "reason": "unknown"}},
    }},
)
with AuditCore(Settings(event_store={store!r}), registry=registry) as audit:
    (event,) = audit.history(UUID({stream_id!r}))
print(event.model_dump_json())
"""


def run_python(source: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_old_events_are_upcast_when_read_by_a_newer_process(store_settings: Settings) -> None:
    store = store_settings.event_store
    stream_id = run_python(WRITER_V1.format(store=store))

    event = AuditEvent.model_validate(
        json.loads(run_python(READER_V3.format(store=store, stream_id=stream_id)))
    )

    assert event.stream_id == UUID(stream_id)
    assert event.schema_version == 3
    assert event.metadata == {"new_name": "Blue", "previous_name": None, "reason": "unknown"}


def test_history_stays_readable_without_the_action_registered() -> None:
    registry = ActionRegistry()
    assert registry.upcast("gone.action", 1, {"x": 1}) == (1, {"x": 1})


def test_a_schema_version_without_its_upcasters_is_refused() -> None:
    with pytest.raises(ValueError, match=r"no upcaster from version\(s\) \[2\]"):
        ActionRegistry().register("widget.renamed", version=3, upcasters={1: dict})


def test_read_models_hold_upcast_metadata(pg_settings: Settings) -> None:
    from pydantic import BaseModel  # noqa: PLC0415

    class Renamed(BaseModel):
        name: str

    class RenamedV2(BaseModel):
        new_name: str
        previous_name: str | None

    old = ActionRegistry()
    old.register("widget.renamed", Renamed)
    with AuditCore(pg_settings, registry=old) as audit:
        stored = audit.record("widget.renamed", workspace_id="acme", metadata={"name": "Blue"})

    new = ActionRegistry()
    new.register(
        "widget.renamed",
        RenamedV2,
        version=2,
        upcasters={1: lambda m: {"new_name": m["name"], "previous_name": None}},
    )
    with AuditCore(pg_settings, registry=new) as audit:
        audit.project()
        event = audit.reader("acme").get(stored.event_id)
        (found,) = audit.reader("acme").events(EventQuery(text="blue")).items

    assert event.schema_version == 2
    assert event.metadata == {"new_name": "Blue", "previous_name": None}
    assert found == event
