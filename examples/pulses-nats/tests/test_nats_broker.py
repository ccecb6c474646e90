"""What a broker whose server redelivers by itself does instead of reclaim: the cases of
the conformance suite that are written around ``Consumer.reclaim``, the NATS way, and
the runtime's promises (MAX_DELIVERIES, suspects) when redeliveries arrive through fetch.

The ack wait here is short (ACK_WAIT_MS), so the server's own redelivery is quick.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from nats_harness import NatsHarness
from nats_server import PASSWORD, NatsServer, running_nats_server
from pulses_nats import NatsBroker, NatsConsumer, parse_nats_url

import pulses
from pulses import (
    Ack,
    App,
    Broker,
    CancellationToken,
    ConnectionLost,
    Context,
    DeadLetter,
    Drop,
    Envelope,
    Handler,
    InvalidURL,
    Outcome,
    PulsesError,
    Retry,
    run_until_drained,
)

pytest_plugins = ["nats_fixtures"]

ACK_WAIT_MS = 600
PAST_ACK_WAIT_S = 2 * ACK_WAIT_MS / 1000


@dataclass(frozen=True, slots=True)
class Names:
    s: str
    g: str
    g2: str


@pytest.fixture
def names() -> Names:
    tag = uuid.uuid4().hex[:10]
    return Names(f"s-{tag}", f"g-{tag}", f"G2-{tag}")


@pytest.fixture
async def harness(nats_server: NatsServer) -> AsyncIterator[NatsHarness]:
    harness = NatsHarness(nats_server, f"?ack_wait_ms={ACK_WAIT_MS}")
    yield harness
    await harness.aclose()


@pytest.fixture
async def broker(harness: NatsHarness) -> NatsBroker:
    broker = await harness.connect()
    assert isinstance(broker, NatsBroker)
    return broker


async def ready(broker: NatsBroker, group: str, name: str, stream: str) -> NatsConsumer:
    consumer = broker.consumer(broker.subscription(group, consumer=name), [stream], handler="h")
    await consumer.ensure()
    return consumer


async def fetch_n(consumer: NatsConsumer, n: int, *, within_s: float = 5.0) -> list[Envelope]:
    """Exactly ``n`` messages, waiting for each up to the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    got: list[Envelope] = []
    while len(got) < n:
        left = deadline - loop.time()
        if left <= 0:
            raise AssertionError(f"only {len(got)} of {n} messages within {within_s}s: {got}")
        got += await consumer.fetch(n - len(got), int(min(left, 0.5) * 1000))
    assert len(got) == n, got
    return got


async def nothing(consumer: NatsConsumer, block_ms: int = 0) -> None:
    assert list(await consumer.fetch(100, block_ms)) == []


async def test_an_unsettled_message_comes_back_after_the_ack_wait_as_a_suspect(
    broker: NatsBroker, names: Names
) -> None:
    c1 = await ready(broker, names.g, "c1", names.s)
    c2 = await ready(broker, names.g, "c2", names.s)
    entry = await broker.publish(names.s, b"held", headers={"h": "v"})
    [held] = await fetch_n(c1, 1)
    await nothing(c2)  # within the ack wait, the lease holds
    [back] = await fetch_n(c2, 1, within_s=5 * PAST_ACK_WAIT_S)
    assert (back.id, back.message_id, back.payload, dict(back.headers)) == (
        entry,
        entry,
        b"held",
        {"h": "v"},
    )
    assert (held.deliveries, held.suspect, back.deliveries, back.suspect) == (1, False, 2, True)
    await c2.settle([(back, Ack())])
    await nothing(c1, int(PAST_ACK_WAIT_S * 1000))


async def test_settled_messages_never_come_back_and_are_counted(
    broker: NatsBroker, names: Names
) -> None:
    c1 = await ready(broker, names.g, "c1", names.s)
    await broker.publish_many(names.s, [b"ack", b"drop", b"dead", b"later"])
    ack, drop, dead, later = await fetch_n(c1, 4)
    items: list[tuple[Envelope, Outcome]] = [
        (ack, Ack()),
        (drop, Drop()),
        (dead, DeadLetter("bad")),
        (later, Retry(after_ms=60_000)),
    ]
    await c1.settle(items)
    await c1.settle(items)  # settling again is harmless and counts nothing twice
    await nothing(c1, int(PAST_ACK_WAIT_S * 1000))
    [group] = (await broker.stats(names.s)).groups
    assert (group.group, group.acked, group.dropped, group.dead_lettered) == (names.g, 1, 1, 1)
    assert (group.pending, group.lag, group.delayed) == (0, 0, 1)
    assert [(r.payload, r.reason, r.group) for r in await broker.dead_letters(names.s)] == [
        (b"dead", "bad", names.g)
    ]
    assert names.s in await broker.streams()


