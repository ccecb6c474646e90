"""Retention on Redis: trims keep a history and every unacknowledged entry; a running
app keeps its streams trimmed; with retention off nothing is removed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

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
    Retention,
    Retry,
)
from pulses_redis import RedisBroker, RedisConsumer
from redis_helpers import fetch_n, raw

pytestmark = pytest.mark.redis

DEADLINE = 20.0


async def _wait(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def _ids(broker: RedisBroker, stream: str) -> list[bytes]:
    return [entry[0] for entry in await raw(broker, "XRANGE", stream, "-", "+")]


async def _add(broker: RedisBroker, stream: str, n: int) -> None:
    """``n`` entries in pipelined batches, as a fast producer writes them."""
    client = broker._conn.client
    for start in range(0, n, 5000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(n, start + 5000)):
            pipe.execute_command("XADD", stream, "*", "payload", str(i))
        await pipe.execute()


async def _two_groups(
    broker: RedisBroker, stream: str
) -> tuple[RedisConsumer, RedisConsumer, list[bytes]]:
    """100 entries; group "ahead" acked all, group "behind" acked 40 and holds 10."""
    ahead = broker.consumer(broker.subscription("ahead"), [stream], handler="H")
    behind = broker.consumer(broker.subscription("behind"), [stream], handler="H")
    await ahead.ensure()
    await behind.ensure()
    await broker.publish_many(stream, [str(i).encode() for i in range(100)])
    await ahead.settle([(e, Ack()) for e in await fetch_n(ahead, 100)])
    read = await fetch_n(behind, 50)
    await behind.settle([(e, Ack()) for e in read[:40]])
    return ahead, behind, await _ids(broker, stream)


async def test_trim_leaves_the_newest_entries_and_everything_a_group_has_not_acknowledged(
    broker: RedisBroker, name: str
) -> None:
    stream = f"{name}:jobs"
    _, _, ids = await _two_groups(broker, stream)

    assert await broker.trim(stream, keep=80, dry_run=True) == 20
    assert await broker.trim(stream, keep=80) == 20
    assert await _ids(broker, stream) == ids[20:]
    # "behind" still holds entries 40-49 and has not read 50-99: a small history
    # removes no more than what it acknowledged.
    assert await broker.trim(stream, keep=5, dry_run=True) == 20
    assert await broker.trim(stream, keep=5) == 20
    assert await _ids(broker, stream) == ids[40:]
    assert await broker.trim(stream) == 0


async def test_trim_by_age_keeps_entries_younger_than_keep_ms(
    broker: RedisBroker, name: str
) -> None:
    stream = f"{name}:aged"
    seconds, micros = await raw(broker, "TIME")
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    for i in range(10):  # an hour old
        await raw(broker, "XADD", stream, f"{now_ms - 3_600_000 + i}-0", "payload", b"old")
    for i in range(5):  # a second old
        await raw(broker, "XADD", stream, f"{now_ms - 1000 + i}-0", "payload", b"new")
    await raw(broker, "XGROUP", "CREATE", stream, "g", "$")  # has read (and acked) all

    assert await broker.trim(stream, keep_ms=60_000, dry_run=True) == 10
    assert await broker.trim(stream, keep_ms=60_000) == 10
    assert await raw(broker, "XLEN", stream) == 5
    assert await broker.trim(stream, keep_ms=0) == 5


async def test_a_long_trim_goes_in_bounded_steps_and_removes_exactly_what_it_may(
    broker: RedisBroker, name: str
) -> None:
    stream = f"{name}:long"
    await _add(broker, stream, 25_003)
    await raw(broker, "XGROUP", "CREATE", stream, "g", "$")
    ids = await _ids(broker, stream)

    assert await broker.trim(stream, keep=1001) == 25_003 - 1001
    assert await _ids(broker, stream) == ids[-1001:]
    trimmed = (await broker.stats(stream)).trimmed
    assert trimmed is not None
    assert (trimmed.removed, trimmed.last_removed, trimmed.keep, trimmed.keep_ms) == (
        24_002,
        24_002,
        1001,
        None,
    )
    assert 0 <= trimmed.last_ago_ms < 60_000
    assert await broker.trim(stream) == 1001
    trimmed = (await broker.stats(stream)).trimmed
    assert trimmed is not None
    assert (trimmed.removed, trimmed.last_removed, trimmed.keep) == (25_003, 1001, None)


async def test_trim_refuses_a_bad_history_naming_it(broker: RedisBroker, name: str) -> None:
    with pytest.raises(ValueError, match="keep"):
        await broker.trim(f"{name}:s", keep=-1)
    with pytest.raises(ValueError, match="not both"):
        await broker.trim(f"{name}:s", keep=1, keep_ms=1)
    with pytest.raises(TypeError, match="keep_ms"):
        await broker.trim(f"{name}:s", keep_ms=1.5)  # type: ignore[arg-type]  # the point


def _app(broker: RedisBroker, stream: str, retention: Retention | None) -> App[RedisBroker]:
    class Jobs(Handler[RedisBroker]):
        STREAMS = (stream,)

        async def handle(self, ctx: Context[RedisBroker], msg: Envelope) -> Outcome:
            return Ack()

    return App(broker, broker.subscription("workers"), retention=retention).register(Jobs())


async def test_a_running_app_keeps_its_stream_within_the_history_as_messages_come(
    broker: RedisBroker, name: str
) -> None:
    stream = f"{name}:busy"
    await _add(broker, stream, 10_000)
    await raw(broker, "XGROUP", "CREATE", stream, "workers", "$")  # all acknowledged
    token = CancellationToken()
    app = _app(broker, stream, Retention(keep=500, interval_ms=50))
    run = asyncio.create_task(app.run(token))
    try:

        async def trimmed_to_history() -> bool:
            return bool(await raw(broker, "XLEN", stream) == 500)

        await _wait("the first trim", trimmed_to_history)
        await broker.publish_many(stream, [b"more"] * 2000)

        async def handled_and_trimmed() -> bool:
            stats = await broker.stats(stream)
            group = stats.groups[0]
            return group.lag == 0 and group.pending == 0 and stats.length == 500

        await _wait("the new messages to be handled and trimmed", handled_and_trimmed)
        trimmed = (await broker.stats(stream)).trimmed
        assert trimmed is not None
        assert (trimmed.removed, trimmed.keep) == (10_000 + 2000 - 500, 500)
    finally:
        token.cancel()
        await run


async def test_with_retention_off_a_running_app_trims_nothing(
    broker: RedisBroker, name: str
) -> None:
    stream = f"{name}:kept"
    await _add(broker, stream, 3000)
    token = CancellationToken()
    run = asyncio.create_task(_app(broker, stream, None).run(token))
    try:

        async def handled() -> bool:
            group = (await broker.stats(stream)).groups
            return bool(group) and group[0].lag == 0 and group[0].pending == 0

        await _wait("every message to be handled", handled)
    finally:
        token.cancel()
        await run
    stats = await broker.stats(stream)
    assert (stats.length, stats.trimmed) == (3000, None)


async def test_a_trim_leaves_delayed_retries_and_dead_letters_whole(
    broker: RedisBroker, name: str
) -> None:
    stream = f"{name}:side"
    consumer = broker.consumer(broker.subscription("g"), [stream], handler="H")
    await consumer.ensure()
    await broker.publish_many(stream, [b"later", b"dead", b"done"])
    got = await fetch_n(consumer, 3)
    await consumer.settle([(got[0], Retry(60_000)), (got[1], DeadLetter("bad")), (got[2], Ack())])

    assert await broker.trim(stream) == 3  # every original is settled: all may go
    stats = await broker.stats(stream)
    assert (stats.length, stats.groups[0].delayed, stats.dead_letters) == (0, 1, 1)
    await broker.replay(stream)
    [again] = await fetch_n(consumer, 1)
    assert (again.payload, again.deliveries) == (b"dead", 1)
