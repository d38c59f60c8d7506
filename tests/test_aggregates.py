"""Aggregate rules, driven by generated command sequences against a plain reference model."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from auditcore import DomainRuleError, Incident, IncidentStatus, InvalidEventError, Monitor
from auditcore.domain.aggregate import AuditedAggregate
from auditcore.events.actions import default_registry
from auditcore.store.mapper import AuditMapper

severities = st.sampled_from(["sev1", "sev2", "sev3", "sev4"])
people = st.sampled_from(["user_a", "user_b", "user_c"])


class _Lifecycle(RuleBasedStateMachine):
    """Each command must succeed exactly when the reference model allows it, record one
    event when it does and none when it does not; replaying the stored form of all events
    must rebuild the same state."""

    aggregate: AuditedAggregate
    events: list[Any]

    def attempt(self, allowed: bool, command: Any, *args: Any, **kwargs: Any) -> None:
        before = self.aggregate.version
        try:
            command(*args, **kwargs)
        except DomainRuleError:
            assert not allowed, f"{command.__name__} was refused but should be allowed"
            assert self.aggregate.version == before
        else:
            assert allowed, f"{command.__name__} was allowed but breaks a rule"
            assert self.aggregate.version == before + 1
        self.events += self.aggregate.collect_events()

    def replayed(self) -> Any:
        mapper = AuditMapper(default_registry)
        decoded = [mapper.to_domain_event(mapper.to_stored_event(e)) for e in self.events]
        return type(self.aggregate).project(None, decoded)


class IncidentLifecycle(_Lifecycle):
    def __init__(self) -> None:
        super().__init__()
        self.aggregate = self.incident = Incident.open(
            "acme", title="Disk full", severity="sev3", service="db"
        )
        self.events = self.incident.collect_events()
        self.status, self.severity, self.assignee = "open", "sev3", None

    @rule()
    def acknowledge(self) -> None:
        allowed = self.status == "open"
        self.attempt(allowed, self.incident.acknowledge)
        self.status = "acknowledged" if allowed else self.status

    @rule(severity=severities)
    def change_severity(self, severity: str) -> None:
        allowed = self.status != "resolved" and severity != self.severity
        self.attempt(allowed, self.incident.change_severity, severity)
        self.severity = severity if allowed else self.severity

    @rule(person=people)
    def assign(self, person: str) -> None:
        allowed = self.status != "resolved" and person != self.assignee
        self.attempt(allowed, self.incident.assign, person)
        self.assignee = person if allowed else self.assignee

    @rule()
    def comment(self) -> None:
        self.attempt(True, self.incident.comment, "looking")

    @rule()
    def resolve(self) -> None:
        allowed = self.status != "resolved"
        self.attempt(allowed, self.incident.resolve, "fixed")
        self.status = "resolved" if allowed else self.status

    @rule()
    def reopen(self) -> None:
        allowed = self.status == "resolved"
        self.attempt(allowed, self.incident.reopen, "again")
        self.status = "open" if allowed else self.status

    @invariant()
    def state_matches_model_and_replay(self) -> None:
        assert self.incident.status == IncidentStatus(self.status)
        assert (self.incident.severity, self.incident.assignee_id) == (self.severity, self.assignee)
        replayed = self.replayed()
        assert (replayed.status, replayed.severity, replayed.assignee_id, replayed.version) == (
            self.incident.status,
            self.incident.severity,
            self.incident.assignee_id,
            self.incident.version,
        )


class MonitorLifecycle(_Lifecycle):
    def __init__(self) -> None:
        super().__init__()
        self.aggregate = self.monitor = Monitor.create(
            "acme", name="Home", url="https://example.com/"
        )
        self.events = self.monitor.collect_events()
        self.paused = self.down = self.deleted = False

    @rule(interval=st.integers(min_value=10, max_value=600))
    def configure(self, interval: int) -> None:
        self.attempt(not self.deleted, self.monitor.configure, interval_seconds=interval)

    @rule()
    def pause(self) -> None:
        allowed = not self.deleted and not self.paused
        self.attempt(allowed, self.monitor.pause)
        self.paused = self.paused or allowed

    @rule()
    def resume(self) -> None:
        allowed = not self.deleted and self.paused
        self.attempt(allowed, self.monitor.resume)
        self.paused = self.paused and not allowed

    @rule()
    def went_down(self) -> None:
        allowed = not self.deleted and not self.paused and not self.down
        self.attempt(allowed, self.monitor.went_down, "eu-west", "timeout")
        self.down = self.down or allowed

    @rule()
    def recovered(self) -> None:
        allowed = not self.deleted and not self.paused and self.down
        self.attempt(allowed, self.monitor.recovered, "eu-west")
        self.down = self.down and not allowed

    @rule()
    def delete(self) -> None:
        allowed = not self.deleted
        self.attempt(allowed, self.monitor.delete)
        self.deleted = True

    @invariant()
    def state_matches_model_and_replay(self) -> None:
        flags = (self.monitor.paused, self.monitor.down, self.monitor.deleted)
        assert flags == (self.paused, self.down, self.deleted)
        replayed = self.replayed()
        assert (
            replayed.paused,
            replayed.down,
            replayed.deleted,
            replayed.version,
            replayed.interval_seconds,
        ) == (*flags, self.monitor.version, self.monitor.interval_seconds)


TestIncidentLifecycle = IncidentLifecycle.TestCase
TestIncidentLifecycle.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
TestMonitorLifecycle = MonitorLifecycle.TestCase
TestMonitorLifecycle.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)


def test_configure_needs_at_least_one_change() -> None:
    monitor = Monitor.create("acme", name="Home", url="https://example.com/")
    with pytest.raises(InvalidEventError, match="give at least one of name, url"):
        monitor.configure()
    assert monitor.version == 1