async def test_a_retry_waits_its_delay_goes_to_its_group_alone_and_is_no_suspect(
    broker: NatsBroker, names: Names
) -> None:
    c1 = await ready(broker, names.g, "c1", names.s)
    other = await ready(broker, names.g2, "c1", names.s)
    await broker.publish(names.s, b"again")
    [m] = await fetch_n(c1, 1)
    [seen] = await fetch_n(other, 1)
    await other.settle([(seen, Ack())])
    loop = asyncio.get_running_loop()
    asked = loop.time()
    # Longer than the ack wait: the server must not hand it out early as abandoned.
    await c1.settle([(m, Retry(after_ms=2 * ACK_WAIT_MS))])
    [again] = await fetch_n(c1, 1, within_s=10)
    assert loop.time() - asked >= 2 * ACK_WAIT_MS / 1000
    assert (again.id, again.deliveries, again.suspect) == (m.id, 2, False)
    await c1.settle([(again, Retry())])
    [third] = await fetch_n(c1, 1)
    assert (third.deliveries, third.suspect) == (3, False)
    await nothing(other)


async def test_extend_holds_a_message_past_the_ack_wait_without_counting_a_delivery(
    broker: NatsBroker, names: Names
) -> None:
    c1 = await ready(broker, names.g, "c1", names.s)
    c2 = await ready(broker, names.g, "c2", names.s)
    await broker.publish(names.s, b"long job")
    [m] = await fetch_n(c1, 1)
    for _ in range(4):  # twice the ack wait in all, extended along the way
        await nothing(c2, ACK_WAIT_MS // 2)
        await c1.extend([m])
    [taken] = await fetch_n(c2, 1, within_s=5 * PAST_ACK_WAIT_S)
    assert (taken.id, taken.deliveries, taken.suspect) == (m.id, 2, True)


async def test_released_messages_are_fetched_at_once_with_the_same_deliveries(
    broker: NatsBroker, names: Names
) -> None:
    c1 = await ready(broker, names.g, "c1", names.s)
    c2 = await ready(broker, names.g, "c2", names.s)
    ids = await broker.publish_many(names.s, [b"a", b"b", b"c"])
    got = await fetch_n(c1, 3)
    await c1.release(got[1:])
    taken = await c2.fetch(10, 0)
    assert sorted(e.id for e in taken) == sorted(ids[1:])
    assert all(e.deliveries == 1 and not e.suspect for e in taken)


async def test_a_released_suspect_stays_a_suspect_with_its_count(
    broker: NatsBroker, names: Names
) -> None:
    c1 = await ready(broker, names.g, "c1", names.s)
    c2 = await ready(broker, names.g, "c2", names.s)
    await broker.publish(names.s, b"poison?")
    await fetch_n(c1, 1)  # ... and c1 dies
    [suspect] = await fetch_n(c2, 1, within_s=5 * PAST_ACK_WAIT_S)
    await c2.release([suspect])  # shutting down before it ran
    [again] = await c1.fetch(10, 0)
    assert (again.id, again.deliveries, again.suspect) == (suspect.id, 2, True)


async def test_suspects_come_alone_so_a_poison_raises_only_its_own_count(
    broker: NatsBroker, names: Names
) -> None:
    first = await ready(broker, names.g, "first", names.s)
    ids = await broker.publish_many(names.s, [b"poison", b"a", b"b", b"c"])
    await fetch_n(first, 4)  # ... and its process dies
    second = await ready(broker, names.g, "second", names.s)
    batch = await fetch_n(second, 1, within_s=5 * PAST_ACK_WAIT_S)
    # Its batch-mates went back to the group. If the poison came first, it kills
    # `second` too; the others are settled by whoever took them.
    seen: dict[str, int] = {}
    third = await ready(broker, names.g, "third", names.s)
    if batch[0].id != ids[0]:
        seen[batch[0].id] = batch[0].deliveries
        await second.settle([(batch[0], Ack())])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10 * PAST_ACK_WAIT_S
    while len(seen) < 4 and loop.time() < deadline:
        got = await third.fetch(10, 200)
        assert len(got) <= 1, f"suspects come alone, got {got!r}"
        for envelope in got:
            assert envelope.suspect
            seen[envelope.id] = envelope.deliveries
            await third.settle([(envelope, Ack())])
    poison_deaths = 2 if batch[0].id == ids[0] else 1
    assert seen == {ids[0]: 1 + poison_deaths, ids[1]: 2, ids[2]: 2, ids[3]: 2}


async def test_a_restarted_consumer_gets_its_messages_back_only_after_the_ack_wait(
    harness: NatsHarness, broker: NatsBroker, names: Names
) -> None:
    c1 = await ready(broker, names.g, "c1", names.s)
    ids = await broker.publish_many(names.s, [b"a", b"b"])
    await fetch_n(c1, 2)
    await c1.aclose()
    restarted_broker = await harness.connect()
    assert isinstance(restarted_broker, NatsBroker)
    restarted = await ready(restarted_broker, names.g, "c1", names.s)
    await nothing(restarted)  # no pending list per consumer name: nothing at once
    back = [*await fetch_n(restarted, 1, within_s=5 * PAST_ACK_WAIT_S)]
    back += await fetch_n(restarted, 1)
    assert sorted(e.id for e in back) == sorted(ids)
    assert all(e.deliveries == 2 and e.suspect for e in back)


async def test_a_fetch_that_fails_leaves_what_it_took_for_the_next_one(
    broker: NatsBroker, names: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    c1 = await ready(broker, names.g, "c1", names.s)
    await broker.publish(names.s, b"held")
    await fetch_n(c1, 1)  # ... and c1 dies
    c2 = await ready(broker, names.g, "c2", names.s)
    book = broker._book
    real = book.marks

    async def lost(*args: Any) -> Any:
        monkeypatch.setattr(book, "marks", real)
        raise ConnectionLost("the reply was lost")

    monkeypatch.setattr(book, "marks", lost)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5 * PAST_ACK_WAIT_S

    async def fetch_until_it_fails() -> None:
        while loop.time() < deadline:
            await c2.fetch(10, 200)

    with pytest.raises(ConnectionLost):  # the redelivery arrives, its mark lookup fails
        await fetch_until_it_fails()
    [again] = await c2.fetch(10, 0)
    assert (again.deliveries, again.suspect) == (2, True)


class Crashes(Handler[Broker[Any]]):
    """Counts its calls; the messages it gets here died with their process before."""

    STREAMS = ("set per test",)
    MAX_DELIVERIES = 3
    calls = 0

    async def handle(self, ctx: Context[Broker[Any]], msg: Envelope) -> Outcome:
        type(self).calls += 1
        return Ack()


async def test_the_runtime_dead_letters_a_message_that_died_max_deliveries_times_unrun(
    broker: NatsBroker, names: Names
) -> None:
    killer = await ready(broker, names.g, "killer", names.s)
    entry = await broker.publish(names.s, b"kills its worker")
    for deliveries in (1, 2, 3):  # three processes died running it
        [m] = await fetch_n(killer, 1, within_s=5 * PAST_ACK_WAIT_S)
        assert (m.id, m.deliveries) == (entry, deliveries)
    await killer.aclose()

    class Handles(Crashes):
        STREAMS = (names.s,)

    app = App(broker, broker.subscription(names.g), block_ms=100).register(Handles())
    stats = await run_until_drained(app, timeout=5 * PAST_ACK_WAIT_S + 10)
    assert Handles.calls == 0
    assert (stats.total.dead_lettered, stats.total.handled) == (1, 0)
    [record] = await broker.dead_letters(names.s)
    assert (record.original_id, record.deliveries) == (entry, 4)
    assert "never finished" in record.reason


async def test_the_runtime_extends_leases_within_the_ack_wait_so_a_long_job_runs_once(
    broker: NatsBroker, names: Names
) -> None:
    assert broker.capabilities.lease_ms == ACK_WAIT_MS
    started = asyncio.Event()

    class Long(Handler[Broker[Any]]):
        STREAMS = (names.s,)

        async def handle(self, ctx: Context[Broker[Any]], msg: Envelope) -> Outcome:
            started.set()
            await asyncio.sleep(4 * ACK_WAIT_MS / 1000)  # four ack waits, extended along
            return Ack()

    async def neighbour() -> list[Envelope]:
        """Another consumer of the group, fetching all along: a lapsed lease comes here."""
        await started.wait()
        other = await ready(broker, names.g, "neighbour", names.s)
        taken: list[Envelope] = []
        while not drained.done():
            taken += await other.fetch(10, 100)
        return taken

    await broker.publish(names.s, b"a long job")
    # claim_idle_ms, whose third paces leases on a broker without lease_ms, is far longer
    # than the ack wait: the lease of the server decides.
    app = App(broker, broker.subscription(names.g), block_ms=100, claim_idle_ms=60_000)
    drained = asyncio.ensure_future(run_until_drained(app.register(Long()), timeout=30))
    assert await neighbour() == []
    stats = await drained
    assert (stats.total.handled, stats.total.isolated) == (1, 0)


@pytest.fixture
def own_server() -> Iterator[NatsServer]:
    """A server of the test's own, which it may restart."""
    yield from running_nats_server()


@pytest.mark.timeout(120)
async def test_a_worker_keeps_working_across_a_server_restart(own_server: NatsServer) -> None:
    stream = f"restart-{uuid.uuid4().hex[:8]}"
    seen: set[bytes] = set()

    class Records(Handler[Broker[Any]]):
        STREAMS = (stream,)
        WORKERS = 4

        async def handle(self, ctx: Context[Broker[Any]], msg: Envelope) -> Outcome:
            seen.add(msg.payload)
            return Ack()

    async def until(count: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while len(seen) < count:
            assert loop.time() < deadline, f"{len(seen)} of {count} handled"
            await asyncio.sleep(0.02)

    async def publish(broker: Broker[Any], payloads: list[bytes]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while True:  # the producer retries while the server comes back
            try:
                await broker.publish_many(stream, payloads)
                return
            except PulsesError:
                assert loop.time() < deadline
                await asyncio.sleep(0.1)

    async with await NatsBroker.connect(own_server.url) as broker:
        token = CancellationToken()
        app = App(broker, broker.subscription("g"), block_ms=200).register(Records())
        run = asyncio.create_task(app.run(token))
        await publish(broker, [f"before-{i}".encode() for i in range(50)])
        await until(50)
        own_server.restart()
        await publish(broker, [f"after-{i}".encode() for i in range(50)])
        await until(100)
        token.cancel()
        stats = (await run).total
    assert (stats.acked, stats.failed, stats.unsettled) == (stats.handled, 0, 0)
    assert len(seen) == 100


def test_urls_are_checked_and_never_show_the_password() -> None:
    assert parse_nats_url("nats://u:pw@host:4222?ack_wait_ms=5000") == (
        "nats://u:pw@host:4222",
        5000,
    )
    assert parse_nats_url("nats://host")[1] == 10_000
    for bad, says in [
        ("redis://u:pw@host", "expected nats://"),
        ("nats://u:pw@host/0", "no path"),
        ("nats://u:pw@host?ack_wait=5", "unknown parameter 'ack_wait'"),
        ("nats://u:pw@host?ack_wait_ms=50", "ack_wait_ms must be an int >= 100"),
        ("nats://u:pw@host:99999", "Port out of range"),
    ]:
        with pytest.raises(InvalidURL, match=says) as info:
            parse_nats_url(bad)
        assert "pw" not in str(info.value).replace("://u:***", "")


async def test_the_scheme_is_found_and_the_broker_hides_its_password(
    nats_server: NatsServer,
) -> None:
    async with await pulses.connect(nats_server.url) as broker:
        assert isinstance(broker, NatsBroker)
        shown: Sequence[str] = [broker.url, repr(broker)]
        assert all(PASSWORD not in text for text in shown), shown
        assert broker.capabilities.max_payload_bytes is not None
