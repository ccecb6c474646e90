"""The conformance suite on the Redis broker: a real redis-server, and fakeredis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import fakeredis
import pytest
import pytest_asyncio

from pulses import Broker
from pulses.testing.conformance import BrokerConformance, BrokerHarness
from pulses_redis import RedisBroker
from pulses_redis._scripts import command

_SECRET = "conformance-pw-7d1f"


class _RedisHarness(BrokerHarness):
    """Shared by both harnesses: raw entries and deletions behind the broker's back."""

    any_fields = True

    async def add_foreign(
        self, broker: Broker[Any], stream: str, fields: Sequence[tuple[bytes, bytes]]
    ) -> str:
        assert isinstance(broker, RedisBroker)
        flat = [part for pair in fields for part in pair]
        entry_id: bytes = await command(broker._conn.client, "XADD", stream, "*", *flat)
        return entry_id.decode()

    async def delete_entry(self, broker: Broker[Any], stream: str, entry_id: str) -> None:
        assert isinstance(broker, RedisBroker)
        assert await command(broker._conn.client, "XDEL", stream, entry_id) == 1


class RealRedisHarness(_RedisHarness):
    """A real redis-server, reached as an ACL user with a password."""

    name = "redis"
    secret = _SECRET

    def __init__(self, url: str) -> None:
        self._admin_url = url
        self._url = url.replace("redis://", f"redis://pulses-conformance:{_SECRET}@", 1)

    async def setup(self) -> None:
        admin = await RedisBroker.connect(self._admin_url)
        try:
            await command(
                admin._conn.client,
                "ACL",
                "SETUSER",
                "pulses-conformance",
                "on",
                f">{_SECRET}",
                "~*",
                "&*",
                "+@all",
            )
        finally:
            await admin.aclose()

    async def connect(self) -> Broker[Any]:
        return await RedisBroker.connect(self._url)


class FakeRedisHarness(_RedisHarness):
    """fakeredis with Lua: every ``connect`` is another client of one FakeServer."""

    name = "fakeredis"

    def __init__(self) -> None:
        self._server = fakeredis.FakeServer()

    async def connect(self) -> Broker[Any]:
        client = fakeredis.FakeAsyncRedis(server=self._server, protocol=2)
        return RedisBroker(client, url="redis://fakeredis/0")


@pytest.mark.redis
class TestRedis(BrokerConformance):
    @pytest_asyncio.fixture
    async def harness(self, redis_url: str) -> AsyncIterator[RealRedisHarness]:
        harness = RealRedisHarness(redis_url)
        await harness.setup()
        yield harness
        await harness.aclose()


class TestFakeRedis(BrokerConformance):
    @pytest_asyncio.fixture
    async def harness(self) -> AsyncIterator[FakeRedisHarness]:
        harness = FakeRedisHarness()
        yield harness
        await harness.aclose()
