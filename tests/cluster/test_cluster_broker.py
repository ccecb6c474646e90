"""What the cluster adds to the Redis broker: its URL, reads per slot, the quick start."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import SentinelManagedSSLConnection

from pulses import Ack, BrokerError, DeadLetter, InvalidURL
from pulses_redis import RedisBroker
from redis_cluster import LocalCluster, LocalSentinel
from test_examples import EXPECTED, run_quickstart

pytestmark = pytest.mark.cluster


def _slots(cluster: LocalCluster, keys: list[str]) -> set[int]:
    node = cluster.nodes[0]
    return {int(cluster.cli(node, "CLUSTER", "KEYSLOT", key)) for key in keys}


def test_the_quick_start_runs_unchanged_on_the_cluster_url(cluster: LocalCluster) -> None:
    lines = run_quickstart(cluster.url)
    assert lines[0] == f"broker:         {cluster.url}"
    for line in EXPECTED:
        assert line in lines


async def test_a_sentinel_url_reaches_the_master_and_the_quick_start_runs_on_it(
    sentinel: LocalSentinel,
) -> None:
    async with await RedisBroker.connect(sentinel.url) as broker:
        assert broker.url == sentinel.url
        consumer = broker.consumer(broker.subscription("g"), ["s"], handler="h")
        await consumer.ensure()
        published = await broker.publish("s", b"via sentinel")
        [got] = await consumer.fetch(1, 1000)
        assert (got.id, got.payload) == (published, b"via sentinel")
        await consumer.aclose()
    lines = run_quickstart(sentinel.url)
    for line in EXPECTED:
        assert line in lines


async def test_a_handler_over_streams_on_every_master_reads_them_all_within_max_count(
    cluster: LocalCluster,
) -> None:
    tag = uuid.uuid4().hex[:8]
    streams = [f"s{i}-{tag}" for i in range(12)]
    assert len(_slots(cluster, streams)) == 12
    async with await RedisBroker.connect(cluster.url) as broker:
        consumer = broker.consumer(broker.subscription("g"), streams, handler="h")
        await consumer.ensure()
        for stream in streams:
            await broker.publish_many(stream, [stream.encode()] * 5)
        seen: list[tuple[str, str]] = []
        for max_count in [1, 7, 3, 16] * 10:
            batch = await consumer.fetch(max_count, 0)
            assert len(batch) <= max_count
            seen += [(e.stream, e.id) for e in batch]
            await consumer.settle([(e, Ack()) for e in batch])
        assert len(seen) == len(set(seen)) == 60
        # A blocking fetch waits on every slot at once: a publish to any stream wakes it.
        for stream in (streams[0], streams[7], streams[11]):
            fetch = asyncio.create_task(consumer.fetch(10, 5000))
            await asyncio.sleep(0.2)  # the blocking reads are on their way to the servers
            assert not fetch.done()
            published = await broker.publish(stream, b"wake")
            got = await asyncio.wait_for(fetch, 2)
            assert [(e.stream, e.id) for e in got] == [(stream, published)]
            await consumer.settle([(e, Ack()) for e in got])
        await consumer.aclose()


async def test_a_plain_redis_url_at_a_cluster_node_says_to_use_redis_cluster(
    cluster: LocalCluster,
) -> None:
    # redis-cli --cluster create gives the first node slots 0-5460: 5461 and on are another's.
    stream = next(
        s
        for s in (f"s{i}-{uuid.uuid4().hex[:8]}" for i in range(100))
        if min(_slots(cluster, [s])) > 5460
    )
    async with await RedisBroker.connect(f"redis://127.0.0.1:{cluster.nodes[0].port}/0") as broker:
        with pytest.raises(BrokerError, match=r"redis\+cluster://"):
            await broker.publish(stream, b"x")


async def test_credentials_and_tls_options_reach_every_node_and_never_an_error(
    cluster: LocalCluster,
) -> None:
    for node in cluster.nodes:
        cluster.cli(node, "ACL", "SETUSER", "app", "on", ">s3cret-pw", "~*", "+@all")
    url = cluster.url.replace("redis+cluster://", "redis+cluster://app:s3cret-pw@")
    async with await RedisBroker.connect(url) as broker:
        assert "s3cret-pw" not in broker.url
        await broker.publish(f"s-{uuid.uuid4().hex[:8]}", b"x")
    wrong = url.replace("s3cret-pw", "wrong-pw")
    async with await RedisBroker.connect(wrong) as broker:
        with pytest.raises(BrokerError) as refused:
            await broker.publish("s", b"x")
        assert "wrong-pw" not in str(refused.value)


async def test_tls_urls_ask_for_tls_to_every_node_and_to_the_sentinel_master() -> None:
    cluster = RedisBroker.from_url(
        "rediss+cluster://u:pw@127.0.0.1:7000,127.0.0.1:7001/?ssl_cert_reqs=none"
    )
    client = cluster._conn.client
    assert isinstance(client, RedisCluster)
    assert client.connection_kwargs["connection_class"] is SSLConnection
    assert client.connection_kwargs["ssl_cert_reqs"] == "none"
    assert client.connection_kwargs["username"] == "u"
    await cluster.aclose()
    sentinel = RedisBroker.from_url("rediss+sentinel://127.0.0.1:26379/mymaster/2")
    pool = sentinel._conn.client
    assert isinstance(pool, Redis)
    assert pool.connection_pool.connection_class is SentinelManagedSSLConnection
    assert pool.connection_pool.connection_kwargs["db"] == 2
    await sentinel.aclose()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+cluster://127.0.0.1:7000/1", "database 0 only"),
        ("redis+cluster://127.0.0.1:7000,127.0.0.1:x/", "is not host:port"),
        ("redis+cluster://u:pw-secret@127.0.0.1:7000/2", "database 0 only"),
        ("redis+sentinel://127.0.0.1:26379/", "name the master"),
        ("redis+cluster://127.0.0.1:7000/?protocol=3", "RESP2"),
    ],
)
async def test_a_bad_cluster_or_sentinel_url_is_refused_naming_what_is_wrong(
    url: str, says: str
) -> None:
    with pytest.raises(InvalidURL, match=says) as refused:
        await RedisBroker.connect(url)
    assert "pw-secret" not in str(refused.value)


def _pulses(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pulses", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_info_dlq_and_trim_work_on_the_cluster(cluster: LocalCluster) -> None:
    stream = f"cli-{uuid.uuid4().hex[:8]}"
    async with await RedisBroker.connect(cluster.url) as broker:
        consumer = broker.consumer(broker.subscription("workers"), [stream], handler="h")
        await consumer.ensure()
        await broker.publish_many(stream, [b"ok", b"dead:1", b"dead:2"])
        ok, *dead = await consumer.fetch(3, 1000)
        await consumer.settle([(ok, Ack()), *[(e, DeadLetter("asked to")) for e in dead]])
        await consumer.aclose()

        [info] = json.loads(_pulses("info", cluster.url, stream, "--json"))
        [group] = info["groups"]
        assert (info["dead_letters"], group["acked"], group["dead_lettered"]) == (2, 1, 2)
        assert stream in _pulses("info", cluster.url)  # every master scanned for streams
        listed = _pulses("dlq", "list", cluster.url, stream).splitlines()
        assert len(listed) == 2
        replayed = _pulses("dlq", "replay", cluster.url, stream, listed[0].split()[0])
        assert "replayed 1 dead letter" in replayed
        assert "removed 3 acknowledged entries" in _pulses("trim", cluster.url, stream)
        assert (await broker.stats(stream)).length == 0
