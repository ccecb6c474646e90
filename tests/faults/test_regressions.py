"""In-process regression tests for promises the fault cases found broken (fast, real Redis)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest
import redis.asyncio

from pulses import (
    Ack,
    App,
    Broker,
    BrokerError,
    CancellationToken,
    Context,
    Envelope,
    Handler,
    Outcome,
)
from pulses_redis import RedisBroker

pytestmark = pytest.mark.redis


async def test_reclaim_is_not_starved_by_a_backlog(redis_url: str) -> None:
    """A dead consumer's messages were taken over only once the whole backlog was gone:
    the fetcher filled every slot the moment it freed, so reclaim never found one."""
    stream = f"starve-{os.urandom(4).hex()}"
    handled: dict[bytes, float] = {}
    orphans = {b"orphan-%d" % i for i in range(4)}
    all_orphans = asyncio.Event()

    class Slow(Handler[Broker[Any]]):
        STREAMS = (stream,)
        WORKERS = 2
        MAX_IN_FLIGHT = 4

        async def handle(self, ctx: Context[Broker[Any]], msg: Envelope) -> Outcome:
            await asyncio.sleep(0.005)
            handled[msg.payload] = time.monotonic()
            if orphans <= handled.keys():
                all_orphans.set()
            return Ack()

    async with RedisBroker.from_url(redis_url) as broker:
        await broker.publish_many(stream, [b"orphan-%d" % i for i in range(4)])
        dead = broker.consumer(broker.subscription("g", consumer="dead"), [stream], handler="x")
        await dead.ensure()
        assert len(await dead.fetch(4, 0)) == 4  # and it never settles them
        await broker.publish_many(stream, [b"backlog-%d" % i for i in range(3000)])
        # The reclaim interval follows liveness_ms (1 s by default) since consumers
        # heartbeat: set it to what this test's bound assumes.
        app = App(
            broker,
            broker.subscription("g"),
            claim_idle_ms=300,
            reclaim_interval_ms=150,
            block_ms=100,
        )
        token = CancellationToken()
        started = time.monotonic()
        run = asyncio.create_task(app.register(Slow()).run(token))
        try:
            await asyncio.wait_for(all_orphans.wait(), 10)
        finally:
            token.cancel()
            await run
        took = max(handled[o] for o in orphans) - started
        backlog_left = 3000 - sum(1 for p in handled if p.startswith(b"backlog"))
        # claim_idle 0.3 s + one reclaim interval 0.15 s, with room for a slow machine;
        # the backlog alone takes several seconds at 2 workers x 5 ms.
        assert took < 1.0
        assert backlog_left > 0


async def test_released_messages_are_fetched_at_once(redis_url: str) -> None:
    """Released messages were only taken by the next reclaim, up to claim_idle / 2 later
    (30 s by default): a worker stopping under load left its unstarted work idle."""
    stream = f"release-{os.urandom(4).hex()}"
    async with RedisBroker.from_url(redis_url) as broker:
        await broker.publish_many(stream, [b"a", b"b", b"c"])
        stopping = broker.consumer(broker.subscription("g", consumer="c1"), [stream], handler="h")
        other = broker.consumer(broker.subscription("g", consumer="c2"), [stream], handler="h")
        await stopping.ensure()
        fetched = await stopping.fetch(3, 0)
        assert len(fetched) == 3
        await stopping.release(fetched)
        got = await other.fetch(10, 0)  # a fetch, not a reclaim
        assert sorted(e.payload for e in got) == [b"a", b"b", b"c"]
        assert [e.deliveries for e in got] == [1, 1, 1]
        await other.settle([(e, Ack()) for e in got])
        assert await other.fetch(10, 0) == []


async def test_a_resumed_consumer_does_not_take_back_what_was_reclaimed(redis_url: str) -> None:
    """extend() and release() XCLAIMed every id they were given: a worker frozen (SIGSTOP,
    a long GC pause) past claim_idle and resumed took back, with its next lease renewal,
    the message a neighbour had reclaimed and was running."""
    stream = f"steal-{os.urandom(4).hex()}"
    async with RedisBroker.from_url(redis_url) as broker:
        await broker.publish(stream, b"m")
        frozen = broker.consumer(broker.subscription("g", consumer="frozen"), [stream], handler="h")
        other = broker.consumer(broker.subscription("g", consumer="other"), [stream], handler="h")
        await frozen.ensure()
        (env,) = await frozen.fetch(1, 0)
        async with asyncio.timeout(5):
            while not (taken := (await other.reclaim(1, 1)).envelopes):  # noqa: ASYNC110  (Redis has no event for an entry going idle)
                await asyncio.sleep(0.005)  # Redis has no event for "1 ms idle"
        assert [e.deliveries for e in taken] == [2]
        await frozen.extend([env])
        await frozen.release([env])
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            (row,) = await client.xpending_range(stream, "g", "-", "+", 10)
        finally:
            await client.aclose()
        assert row["consumer"] == b"other"
        assert row["times_delivered"] == 2


async def test_an_acl_refusal_inside_a_script_names_the_command(redis_url: str) -> None:
    """Redis reports a command refused inside a script by the script's SHA1 and line
    only: the error said "can't run this command" without saying which."""
    admin = redis.asyncio.Redis.from_url(redis_url)
    user = f"noclaim-{os.urandom(3).hex()}"
    await admin.acl_setuser(
        user, enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-xclaim"]
    )
    stream = f"acl-{os.urandom(4).hex()}"
    host = admin.connection_pool.connection_kwargs
    url = f"redis://{user}:pw@{host['host']}:{host['port']}/{host.get('db', 0)}"
    try:
        async with RedisBroker.from_url(url) as broker:
            await broker.publish(stream, b"m")
            consumer = broker.consumer(broker.subscription("g"), [stream], handler="h")
            await consumer.ensure()
            got = await consumer.fetch(1, 0)
            with pytest.raises(BrokerError, match=r"may not run XCLAIM \(line \d+ of"):
                await consumer.extend(got)
    finally:
        await admin.acl_deluser(user)
        await admin.aclose()
