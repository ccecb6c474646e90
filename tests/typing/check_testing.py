"""Checked by mypy --strict (nox -s typecheck), never collected by pytest."""

from typing import assert_type

from pulses import App, RunStats
from pulses.testing import Drain
from pulses_memory import MemoryBroker


async def a_drain_returns_the_runs_counters(app: App[MemoryBroker], drain: Drain) -> None:
    assert_type(await drain(app), RunStats)
    assert_type(await drain(app, timeout=1.5), RunStats)
