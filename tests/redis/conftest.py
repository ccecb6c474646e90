"""Real-Redis fixtures: one throwaway redis-server per session (or REDIS_URL)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

# tests/ holds redis_server.py, shared with the conformance and fault tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pulses_redis import RedisBroker
from redis_server import session_redis_url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    yield from session_redis_url()


@pytest.fixture
async def broker(redis_url: str) -> AsyncIterator[RedisBroker]:
    broker = await RedisBroker.connect(redis_url)
    yield broker
    await broker.aclose()


@pytest.fixture
def name() -> str:
    """A prefix for this test's streams and groups, so tests share one server."""
    return f"t-{uuid.uuid4().hex[:10]}"
