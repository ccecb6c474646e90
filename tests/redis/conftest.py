"""Real-Redis fixtures: one throwaway redis-server per session (or REDIS_URL)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from pulses_redis import RedisBroker


@pytest.fixture
async def broker(redis_url: str) -> AsyncIterator[RedisBroker]:
    broker = await RedisBroker.connect(redis_url)
    yield broker
    await broker.aclose()


@pytest.fixture
def name() -> str:
    """A prefix for this test's streams and groups, so tests share one server."""
    return f"t-{uuid.uuid4().hex[:10]}"
