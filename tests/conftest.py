"""Fixtures every test directory may use: one real Redis per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from redis_server import session_redis_url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """REDIS_URL, or a throwaway redis-server on a free loopback port (see redis_server)."""
    yield from session_redis_url()
