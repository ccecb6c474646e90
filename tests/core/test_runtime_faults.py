"""A broker that fails calls: the runtime pauses, logs once per streak, and loses nothing."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest

from pulses import Ack, App, ConnectionLost, Context, Envelope, Handler, Outcome
from pulses.broker import Consumer
from pulses.testing import run_until_drained
from pulses_memory import MemoryBroker


class FlakyConsumer:
    """Delegates to a real consumer, but the first ``failures[name]`` calls of each
    method raise ConnectionLost, as a dropped connection would."""

    def __init__(self, inner: Consumer, failures: dict[str, int]) -> None:
        self.inner = inner
        self.failures = failures
        self.calls: dict[str, int] = {}

    def _maybe_fail(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.calls[name] <= self.failures.get(name, 0):
            raise ConnectionLost(f"connection to broker lost during {name}")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def ensure(self) -> None:
        self._maybe_fail("ensure")
        await self.inner.ensure()

    async def fetch(self, max_count: int, block_ms: int) -> Sequence[Envelope]:
        self._maybe_fail("fetch")
        return await self.inner.fetch(max_count, block_ms)

    async def settle(self, items: Sequence[tuple[Envelope, Any]]) -> None:
        self._maybe_fail("settle")
        await self.inner.settle(items)


class FlakyBroker(MemoryBroker):
    failures: ClassVar[dict[str, int]] = {}
    made: ClassVar[list[FlakyConsumer]] = []

    def consumer(self, subscription: Any, streams: Sequence[str], *, handler: str) -> Any:
        consumer = FlakyConsumer(
            super().consumer(subscription, streams, handler=handler), self.failures
        )
        self.made.append(consumer)
        return consumer


class Count(Handler[Any]):
    STREAMS = ("flaky",)
    WORKERS = 2

    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    async def handle(self, ctx: Context[Any], msg: Envelope) -> Outcome:
        self.payloads.append(msg.payload)
        return Ack()


async def test_failing_broker_calls_cost_a_pause_not_a_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    FlakyBroker.failures = {"ensure": 3, "fetch": 4, "settle": 5}
    FlakyBroker.made = []
    stream = f"flaky-{uuid.uuid4().hex[:6]}"
    Count.STREAMS = (stream,)
    async with FlakyBroker() as broker:
        await broker.publish_many(stream, [str(i).encode() for i in range(50)])
        handler = Count()
        app = App(broker, broker.subscription("g"), block_ms=20)
        with caplog.at_level(logging.WARNING, "pulses.runtime"):
            stats = await run_until_drained(app.register(handler), timeout=20)
    assert sorted(handler.payloads, key=int) == [str(i).encode() for i in range(50)]
    assert stats.total.acked == 50
    [consumer] = FlakyBroker.made
    assert consumer.calls["settle"] > 5
    # One warning when each streak starts and one when it ends; none per retry.
    for what in ("creating the consumer group", "fetch", "settle"):
        started = [r for r in caplog.records if what in r.message and "retrying" in r.message]
        ended = [r for r in caplog.records if what in r.message and "recovered" in r.message]
        assert len(started) == len(ended) == 1, what
