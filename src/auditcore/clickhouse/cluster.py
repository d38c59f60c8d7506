"""Which ClickHouse clusters the read side accepts: one shard, any number of replicas.

A configured cluster must be defined on the server (``system.clusters``); an unknown name is
a ``ConfigurationError`` naming the clusters it does define, before any DDL is sent.

A cluster of several shards is refused. Sharding would put the read models behind
``Distributed`` tables, and a processor's exactly-once recovery cannot be made safe through
one (``auditcore.projection.tracking``): after a kill it finishes an unfinished batch by
skipping the partitions already holding a row of it, which assumes each partition of a batch
is one part, committed whole. An insert into a ``Distributed`` table is split by shard: by
default it is queued on the initiator's disk and forwarded later (a restart sees none of it,
writes it again, and the queue then delivers it a second time); with
``distributed_foreground_insert`` each shard commits its own parts, so a kill leaves a
partition written on some shards and not on others, and the check (which sees partitions
across shards) would skip rows that were never written. Either way a kill can double or lose
rows, so auditcore does not offer it: one shard holds everything, and replicas give availability and
read capacity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client


from auditcore.errors import ConfigurationError

CLUSTER_VARIABLE = "AUDITCORE_CLICKHOUSE_CLUSTER"


def check_cluster(client: Client, cluster: str, where: str) -> None:
    """Refuse a cluster ``where`` (the server, for messages) does not define, or one of
    several shards."""
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
    if count > 1:
        raise ConfigurationError(
            f"the ClickHouse cluster {cluster!r} has {count} shards ({hosts} hosts): auditcore "
            "keeps its read models on one shard with any number of replicas, because a "
            "processor's exactly-once recovery cannot be made safe through a Distributed "
            "table. Name a cluster of one shard (its replicas) in "
            f"{CLUSTER_VARIABLE} or --cluster."
        )
