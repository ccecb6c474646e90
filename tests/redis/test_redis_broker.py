"""Redis-specific promises of the Redis broker, on a real redis-server."""

from __future__ import annotations

import asyncio
import re
import ssl
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pytest
from redis.asyncio import Redis

import pulses
import pulses_redis
from pulses import Ack, BrokerError, ConnectionLost, DeadLetter, Drop, InvalidURL, Retry
from pulses_redis import RedisBroker
from pulses_redis._connection import client_from_url
from redis_helpers import fetch_n, raw

pytestmark = pytest.mark.redis


async def test_a_wrongtype_key_at_a_streams_name_names_the_key_and_its_type(
    broker: RedisBroker, name: str
) -> None:
    stream = f"{name}:orders"
    await raw(broker, "SET", stream, "not a stream")
    with pytest.raises(
        BrokerError, match=rf"key '{re.escape(stream)}' holds a string, not a stream"
    ):
        await broker.publish(stream, b"x")
    consumer = broker.consumer(broker.subscription("g"), [stream], handler="H")
    with pytest.raises(BrokerError, match=r"holds a string") as info:
        await consumer.ensure()
    assert "'g'" in str(info.value)


async def test_a_group_deleted_under_a_running_consumer_is_recreated_from_the_start(
    broker: RedisBroker, name: str
) -> None:
    stream = f"{name}:jobs"
    consumer = broker.consumer(broker.subscription("g"), [stream], handler="H")
    await consumer.ensure()
    await broker.publish(stream, b"before")
    assert [e.payload for e in await consumer.fetch(10, 100)] == [b"before"]
    await raw(broker, "XGROUP", "DESTROY", stream, "g")
    await broker.publish(stream, b"after")
    # From 0: what the lost group had read comes again (at least once), then the new one.
    got = await fetch_n(consumer, 2)
    assert [e.payload for e in got] == [b"before", b"after"]


async def test_settling_works_after_the_script_cache_is_flushed(
    broker: RedisBroker, name: str
) -> None:
    stream = f"{name}:jobs"
    consumer = broker.consumer(broker.subscription("g"), [stream], handler="H")
    await consumer.ensure()
    await broker.publish_many(stream, [b"a", b"b", b"c", b"d"])
    a, b, c, d = await fetch_n(consumer, 4)
    await raw(broker, "SCRIPT", "FLUSH")
    await consumer.settle([(a, Ack()), (b, Retry(0)), (c, DeadLetter("no")), (d, Drop())])
    [again] = await fetch_n(consumer, 1)
    assert (again.payload, again.deliveries) == (b"b", 2)
    stats = (await broker.stats(stream)).groups[0]
    assert (stats.acked, stats.dropped, stats.dead_lettered, stats.pending) == (1, 1, 1, 1)


async def test_trim_with_two_groups_at_different_positions_keeps_everything_unacknowledged(
    broker: RedisBroker, name: str
) -> None:
    stream = f"{name}:jobs"
    ahead = broker.consumer(broker.subscription("ahead"), [stream], handler="H")
    behind = broker.consumer(broker.subscription("behind"), [stream], handler="H")
    await ahead.ensure()
    await behind.ensure()
    await broker.publish_many(stream, [str(i).encode() for i in range(10)])
    await ahead.settle([(e, Ack()) for e in await fetch_n(ahead, 10)])
    read = await behind.fetch(5, 100)
    await behind.settle([(e, Ack()) for e in read[:3]])  # 3, 4 stay pending; 5-9 unread

    assert await broker.trim(stream, dry_run=True) == 3
    assert (await broker.stats(stream)).length == 10
    assert await broker.trim(stream) == 3
    assert await broker.trim(stream) == 0

    await behind.settle([(e, Ack()) for e in read[3:]])
    rest = await fetch_n(behind, 5)
    assert [e.payload for e in rest] == [str(i).encode() for i in range(5, 10)]
    assert (await broker.stats(stream)).length == 7


async def test_trim_without_any_group_removes_nothing(broker: RedisBroker, name: str) -> None:
    await broker.publish(f"{name}:s", b"for the first worker")
    assert await broker.trim(f"{name}:s") == 0


