"""One real Redis Cluster (three masters, three replicas) for the session; fault cases
that kill nodes start their own."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from faults.fault_harness import Workers
from redis_cluster import LocalCluster, LocalSentinel, start_cluster, start_sentinel


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    # A node timeout well above a loaded CI machine's stalls: no failover mid-suite.
    yield from start_cluster(node_timeout_ms=5000)


SEEDS = [int(s) for s in os.environ.get("PULSES_FAULT_SEEDS", "1").split(",") if s.strip()]
"""The seeds of the fault cases, as in tests/faults (``nox -s cluster`` sets 1,2,3)."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "seed" in metafunc.fixturenames:
        metafunc.parametrize("seed", SEEDS, ids=[f"seed{s}" for s in SEEDS])


@pytest.fixture
def fresh_cluster() -> Iterator[LocalCluster]:
    """A cluster of its own, for a case that kills or reshards nodes."""
    yield from start_cluster()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[[str, int], Workers]]:
    """``workers(url, n)``: n ``pulses worker fault_app:app`` processes on the cluster
    or Sentinel set-up at ``url`` (tests/faults' harness), all killed at the end."""
    made: list[Workers] = []

    def start(url: str, processes: int) -> Workers:
        w = Workers(tmp_path, url)
        made.append(w)
        for _ in range(processes):
            w.start()
        return w

    yield start
    for w in made:
        w.stop()


@pytest.fixture(scope="session")
def sentinel() -> Iterator[LocalSentinel]:
    """A master, its replica and three Sentinels for the session."""
    yield from start_sentinel()


@pytest.fixture
def fresh_sentinel() -> Iterator[LocalSentinel]:
    """A Sentinel set-up of its own, for a case that kills its master."""
    yield from start_sentinel()
