"""The conformance suite on a real local Redis Cluster and on a Sentinel-managed master,
as an ACL user with a password (ACL users are per server: the harness creates it on
every node)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from conformance.test_redis import RealRedisHarness
from pulses.testing.conformance import BrokerConformance
from pulses_redis.testing import RedisServer
from redis_cluster import LocalCluster, LocalSentinel

pytestmark = pytest.mark.cluster

Cli = Callable[..., str]
"""A command sent to one server with redis-cli: ``cli(server, *args)``."""


class ClusterHarness(RealRedisHarness):
    """``url`` (``redis+cluster://`` or ``redis+sentinel://``) as the ACL user, which
    setup creates on each of ``servers``."""

    def __init__(self, name: str, url: str, servers: list[RedisServer], cli: Cli) -> None:
        super().__init__(url)
        self.name = name
        self._servers = servers
        self._cli = cli
        scheme = url.split("://", 1)[0]
        self._url = url.replace(f"{scheme}://", f"{scheme}://pulses-conformance:{self.secret}@")

    async def setup(self) -> None:
        for server in self._servers:
            reply = self._cli(
                server, "ACL", "SETUSER", "pulses-conformance", "on", f">{self.secret}",
                "~*", "&*", "+@all",
            )  # fmt: skip
            assert reply.strip() == "OK", f"ACL SETUSER on {server.port}: {reply!r}"


class TestRedisCluster(BrokerConformance):
    @pytest.fixture
    async def harness(self, cluster: LocalCluster) -> AsyncIterator[ClusterHarness]:
        harness = ClusterHarness("redis-cluster", cluster.url, cluster.nodes, cluster.cli)
        await harness.setup()
        yield harness
        await harness.aclose()


class TestRedisSentinel(BrokerConformance):
    @pytest.fixture
    async def harness(self, sentinel: LocalSentinel) -> AsyncIterator[ClusterHarness]:
        servers = [sentinel.master, sentinel.replica]
        harness = ClusterHarness("redis-sentinel", sentinel.url, servers, sentinel.cli)
        await harness.setup()
        yield harness
        await harness.aclose()
