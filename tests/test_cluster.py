"""Cluster mode as a DBA would check it (one shard, and several with Distributed tables):
every statement auditcore sends while it migrates, projects, rebuilds (swap, keep-old rename,
drops) and re-projects a stream (a mutation) is captured, and each DDL statement and
mutation must carry ``ON CLUSTER``, each replicated table a ZooKeeper path of its own, each
drop ``SYNC``; tables are created only where missing.

The ClickHouse behind it is the chDB-backed server stand-in, which is one node without
ZooKeeper: ``tests/cluster_proxy.py`` records each statement as sent, then strips the
cluster clauses (and answers ``system.clusters`` with the clusters a test declares) before
forwarding. What a real multi-node cluster does with the statements is not exercised here.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from auditcore import AuditCore, Incident, Settings
from auditcore.errors import ConfigurationError
from auditcore.readmodel.queries import EventQuery
from tests.cli_run import AUDITCORE
from tests.clickhouse_server import ClickHouseStandIn
from tests.cluster_proxy import ClusterProxy
from tests.conftest import fresh_postgres_store
from tests.poison import store_unprojectable

CLUSTER = "auditcore_test"
ON_CLUSTER = f" ON CLUSTER `{CLUSTER}`"
_DDL = re.compile(r"^\s*(CREATE|DROP|EXCHANGE|RENAME|DELETE|ALTER|TRUNCATE|OPTIMIZE)\b", re.I)


@pytest.fixture
def stand_in_port(own_clickhouse_server: ClickHouseStandIn) -> int:
    return own_clickhouse_server.port


@pytest.fixture
def proxy(stand_in_port: int) -> Iterator[ClusterProxy]:
    """One shard of two replicas, as ``system.clusters`` describes it."""
    with ClusterProxy(stand_in_port, {CLUSTER: [(1, 1), (1, 2)]}).running() as running:
        yield running


def test_every_ddl_statement_and_mutation_is_sent_on_the_cluster(
    postgres_database: str, proxy: ClusterProxy
) -> None:
    url = f"http://default:@127.0.0.1:{proxy.port}/auditcore"
    settings = Settings(fresh_postgres_store(postgres_database), url, CLUSTER)
    with AuditCore(settings) as audit:
        incident = Incident.open(
            "acme", title="API down", severity="sev2", service="api",
            occurred_at=datetime(2020, 5, 1, tzinfo=UTC),
        )  # fmt: skip
        incident.acknowledge("looking")
        audit.save(incident)
        audit.record_many(
            {
                "action": "incident.comment_added",
                "workspace_id": "acme",
                "metadata": {"body": f"year {year}"},
                "occurred_at": datetime(year, 7, 1, tzinfo=UTC),
            }
            for year in range(1990, 2020)
        )
        store_unprojectable(audit, "acme")  # its batch is probed: a probe table is made
        assert audit.migrate()
        audit.migrate()  # everything exists now: no DDL at all
        audit.project()
        audit.rebuild("audit_events")
        audit.rebuild("incidents", keep_old=True)
        audit.rebuild_part("incidents", stream_id=incident.id)
        assert audit.reader("acme").count(EventQuery()) == 32
        current = audit.reader("acme").current("incidents", {})
        assert [row["status"] for row in current] == ["acknowledged"]

    ddl = [" ".join(s.split()) for s in proxy.statements if _DDL.match(s)]
    assert ddl, "no DDL captured"
    for statement in ddl:
        assert ON_CLUSTER in statement, statement
    creates = [s for s in ddl if s.startswith("CREATE TABLE")]
    for statement in creates:
        engine = statement.split(" ENGINE = ", 1)[1]
        assert engine.startswith(("Null", "Replicated")), statement
        if engine.startswith("Replicated"):
            assert "('/clickhouse/tables/{uuid}/{shard}', '{replica}'" in engine, statement
    for statement in ddl:
        if statement.startswith("DROP"):
            assert statement.endswith(" SYNC"), statement

    def sent(prefix: str) -> list[str]:
        return [s for s in ddl if s.startswith(prefix)]

    assert sent(f"CREATE DATABASE IF NOT EXISTS `auditcore`{ON_CLUSTER}")
    for table in (
        "auditcore_tracking", "auditcore_dead_letters", "audit_events", "incidents",
        "monitors", "activity_hourly", "audit_events__probe",
    ):  # fmt: skip
        created = sent(f"CREATE TABLE IF NOT EXISTS `auditcore`.`{table}`{ON_CLUSTER} (")
        assert len(created) == 1, (table, created)  # only while it was missing
    assert len(sent(f"CREATE TABLE IF NOT EXISTS `auditcore`.`audit_events__next`{ON_CLUSTER}"))
    assert sent(
        f"EXCHANGE TABLES `auditcore`.`audit_events` AND `auditcore`.`audit_events__next`"
        f"{ON_CLUSTER}"
    )
    assert sent(f"DROP TABLE IF EXISTS `auditcore`.`audit_events__next`{ON_CLUSTER} SYNC")
    assert sent(f"DROP TABLE IF EXISTS `auditcore`.`audit_events__next__probe`{ON_CLUSTER} SYNC")
    assert sent("RENAME TABLE `auditcore`.`incidents__next` TO `auditcore`.`incidents__old_")
    assert sent(f"DELETE FROM `auditcore`.`auditcore_tracking`{ON_CLUSTER} WHERE")
    assert sent(f"DELETE FROM `auditcore`.`auditcore_dead_letters`{ON_CLUSTER} WHERE")
    assert sent(f"DELETE FROM `auditcore`.`incidents`{ON_CLUSTER} WHERE")
    # A processor waits for its replicas before it trusts its tracking (this node only).
    syncs = {s for s in proxy.statements if s.startswith("SYSTEM SYNC REPLICA")}
    assert "SYSTEM SYNC REPLICA `auditcore`.`auditcore_tracking`" in syncs
    assert "SYSTEM SYNC REPLICA `auditcore`.`audit_events`" in syncs
    assert not [s for s in syncs if "ON CLUSTER" in s]


def test_an_unknown_cluster_is_a_one_line_error(tmp_path: Path, stand_in_port: int) -> None:
    url = f"http://default:@127.0.0.1:{stand_in_port}/auditcore"
    result = subprocess.run(
        [AUDITCORE, "migrate", "--event-store", str(tmp_path / "events.sqlite"),
         "--clickhouse", url, "--cluster", "prod"],
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    # One message (the console wraps it at 80 columns when piped).
    assert " ".join(result.stderr.split()) == (
        f"error: the ClickHouse cluster 'prod' is not defined on ClickHouse at "
        f"http://127.0.0.1:{stand_in_port}/auditcore (its clusters: none). Check "
        "AUDITCORE_CLICKHOUSE_CLUSTER or --cluster."
    )


def test_a_cluster_of_several_shards_is_refused(tmp_path: Path, stand_in_port: int) -> None:
    clusters = {"sharded": [(1, 1), (2, 1)], CLUSTER: [(1, 1)]}
    with ClusterProxy(stand_in_port, clusters).running() as proxy:
        url = f"http://default:@127.0.0.1:{proxy.port}/auditcore"
        store = str(tmp_path / "events.sqlite")
        with pytest.raises(ConfigurationError, match="'sharded' has 2 shards"):
            AuditCore(Settings(store, url, "sharded")).migrate()
        with pytest.raises(ConfigurationError, match=r"\(its clusters: auditcore_test, sharded\)"):
            AuditCore(Settings(store, url, "other")).migrate()
        assert not [s for s in proxy.statements if _DDL.match(s)], "DDL sent before refusing"


SHARDED = "auditcore_sharded"
ON_SHARDED = f" ON CLUSTER `{SHARDED}`"


def test_a_sharded_cluster_gets_distributed_tables_over_local_ones(
    postgres_database: str, stand_in_port: int
) -> None:
    """Two shards of two replicas with ``AUDITCORE_CLICKHOUSE_SHARDED=1``: each table is a
    local Replicated table and a Distributed table over it, sharded by workspace (the
    bookkeeping tables on one shard); inserts go through the Distributed tables in the
    foreground; swaps, mutations and replica syncs act on the local tables on every node;
    and the answers come through the Distributed tables (the proxy makes them Merge tables
    on its one node)."""
    clusters = {SHARDED: [(1, 1), (1, 2), (2, 1), (2, 2)]}
    with ClusterProxy(stand_in_port, clusters).running() as proxy:
        url = f"http://default:@127.0.0.1:{proxy.port}/auditcore"
        settings = Settings(
            fresh_postgres_store(postgres_database), url, SHARDED, clickhouse_sharded=True
        )
        with AuditCore(settings) as audit:
            incident = Incident.open(
                "acme", title="API down", severity="sev2", service="api",
                occurred_at=datetime(2020, 5, 1, tzinfo=UTC),
            )  # fmt: skip
            incident.acknowledge("looking")
            audit.save(incident)
            audit.record_many(
                {
                    "action": "incident.comment_added",
                    "workspace_id": workspace,
                    "metadata": {"body": f"year {year}"},
                    "occurred_at": datetime(year, 7, 1, tzinfo=UTC),
                }
                for year in range(1990, 2020)
                for workspace in ("acme", "globex")
            )
            store_unprojectable(audit, "acme")
            assert audit.migrate()
            audit.migrate()  # everything exists now: no DDL at all
            audit.project()
            audit.rebuild("audit_events")
            audit.rebuild("incidents", keep_old=True)
            audit.rebuild_part("incidents", stream_id=incident.id)
            audit.project()
            assert audit.reader("acme").count(EventQuery()) == 32
            assert audit.reader("globex").count(EventQuery()) == 30
            current = audit.reader("acme").current("incidents", {})
            assert [row["status"] for row in current] == ["acknowledged"]
            status = {s.name: s for s in audit.projections.status(audit.clickhouse)}
            assert {s.lag for s in status.values()} == {0}

    ddl = [" ".join(s.split()) for s in proxy.statements if _DDL.match(s)]
    for statement in ddl:
        assert ON_SHARDED in statement, statement
        if statement.startswith("DROP"):
            assert statement.endswith(" SYNC"), statement

    def sent(prefix: str) -> list[str]:
        return [s for s in ddl if s.startswith(prefix)]

    def created(table: str) -> list[str]:
        return sent(f"CREATE TABLE IF NOT EXISTS `auditcore`.`{table}`{ON_SHARDED} ")

    for table, key in (
        ("auditcore_tracking", "0"), ("auditcore_dead_letters", "0"),
        ("audit_events", "cityHash64(workspace_id)"), ("incidents", "cityHash64(workspace_id)"),
        ("monitors", "cityHash64(workspace_id)"),
        ("activity_hourly", "cityHash64(workspace_id)"),
    ):  # fmt: skip
        (local,) = created(f"{table}__local")
        assert " ENGINE = Replicated" in local, local
        assert "('/clickhouse/tables/{uuid}/{shard}', '{replica}'" in local, local
        assert created(table) == [
            f"CREATE TABLE IF NOT EXISTS `auditcore`.`{table}`{ON_SHARDED} AS "
            f"`auditcore`.`{table}__local` ENGINE = Distributed('{SHARDED}', 'auditcore', "
            f"'{table}__local', {key})"
        ]
    (probe,) = created("audit_events__probe")
    assert " ENGINE = Null" in probe  # a probe is no Distributed table
    assert sent(
        "EXCHANGE TABLES `auditcore`.`audit_events__local` AND "
        f"`auditcore`.`audit_events__next__local`{ON_SHARDED}"
    )
    for table in ("audit_events__next", "audit_events__next__local"):
        assert sent(f"DROP TABLE IF EXISTS `auditcore`.`{table}`{ON_SHARDED} SYNC")
    assert sent("RENAME TABLE `auditcore`.`incidents__next__local` TO `auditcore`.`incidents__old_")
    assert sent(f"DROP TABLE IF EXISTS `auditcore`.`incidents__next`{ON_SHARDED} SYNC")
    for table in ("auditcore_tracking", "auditcore_dead_letters", "incidents"):
        assert sent(f"DELETE FROM `auditcore`.`{table}__local`{ON_SHARDED} WHERE"), table
    for statement in sent("DELETE FROM"):  # a Distributed table takes no mutation
        assert re.match(r"DELETE FROM `auditcore`\.`\w+__local` ", statement), statement
    syncs = {s for s in proxy.statements if s.startswith("SYSTEM SYNC REPLICA")}
    assert f"SYSTEM SYNC REPLICA{ON_SHARDED} `auditcore`.`auditcore_tracking__local`" in syncs
    assert f"SYSTEM SYNC REPLICA{ON_SHARDED} `auditcore`.`audit_events__local`" in syncs
    # Every insert names a Distributed table (never a local one) and runs in the foreground.
    assert proxy.inserts
    for statement, params in proxy.inserts:
        assert "__local" not in statement.split("(")[0], statement
        assert params.get("distributed_foreground_insert") == "1", statement


def test_sharding_needs_a_cluster(tmp_path: Path, stand_in_port: int) -> None:
    url = f"http://default:@127.0.0.1:{stand_in_port}/auditcore"
    store = str(tmp_path / "events.sqlite")
    with pytest.raises(ConfigurationError, match="AUDITCORE_CLICKHOUSE_SHARDED needs a"):
        AuditCore(Settings(store, url, clickhouse_sharded=True)).migrate()


def test_a_batch_committed_on_some_shards_only_is_finished_exactly(
    postgres_database: str, stand_in_port: int
) -> None:
    """The instant a kill can leave on a sharded cluster: a batch's insert committed on the
    shards of some workspaces and not on the others, in the same partitions. The redo writes
    exactly the missing workspaces' rows (it judges by partition and workspace, not by
    partition alone, which would find every partition written and lose them)."""
    from auditcore.projection.processor import Processor  # noqa: PLC0415
    from tests.interrupted import DiesAfterSomeShards, SimulatedKillError  # noqa: PLC0415

    clusters = {SHARDED: [(1, 1), (2, 1)]}
    with ClusterProxy(stand_in_port, clusters).running() as proxy:
        url = f"http://default:@127.0.0.1:{proxy.port}/auditcore"
        settings = Settings(
            fresh_postgres_store(postgres_database), url, SHARDED, clickhouse_sharded=True
        )
        with AuditCore(settings) as audit:
            audit.record_many(
                {
                    "action": "incident.comment_added",
                    "workspace_id": workspace,
                    "metadata": {"body": f"year {year}"},
                    "occurred_at": datetime(year, 3, 1, tzinfo=UTC),
                }
                for year in (2019, 2020)
                for workspace in ("acme", "globex", "initech")
            )
            audit.migrate()
            model, target = audit.read_models.get("audit_events"), audit.settings.clickhouse_target
            dying = DiesAfterSomeShards(
                model, audit.app, target, client=audit.clickhouse, lost={"globex"}
            )
            with pytest.raises(SimulatedKillError):
                dying.step()
            count = "SELECT count(), uniqExact(event_id) FROM audit_events"
            assert audit.clickhouse.query(count).result_rows == [(4, 4)]

            resumed = Processor(model, audit.app, target, client=audit.clickhouse)
            assert resumed.resume() == 6
            assert audit.clickhouse.query(count).result_rows == [(6, 6)]
            assert audit.reader("globex").count(EventQuery()) == 2


def test_sharding_is_a_yes_or_no() -> None:
    with pytest.raises(ConfigurationError, match="AUDITCORE_CLICKHOUSE_SHARDED='maybe': use 1"):
        Settings.from_env({"AUDITCORE_CLICKHOUSE_SHARDED": "maybe"})
    assert Settings.from_env({"AUDITCORE_CLICKHOUSE_SHARDED": "1"}).clickhouse_target.sharded
    assert not Settings.from_env({}).clickhouse_target.sharded