def test_rediss_urls_verify_certificates_by_default() -> None:
    client = client_from_url("rediss://app:s3cret@cache.example:6380/0")
    assert isinstance(client, Redis)  # one server: not a cluster client
    connection = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]  # untyped in redis-py
    assert connection.ssl_context.cert_reqs is ssl.CERT_REQUIRED
    relaxed = client_from_url("rediss://cache.example:6380/0?ssl_cert_reqs=none")
    assert isinstance(relaxed, Redis)
    relaxed_connection = relaxed.connection_pool.make_connection()  # type: ignore[no-untyped-call]  # untyped in redis-py
    assert relaxed_connection.ssl_context.cert_reqs is ssl.CERT_NONE


async def test_a_password_never_shows_in_reprs_urls_or_errors(redis_url: str) -> None:
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    closed = "redis://app:s3cret-pw@127.0.0.1:1/0"
    broker = await RedisBroker.connect(closed)
    try:
        assert "s3cret-pw" not in repr(broker) + broker.url
        with pytest.raises(ConnectionLost) as info:
            await broker.publish("s", b"x")
        assert "s3cret-pw" not in str(info.value)
        assert "'s'" in str(info.value)
    finally:
        await broker.aclose()
    wrong = await RedisBroker.connect(f"redis://nobody:s3cret-pw@127.0.0.1:{port}/0")
    try:
        with pytest.raises(BrokerError) as refused:
            await wrong.publish("s", b"x")
        assert "s3cret-pw" not in str(refused.value)
    finally:
        await wrong.aclose()
    with pytest.raises(InvalidURL) as bad:
        await RedisBroker.connect("redis://app:s3cret-pw@host:notaport/0")
    assert "s3cret-pw" not in str(bad.value)
    with pytest.raises(InvalidURL, match="RESP2"):
        await RedisBroker.connect("redis://localhost/0?protocol=3")


def _acl_rules() -> list[str]:
    """The ACL command list as documented in the pulses_redis docstring."""
    doc = pulses_redis.__doc__ or ""
    block = doc.split("ACL SETUSER pulses on >CHANGE-ME")[1].split("\n\n")[0]
    return [rule for rule in block.split() if rule != "\\"]


async def test_an_acl_user_limited_to_the_documented_commands_can_do_everything(
    broker: RedisBroker, redis_url: str, name: str
) -> None:
    user = f"pulses-{name}"
    await raw(broker, "ACL", "SETUSER", user, "reset", "on", ">pw-for-acl", *_acl_rules())
    limited = await RedisBroker.connect(
        redis_url.replace("redis://", f"redis://{user}:pw-for-acl@")
    )
    try:
        stream = f"{name}:jobs"
        sub = limited.subscription("g")
        c1 = limited.consumer(sub, [stream], handler="H")
        c2 = limited.consumer(limited.subscription("g"), [stream], handler="H")
        await c1.ensure()
        await limited.publish_many(stream, [b"a", b"b", b"c", b"d"], headers={"k": "v"})
        await limited.publish(stream, b"later", delay_ms=1)
        got = await fetch_n(c1, 5)
        await c1.extend(got)
        await c1.release(got[4:])
        reclaimed = await c2.reclaim(60_000, 10)  # only the released one is that idle
        assert [e.payload for e in reclaimed.envelopes] == [got[4].payload]
        await c1.settle(
            [(got[0], Ack()), (got[1], Retry(1)), (got[2], DeadLetter("x")), (got[3], Drop())]
        )
        await c2.settle([(reclaimed.envelopes[0], Ack())])
        [retried] = await fetch_n(c1, 1)
        await c1.settle([(retried, Ack())])
        stats = await limited.stats(stream)
        assert (stats.groups[0].acked, stats.dead_letters) == (3, 1)
        [dead] = await limited.dead_letters(stream)
        assert len(await limited.replay(stream, [dead.id])) == 1
        assert await limited.purge(stream) == 0
        assert await limited.trim(stream) >= 0
        await c1.aclose()
        await c2.aclose()
    finally:
        await limited.aclose()
        await raw(broker, "ACL", "DELUSER", user)


