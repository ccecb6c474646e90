"""The runtime's promises (DESIGN §5), on the memory broker with real time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import pytest

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
    RunStats,
)
from pulses.testing import run_until_drained
from pulses_memory import ManualClock, MemoryBroker

Behaviour = Callable[[Envelope, Context[MemoryBroker]], Awaitable[object]]


async def wait_for(
    condition: Callable[[], bool],
    timeout: float = 5.0,  # noqa: ASYNC109  (a deadline for the whole wait)
) -> None:
    """Wait until ``condition()`` holds, failing after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.005)


class Recorded(Handler[MemoryBroker]):
    """A handler that records every message it was called with."""

    calls: ClassVar[list[Envelope]] = []


def handler_class(behaviour: Behaviour, stream: str, **settings: Any) -> type[Recorded]:
    """A handler class whose ``handle`` runs ``behaviour`` and records every call."""

    class Scripted(Recorded):
        STREAMS = (stream,)
        RETRY_BACKOFF_MS = 1
        RETRY_BACKOFF_MAX_MS = 5

        async def handle(self, ctx: Context[MemoryBroker], msg: Envelope) -> Outcome:
            type(self).calls.append(msg)
            return await behaviour(msg, ctx)  # type: ignore[return-value]  # garbage on purpose in some tests

    for name, value in settings.items():
        setattr(Scripted, name, value)
    Scripted.calls = []
    return Scripted


def ack(result: object = None) -> Behaviour:
    async def behaviour(msg: Envelope, ctx: Context[MemoryBroker]) -> object:
        return Ack() if result is None else result

    return behaviour


@pytest.fixture
async def broker() -> AsyncIterator[MemoryBroker]:
    async with MemoryBroker() as broker:
        yield broker


@pytest.fixture
def stream() -> str:
    return f"s-{uuid.uuid4().hex[:8]}"


def make_app(
    broker: MemoryBroker, group: str = "g", consumer: str | None = None, **settings: Any
) -> App[MemoryBroker]:
    options: dict[str, Any] = {"block_ms": 20, "claim_idle_ms": 300, "shutdown_timeout": 2.0}
    options.update(settings)
    return App(broker, broker.subscription(group, consumer=consumer), **options)


async def test_every_published_message_is_handled_once_and_acked(
    broker: MemoryBroker, stream: str
) -> None:
    await broker.publish_many(stream, [str(i).encode() for i in range(300)])
    handler = handler_class(ack(), stream, WORKERS=3)
    stats = await run_until_drained(make_app(broker).register(handler()))
    assert sorted(int(m.payload) for m in handler.calls) == list(range(300))
    assert stats.total.acked == stats.total.handled == stats.total.fetched == 300
    assert all(m.deliveries == 1 for m in handler.calls)


async def test_each_outcome_is_applied_and_counted(broker: MemoryBroker, stream: str) -> None:
    outcomes = {b"ack": Ack(), b"drop": Drop("spam"), b"dead": DeadLetter("bad input")}

    async def by_payload(msg: Envelope, ctx: Context[MemoryBroker]) -> object:
        if msg.payload == b"retry":
            return Retry(after_ms=10) if msg.deliveries == 1 else Ack()
        return outcomes[msg.payload]

    for payload in (b"ack", b"drop", b"dead", b"retry"):
        await broker.publish(stream, payload)
    handler = handler_class(by_payload, stream)
    stats = (await run_until_drained(make_app(broker).register(handler()))).total
    assert (stats.acked, stats.dropped, stats.dead_lettered, stats.retried) == (2, 1, 1, 1)
    [dead] = await broker.dead_letters(stream)
    assert (dead.payload, dead.reason, dead.handler, dead.group) == (
        b"dead",
        "bad input",
        handler.__name__,
        "g",
    )


