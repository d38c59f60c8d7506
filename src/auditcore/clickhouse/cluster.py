"""Which ClickHouse clusters the read side accepts: one shard with any number of replicas, or
several shards when ``AUDITCORE_CLICKHOUSE_SHARDED=1``.

A configured cluster must be defined on the server (``system.clusters``); an unknown name is
a ``ConfigurationError`` naming the clusters it does define, before any DDL is sent. A cluster
of several shards is refused unless sharding is asked for, and sharding without a cluster is
refused too.

Sharded, every table is a ``Distributed`` table over a local Replicated one
(``auditcore.clickhouse.ddl``), rows sharded by workspace (``cityHash64(workspace_id)``; the
bookkeeping tables all on one shard), and every insert is a foreground insert
(``distributed_foreground_insert``): it returns once each shard committed its rows, none is
queued on the initiator's disk. What keeps a processor's exactly-once recovery
(``auditcore.projection.tracking``) honest there: a kill can leave a batch committed on some
shards and not on others, so a redo judges which rows of the batch are written by partition
*and workspace* (a workspace's rows of one partition are on one shard, in one part, committed
whole), never by partition alone; and it waits for every query started under the batch's id
on any replica (``initial_query_id`` included: a shard's part of a dead writer's insert).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client


from auditcore.errors import ConfigurationError

CLUSTER_VARIABLE = "AUDITCORE_CLICKHOUSE_CLUSTER"
SHARDED_VARIABLE = "AUDITCORE_CLICKHOUSE_SHARDED"


def check_cluster(client: Client, cluster: str, where: str, *, sharded: bool = False) -> None:
    """Refuse a cluster ``where`` (the server, for messages) does not define, or one of
    several shards unless ``sharded``."""
    rows = client.query(
        "SELECT cluster, uniqExact(shard_num), count() FROM system.clusters GROUP BY cluster"
    ).result_rows
    shards = {name: (int(count), int(hosts)) for name, count, hosts in rows}
    if cluster not in shards:
        known = ", ".join(sorted(shards)) or "none"
        raise ConfigurationError(
            f"the ClickHouse cluster {cluster!r} is not defined on {where} (its clusters: "
            f"{known}). Check {CLUSTER_VARIABLE} or --cluster."
        )
    count, hosts = shards[cluster]
    if count > 1 and not sharded:
        raise ConfigurationError(
            f"the ClickHouse cluster {cluster!r} has {count} shards ({hosts} hosts): auditcore "
            "keeps its read models on one shard with any number of replicas, because a "
            "processor's exactly-once recovery cannot be made safe through a Distributed "
            f"table unless {SHARDED_VARIABLE}=1. Name a cluster of one shard (its replicas) "
            f"in {CLUSTER_VARIABLE} or --cluster, or set {SHARDED_VARIABLE}=1."
        )
