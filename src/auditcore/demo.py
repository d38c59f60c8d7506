"""A realistic afternoon of incident and monitor activity, recorded through the aggregates."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal
from uuid import UUID, uuid4, uuid5

from pydantic import BaseModel, ConfigDict, Field

from auditcore.domain import Incident, Monitor
from auditcore.errors import DomainRuleError
from auditcore.events.envelope import Actor, ActorType, AuditEvent, RequestContext, Target
from auditcore.events.ids import stream_id_for
from auditcore.events.provenance import acting_as
from auditcore.facade import AuditCore


class MemberInvited(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)
    role: Literal["owner", "admin", "member", "viewer"]


class ApiKeyCreated(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key_name: str = Field(max_length=100)
    scopes: list[Literal["read", "write"]]


class SettingUpdated(BaseModel):
    model_config = ConfigDict(extra="forbid")
    setting: str = Field(max_length=40)
    old_value: str = Field(max_length=500)
    new_value: str = Field(max_length=500)


PRODUCT_ACTIONS: dict[str, type[BaseModel]] = {
    "member.invited": MemberInvited,
    "api_key.created": ApiKeyCreated,
    "settings.updated": SettingUpdated,
}


def register_product_actions(audit: AuditCore) -> None:
    """A product's own standalone actions, registered as data (their JSON Schema, for every
    workspace) as a team would with ``auditcore actions register``: every process sees them,
    and registering the same schemas again (a second demo) adds nothing."""
    for name, model in PRODUCT_ACTIONS.items():
        audit.register_action(name, model.model_json_schema(), registered_by="auditcore demo")


ALICE = Actor(id="user_alice", type=ActorType.USER, name="Alice Martin")
BOB = Actor(id="user_bob", type=ActorType.USER, name="Bob Osei")
PAGER = Actor(id="svc_pager", type=ActorType.SERVICE, name="Pager integration")
DEPLOYER = Actor(id="key_ci_deployer", type=ActorType.API_KEY, name="ci-deployer")
BROWSER = RequestContext.model_validate(
    {
        "ip": "203.0.113.7",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0",
        "request_id": "req_7f3a",
    }
)


@dataclass
class DemoRun:
    """What a demo run recorded, and the rule violations it tried and was refused; or, when the
    workspace already held the demo's story, nothing recorded and when it was."""

    incident_id: UUID
    since: datetime
    """When the story begins."""
    events: list[AuditEvent] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    recorded_before: datetime | None = None


INCIDENT_TITLE = "Public API returning 503"
_DEMO = UUID("6f1c2b4e-8d0a-5c3e-9b7f-2a4d6e8c0b1f")
"""Namespace of the demo's own event ids: its first event and its incident's have fixed ids
per workspace, so a second run finds the story recorded and records nothing again."""


def _demo_id(workspace_id: str, what: str) -> UUID:
    return uuid5(_DEMO, f"{workspace_id}/{what}")


