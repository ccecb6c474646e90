"""Helpers the Redis tests share: raw commands behind the broker's back, bounded fetches."""

from __future__ import annotations

import asyncio
from typing import Any

from pulses import Envelope
from pulses_redis import RedisBroker, RedisConsumer
from pulses_redis._scripts import command


async def raw(broker: RedisBroker, *args: Any) -> Any:
    """Send one command on the broker's own client, as an operator or a foreign producer."""
    return await command(broker._conn.client, *args)


async def fetch_n(consumer: RedisConsumer, n: int) -> list[Envelope]:
    """Exactly ``n`` messages (never asking for more), failing after five seconds."""
    got: list[Envelope] = []
    deadline = asyncio.get_running_loop().time() + 5
    while len(got) < n:
        assert asyncio.get_running_loop().time() < deadline, f"got {len(got)} of {n}"
        got += await consumer.fetch(n - len(got), 100)
    return got
