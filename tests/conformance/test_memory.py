"""The conformance suite on the memory broker: on a manual clock, on real time, and
declaring no capability at all (which proves the suite's gating)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import pytest_asyncio

from pulses import Broker, Unsupported
from pulses.broker import Capabilities, Consumer
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


class _DeclaringNothing:
    """The memory broker declaring no capability. The suite must skip every case that
    needs one, naming it, and call no method of one: those fail here."""

    capabilities = Capabilities()

    def __init__(self, inner: MemoryBroker) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def publish(self, stream: str, payload: bytes, **options: Any) -> str:
        if options.get("delay_ms", 0) > 0:
            raise Unsupported(f"{self.inner.url} declares no delayed publish")
        return await self.inner.publish(stream, payload, **options)

    def consumer(self, subscription: Any, streams: Sequence[str], *, handler: str) -> Consumer:
        inner = self.inner.consumer(subscription, streams, handler=handler)
        return cast(Consumer, _Undeclared(inner))


class _Undeclared:
    def __init__(self, inner: Consumer) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        if name in ("extend", "release", "heartbeat", "reclaim"):
            raise AssertionError(f"Consumer.{name} called, and the broker does not declare it")
        return getattr(self.inner, name)


class DeclaringNothingHarness(MemoryHarness):
    def __init__(self) -> None:
        super().__init__(None)
        self.name = "memory-declaring-nothing"

    async def connect(self) -> Broker[Any]:
        return cast(Broker[Any], _DeclaringNothing(self._origin.share()))

    async def add_foreign(
        self, broker: Broker[Any], stream: str, fields: Sequence[tuple[bytes, bytes]]
    ) -> str:
        assert isinstance(broker, _DeclaringNothing)
        return await super().add_foreign(cast(Broker[Any], broker.inner), stream, fields)

    async def delete_entry(self, broker: Broker[Any], stream: str, entry_id: str) -> None:
        assert isinstance(broker, _DeclaringNothing)
        await super().delete_entry(cast(Broker[Any], broker.inner), stream, entry_id)


class TestMemoryDeclaringNothing(BrokerConformance):
    @pytest_asyncio.fixture
    async def harness(self) -> AsyncIterator[DeclaringNothingHarness]:
        harness = DeclaringNothingHarness()
        yield harness
        await harness.aclose()
