"""run_until_drained: what counts as drained, and delayed messages due much later."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

import pulses
from pulses import Ack, App, Context, Envelope, Handler, Outcome
from pulses_memory import MemoryBroker


class Record(Handler[MemoryBroker]):
    STREAMS = ("jobs",)

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    async def handle(self, ctx: Context[MemoryBroker], msg: Envelope) -> Outcome:
        self.seen.append(msg.payload)
        return Ack()


@pytest.fixture
async def broker() -> AsyncIterator[MemoryBroker]:
    async with MemoryBroker() as broker:
        yield broker


def app_on(broker: MemoryBroker, handler: Record) -> App[MemoryBroker]:
    return App(broker, broker.subscription("g"), block_ms=20).register(handler)


def test_production_code_imports_it_from_pulses() -> None:
    import pulses.testing

    assert pulses.run_until_drained is pulses.testing.run_until_drained


async def test_with_a_grace_it_stops_when_only_messages_due_much_later_are_left(
    broker: MemoryBroker, caplog: pytest.LogCaptureFixture
) -> None:
    handler = Record()
    await broker.publish("jobs", b"now")
    await broker.publish("jobs", b"later", delay_ms=600_000)
    with caplog.at_level(logging.WARNING, logger="pulses"):
        stats = await asyncio.wait_for(
            pulses.run_until_drained(app_on(broker, handler), timeout=None, delayed_grace=0.2),
            timeout=10,
        )
    assert handler.seen == [b"now"]
    assert stats.total.acked == 1
    assert "left for a later run, none due within 0.2s: jobs: delayed publishes 1" in caplog.text
    assert (await broker.stats("jobs")).delayed == 1  # still there, for the next run


async def test_with_a_grace_it_still_handles_what_comes_due_within_it(
    broker: MemoryBroker,
) -> None:
    handler = Record()
    await broker.publish("jobs", b"soon", delay_ms=300)
    stats = await pulses.run_until_drained(app_on(broker, handler), delayed_grace=5.0)
    assert handler.seen == [b"soon"]
    assert stats.total.acked == 1


async def test_without_a_grace_a_delayed_message_is_waited_for_until_the_timeout(
    broker: MemoryBroker,
) -> None:
    await broker.publish("jobs", b"later", delay_ms=600_000)
    with pytest.raises(TimeoutError, match="jobs: delayed publishes 1"):
        await pulses.run_until_drained(app_on(broker, Record()), timeout=0.3)
