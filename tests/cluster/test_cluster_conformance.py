"""The conformance suite on a real local Redis Cluster, as an ACL user with a password
(ACL users are per node: the harness creates it on every node)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from conformance.test_redis import RealRedisHarness
from pulses.testing.conformance import BrokerConformance
from redis_cluster import LocalCluster

pytestmark = pytest.mark.cluster


class ClusterHarness(RealRedisHarness):
    name = "redis-cluster"

    def __init__(self, cluster: LocalCluster) -> None:
        super().__init__(cluster.url)
        self._cluster = cluster
        self._url = cluster.url.replace(
            "redis+cluster://", f"redis+cluster://pulses-conformance:{self.secret}@", 1
        )

    async def setup(self) -> None:
        for node in self._cluster.nodes:
            reply = self._cluster.cli(
                node, "ACL", "SETUSER", "pulses-conformance", "on", f">{self.secret}",
                "~*", "&*", "+@all",
            )  # fmt: skip
            assert reply.strip() == "OK", f"ACL SETUSER on {node.port}: {reply!r}"


class TestRedisCluster(BrokerConformance):
    @pytest.fixture
    async def harness(self, cluster: LocalCluster) -> AsyncIterator[ClusterHarness]:
        harness = ClusterHarness(cluster)
        await harness.setup()
        yield harness
        await harness.aclose()
