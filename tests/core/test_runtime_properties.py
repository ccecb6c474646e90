"""The runtime under random outcomes, errors, hangs and shutdown times keeps DESIGN §5.

Every message ends in exactly one state (acked, dropped or dead-lettered; or still
pending, unread or delayed after an early shutdown), never more than MAX_IN_FLIGHT are
unsettled, and the counters add up, both the runtime's and the broker's.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from typing import ClassVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pulses import (
    Ack,
    App,
    CancellationToken,
    Context,
    DeadLetter,
    Drop,
    Envelope,
    Handler,
    Outcome,
    Retry,
)
from pulses_memory import MemoryBroker

ACTIONS = ["ack", "drop", "dead", "retry", "raise", "garbage", "hang"]
MAX_DELIVERIES = 3


class Scripted(Handler[MemoryBroker]):
    """Does, on each delivery of a message, what the message's script says."""

    STREAMS = ("prop",)
    MAX_DELIVERIES = MAX_DELIVERIES
    RETRY_BACKOFF_MS = 0
    RETRY_BACKOFF_MAX_MS = 2
    TIMEOUT = 0.03
    scripts: ClassVar[list[list[str]]] = []

    def __init__(self) -> None:
        self.deliveries: dict[int, list[int]] = defaultdict(list)
        self.max_pending = 0

    async def handle(self, ctx: Context[MemoryBroker], msg: Envelope) -> Outcome:
        index = int(msg.payload)
        self.deliveries[index].append(msg.deliveries)
        group = (await ctx.broker.stats(msg.stream)).groups[0]
        self.max_pending = max(self.max_pending, group.pending)
        script = self.scripts[index]
        action = script[min(msg.deliveries, len(script)) - 1]
        if action == "hang":
            await asyncio.sleep(10)
        elif action == "raise":
            raise RuntimeError("scripted failure")
        elif action == "garbage":
            return "not an outcome"  # type: ignore[return-value]  # the point of the test
        outcomes: dict[str, Outcome] = {
            "ack": Ack(),
            "drop": Drop("scripted"),
            "dead": DeadLetter("scripted"),
            "retry": Retry(after_ms=1),
        }
        return outcomes.get(action, Ack())


scripts = st.lists(
    st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=4), min_size=1, max_size=25
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scripts=scripts,
    workers=st.integers(min_value=1, max_value=4),
    extra_in_flight=st.integers(min_value=0, max_value=5),
    stop_after=st.one_of(st.none(), st.floats(min_value=0, max_value=0.3)),
)
def test_runtime_keeps_its_promises(
    scripts: list[list[str]], workers: int, extra_in_flight: int, stop_after: float | None
) -> None:
    logging.getLogger("pulses.runtime").setLevel(logging.CRITICAL)
    asyncio.run(_check(scripts, workers, workers + extra_in_flight, stop_after))


async def _check(
    scripts: list[list[str]], workers: int, max_in_flight: int, stop_after: float | None
) -> None:
    stream = f"prop-{uuid.uuid4().hex[:8]}"

    class Handler_(Scripted):
        STREAMS = (stream,)
        WORKERS = workers
        MAX_IN_FLIGHT = max_in_flight

    Handler_.scripts = scripts
    handler = Handler_()
    async with MemoryBroker() as broker:
        await broker.publish_many(stream, [str(i).encode() for i in range(len(scripts))])
        app = App(
            broker,
            broker.subscription("g"),
            block_ms=10,
            claim_idle_ms=10_000,
            shutdown_timeout=0.05,
        ).register(handler)
        token = CancellationToken()
        run = asyncio.create_task(app.run(token))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (stop_after if stop_after is not None else 20)
        while loop.time() < deadline and not await _drained(broker, stream):
            await asyncio.wait([run], timeout=0.005)  # a poll that also ends with the run
        token.cancel()
        stats = (await run).total
        stream_stats = await broker.stats(stream)
        dead = await broker.dead_letters(stream, limit=1000)

    if not stream_stats.groups:
        # Stopped before the group was even created: nothing was taken, nothing lost.
        assert stats.fetched == stats.handled == 0
        assert stream_stats.length == len(scripts)
        return
    [group] = stream_stats.groups

    # The bound: never more unsettled messages than MAX_IN_FLIGHT.
    assert handler.max_pending <= max_in_flight
    # Each message's deliveries count up by one, and never beyond the limit.
    for seen in handler.deliveries.values():
        assert seen == list(range(1, len(seen) + 1))
        assert len(seen) <= MAX_DELIVERIES
    # Counters add up: everything fetched ended in exactly one state.
    assert stats.fetched + stats.reclaimed == (
        stats.settled + stats.released + stats.abandoned + stats.unsettled
    )
    assert stats.handled + stats.abandoned == sum(map(len, handler.deliveries.values()))
    # The broker agrees: every message is in exactly one bucket.
    assert (
        group.acked
        + group.dropped
        + group.dead_lettered
        + group.pending
        + group.lag
        + group.delayed
    ) == len(scripts)
    assert group.dead_lettered == len(dead) == stats.dead_lettered
    assert group.acked == stats.acked
    assert group.dropped == stats.dropped
    if stop_after is None:
        # Given time, everything reaches a terminal state.
        assert group.pending == group.lag == group.delayed == 0


async def _drained(broker: MemoryBroker, stream: str) -> bool:
    stats = await broker.stats(stream)
    return all(g.pending == g.lag == g.delayed == 0 for g in stats.groups) and bool(stats.groups)
