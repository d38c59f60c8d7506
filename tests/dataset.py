"""A reproducible, realistic audit trail for read-side tests: two workspaces, incidents and
monitors driven through their aggregates, and standalone notes, at distinct times."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from auditcore import (
    ActionRegistry,
    Actor,
    ActorType,
    AuditCore,
    AuditEvent,
    DomainRuleError,
    Incident,
    Monitor,
    default_registry,
)

WORKSPACES = ("acme", "globex")
ACTORS = (
    Actor(id="user_ana", name="Ana Lima"),
    Actor(id="user_ben", name="Ben Ito"),
    Actor(id="user_cy", name="Cy Park"),
    Actor(id="key_deploy", type=ActorType.API_KEY, name="deploy bot"),
    Actor(id="svc_pager", type=ActorType.SERVICE, name="Pager"),
    Actor(id="system", type=ActorType.SYSTEM, name="System"),
)
SOURCES = ("api", "dashboard", "cli", "system")
SERVICES = ("billing", "search", "checkout", "auth")
START = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)


def registry_with_notes() -> ActionRegistry:
    # The data lie around a fixed date, some of it after this machine's clock may be.
    registry = default_registry.copy(max_future=timedelta(days=3 * 365))
    registry.register("note.added")
    return registry


@dataclass
class Dataset:
    events: list[AuditEvent] = field(default_factory=list)
    incidents: list[UUID] = field(default_factory=list)
    monitors: list[UUID] = field(default_factory=list)

    def in_workspace(self, workspace_id: str) -> list[AuditEvent]:
        return [event for event in self.events if event.workspace_id == workspace_id]


def _moments(rng: random.Random, count: int) -> Iterator[datetime]:
    offsets = rng.sample(range(0, 3 * 24 * 3600 * 1000), count)  # distinct milliseconds
    for offset in offsets:
        yield START + timedelta(milliseconds=offset, microseconds=rng.randrange(1000))


def build(audit: AuditCore, seed: int = 7, streams: int = 60, notes: int = 80) -> Dataset:
    rng = random.Random(seed)
    clock = _moments(rng, streams * 12 + notes)
    data = Dataset()

    def who() -> dict[str, object]:
        return {
            "actor": rng.choice(ACTORS),
            "source": rng.choice(SOURCES),
            "occurred_at": next(clock),
            "context": {
                "ip": f"198.51.100.{rng.randrange(1, 255)}",
                "request_id": f"r{rng.random()}",
            },
        }

    def someone() -> Actor:
        return rng.choice(ACTORS[:3])

    incident_commands: list[Callable[[Incident], object]] = [
        lambda i: i.acknowledge(**who()),
        lambda i: i.change_severity(rng.choice(["sev1", "sev2", "sev3"]), **who()),
        lambda i: i.assign((person := someone()).id, person.name, **who()),
        lambda i: i.comment(f"looked at {rng.choice(SERVICES)} logs", **who()),
        lambda i: i.resolve("rolled back", **who()),
        lambda i: i.reopen("it came back", **who()),
    ]
    monitor_commands: list[Callable[[Monitor], object]] = [
        lambda m: m.pause(**who()),
        lambda m: m.resume(**who()),
        lambda m: m.went_down("eu-west", "timeout", **who()),
        lambda m: m.recovered("eu-west", **who()),
        lambda m: m.configure(interval_seconds=rng.randrange(30, 300), **who()),
    ]

    def attempt(command: Callable[[Any], object], aggregate: Incident | Monitor) -> None:
        with contextlib.suppress(DomainRuleError):
            command(aggregate)

    aggregates: list[Incident | Monitor] = []
    for n in range(streams):
        workspace = rng.choice(WORKSPACES)
        if n % 3:
            incident = Incident.open(
                workspace,
                title=f"{rng.choice(SERVICES)} errors #{n}",
                severity=rng.choice(["sev1", "sev2", "sev3", "sev4"]),
                service=rng.choice(SERVICES),
                **who(),
            )
            for _ in range(rng.randrange(2, 10)):
                attempt(rng.choice(incident_commands), incident)
            aggregates.append(incident)
            data.incidents.append(incident.id)
        else:
            monitor = Monitor.create(
                workspace,
                name=f"{rng.choice(SERVICES)} probe {n}",
                url=f"https://{n}.example.com/",
                **who(),
            )
            for _ in range(rng.randrange(2, 8)):
                attempt(rng.choice(monitor_commands), monitor)
            aggregates.append(monitor)
            data.monitors.append(monitor.id)
    for start in range(0, len(aggregates), 20):
        data.events += audit.save(*aggregates[start : start + 20])
    for _ in range(notes):
        target = rng.choice(data.events)
        data.events.append(
            audit.record(
                "note.added",
                workspace_id=target.workspace_id,
                targets=[target.targets[0], {"type": "team", "id": rng.choice(["sre", "web"])}],
                metadata={
                    "text": f"{rng.choice(SERVICES)} follow-up",
                    "priority": rng.randrange(3),
                },
                **who(),  # type: ignore[arg-type]
            )
        )
    return data
