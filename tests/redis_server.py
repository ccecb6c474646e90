"""A real Redis for tests, through :mod:`pulses_redis.testing` (one launcher for the tests,
the benchmark and users), plus what only tests need: without a ``redis-server`` binary
the tests that need one are skipped, unless ``PULSES_REQUIRE_REDIS=1`` (CI), where that
is a failure. Import :func:`session_redis_url` into a session-scoped fixture.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator, Sequence

import pytest

from pulses_redis.testing import RedisServer, find_redis_server, redis_server, redis_url

__all__ = ["RedisServer", "redis_server_binary", "session_redis_url", "start_server"]


def redis_server_binary() -> str:
    """The redis-server to run, or skip (fail under PULSES_REQUIRE_REDIS=1)."""
    try:
        return find_redis_server()
    except FileNotFoundError as missing:
        if os.environ.get("PULSES_REQUIRE_REDIS") == "1":
            pytest.fail(f"PULSES_REQUIRE_REDIS=1 but {missing}", pytrace=False)
        pytest.skip(str(missing))


def start_server(extra: Sequence[str] = ()) -> Generator[RedisServer, None, None]:
    """A throwaway server for as long as the generator is suspended (fixture style)."""
    redis_server_binary()
    with redis_server(extra) as server:
        yield server


def session_redis_url() -> Iterator[str]:
    """Body of a session-scoped ``redis_url`` fixture: REDIS_URL, or a throwaway server."""
    if not os.environ.get("REDIS_URL"):
        redis_server_binary()
    with redis_url() as url:
        yield url
