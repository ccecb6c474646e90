"""Entries and batches beyond Lua's limits (unpack() takes about 8,000 values)."""

from __future__ import annotations

import asyncio

import pytest

from pulses import Ack, DeadLetter, Envelope, Outcome, PulsesError, Retry, SettleError
from pulses_redis import RedisBroker, RedisConsumer
from pulses_redis._keys import RELEASED_CONSUMER, StreamKeys
from redis_helpers import fetch_n, raw

pytestmark = pytest.mark.redis

BIG = [b"payload", b"big"] + [
    f"f{i}".encode() if j == 0 else b"v" for i in range(4999) for j in (0, 1)
]
"""A foreign producer's entry of 5,000 field pairs."""


async def big_message(broker: RedisBroker, stream: str) -> tuple[RedisConsumer, Envelope]:
    consumer = broker.consumer(broker.subscription("g"), [stream], handler="H")
    await consumer.ensure()
    await raw(broker, "XADD", stream, "*", *BIG)
    [env] = await fetch_n(consumer, 1)
    assert list(env.raw) == BIG
    return consumer, env


@pytest.mark.parametrize("outcome", [Retry(0), Retry(after_ms=50)], ids=repr)
async def test_a_retry_of_an_entry_with_5000_fields_comes_back_whole(
    broker: RedisBroker, name: str, outcome: Outcome
) -> None:
    stream = f"{name}:big"
    consumer, env = await big_message(broker, stream)
    await consumer.settle([(env, outcome)])
    [again] = await fetch_n(consumer, 1)
    assert (again.payload, again.deliveries) == (b"big", 2)
    assert list(again.raw[: len(BIG)]) == BIG
    await consumer.settle([(again, outcome)])  # from the retry stream, once more
    [third] = await fetch_n(consumer, 1)
    assert third.deliveries == 3
    assert list(third.raw[: len(BIG)]) == BIG


async def test_a_dead_letter_of_an_entry_with_5000_fields_is_recorded_and_replayed_whole(
    broker: RedisBroker, name: str
) -> None:
    stream = f"{name}:big"
    consumer, env = await big_message(broker, stream)
    await consumer.settle([(env, DeadLetter("too big"))])
    assert (await raw(broker, "XPENDING", stream, "g"))[0] == 0
    [record] = await broker.dead_letters(stream)
    assert (record.payload, record.reason, record.original_id) == (b"big", "too big", env.id)
    assert len(await broker.replay(stream)) == 1
    [again] = await fetch_n(consumer, 1)
    # Whole, and with the message id it keeps for life appended.
    assert (list(again.raw), again.deliveries) == ([*BIG, b"pulses:id", env.id.encode()], 1)
    assert again.message_id == env.id


async def test_a_retry_or_dead_letter_that_fails_leaves_the_message_pending(
    broker: RedisBroker, name: str
) -> None:
    # The retry stream is not a stream: the write fails, and nothing was acked before it.
    stream = f"{name}:s"
    consumer = broker.consumer(broker.subscription("g"), [stream], handler="H")
    await consumer.ensure()
    await broker.publish_many(stream, [b"a", b"b"])
    a, b = await fetch_n(consumer, 2)
    keys = StreamKeys(stream, "g")
    await raw(broker, "DEL", keys.retry, keys.dead)
    await raw(broker, "SET", keys.retry, "x")
    await raw(broker, "SET", keys.dead, "x")
    with pytest.raises(SettleError, match=r"settling 2 of 2 messages"):
        await consumer.settle([(a, Retry(0)), (b, DeadLetter("x"))])
    assert (await raw(broker, "XPENDING", stream, "g"))[0] == 2


async def test_a_delayed_entry_too_big_for_lua_is_moved_and_blocks_no_other(
    broker: RedisBroker, name: str
) -> None:
    # Scheduled unpacked (as by an older Pulses): 10,000 fields in one sorted-set member.
    stream = f"{name}:s"
    consumer = broker.consumer(broker.subscription("g"), [stream], handler="H")
    await consumer.ensure()
    member = b"token\n" + b"".join(b"%d:%b" % (len(f), f) for f in BIG)
    await raw(broker, "ZADD", StreamKeys(stream, "g").retry_delayed, 0, member)
    await broker.publish_many(stream, [b"a", b"b"])
    got = await fetch_n(consumer, 3)
    assert sorted(e.payload for e in got) == [b"a", b"b", b"big"]
    [big] = [e for e in got if e.payload == b"big"]
    assert list(big.raw) == BIG


async def test_a_failing_mover_strands_nothing_the_same_round_trip_read(
    broker: RedisBroker, name: str
) -> None:
    stream = f"{name}:s"
    consumer = broker.consumer(broker.subscription("g"), [stream], handler="H")
    await consumer.ensure()
    await raw(broker, "SET", StreamKeys(stream).delayed, "not a sorted set")
    await broker.publish_many(stream, [b"a", b"b", b"c"])
    got: list[Envelope] = []
    errors = 0
    deadline = asyncio.get_running_loop().time() + 5
    while len(got) < 3 and asyncio.get_running_loop().time() < deadline:
        try:
            got += await consumer.fetch(10, 0)
        except PulsesError:
            errors += 1
    assert errors > 0
    assert sorted(e.payload for e in got) == [b"a", b"b", b"c"]
    assert (await raw(broker, "XPENDING", stream, "g"))[0] == 3


async def held_by_a_dead_consumer(broker: RedisBroker, stream: str, n: int) -> None:
    await broker.publish_many(stream, [b"x"] * n)
    await raw(broker, "XGROUP", "CREATE", stream, "g", "0")
    await raw(broker, "XREADGROUP", "GROUP", "g", "dead", "COUNT", n, "STREAMS", stream, ">")


async def test_reclaim_takes_9000_messages_in_one_call(broker: RedisBroker, name: str) -> None:
    stream = f"{name}:s"
    await held_by_a_dead_consumer(broker, stream, 9000)
    live = broker.consumer(broker.subscription("g", consumer="live"), [stream], handler="H")
    await live.ensure()
    # Delivered before, they are suspects and come one at a time ...
    [suspect] = (await live.reclaim(0, 9000)).envelopes
    assert (suspect.deliveries, suspect.suspect) == (2, True)
    await live.settle([(suspect, Ack())])
    # ... while released ones (handed back unstarted) come as many as asked.
    pending = await raw(broker, "XPENDING", stream, "g", "-", "+", 9000, "dead")
    ids = [p[0] for p in pending]
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        await raw(broker, "XCLAIM", stream, "g", RELEASED_CONSUMER, 0, *chunk, "RETRYCOUNT", 0)
    reclaimed = await live.reclaim(0, 9000)
    assert len(reclaimed.envelopes) == 8999
    assert {(e.deliveries, e.suspect) for e in reclaimed.envelopes} == {(1, False)}


async def test_reclaim_looks_at_a_bounded_number_of_trimmed_entries_per_call(
    broker: RedisBroker, name: str
) -> None:
    stream = f"{name}:s"
    await held_by_a_dead_consumer(broker, stream, 20_000)
    await raw(broker, "XTRIM", stream, "MAXLEN", 0)
    live = broker.consumer(broker.subscription("g", consumer="live"), [stream], handler="H")
    await live.ensure()
    first = await live.reclaim(0, 10)
    assert 0 < len(first.vanished) <= 10 + 1000
    vanished = list(first.vanished)
    for _ in range(100):
        more = (await live.reclaim(0, 10)).vanished
        if not more:
            break
        vanished += more
    assert len(vanished) == len(set(vanished)) == 20_000
    assert (await raw(broker, "XPENDING", stream, "g"))[0] == 0
