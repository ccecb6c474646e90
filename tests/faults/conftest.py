"""Fault cases: real worker processes against a real redis-server this suite starts.

The default run takes the fast cases with one seed. ``PULSES_FAULTS=all`` adds the
cases marked ``slow``, and ``PULSES_FAULT_SEEDS=1,2,3`` picks the seeds (what
``nox -s faults`` sets). Each case writes a JSON record under ``tests/faults/results/``
(git-ignored), or ``PULSES_FAULT_RESULTS``, and nowhere else: docs/faults.md's table
changes only by ``python tests/faults/summarize.py --write``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from faults.fault_harness import AofRedis, Workers
from redis_server import redis_server_binary

ALL = os.environ.get("PULSES_FAULTS") == "all"
SEEDS = [int(s) for s in os.environ.get("PULSES_FAULT_SEEDS", "1").split(",") if s.strip()]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "seed" in metafunc.fixturenames:
        metafunc.parametrize("seed", SEEDS, ids=[f"seed{s}" for s in SEEDS])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ALL:
        return
    here = Path(__file__).parent
    slow = [i for i in items if i.get_closest_marker("slow") and here in i.path.parents]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [i for i in items if i not in slow]


@pytest.fixture
def case_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pulses-fault-") as directory:
        yield Path(directory)


@pytest.fixture
def aof_redis(case_dir: Path) -> Iterator[AofRedis]:
    """A fresh fsync-always AOF redis-server for one case, on a free loopback port."""
    data = case_dir / "redis"
    data.mkdir()
    server = AofRedis(redis_server_binary(), data)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def workers(case_dir: Path) -> Iterator[Callable[..., Workers]]:
    """``workers(url, **env)``: a set of worker processes, all killed at the end."""
    made: list[Workers] = []

    def make(url: str, **env: str) -> Workers:
        w = Workers(case_dir, url, env, name=f"worker{len(made)}")
        made.append(w)
        return w

    yield make
    for w in made:
        w.stop()
