"""The conformance suite on the memory broker: on a manual clock, and on real time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest_asyncio

from pulses import Broker
from pulses.testing.conformance import BrokerConformance, BrokerHarness
from pulses_memory import ManualClock, MemoryBroker
from pulses_memory.testing import add_foreign, delete_entry


class MemoryHarness(BrokerHarness):
    """Every ``connect`` is another handle on one broker's data; time is the broker's."""

    any_fields = True

    def __init__(self, clock: ManualClock | None) -> None:
        self.name = "memory-manual-clock" if clock else "memory-real-time"
        self._clock = clock
        self._origin = MemoryBroker(clock=clock)

    async def connect(self) -> Broker[Any]:
        return self._origin.share()

    async def advance(self, ms: int) -> None:
        if self._clock is None:
            await asyncio.sleep(ms / 1000)
            return
        # Let every ready task reach its wait first, so it waits from the time before.
        for _ in range(5):
            await asyncio.sleep(0)
        self._clock.advance(ms)

    async def add_foreign(
        self, broker: Broker[Any], stream: str, fields: Sequence[tuple[bytes, bytes]]
    ) -> str:
        assert isinstance(broker, MemoryBroker)
        return await add_foreign(broker, stream, fields)

    async def delete_entry(self, broker: Broker[Any], stream: str, entry_id: str) -> None:
        assert isinstance(broker, MemoryBroker)
        assert await delete_entry(broker, stream, entry_id)

    async def aclose(self) -> None:
        await self._origin.aclose()


class TestMemoryOnManualClock(BrokerConformance):
    @pytest_asyncio.fixture
    async def harness(self) -> AsyncIterator[MemoryHarness]:
        harness = MemoryHarness(ManualClock())
        yield harness
        await harness.aclose()


class TestMemoryOnRealTime(BrokerConformance):
    @pytest_asyncio.fixture
    async def harness(self) -> AsyncIterator[MemoryHarness]:
        harness = MemoryHarness(None)
        yield harness
        await harness.aclose()
