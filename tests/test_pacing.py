"""The CPU budget of bulk work: held to its share while requests arrive, free when none do."""

from __future__ import annotations

from auditcore.api.pacing import CpuPacer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bulk_work_keeps_to_its_share_while_requests_arrive_and_runs_free_otherwise() -> None:
    clock = Clock()
    pacer = CpuPacer(0.5, burst=0.05, quiet=1.0, clock=clock)
    # Nobody has asked for anything: no rest, however much is done.
    assert pacer.charge(10.0) == 0.0
    pacer.request()
    # 0.25 s of work beyond the 0.05 s burst at half a core: 0.4 s of rest.
    assert abs(pacer.charge(0.25) - 0.4) < 1e-9
    clock.now += 0.4  # it rested
    assert pacer.charge(0.0) == 0.0
    # Over a long run, work : wall time stays at the share.
    worked = 0.0
    for _ in range(200):
        worked += 0.01
        clock.now += 0.01 + pacer.charge(0.01)
        pacer.request()
    assert abs(worked / (clock.now - 100.4) - 0.5) < 0.05
    # Requests stop: after ``quiet`` seconds bulk work runs free again.
    clock.now += 1.5
    assert pacer.charge(5.0) == 0.0


def test_a_zero_budget_turns_pacing_off() -> None:
    pacer = CpuPacer(0)
    pacer.request()
    assert pacer.charge(100.0) == 0.0