async def test_foreign_entries_of_any_shape_are_delivered_raw_without_breaking_the_batch(
    broker: RedisBroker, name: str
) -> None:
    stream = f"{name}:mixed"
    consumer = broker.consumer(broker.subscription("g"), [stream], handler="H")
    await consumer.ensure()
    shapes: list[Sequence[bytes]] = [
        [b"payload", b"ok-1"],
        [b"a", b"1", b"a", b"2"],  # duplicate field names
        [b"\xff\xfe", b"\x80\x81"],  # non-UTF-8 name and value
        [b"payload", b"p", b"headers", b"{not json", b"deliveries", b"x"],
        [b"payload", b"ok-2"],
    ]
    for fields in shapes:
        await raw(broker, "XADD", stream, "*", *fields)
    got = await fetch_n(consumer, len(shapes))
    assert [list(e.raw) for e in got] == [list(s) for s in shapes]
    assert [e.payload for e in got] == [b"ok-1", b"", b"", b"p", b"ok-2"]
    assert all(e.deliveries == 1 and e.headers == {} for e in got)
    await consumer.settle([(e, Retry(0)) for e in got])
    again = await fetch_n(consumer, len(shapes))
    assert [e.deliveries for e in again] == [2] * len(shapes)


async def test_restart_recovery_returns_own_pending_once_with_exact_counts(
    broker: RedisBroker, name: str
) -> None:
    stream = f"{name}:jobs"
    sub = broker.subscription("g", consumer="worker-1")
    first = broker.consumer(sub, [stream], handler="H")
    await first.ensure()
    await broker.publish_many(stream, [str(i).encode() for i in range(100)])
    held = await fetch_n(first, 100)
    # One poison message was already delivered five times before.
    await raw(broker, "XCLAIM", stream, "g", "worker-1", 0, held[7].id, "RETRYCOUNT", 5)

    restarted = broker.consumer(sub, [stream], handler="H")  # the same name, a new life
    recovered: list[Any] = []
    while batch := await restarted.fetch(10, 50):
        assert len(batch) <= 10
        recovered += batch
    assert sorted(e.payload for e in recovered) == sorted(e.payload for e in held)
    assert {e.payload: e.deliveries for e in recovered} == {
        str(i).encode(): 6 if i == 7 else 2 for i in range(100)
    }
    pending = await raw(broker, "XPENDING", stream, "g", "-", "+", 200)
    assert sorted(p[3] for p in pending) == [2] * 99 + [6]


async def test_a_reconnect_does_not_dispatch_again_what_the_consumer_still_holds(
    broker: RedisBroker, name: str
) -> None:
    stream = f"{name}:jobs"
    consumer = broker.consumer(broker.subscription("g", consumer="w"), [stream], handler="H")
    await consumer.ensure()
    await broker.publish_many(stream, [b"a", b"b"])
    assert len(await fetch_n(consumer, 2)) == 2
    await raw(broker, "CLIENT", "KILL", "TYPE", "normal")
    await broker.publish(stream, b"c")
    got = await fetch_n(consumer, 1)
    assert [e.payload for e in got] == [b"c"]
    assert await consumer.fetch(10, 50) == []


async def test_fetch_over_many_streams_and_retry_streams_never_exceeds_max_count(
    broker: RedisBroker, name: str
) -> None:
    streams = [f"{name}:{i}" for i in range(3)]
    consumer = broker.consumer(broker.subscription("g"), streams, handler="H")
    await consumer.ensure()
    for stream in streams:
        await broker.publish_many(stream, [b"x"] * 20)
    first = await fetch_n(consumer, 6)
    assert len(first) == 6
    await consumer.settle([(e, Retry(0)) for e in first])
    seen: set[str] = set()
    for _ in range(10):
        batch = await consumer.fetch(2, 50)
        assert 0 < len(batch) <= 2
        seen |= {e.source for e in batch}
        await consumer.settle([(e, Ack()) for e in batch])
    assert seen == {*streams, *(f"{{{e.stream}}}:retry:g" for e in first)}


