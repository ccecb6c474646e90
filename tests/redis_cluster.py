"""A real local Redis Cluster (or a Sentinel set-up) for tests, through
:func:`pulses_redis.testing.redis_cluster` (``redis_sentinel``), with the rule of
``redis_server``: without ``redis-server`` (or its ``redis-cli``) the tests that need one
are skipped, unless ``PULSES_REQUIRE_REDIS=1`` (CI), where that is a failure."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from pulses_redis.testing import LocalCluster, LocalSentinel, redis_cluster, redis_sentinel
from redis_server import redis_server_binary

__all__ = ["LocalCluster", "LocalSentinel", "start_cluster", "start_sentinel"]


def _binaries() -> None:
    redis_server_binary()
    if shutil.which("redis-cli") is None:
        missing = "no redis-cli on PATH (it comes with redis-server)"
        if os.environ.get("PULSES_REQUIRE_REDIS") == "1":
            pytest.fail(f"PULSES_REQUIRE_REDIS=1 but {missing}", pytrace=False)
        pytest.skip(missing)


def start_cluster(*, node_timeout_ms: int = 2000) -> Iterator[LocalCluster]:
    """Three masters with a replica each for as long as the generator is suspended
    (fixture style)."""
    _binaries()
    with redis_cluster(node_timeout_ms=node_timeout_ms) as cluster:
        yield cluster


def start_sentinel() -> Iterator[LocalSentinel]:
    """A master, its replica and three Sentinels, fixture style."""
    _binaries()
    with redis_sentinel() as sentinel:
        yield sentinel