async def test_a_raising_handler_is_retried_then_dead_lettered_after_max_deliveries(
    broker: MemoryBroker, stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(msg: Envelope, ctx: Context[MemoryBroker]) -> object:
        raise ValueError(f"cannot parse {msg.payload!r}")

    await broker.publish(stream, b"x", headers={"k": "v"})
    handler = handler_class(boom, stream, MAX_DELIVERIES=3)
    with caplog.at_level(logging.ERROR, "pulses.runtime"):
        stats = await run_until_drained(make_app(broker).register(handler()))
    assert [m.deliveries for m in handler.calls] == [1, 2, 3]
    assert all(m.headers == {"k": "v"} and m.payload == b"x" for m in handler.calls)
    assert (stats.total.failed, stats.total.retried, stats.total.dead_lettered) == (3, 2, 1)
    [dead] = await broker.dead_letters(stream)
    assert "ValueError: cannot parse b'x'" in dead.reason
    assert dead.deliveries == 3
    assert "ValueError" in caplog.text


async def test_a_return_value_that_is_not_an_outcome_is_an_error_and_work_goes_on(
    broker: MemoryBroker, stream: str
) -> None:
    async def garbage_first(msg: Envelope, ctx: Context[MemoryBroker]) -> object:
        return "ok" if msg.payload == b"bad" and msg.deliveries == 1 else Ack()

    await broker.publish_many(stream, [b"bad", b"good1", b"good2"])
    handler = handler_class(garbage_first, stream)
    stats = (await run_until_drained(make_app(broker).register(handler()))).total
    assert (stats.failed, stats.retried, stats.acked) == (1, 1, 3)


async def test_a_handler_past_its_timeout_is_cancelled_and_follows_the_error_path(
    broker: MemoryBroker, stream: str
) -> None:
    async def hang_once(msg: Envelope, ctx: Context[MemoryBroker]) -> object:
        if msg.deliveries == 1:
            await asyncio.sleep(60)
        return Ack()

    await broker.publish_many(stream, [b"slow", b"other"])
    handler = handler_class(hang_once, stream, TIMEOUT=0.05, WORKERS=2)
    stats = (await run_until_drained(make_app(broker).register(handler()), timeout=5)).total
    assert (stats.timed_out, stats.failed, stats.retried, stats.acked) == (2, 2, 2, 2)


async def test_workers_run_concurrently_up_to_workers_and_never_beyond(
    broker: MemoryBroker, stream: str
) -> None:
    running = 0
    peak = 0

    async def overlap(msg: Envelope, ctx: Context[MemoryBroker]) -> object:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return Ack()

    await broker.publish_many(stream, [b"x"] * 40)
    handler = handler_class(overlap, stream, WORKERS=4)
    await run_until_drained(make_app(broker).register(handler()))
    assert peak == 4


async def test_unsettled_messages_never_exceed_max_in_flight(
    broker: MemoryBroker, stream: str
) -> None:
    seen_pending: list[int] = []

    async def observe(msg: Envelope, ctx: Context[MemoryBroker]) -> object:
        stats = await ctx.broker.stats(stream)
        seen_pending.append(stats.groups[0].pending)
        await asyncio.sleep(0)
        return Ack()

    await broker.publish_many(stream, [b"x"] * 200)
    handler = handler_class(observe, stream, WORKERS=2, MAX_IN_FLIGHT=5)
    await run_until_drained(make_app(broker).register(handler()))
    assert len(seen_pending) == 200
    assert max(seen_pending) <= 5


async def run_in_background(
    app: App[MemoryBroker],
) -> tuple[CancellationToken, asyncio.Task[RunStats]]:
    token = CancellationToken()
    return token, asyncio.create_task(app.run(token))


async def test_shutdown_finishes_running_handlers_and_releases_the_unstarted(
    broker: MemoryBroker, stream: str
) -> None:
    started = asyncio.Event()
    finish = asyncio.Event()

    async def slow(msg: Envelope, ctx: Context[MemoryBroker]) -> object:
        started.set()
        await finish.wait()
        return Ack()

    await broker.publish_many(stream, [b"a", b"b", b"c"])
    handler = handler_class(slow, stream, WORKERS=1, MAX_IN_FLIGHT=3)
    token, run = await run_in_background(make_app(broker).register(handler()))
    await asyncio.wait_for(started.wait(), 5)
    token.cancel()
    await asyncio.sleep(0.05)  # the shutdown is under way and must wait for the handler
    assert not run.done()
    finish.set()
    stats = (await asyncio.wait_for(run, 5)).total
    assert (stats.acked, stats.abandoned) == (1, 0)
    assert stats.released == stats.fetched - 1 >= 1  # all fetched but "a" went back
    # The released messages go at once, with their delivery count unchanged, to a newcomer.
    other = handler_class(ack(), stream)
    await run_until_drained(make_app(broker, consumer="other").register(other()))
    assert sorted(m.payload for m in other.calls) == [b"b", b"c"]
    assert all(m.deliveries == 1 for m in other.calls)


async def test_a_handler_outliving_the_shutdown_timeout_stays_pending(
    broker: MemoryBroker, stream: str
) -> None:
    cancelled_seen = asyncio.Event()

    async def stubborn(msg: Envelope, ctx: Context[MemoryBroker]) -> object:
        await ctx.token.wait()
        cancelled_seen.set()
        await asyncio.sleep(60)
        return Ack()

    await broker.publish(stream, b"long")
    handler = handler_class(stubborn, stream)
    app = make_app(broker, shutdown_timeout=0.1)
    token, run = await run_in_background(app.register(handler()))
    await wait_for(lambda: len(handler.calls) == 1)
    token.cancel()
    stats = (await asyncio.wait_for(run, 5)).total
    assert cancelled_seen.is_set()  # ctx.token told the handler to wrap up
    assert (stats.abandoned, stats.acked) == (1, 0)
    group = (await broker.stats(stream)).groups[0]
    assert group.pending == 1


async def advance(clock: ManualClock, ms: int, steps: int) -> None:
    """Move ``clock`` by ``ms`` ``steps`` times, letting every task run in between."""
    for _ in range(steps):
        clock.advance(ms)
        for _ in range(20):
            await asyncio.sleep(0)


async def test_a_long_handler_keeps_its_lease_and_is_never_run_twice(stream: str) -> None:
    clock = ManualClock()
    release = asyncio.Event()

    async def long(msg: Envelope, ctx: Context[MemoryBroker]) -> object:
        await release.wait()
        return Ack()

    async with MemoryBroker(clock=clock) as broker:
        await broker.publish(stream, b"long")
        first = handler_class(long, stream)
        neighbour: type[Recorded] = type("Neighbour", (handler_class(ack(), stream),), {})
        timings: dict[str, Any] = {"claim_idle_ms": 250, "reclaim_interval_ms": 50, "clock": clock}
        token1, run1 = await run_in_background(make_app(broker, **timings).register(first()))
        token2, run2 = await run_in_background(
            make_app(broker, consumer="n", **timings).register(neighbour())
        )
        await wait_for(lambda: run1.done() or len(first.calls) == 1)
        await advance(clock, 50, 40)  # eight times claim_idle_ms
        release.set()
        await advance(clock, 50, 4)
        token1.cancel()
        token2.cancel()
        await asyncio.gather(run1, run2)
    assert len(first.calls) == 1
    assert neighbour.calls == []


async def test_messages_of_a_dead_consumer_are_reclaimed_with_one_more_delivery(
    broker: MemoryBroker, stream: str
) -> None:
    await broker.publish_many(stream, [b"a", b"b"])
    dead = broker.consumer(broker.subscription("g", consumer="dead"), [stream], handler="x")
    await dead.ensure()
    assert len(await dead.fetch(10, 0)) == 2  # fetched, then the process "died"
    handler = handler_class(ack(), stream)
    app = make_app(broker, claim_idle_ms=100, reclaim_interval_ms=20)
    stats = (await run_until_drained(app.register(handler()))).total
    assert sorted((m.payload, m.deliveries) for m in handler.calls) == [(b"a", 2), (b"b", 2)]
    assert stats.reclaimed == 2


async def test_a_dead_consumers_messages_are_taken_over_once_its_heartbeat_lapses(
    broker: MemoryBroker, stream: str
) -> None:
    await broker.publish_many(stream, [b"a", b"b"])
    dead = broker.consumer(broker.subscription("g", consumer="dead"), [stream], handler="x")
    await dead.ensure()
    await dead.heartbeat(50)
    assert len(await dead.fetch(10, 0)) == 2  # fetched, then the process "died"
    handler = handler_class(ack(), stream)
    # An idle time far beyond the test's deadline: only liveness can find them.
    app = make_app(broker, claim_idle_ms=600_000, liveness_ms=150)
    token = CancellationToken()
    running = asyncio.create_task(app.register(handler()).run(token))
    await wait_for(lambda: len(handler.calls) == 2)
    token.cancel()
    stats = (await running).total
    assert sorted((m.payload, m.deliveries, m.suspect) for m in handler.calls) == [
        (b"a", 2, True),
        (b"b", 2, True),
    ]
    assert (stats.reclaimed, stats.isolated, stats.acked) == (2, 2, 2)


async def test_suspects_run_alone_in_the_whole_app(broker: MemoryBroker, stream: str) -> None:
    other = f"{stream}-other"
    suspects = [f"suspect-{i}".encode() for i in range(4)]
    await broker.publish_many(stream, suspects)
    dead = broker.consumer(broker.subscription("g", consumer="dead"), [stream], handler="x")
    await dead.ensure()
    await dead.heartbeat(20)
    assert len(await dead.fetch(10, 0)) == 4  # its heartbeat lapses while the app starts
    running: list[Envelope] = []
    overlaps: list[tuple[bytes, list[bytes]]] = []

    async def track(msg: Envelope, ctx: Context[MemoryBroker]) -> object:
        running.append(msg)
        if any(m.suspect for m in running) and len(running) > 1:
            overlaps.append((msg.payload, [m.payload for m in running]))
        await asyncio.sleep(0.005)
        running.remove(msg)
        return Ack()

    first = handler_class(track, stream, WORKERS=8)
    second: type[Recorded] = type("Second", (handler_class(track, other, WORKERS=8),), {})
    await broker.publish_many(stream, [f"fresh-{i}".encode() for i in range(200)])
    await broker.publish_many(other, [f"other-{i}".encode() for i in range(200)])
    app = make_app(broker, liveness_ms=60).register(first(), second())
    stats = (await run_until_drained(app)).total
    assert overlaps == [], "a suspect ran beside other messages"
    assert sorted(m.payload for m in first.calls if m.suspect) == suspects
    assert stats.isolated == 4
    assert stats.acked == 404


async def test_a_message_that_kept_killing_its_process_is_dead_lettered_without_running(
    broker: MemoryBroker, stream: str
) -> None:
    await broker.publish(stream, b"poison")
    victim = broker.consumer(broker.subscription("g", consumer="victim"), [stream], handler="x")
    await victim.ensure()
    await victim.fetch(1, 0)
    for _ in range(2):  # two more deliveries whose processes died before settling
        await asyncio.sleep(0.06)
        assert len((await victim.reclaim(50, 10)).envelopes) == 1
    handler = handler_class(ack(), stream, MAX_DELIVERIES=3)
    app = make_app(broker, claim_idle_ms=50, reclaim_interval_ms=20)
    stats = (await run_until_drained(app.register(handler()))).total
    assert handler.calls == []
    assert stats.dead_lettered == 1
    [dead] = await broker.dead_letters(stream)
    assert dead.deliveries == 4
    assert "MAX_DELIVERIES=3" in dead.reason


async def test_one_handler_per_stream_and_fan_out_through_another_group(
    broker: MemoryBroker, stream: str
) -> None:
    await broker.publish_many(stream, [b"1", b"2"])
    mailer = handler_class(ack(), stream)
    audit = handler_class(ack(), stream)
    await run_until_drained(make_app(broker, group="mailer").register(mailer()))
    await run_until_drained(make_app(broker, group="audit").register(audit()))
    assert len(mailer.calls) == len(audit.calls) == 2


async def test_several_handlers_of_one_app_run_side_by_side(
    broker: MemoryBroker, stream: str
) -> None:
    other_stream = stream + "-other"
    await broker.publish_many(stream, [b"1"] * 5)
    await broker.publish_many(other_stream, [b"2"] * 7)
    one = handler_class(ack(), stream)
    two = handler_class(ack(), other_stream)
    one.__name__ = "One"
    two.__name__ = "Two"
    stats = await run_until_drained(make_app(broker).register(one(), two()))
    assert {name: s.acked for name, s in stats.handlers.items()} == {"One": 5, "Two": 7}


async def test_shutdown_ends_even_when_a_broker_call_swallows_its_cancel(
    broker: MemoryBroker, stream: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pulses_memory import MemoryConsumer

    beats: list[int] = []

    async def stubborn(self: MemoryConsumer, ttl_ms: int) -> None:
        beats.append(ttl_ms)
        with contextlib.suppress(asyncio.CancelledError):  # as redis-py at times does
            await asyncio.sleep(0.05)

    monkeypatch.setattr(MemoryConsumer, "heartbeat", stubborn)
    handler = handler_class(ack(), stream)
    app = make_app(broker, liveness_ms=30).register(handler())
    token = CancellationToken()
    running = asyncio.create_task(app.run(token))
    await wait_for(lambda: len(beats) >= 5)
    token.cancel()
    done, _ = await asyncio.wait([running], timeout=5)
    assert done, "the run did not stop"
