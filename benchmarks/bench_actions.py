"""The benchmark's actions, registered in ``auditcore.default_registry`` for a server process
(``auditcore serve --actions benchmarks.bench_actions``)."""

from __future__ import annotations

from auditcore import default_registry
from benchmarks.common import BENCH_ACTIONS

for _action in BENCH_ACTIONS:
    default_registry.register(_action)
