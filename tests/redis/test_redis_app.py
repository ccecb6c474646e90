"""An App on the Redis broker, end to end: every outcome, and faults under a running worker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from pulses import (
    Ack,
    App,
    CancellationToken,
    Context,
    DeadLetter,
    Envelope,
    Handler,
    Outcome,
    Retry,
)
from pulses.testing import run_until_drained
from pulses_redis import RedisBroker
from redis_helpers import raw

pytestmark = pytest.mark.redis

DEADLINE = 10.0  # seconds any wait below may take before the test fails


async def test_an_app_on_redis_settles_every_outcome_and_drains(
    broker: RedisBroker, name: str
) -> None:
    stream = f"{name}:jobs"

    class Jobs(Handler[RedisBroker]):
        STREAMS = (stream,)
        WORKERS = 3
        RETRY_BACKOFF_MS = 20
        RETRY_BACKOFF_MAX_MS = 50

        async def handle(self, ctx: Context[RedisBroker], msg: Envelope) -> Outcome:
            if msg.payload == b"flaky" and msg.deliveries < 3:
                return Retry(after_ms=30)
            if msg.payload == b"poison":
                raise ValueError("cannot parse")
            if msg.payload == b"reject":
                return DeadLetter("rejected")
            return Ack()

    await broker.publish_many(stream, [b"ok"] * 20 + [b"flaky", b"poison", b"reject"])
    app = App(broker, broker.subscription("g"), block_ms=100).register(Jobs())
    stats = await run_until_drained(app, timeout=10)
    assert stats.total.acked == 21
    assert stats.total.dead_lettered == 2
    [group] = (await broker.stats(stream)).groups
    assert (group.acked, group.dead_lettered, group.pending, group.lag) == (21, 2, 0, 0)
    reasons = sorted(d.reason.split(":")[0] for d in await broker.dead_letters(stream))
    assert reasons == ["ValueError", "rejected"]


class Collect(Handler[RedisBroker]):
    """Acks and remembers payloads; a fresh subclass per test sets STREAMS."""

    STREAMS = ()

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    async def handle(self, ctx: Context[RedisBroker], msg: Envelope) -> Outcome:
        self.seen.append(msg.payload)
        return Ack()


def collector(stream: str, name: str) -> Collect:
    return type(name, (Collect,), {"STREAMS": (stream,)})()  # type: ignore[no-any-return]  # a subclass made on the fly


async def wait_seen(handler: Collect, count: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while len(handler.seen) < count:
        assert loop.time() < deadline, f"saw {len(handler.seen)} of {count}"
        await asyncio.sleep(0.01)


@pytest.fixture
async def running(
    broker: RedisBroker,
) -> AsyncIterator[Callable[..., Awaitable[None]]]:
    """Start apps in the background; each is shut down at the end of the test."""
    runs: list[tuple[CancellationToken, asyncio.Task[object]]] = []

    async def start(*handlers: Collect) -> None:
        app = App(broker, broker.subscription("g"), block_ms=50, claim_idle_ms=2000)
        token = CancellationToken()
        runs.append((token, asyncio.create_task(app.register(*handlers).run(token))))

    yield start
    for token, run in runs:
        token.cancel()
        await asyncio.wait_for(run, 10)


async def test_a_wrongtype_key_stalls_only_its_handler_and_names_the_key(
    broker: RedisBroker, name: str, running: Any, caplog: pytest.LogCaptureFixture
) -> None:
    bad, good = f"{name}:bad", f"{name}:good"
    await raw(broker, "SET", bad, "not a stream")
    stuck, healthy = collector(bad, "Stuck"), collector(good, "Healthy")
    with caplog.at_level(logging.WARNING, "pulses.runtime"):
        await running(stuck, healthy)
        await broker.publish_many(good, [b"1", b"2", b"3"])
        await wait_seen(healthy, 3)
    assert stuck.seen == []
    assert f"'{bad}'" in caplog.text
    assert "string" in caplog.text  # the key's actual type


async def test_a_group_deleted_under_a_running_worker_is_recreated(
    broker: RedisBroker, name: str, running: Any
) -> None:
    stream = f"{name}:jobs"
    handler = collector(stream, "Jobs")
    await running(handler)
    await broker.publish(stream, b"before")
    await wait_seen(handler, 1)
    await raw(broker, "XGROUP", "DESTROY", stream, "g")
    await broker.publish(stream, b"after")
    await wait_seen(handler, 2)
    # Recreated from the start of the stream: "before" may come again (at least once).
    assert handler.seen[0] == b"before"
    assert b"after" in handler.seen


async def test_a_flushed_script_cache_under_a_running_worker_costs_nothing(
    broker: RedisBroker, name: str, running: Any
) -> None:
    stream = f"{name}:jobs"
    handler = collector(stream, "Jobs")
    await running(handler)
    await broker.publish(stream, b"1")
    await wait_seen(handler, 1)
    await raw(broker, "SCRIPT", "FLUSH")
    await broker.publish_many(stream, [b"2", b"3"])
    await wait_seen(handler, 3)
    await eventually_settled(broker, stream)


async def eventually_settled(broker: RedisBroker, stream: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while (await broker.stats(stream)).groups[0].pending:
        assert loop.time() < deadline, "messages stayed pending"
        await asyncio.sleep(0.01)
