"""Checked by mypy --strict (nox -s typecheck), never collected by pytest."""

from typing import Any, assert_type

from pulses import (
    Ack,
    App,
    Broker,
    CancellationToken,
    Context,
    Envelope,
    Handler,
    Outcome,
    RunStats,
)
from pulses_memory import MemoryBroker, MemorySubscription


class OnMemory(Handler[MemoryBroker]):
    STREAMS = ("a",)

    async def handle(self, ctx: Context[MemoryBroker], msg: Envelope) -> Outcome:
        assert_type(ctx.broker, MemoryBroker)
        assert_type(msg.payload, bytes)
        assert_type(msg.deliveries, int)
        await ctx.publish("b", msg.payload, headers={"from": msg.id})
        return Ack()


class OnAnyBroker(Handler[Broker[Any]]):
    """A handler written for any broker fits an app on a specific one."""

    STREAMS = ("b",)

    async def handle(self, ctx: Context[Broker[Any]], msg: Envelope) -> Outcome:
        return Ack()


async def run(broker: MemoryBroker) -> RunStats:
    app = App(broker, MemorySubscription(group="g")).register(OnMemory(), OnAnyBroker())
    assert_type(app, App[MemoryBroker])
    assert_type(app.broker, MemoryBroker)
    return await app.run(CancellationToken())
