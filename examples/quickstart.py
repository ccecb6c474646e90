"""Pulses quick start: three kinds of job, one app, run until the work is done.

Runs on the in-memory broker by default (no server needed); set PULSES_URL to run the
same code on Redis, e.g. ``PULSES_URL=redis://127.0.0.1:6379/0 python examples/quickstart.py``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from typing import Any

import pulses
from pulses import Ack, App, Broker, Context, Envelope, Handler, Outcome
from pulses.testing import run_until_drained

RUN = uuid.uuid4().hex[:8]  # fresh streams per run, so a shared Redis shows only this run


class SendWelcome(Handler[Broker[Any]]):
    """Always succeeds."""

    STREAMS = (f"quickstart:{RUN}:welcome",)
    WORKERS = 4

    async def handle(self, ctx: Context[Broker[Any]], msg: Envelope) -> Outcome:
        return Ack()


class ChargeCard(Handler[Broker[Any]]):
    """Fails on its first two deliveries (a flaky payment API), then succeeds.

    A message whose payload is ``poison`` always fails: after MAX_DELIVERIES it ends in
    the dead-letter stream with the exception that killed it.
    """

    STREAMS = (f"quickstart:{RUN}:payments",)
    WORKERS = 2
    MAX_DELIVERIES = 4
    RETRY_BACKOFF_MS = 20  # short, so the demo is quick; the default starts at one second

    async def handle(self, ctx: Context[Broker[Any]], msg: Envelope) -> Outcome:
        if msg.payload == b"poison":
            raise ValueError("card number is not a number")
        if msg.deliveries <= 2:
            raise ConnectionError("payment gateway timed out")
        return Ack()


async def main() -> None:
    url = os.environ.get("PULSES_URL", "memory://quickstart")
    async with await pulses.connect(url) as broker:
        welcome, payments = SendWelcome.STREAMS[0], ChargeCard.STREAMS[0]
        started = time.perf_counter()
        await broker.publish_many(welcome, [f"user-{i}".encode() for i in range(1000)])
        await broker.publish_many(payments, [f"order-{i}".encode() for i in range(20)])
        await broker.publish(payments, b"poison", headers={"customer": "mallory"})

        app = App(broker, broker.subscription("quickstart"), block_ms=100)
        stats = await run_until_drained(app.register(SendWelcome(), ChargeCard()), timeout=25)
        elapsed = time.perf_counter() - started

        total = stats.total
        print(f"broker:         {broker.url}")
        print(f"handled:        {total.handled} calls ({total.acked} acked)")
        print(f"retried:        {total.retried}")
        print(f"dead-lettered:  {total.dead_lettered}")
        print(f"rate:           {total.handled / elapsed:,.0f} calls/s over {elapsed:.2f}s")
        if isinstance(broker, pulses.StreamAdmin):
            for record in await broker.dead_letters(payments):
                print(f"dead letter:    {record.payload!r}: {record.reason}")
        assert total.acked == 1020, stats
        assert total.dead_lettered == 1, stats


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # The poison message's tracebacks are expected; keep the demo's output short.
    logging.getLogger("pulses.runtime").setLevel(logging.CRITICAL)
    asyncio.run(main())