def run_demo(audit: AuditCore, workspace_id: str) -> DemoRun:
    """Record the demo's story in ``workspace_id``, unless it is there already."""
    register_product_actions(audit)
    first_id = _demo_id(workspace_id, "first")
    incident_id = stream_id_for(workspace_id, _demo_id(workspace_id, "incident"))
    if audit.app.event_ids.locate_events([(workspace_id, first_id)]):
        first = audit.event(first_id, workspace_id=workspace_id)
        return DemoRun(incident_id, first.occurred_at, recorded_before=first.recorded_at)
    clock = _clock(datetime.now(UTC) - timedelta(hours=5))
    run = DemoRun(incident_id, since=next(clock))
    with acting_as(ALICE, source="dashboard", context=BROWSER):
        homepage = Monitor.create(
            workspace_id,
            name="Homepage",
            url="https://acme.example/",
            occurred_at=run.since,
            event_id=first_id,
        )
        api = Monitor.create(
            workspace_id,
            name="Public API",
            url="https://api.acme.example/health",
            interval_seconds=30,
            regions=["eu-west", "us-east", "ap-south"],
            occurred_at=next(clock),
        )
        checkout = Monitor.create(
            workspace_id,
            name="Checkout",
            url="https://acme.example/checkout",
            occurred_at=next(clock),
        )
        run.events += audit.save(homepage, api, checkout)
        invitation = uuid4()
        invite = {"email": "bob@acme.example", "role": "admin"}
        target = [Target(type="user", id="user_bob", name="Bob Osei")]
        run.events.append(
            audit.record(
                "member.invited",
                workspace_id=workspace_id,
                targets=target,
                metadata=invite,
                event_id=invitation,
                occurred_at=next(clock),
            )
        )
        # A retried request with the same event id records nothing new.
        audit.record(
            "member.invited",
            workspace_id=workspace_id,
            targets=target,
            metadata=invite,
            event_id=invitation,
        )
        run.events.append(
            audit.record(
                "api_key.created",
                workspace_id=workspace_id,
                targets=[Target(type="api_key", id="key_ci_deployer", name="ci-deployer")],
                metadata={"key_name": "ci-deployer", "scopes": ["read", "write"]},
                occurred_at=next(clock),
            )
        )

    api.configure(interval_seconds=60, actor=DEPLOYER, source="api", occurred_at=next(clock))
    api.went_down(
        "eu-west", "HTTP 503 Service Unavailable", status_code=503, occurred_at=next(clock)
    )
    incident = Incident.open(
        workspace_id,
        title=INCIDENT_TITLE,
        event_id=_demo_id(workspace_id, "incident"),
        severity="sev2",
        service="public-api",
        actor=PAGER,
        source="api",
        targets=[api.as_target()],
        occurred_at=next(clock),
    )
    run.events += audit.save(api, incident)

    with acting_as(BOB, source="dashboard"):
        incident.acknowledge("Looking into it", occurred_at=next(clock))
        incident.assign(BOB.id, BOB.name, occurred_at=next(clock))
    incident.change_severity(
        "sev1",
        "Checkout failing for customers",
        actor=ALICE,
        source="dashboard",
        occurred_at=next(clock),
    )
    incident.comment("Rolled back deploy 4812", actor=BOB, source="cli", occurred_at=next(clock))
    api.recovered("eu-west", occurred_at=next(clock))
    incident.resolve(
        "Rolled back the faulty deploy",
        root_cause="Connection pool exhausted",
        actor=BOB,
        source="dashboard",
        occurred_at=next(clock),
    )
    run.events += audit.save(incident, api)

    try:
        incident.resolve("Resolving twice", actor=BOB)
    except DomainRuleError as error:
        run.refused.append(str(error))

    with acting_as(ALICE, source="dashboard", context=BROWSER):
        incident.reopen("Errors are back in ap-south", occurred_at=next(clock))
        checkout.pause("Planned maintenance", occurred_at=next(clock))
        run.events += audit.save(incident, checkout)
    incident.resolve(
        "Scaled the ap-south pool", actor=BOB, source="dashboard", occurred_at=next(clock)
    )
    checkout.resume(actor=ALICE, source="dashboard", occurred_at=next(clock))
    run.events += audit.save(incident, checkout)

    with acting_as(ALICE, source="dashboard", context=BROWSER):
        run.events.append(
            audit.record(
                "settings.updated",
                workspace_id=workspace_id,
                targets=[Target(type="workspace", id=workspace_id)],
                metadata={"setting": "retention_days", "old_value": "90", "new_value": "365"},
                occurred_at=next(clock),
            )
        )
        homepage.delete("Replaced by the Checkout monitor", occurred_at=next(clock))
        run.events += audit.save(homepage)
        try:
            homepage.pause("Too late")
        except DomainRuleError as error:
            run.refused.append(str(error))

    return run


def _clock(start: datetime) -> Iterator[datetime]:
    """Moments a few minutes apart, so the story reads like a real afternoon."""
    moment = start
    step = 0
    while True:
        step += 1
        moment += timedelta(minutes=3 + (step * 7) % 17, seconds=(step * 13) % 60)
        yield moment