async def test_a_redis_restart_costs_a_pause_not_the_consumer(name: str) -> None:
    from redis_server import start_server

    servers = start_server()
    server = next(servers)
    try:
        broker = await RedisBroker.connect(server.url)
        stream = f"{name}:jobs"
        consumer = broker.consumer(broker.subscription("g"), [stream], handler="H")
        await consumer.ensure()
        await broker.publish(stream, b"before")
        assert len(await fetch_n(consumer, 1)) == 1
        server.restart()  # without persistence: stream, group and scripts are gone

        async def eventually() -> Any:
            for _ in range(50):
                try:
                    await broker.publish(stream, b"after")
                    return await fetch_n(consumer, 1)
                except ConnectionLost:
                    await asyncio.sleep(0.1)
            raise AssertionError("the broker did not recover after the restart")

        got = await eventually()
        assert [e.payload for e in got] == [b"after"]
        await consumer.settle([(got[0], Retry(0))])
        assert [e.deliveries for e in await fetch_n(consumer, 1)] == [2]
        await broker.aclose()
    finally:
        servers.close()


async def test_connect_by_url_goes_through_the_entry_point(redis_url: str) -> None:
    broker = await pulses.connect(redis_url)
    try:
        assert isinstance(broker, RedisBroker)
        assert broker.capabilities.admin
        assert broker.capabilities.release
    finally:
        await broker.aclose()


def test_loading_the_plugin_does_not_import_redis_py() -> None:
    code = (
        "import sys, pulses_redis._plugin; "
        "assert 'redis' not in sys.modules, sorted(m for m in sys.modules if 'redis' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_use_after_close_raises_broker_closed(broker: RedisBroker, name: str) -> None:
    consumer = broker.consumer(broker.subscription("g"), [f"{name}:s"], handler="H")
    await consumer.aclose()
    await consumer.aclose()
    with pytest.raises(pulses.BrokerClosed, match="closed"):
        await consumer.fetch(1, 10)
    await broker.aclose()
    await broker.aclose()
    with pytest.raises(pulses.BrokerClosed):
        await broker.publish(f"{name}:s", b"x")


async def test_what_a_failed_fetch_took_is_handed_out_next_with_unchanged_counts(
    broker: RedisBroker, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = f"{name}:s"
    consumer = broker.consumer(broker.subscription("g", consumer="me"), [stream], handler="H")
    await consumer.ensure()
    assert list(await consumer.fetch(10, 0)) == []  # the restart recovery is through
    ids = await broker.publish_many(stream, [b"a", b"b", b"c"])
    # The server hands the entries to "me", and the reply is lost on the way back.
    await raw(broker, "XREADGROUP", "GROUP", "g", "me", "COUNT", 10, "STREAMS", stream, ">")
    from pulses_redis._scripts import run_pipeline

    async def lost(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr("pulses_redis._consumer.run_pipeline", run_pipeline)
        raise ConnectionLost("the reply was lost")

    monkeypatch.setattr("pulses_redis._consumer.run_pipeline", lost)
    with pytest.raises(ConnectionLost):
        await consumer.fetch(10, 0)
    got = await fetch_n(consumer, 3)
    assert [(e.id, e.deliveries, e.suspect) for e in got] == [(i, 1, False) for i in ids]
    await consumer.settle([(e, Ack()) for e in got])
    assert (await raw(broker, "XPENDING", stream, "g"))[0] == 0


async def test_heartbeats_are_kept_and_a_closed_consumer_leaves_no_trace(
    broker: RedisBroker, name: str
) -> None:
    stream = f"{name}:s"
    consumer = broker.consumer(broker.subscription("g", consumer="me"), [stream], handler="H")
    await consumer.ensure()
    await consumer.heartbeat(5_000)
    key = f"{{{stream}}}:alive:g"
    [member, until] = await raw(broker, "HGETALL", key)
    seconds, micros = await raw(broker, "TIME")
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    assert member == b"me"
    assert 4_000 < int(until) - now_ms <= 5_000
    await consumer.aclose()
    assert await raw(broker, "EXISTS", key) == 0
