"""A real local Redis Cluster for tests, through :func:`pulses_redis.testing.redis_cluster`,
with the rule of ``redis_server``: without ``redis-server`` (or its ``redis-cli``) the tests
that need one are skipped, unless ``PULSES_REQUIRE_REDIS=1`` (CI), where that is a failure."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from pulses_redis.testing import LocalCluster, redis_cluster
from redis_server import redis_server_binary

__all__ = ["LocalCluster", "start_cluster"]


def start_cluster(*, node_timeout_ms: int = 2000) -> Iterator[LocalCluster]:
    """Three masters with a replica each for as long as the generator is suspended
    (fixture style)."""
    redis_server_binary()
    if shutil.which("redis-cli") is None:
        missing = "no redis-cli on PATH (it comes with redis-server)"
        if os.environ.get("PULSES_REQUIRE_REDIS") == "1":
            pytest.fail(f"PULSES_REQUIRE_REDIS=1 but {missing}", pytrace=False)
        pytest.skip(missing)
    with redis_cluster(node_timeout_ms=node_timeout_ms) as cluster:
        yield cluster
