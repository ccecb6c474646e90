"""The broker conformance suite: every case of the broker contract, written once, for any
broker.

A broker author subclasses :class:`BrokerConformance` and provides a ``harness`` fixture
that yields a :class:`~pulses.testing.BrokerHarness`, marked ``pytest_asyncio.fixture``
so that it runs in pytest-asyncio's strict (default) mode as well as in auto mode::

    import pytest_asyncio
    from pulses.testing.conformance import BrokerConformance

    class TestMyBroker(BrokerConformance):
        @pytest_asyncio.fixture
        async def harness(self):
            harness = MyHarness()
            yield harness
            await harness.aclose()

A case that needs a capability the broker does not declare skips, naming it. Needs
pytest and pytest-asyncio; nothing else in ``pulses.testing`` imports this module.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import pytest
import pytest_asyncio

from pulses._app import App
from pulses._broker import Broker, Consumer, DeadLetterRecord, StreamAdmin
from pulses._drain import run_until_drained
from pulses._envelope import Envelope
from pulses._errors import BrokerClosed, InvalidName, PulsesError, SettleError, Unsupported
from pulses._handler import Context, Handler
from pulses._outcome import Ack, DeadLetter, Drop, Outcome, Retry
from pulses._typed import Stream
from pulses.testing._harness import BrokerHarness

__all__ = ["BrokerConformance"]

IDLE_MS = 200
"""The reclaim idle time of the suite: short, because real brokers wait it out."""
PAST_IDLE_MS = IDLE_MS + 100
HEADERS = {"trace": "abc-123", "ünïcode": "välue ✓"}
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Names:
    """Fresh names per test, so harnesses may share one server between tests."""

    s: str
    t: str
    g: str
    g2: str

    @classmethod
    def fresh(cls) -> _Names:
        tag = uuid.uuid4().hex[:10]
        return cls(f"s-{tag}", f"t-{tag}", f"g-{tag}", f"G2-{tag}")


class _Point(msgspec.Struct):
    x: int


def _consumer(
    broker: Broker[Any], group: str, name: str, *streams: str, handler: str = "conformance"
) -> Consumer:
    return broker.consumer(broker.subscription(group, consumer=name), streams, handler=handler)


async def _ready(
    broker: Broker[Any], group: str, name: str, *streams: str, handler: str = "conformance"
) -> Consumer:
    consumer = _consumer(broker, group, name, *streams, handler=handler)
    await consumer.ensure()
    return consumer


async def _fetch_n(consumer: Consumer, n: int, *, within_s: float = 5.0) -> list[Envelope]:
    """Exactly ``n`` messages, fetching without blocking until they are there."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    got: list[Envelope] = []
    while len(got) < n:
        batch = await consumer.fetch(n - len(got), 0)
        assert len(batch) <= n - len(got), "fetch returned more than max_count"
        got += batch
        if len(got) < n:
            if loop.time() > deadline:
                raise AssertionError(f"only {len(got)} of {n} messages within {within_s}s")
            await asyncio.sleep(0.005)
    return got


async def _nothing(consumer: Consumer) -> None:
    assert list(await consumer.fetch(100, 0)) == []


async def _settle(consumer: Consumer, *items: tuple[Envelope, Outcome]) -> None:
    await consumer.settle(list(items))


def _admin(broker: Broker[Any]) -> StreamAdmin | None:
    if broker.capabilities.admin:
        assert isinstance(broker, StreamAdmin), "declares admin but is no StreamAdmin"
        return broker
    return None


def _require(broker: Broker[Any], *capabilities: str) -> None:
    """Skip, naming the capability, unless the broker declares each of these."""
    for capability in capabilities:
        if not getattr(broker.capabilities, capability):
            pytest.skip(f"needs Capabilities.{capability}, which {broker.url} does not declare")


def _require_admin(broker: Broker[Any]) -> StreamAdmin:
    _require(broker, "admin")
    admin = _admin(broker)
    assert admin is not None
    return admin


def _require_take_over(broker: Broker[Any]) -> None:
    """Skip unless something takes an unsettled message over: ``reclaim``, or a server
    that delivers it again by itself (``lease_ms``)."""
    caps = broker.capabilities
    if not caps.reclaim and caps.lease_ms is None:
        pytest.skip(
            f"needs Capabilities.reclaim or Capabilities.lease_ms; {broker.url} declares "
            "neither, so nothing takes an unsettled message over"
        )


def _lease_ms(broker: Broker[Any]) -> int:
    """How long an unsettled message stays with its consumer: the server's own lease on
    a broker that redelivers by itself, else the suite's reclaim idle time."""
    return broker.capabilities.lease_ms or IDLE_MS


def _past_lease(broker: Broker[Any]) -> int:
    """Long enough for a message nobody settles or extends to be taken over. A server's
    own redelivery runs on its timer, so it gets a whole lease of slack."""
    lease = broker.capabilities.lease_ms
    return PAST_IDLE_MS if lease is None else 2 * lease


def _redelivery_s(broker: Broker[Any]) -> float:
    return 5.0 + 5 * _lease_ms(broker) / 1000


async def _take_over(broker: Broker[Any], taker: Consumer, max_count: int = 10) -> list[Envelope]:
    """What ``taker`` takes over now of what sat unsettled past the lease: one reclaim,
    or (a broker without reclaim, whose server redelivers by itself) one fetch."""
    if broker.capabilities.reclaim:
        return list((await taker.reclaim(IDLE_MS, max_count)).envelopes)
    return list(await taker.fetch(max_count, 0))


async def _taken_over(broker: Broker[Any], taker: Consumer, n: int) -> list[Envelope]:
    """Exactly ``n`` messages taken over once past the lease: by one reclaim, or as the
    server of a broker that redelivers by itself hands them out through fetch."""
    if broker.capabilities.reclaim:
        got = list((await taker.reclaim(IDLE_MS, 10)).envelopes)
        assert len(got) == n, f"reclaim took {len(got)} of {n}: {got!r}"
        return got
    return await _fetch_n(taker, n, within_s=_redelivery_s(broker))


async def _suspects_alone(broker: Broker[Any], taker: Consumer, n: int) -> list[Envelope]:
    """``n`` suspects taken over (by reclaim or fetch), each alone in its batch and acked
    at once; patient with a server that redelivers on its own timer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _redelivery_s(broker)
    seen: list[Envelope] = []
    while len(seen) < n:
        got = await _take_over(broker, taker)
        if not got:
            assert broker.capabilities.lease_ms is not None, f"only {len(seen)} of {n}"
            assert loop.time() < deadline, f"only {len(seen)} of {n} within the deadline"
            await asyncio.sleep(0.02)
            continue
        assert len(got) == 1, f"suspects come alone, got {got!r}"
        seen += got
        await _settle(taker, (got[0], Ack()))
    assert await _take_over(broker, taker) == []
    return seen


async def _harness_can(call: Awaitable[T]) -> T:
    """Await a harness call; skip, naming it, when the harness does not implement it."""
    try:
        return await call
    except Unsupported as exc:
        pytest.skip(f"needs the harness to write behind the broker's back: {exc}")


def _ids(items: Sequence[Envelope] | Sequence[DeadLetterRecord]) -> list[str]:
    return [item.id for item in items]


class BrokerConformance:
    """Every case of the conformance list, as test methods over a ``harness`` fixture.

    Subclasses provide the ``harness`` fixture (a ``pytest_asyncio.fixture`` yielding a
    ``BrokerHarness``); see the module docstring. Every test is marked
    ``pytest.mark.asyncio``, so the suite runs in pytest-asyncio's strict mode.
    """

    pytestmark = pytest.mark.asyncio

    @pytest.fixture
    def names(self) -> _Names:
        return _Names.fresh()

    @pytest_asyncio.fixture
    async def broker(self, harness: BrokerHarness) -> AsyncIterator[Broker[Any]]:
        broker = await harness.connect()
        yield broker
        await broker.aclose()

    # -- publishing and reading (1-8) -------------------------------------------------

    async def test_published_messages_arrive_with_the_same_bytes_headers_and_one_delivery(
        self, broker: Broker[Any], names: _Names
    ) -> None:
        payloads = [
            b"",
            bytes(range(256)),
            b"\xff\xfe\x00 not utf-8 \x80",
            bytes(range(256)) * 4096,
        ]
        c1 = await _ready(broker, names.g, "c1", names.s)
        ids = [await broker.publish(names.s, p, headers=HEADERS) for p in payloads]
        got = await _fetch_n(c1, len(payloads))
        assert _ids(got) == ids
        assert len(set(ids)) == len(ids)
        for envelope, payload in zip(got, payloads, strict=True):
            assert envelope.payload == payload
            assert dict(envelope.headers) == HEADERS
            assert envelope.deliveries == 1
            assert envelope.stream == names.s

    async def test_messages_published_before_the_group_existed_are_delivered(
        self, broker: Broker[Any], names: _Names
    ) -> None:
        early = await broker.publish(names.s, b"early")
        c1 = await _ready(broker, names.g, "c1", names.s)
        late = await broker.publish(names.s, b"late")
        assert _ids(await _fetch_n(c1, 2)) == [early, late]

    async def test_publish_many_delivers_every_message_in_order_with_ids_in_order(
        self, broker: Broker[Any], names: _Names
    ) -> None:
        c1 = await _ready(broker, names.g, "c1", names.s)
        payloads = [f"m{i}".encode() for i in range(50)]
        ids = await broker.publish_many(names.s, payloads, headers={"batch": "1"})
        got = await _fetch_n(c1, 50)
        assert _ids(got) == ids
        assert [e.payload for e in got] == payloads
        assert all(e.headers == {"batch": "1"} and e.deliveries == 1 for e in got)

    async def test_fetch_with_nothing_available_returns_empty_after_block_ms(
        self, harness: BrokerHarness, broker: Broker[Any], names: _Names
    ) -> None:
        c1 = await _ready(broker, names.g, "c1", names.s)
        fetch = asyncio.create_task(c1.fetch(10, 300))
        await harness.advance(100)
        assert not fetch.done(), "fetch returned before block_ms"
        await harness.advance(300)
        assert list(await asyncio.wait_for(fetch, 5)) == []

    async def test_fetch_returns_early_when_a_message_is_published_during_the_wait(
        self, harness: BrokerHarness, broker: Broker[Any], names: _Names
    ) -> None:
        producer = await harness.connect()
        try:
            c1 = await _ready(broker, names.g, "c1", names.s)
            fetch = asyncio.create_task(c1.fetch(10, 10_000))
            await harness.advance(50)
            assert not fetch.done()
            entry_id = await producer.publish(names.s, b"wake up")
            # Far sooner than block_ms, and without moving a manual clock.
            got = await asyncio.wait_for(fetch, 3)
            assert _ids(got) == [entry_id]
        finally:
            await producer.aclose()

    async def test_fetch_over_several_streams_never_exceeds_max_count_in_total(
        self, broker: Broker[Any], names: _Names
    ) -> None:
        c1 = await _ready(broker, names.g, "c1", names.s, names.t)
        await broker.publish_many(names.s, [b"s"] * 10)
        await broker.publish_many(names.t, [b"t"] * 10)
        seen: list[tuple[str, str]] = []  # ids are unique per stream only
        for max_count in [3, 1, 4, 5, 7] * 4:  # far more fetches than 20 messages need
            batch = await c1.fetch(max_count, 0)
            assert len(batch) <= max_count
            seen += [(e.stream, e.id) for e in batch]
        assert len(seen) == len(set(seen)) == 20
        await _nothing(c1)

    async def test_no_stream_starves_both_appear_within_two_fetches(
        self, broker: Broker[Any], names: _Names
    ) -> None:
        c1 = await _ready(broker, names.g, "c1", names.s, names.t)
        await broker.publish_many(names.s, [b"s"] * 20)
        await broker.publish_many(names.t, [b"t"] * 20)
        for max_count in (1, 3):
            got = [*await c1.fetch(max_count, 0), *await c1.fetch(max_count, 0)]
            assert {e.stream for e in got} == {names.s, names.t}, max_count

    async def test_competing_consumers_receive_disjoint_messages_and_all_exactly_once(
        self, broker: Broker[Any], names: _Names
    ) -> None:
        c1 = await _ready(broker, names.g, "c1", names.s)
        c2 = await _ready(broker, names.g, "c2", names.s)
        ids = await broker.publish_many(names.s, [str(i).encode() for i in range(40)])
        got: dict[str, list[str]] = {"c1": [], "c2": []}
        while len(got["c1"]) + len(got["c2"]) < len(ids):
            b1, b2 = await asyncio.gather(c1.fetch(3, 0), c2.fetch(3, 0))
            assert b1 or b2, "messages left but neither consumer got any"
            got["c1"] += _ids(b1)
            got["c2"] += _ids(b2)
        assert not set(got["c1"]) & set(got["c2"])
        assert sorted(got["c1"] + got["c2"]) == sorted(ids)
        await _nothing(c1)
        await _nothing(c2)

    async def test_each_group_receives_every_message(
        self, broker: Broker[Any], names: _Names
    ) -> None:
        c1 = await _ready(broker, names.g, "c1", names.s)
        other = await _ready(broker, names.g2, "c1", names.s)
        ids = await broker.publish_many(names.s, [b"a", b"b", b"c"])
        assert _ids(await _fetch_n(c1, 3)) == ids
        assert _ids(await _fetch_n(other, 3)) == ids

    async def test_delayed_publish_is_invisible_before_its_delay_and_delivered_after(
        self, harness: BrokerHarness, broker: Broker[Any], names: _Names
    ) -> None:
        c1 = await _ready(broker, names.g, "c1", names.s)
        if not broker.capabilities.delayed_publish:
            with pytest.raises(Unsupported):  # refused, never silently published at once
                await broker.publish(names.s, b"later", delay_ms=300)
            _require(broker, "delayed_publish")
        ticket = await broker.publish(names.s, b"later", headers=HEADERS, delay_ms=300)
        assert ticket
        await harness.advance(100)
        await _nothing(c1)
        await harness.advance(300)
        [envelope] = await _fetch_n(c1, 1)
        assert (envelope.payload, dict(envelope.headers), envelope.deliveries) == (
            b"later",
            HEADERS,
            1,
        )

    # -- settling (9-13) ---------------------------------------------------------------

    async def test_acked_message_is_never_delivered_again_and_acking_twice_is_harmless(
        self, harness: BrokerHarness, broker: Broker[Any], names: _Names
    ) -> None:
        c1 = await _ready(broker, names.g, "c1", names.s)
        c2 = await _ready(broker, names.g, "c2", names.s)
        await broker.publish(names.s, b"done")
        [m] = await _fetch_n(c1, 1)
        await _settle(c1, (m, Ack()))
        await _settle(c1, (m, Ack()))
        await harness.advance(_past_lease(broker))
        assert await _take_over(broker, c2) == []
        await _nothing(c1)
        await _nothing(c2)
        if admin := _admin(broker):
            [group] = [g for g in (await admin.stats(names.s)).groups if g.group == names.g]
            assert (group.acked, group.pending, group.lag) == (1, 0, 0)

    async def test_dropped_message_is_never_delivered_again_and_counted_as_dropped(
        self, harness: BrokerHarness, broker: Broker[Any], names: _Names
    ) -> None:
        c1 = await _ready(broker, names.g, "c1", names.s)
        await broker.publish(names.s, b"spam")
        [m] = await _fetch_n(c1, 1)
        await _settle(c1, (m, Drop("spam")))
        await _settle(c1, (m, Drop("spam")))
        await harness.advance(_past_lease(broker))
        assert await _take_over(broker, c1) == []
        await _nothing(c1)
        if admin := _admin(broker):
            [group] = (await admin.stats(names.s)).groups
            assert (group.acked, group.dropped, group.pending) == (0, 1, 0)

    async def test_retry_is_invisible_before_its_delay_and_counts_one_more_delivery(
        self, harness: BrokerHarness, broker: Broker[Any], names: _Names
    ) -> None:
        _require(broker, "delayed_retry")
        c1 = await _ready(broker, names.g, "c1", names.s)
        c2 = await _ready(broker, names.g, "c2", names.s)
        await broker.publish(names.s, b"again", headers=HEADERS)
        [m] = await _fetch_n(c1, 1)
        # Longer than the lease: a reclaimer (or the server's redelivery) must not see it.
        past = _past_lease(broker)
        await _settle(c1, (m, Retry(after_ms=2 * past)))
        await _settle(c1, (m, Retry(after_ms=2 * past)))  # harmless: no second copy
        await harness.advance(past)
        await _nothing(c1)
        assert await _take_over(broker, c2) == []
        await harness.advance(past)
        [again] = await _fetch_n(c2, 1)
        assert (again.payload, dict(again.headers)) == (b"again", HEADERS)
        assert again.deliveries == m.deliveries + 1 == 2
        assert again.stream == names.s
        assert again.enqueued_ms == m.enqueued_ms
        await _settle(c2, (again, Retry()))
        [third] = await _fetch_n(c1, 1)
        assert third.deliveries == 3
        await _nothing(c2)

    async def test_retry_goes_only_to_the_group_that_retried(
        self, harness: BrokerHarness, broker: Broker[Any], names: _Names
    ) -> None:
        c1 = await _ready(broker, names.g, "c1", names.s)
        other = await _ready(broker, names.g2, "c1", names.s)
        await broker.publish(names.s, b"fan-out")
        [m] = await _fetch_n(c1, 1)
        [seen] = await _fetch_n(other, 1)
        await _settle(c1, (m, Retry()))
        await _settle(other, (seen, Ack()))
        [again] = await _fetch_n(c1, 1)
        assert again.deliveries == 2
        await _settle(c1, (again, Ack()))
        await harness.advance(_past_lease(broker))
        await _nothing(other)
        assert await _take_over(broker, other) == []

    async def test_dead_lettered_message_leaves_the_group_and_is_recorded_with_its_origin(
        self, harness: BrokerHarness, broker: Broker[Any], names: _Names
    ) -> None:
        _require(broker, "dead_letters")
        c1 = await _ready(broker, names.g, "c1", names.s, handler="Billing")
        entry_id = await broker.publish(names.s, b"\x00poison", headers=HEADERS)
        [m] = await _fetch_n(c1, 1)
        await _settle(c1, (m, DeadLetter("cannot parse")))
        await _settle(c1, (m, DeadLetter("cannot parse")))  # harmless: recorded once
        await harness.advance(_past_lease(broker))
        await _nothing(c1)
        assert await _take_over(broker, c1) == []
        if admin := _admin(broker):
            [record] = await admin.dead_letters(names.s)
            assert record.original_id == entry_id
            assert (record.stream, record.payload, dict(record.headers)) == (
                names.s,
                b"\x00poison",
                HEADERS,
            )
            assert (record.reason, record.deliveries) == ("cannot parse", 1)
            assert (record.handler, record.group) == ("Billing", names.g)
            [group] = (await admin.stats(names.s)).groups
            assert (group.dead_lettered, group.pending) == (1, 0)

    async def test_a_mixed_batch_settle_applies_each_outcome_and_a_bad_item_loses_no_other(
        self, broker: Broker[Any], names: _Names
    ) -> None:
        _require(broker, "dead_letters")
        c1 = await _ready(broker, names.g, "c1", names.s)
        await broker.publish_many(names.s, [b"ack", b"drop", b"retry", b"dead", b"early"])
        ack, drop, retry, dead, early = await _fetch_n(c1, 5)
        await _settle(c1, (early, Ack()))
        bogus = Envelope("not-an-id", names.s, b"", {}, 1, 0, [b"payload", b""])
        batch: list[tuple[Envelope, Outcome]] = [
            (ack, Ack()),
            (bogus, Ack()),
            (drop, Drop()),
            (retry, Retry()),
            (early, Ack()),
            (dead, DeadLetter("bad")),
        ]
        failed: list[Envelope] = []
        try:
            await c1.settle(batch)
        except SettleError as exc:  # allowed, if it names exactly the unsettleable item
            failed = [env for env, _ in exc.failed]
        assert failed in ([], [bogus])
        [again] = await _fetch_n(c1, 1)
        assert (again.payload, again.deliveries) == (b"retry", 2)
        await _settle(c1, (again, Ack()))
        await _nothing(c1)
        if admin := _admin(broker):
            [group] = (await admin.stats(names.s)).groups
            assert (group.acked, group.dropped, group.dead_lettered, group.pending) == (3, 1, 1, 0)
            assert [r.payload for r in await admin.dead_letters(names.s)] == [b"dead"]

    # -- leases, reclaim and release (14-20) -------------------------------------------

    async def test_unsettled_message_is_reclaimable_once_idle_longer_than_min_idle_not_before(
        self, harness: BrokerHarness, broker: Broker[Any], names: _Names
    ) -> None:
        _require(broker, "reclaim")
        c1 = await _ready(broker, names.g, "c1", names.s)
        c2 = await _ready(broker, names.g, "c2", names.s)
        await broker.publish(names.s, b"stuck", headers=HEADERS)
        [m] = await _fetch_n(c1, 1)
        assert list((await c2.reclaim(IDLE_MS, 10)).envelopes) == []
        await harness.advance(IDLE_MS // 2)
        assert list((await c2.reclaim(IDLE_MS, 10)).envelopes) == []
        await harness.advance(IDLE_MS)
        [taken] = (await c2.reclaim(IDLE_MS, 10)).envelopes
        assert (taken.id, taken.payload, dict(taken.headers)) == (m.id, b"stuck", HEADERS)
        assert taken.deliveries == m.deliveries + 1
        # Now c2's, freshly: not reclaimable again at once.
        assert list((await c1.reclaim(IDLE_MS, 10)).envelopes) == []
        await _settle(c2, (taken, Ack()))
        await harness.advance(PAST_IDLE_MS)
        assert list((await c1.reclaim(IDLE_MS, 10)).envelopes) == []

    async def test_extend_keeps_a_message_from_reclaim_without_counting_a_delivery(
        self, harness: BrokerHarness, broker: Broker[Any], names: _Names
    ) -> None:
        _require(broker, "extend")
        _require_take_over(broker)
        c1 = await _ready(broker, names.g, "c1", names.s)
        c2 = await _ready(broker, names.g, "c2", names.s)
        await broker.publish(names.s, b"long job")
        [m] = await _fetch_n(c1, 1)
        half = _lease_ms(broker) // 2
        for _ in range(3):  # three times the lease in all, extended along the way
            await harness.advance(half)
            await c1.extend([m])
            await harness.advance(half)
            await c1.extend([m])
            assert await _take_over(broker, c2) == []
        await harness.advance(_past_lease(broker))
        [taken] = await _taken_over(broker, c2, 1)
        assert (taken.id, taken.deliveries) == (m.id, 2)

    async def test_released_messages_go_to_another_consumer_at_once_with_the_same_deliveries(
        self, broker: Broker[Any], names: _Names
    ) -> None:
        c1 = await _ready(broker, names.g, "c1", names.s)
        c2 = await _ready(broker, names.g, "c2", names.s)
        _require(broker, "release")
        ids = await broker.publish_many(names.s, [b"a", b"b", b"c"])
        got = await _fetch_n(c1, 3)
        await c1.release(got[1:])
        # Without waiting for any idle time: through reclaim, or else through fetch.
        if broker.capabilities.reclaim:
            taken = list((await c2.reclaim(60_000, 10)).envelopes)
            assert list((await c1.reclaim(60_000, 10)).envelopes) == []
        else:
            taken = await _fetch_n(c2, 2)
            await _nothing(c1)
        assert sorted(_ids(taken)) == sorted(ids[1:])
        assert all(e.deliveries == 1 for e in taken)

    async def test_reclaim_counts_every_delivery_and_a_reclaimed_dead_letter_is_recorded(
        self, harness: BrokerHarness, broker: Broker[Any], names: _Names
    ) -> None:
        _require_take_over(broker)
        _require(broker, "dead_letters")
        c1 = await _ready(broker, names.g, "c1", names.s, handler="Crashy")
        c2 = await _ready(broker, names.g, "c2", names.s, handler="Crashy")
        entry_id = await broker.publish(names.s, b"kills its worker")
        [m] = await _fetch_n(c1, 1)
        assert m.deliveries == 1
        holder, other = c1, c2
        for expected in (2, 3, 4):
            await harness.advance(_past_lease(broker))
            [m] = await _taken_over(broker, other, 1)
            assert (m.id, m.deliveries, m.suspect) == (entry_id, expected, True)
            holder, other = other, holder
        await _settle(holder, (m, DeadLetter("delivered 4 times")))
        await harness.advance(_past_lease(broker))
        assert await _take_over(broker, other) == []
        if admin := _admin(broker):
            [record] = await admin.dead_letters(names.s)
            assert (record.original_id, record.deliveries, record.reason) == (
                entry_id,
                4,
                "delivered 4 times",
            )
            assert (record.handler, record.group) == ("Crashy", names.g)

    async def test_a_pending_message_whose_entry_vanished_is_reported_once_and_never_again(
        self, harness: BrokerHarness, broker: Broker[Any], names: _Names
    ) -> None:
        _require_take_over(broker)
        c1 = await _ready(broker, names.g, "c1", names.s)
        c2 = await _ready(broker, names.g, "c2", names.s)
        gone, kept = await broker.publish_many(names.s, [b"gone", b"kept"])
        await _fetch_n(c1, 2)
        await _harness_can(harness.delete_entry(broker, names.s, gone))
        await harness.advance(_past_lease(broker))
        if broker.capabilities.reclaim:
            first = await c2.reclaim(IDLE_MS, 10)
            assert _ids(first.envelopes) == [kept]
            assert list(first.vanished) == [gone]
            await harness.advance(PAST_IDLE_MS)
            second = await c1.reclaim(IDLE_MS, 10)
            assert _ids(second.envelopes) == [kept]
            assert list(second.vanished) == []
        else:  # the server forgets a deleted message by itself: it never comes back
            assert _ids(await _fetch_n(c2, 1, within_s=_redelivery_s(broker))) == [kept]
            await harness.advance(_past_lease(broker))
            assert _ids(await _fetch_n(c1, 1, within_s=_redelivery_s(broker))) == [kept]
            await _nothing(c2)
        if admin := _admin(broker):
            [group] = (await admin.stats(names.s)).groups
            assert group.pending == 1

    async def test_reclaim_returns_at_most_max_count_and_reaches_idle_ones_behind_fresh_ones(
        self, harness: BrokerHarness, broker: Broker[Any], names: _Names
    ) -> None:
        _require(broker, "reclaim", "release", "extend")
        c1 = await _ready(broker, names.g, "c1", names.s)
        c2 = await _ready(broker, names.g, "c2", names.s)
        ids = await broker.publish_many(names.s, [str(i).encode() for i in range(300)])
        got = await _fetch_n(c1, 300)
        # Released messages are no suspects: a reclaim takes up to max_count of them.
        await c1.release(got[280:290])
        first = (await c2.reclaim(IDLE_MS, 4)).envelopes
        assert len(first) == 4
        assert not any(e.suspect for e in first)
        await _settle(c2, *[(e, Ack()) for e in first])
        await harness.advance(PAST_IDLE_MS)
        # The first 280 stay fresh; the last 10 sit idle behind them, and each of those
        # was delivered before: a suspect, which comes alone.
        await c1.extend(got[:280])
        rest: list[Envelope] = []
        for _ in range(30):
            batch = (await c2.reclaim(IDLE_MS, 4)).envelopes
            assert len(batch) <= 4
            if not batch:
                break
            if any(e.suspect for e in batch):
                assert len(batch) == 1, "a suspect must come alone"
            rest += batch
            await _settle(c2, *[(e, Ack()) for e in batch])
        assert sorted(_ids([*first, *rest])) == sorted(ids[280:])
        by_id = {e.id: e for e in [*first, *rest]}
        assert all(by_id[i].deliveries == 1 and not by_id[i].suspect for i in ids[280:290])
        assert all(by_id[i].deliveries == 2 and by_id[i].suspect for i in ids[290:])

    async def test_a_restarted_consumer_gets_back_its_own_pending_messages_once(
        self, harness: BrokerHarness, broker: Broker[Any], names: _Names
    ) -> None:
        redelivers = broker.capabilities.lease_ms is not None
        c1 = await _ready(broker, names.g, "c1", names.s)
        ids = await broker.publish_many(names.s, [b"a", b"b", b"c"])
        await _fetch_n(c1, 3)
        await c1.aclose()
        restarted_broker = await harness.connect()
        try:
            restarted = await _ready(restarted_broker, names.g, "c1", names.s)
            back: list[Envelope] = []
            if redelivers:
                # One lease per message, no pending list per name: they come back when
                # the lease ends, to whoever fetches, each a suspect and alone.
                await harness.advance(_past_lease(broker))
                for _ in range(3):
                    back += await _fetch_n(restarted, 1, within_s=_redelivery_s(broker))
            else:
                # No idle time has passed: these come back because they were this
                # name's, each a suspect, alone in its fetch.
                for _ in range(3):
                    batch = await restarted.fetch(10, 0)
                    assert len(batch) == 1, f"a suspect comes alone, got {batch!r}"
                    back += batch
            assert sorted(_ids(back)) == sorted(ids)
            assert all(e.deliveries == 2 and e.suspect for e in back)
            await _nothing(restarted)
            late = await broker.publish(names.s, b"new")
            [new] = await _fetch_n(restarted, 1)
            assert (new.id, new.deliveries, new.suspect) == (late, 1, False)
            await _settle(restarted, *[(e, Ack()) for e in [*back, new]])
            await _nothing(restarted)
        finally:
            await restarted_broker.aclose()

    # -- dead letters and administration (21-23) ----------------------------------------

    async def test_dead_letters_can_be_listed_replayed_once_and_purged(
        self, broker: Broker[Any], names: _Names
    ) -> None:
        admin = _require_admin(broker)
        _require(broker, "dead_letters")
        c1 = await _ready(broker, names.g, "c1", names.s)
        await broker.publish_many(names.s, [b"one", b"two", b"three"], headers=HEADERS)
        one, two, three = await _fetch_n(c1, 3)
        await _settle(c1, (one, Retry()))
        [one] = await _fetch_n(c1, 1)
        await _settle(
            c1,
            (one, DeadLetter("first")),
            (two, DeadLetter("second")),
            (three, DeadLetter("third")),
        )
        records = await admin.dead_letters(names.s)
        assert [(r.payload, r.reason) for r in records] == [
            (b"one", "first"),
            (b"two", "second"),
            (b"three", "third"),
        ]
        assert _ids(await admin.dead_letters(names.s, limit=1)) == [records[0].id]
        assert (await admin.stats(names.s)).dead_letters == 3

        new_ids = await admin.replay(names.s, [records[0].id])
        assert len(new_ids) == 1
        [replayed] = await _fetch_n(c1, 1)
        assert (replayed.id, replayed.payload, dict(replayed.headers)) == (
            new_ids[0],
            b"one",
            HEADERS,
        )
        assert replayed.deliveries == 1
        assert await admin.replay(names.s, [records[0].id]) == []
        await _nothing(c1)
        assert _ids(await admin.dead_letters(names.s)) == [records[1].id, records[2].id]

        assert await admin.purge(names.s, [records[1].id]) == 1
        assert await admin.purge(names.s, [records[1].id]) == 0
        assert await admin.purge(names.s) == 1
        assert await admin.dead_letters(names.s) == []
        assert await admin.replay(names.s) == []

    async def test_a_replayed_dead_letter_goes_only_to_the_group_that_dead_lettered_it(
        self, broker: Broker[Any], names: _Names
    ) -> None:
        admin = _require_admin(broker)
        _require(broker, "dead_letters")
        c1 = await _ready(broker, names.g, "c1", names.s)
        billing = await _ready(broker, names.g2, "b1", names.s)
        await broker.publish(names.s, b"charge", headers=HEADERS)
        [m] = await _fetch_n(c1, 1)
        [charged] = await _fetch_n(billing, 1)
        await _settle(c1, (m, Retry()))
        [m] = await _fetch_n(c1, 1)
        await _settle(c1, (m, DeadLetter("smtp down")))
        await _settle(billing, (charged, Ack()))
        [new_id] = await admin.replay(names.s)
        [again] = await _fetch_n(c1, 1)
        assert (again.id, again.stream, again.payload, dict(again.headers)) == (
            new_id,
            names.s,
            b"charge",
            HEADERS,
        )
        assert again.deliveries == 1
        await _nothing(billing)  # a fan-out group that acked it must not charge twice
        groups = {g.group: g for g in (await admin.stats(names.s)).groups}
        assert (groups[names.g2].acked, groups[names.g2].lag, groups[names.g2].pending) == (
            1,
            0,
            0,
        )
        assert groups[names.g].pending == 1

    async def test_stats_put_every_published_message_in_exactly_one_bucket(
        self, broker: Broker[Any], names: _Names
    ) -> None:
        admin = _require_admin(broker)
        _require(broker, "dead_letters")
        caps = broker.capabilities
        later, retries = int(caps.delayed_publish), int(caps.delayed_retry)
        c1 = await _ready(broker, names.g, "c1", names.s)
        await _ready(broker, names.g2, "c9", names.s)
        await broker.publish_many(names.s, [str(i).encode() for i in range(7)])
        if later:
            await broker.publish(names.s, b"later", delay_ms=60_000)
        acked, dropped, dead, retried, *_ = await _fetch_n(c1, 6)
        outcomes: list[tuple[Envelope, Outcome]] = [
            (acked, Ack()),
            (dropped, Drop()),
            (dead, DeadLetter("x")),
        ]
        if retries:  # else it stays pending
            outcomes.append((retried, Retry(after_ms=60_000)))
        await _settle(c1, *outcomes)
        stats = await admin.stats(names.s)
        assert (stats.stream, stats.length, stats.delayed, stats.dead_letters) == (
            names.s,
            7,
            later,
            1,
        )
        by_group = {g.group: g for g in stats.groups}
        assert set(by_group) == {names.g, names.g2}
        g = by_group[names.g]
        assert (g.acked, g.dropped, g.dead_lettered, g.pending, g.lag, g.delayed) == (
            1,
            1,
            1,
            3 - retries,
            1,
            retries,
        )
        assert g.oldest_pending_ms is not None
        assert g.oldest_pending_ms >= 0
        if caps.lease_ms is None:  # a pending list per consumer name
            assert {c.name: c.pending for c in g.consumers}.get("c1") == 3 - retries
        g2 = by_group[names.g2]
        assert (g2.acked, g2.dropped, g2.dead_lettered, g2.pending, g2.lag, g2.delayed) == (
            0,
            0,
            0,
            0,
            7,
            0,
        )
        assert g2.oldest_pending_ms is None
        for group in stats.groups:
            buckets = (
                group.acked
                + group.dropped
                + group.dead_lettered
                + group.pending
                + group.lag
                + group.delayed
            )
            assert buckets + stats.delayed == 7 + later, group.group
        assert names.s in await admin.streams()

    async def test_trim_removes_only_what_every_group_has_acknowledged(
        self, harness: BrokerHarness, broker: Broker[Any], names: _Names
    ) -> None:
        admin = _require_admin(broker)
        await broker.publish(names.s, b"before any group")
        assert await admin.trim(names.s) == 0  # no group yet: nothing is acknowledged
        slow = await _ready(broker, names.g, "c1", names.s)
        fast = await _ready(broker, names.g2, "c1", names.s)
        await broker.publish_many(names.s, [str(i).encode() for i in range(5)])
        await _settle(fast, *[(e, Ack()) for e in await _fetch_n(fast, 6)])
        first, second = await _fetch_n(slow, 2)
        await _settle(slow, (first, Ack()))  # `second` stays pending; 4 are unread by g
        assert await admin.trim(names.s, dry_run=True) == 1
        assert (await admin.stats(names.s)).length == 6
        assert await admin.trim(names.s) == 1
        assert (await admin.stats(names.s)).length == 5
        assert await admin.trim(names.s) == 0
        # Nothing g has not acknowledged was lost: its pending one and its unread ones.
        if broker.capabilities.reclaim:
            await harness.advance(PAST_IDLE_MS)
            reclaimed = await slow.reclaim(IDLE_MS, 10)
            assert (_ids(reclaimed.envelopes), list(reclaimed.vanished)) == ([second.id], [])
            rest = [*reclaimed.envelopes, *await _fetch_n(slow, 4)]
        elif broker.capabilities.lease_ms is not None:  # the pending one comes back by itself
            await harness.advance(_past_lease(broker))
            rest = await _fetch_n(slow, 5, within_s=_redelivery_s(broker))
            assert [e.deliveries for e in rest if e.id == second.id] == [2]
        else:  # nothing takes it over: only the unread ones can show they were kept
            rest = [second, *await _fetch_n(slow, 4)]
        await _settle(slow, *[(e, Ack()) for e in rest])
        assert await admin.trim(names.s) == 5
        assert (await admin.stats(names.s)).length == 0

    # -- robustness (24-26) -------------------------------------------------------------

    async def test_foreign_entries_are_delivered_with_their_raw_fields_and_spoil_no_batch(
        self, harness: BrokerHarness, broker: Broker[Any], names: _Names
    ) -> None:
        c1 = await _ready(broker, names.g, "c1", names.s)
        if harness.any_fields:
            extra = [(b"payload", b"first"), (b"payload", b"second"), (b"\xff\xfe", b"\x80")]
            no_payload = [(b"something", b"else")]
            odd = b"\xff"
        else:  # what a body and a header map can carry: a body, unique UTF-8 names
            extra = [(b"payload", b"first"), (b"colour", b"blue")]
            no_payload = [(b"payload", b""), (b"something", b"else")]
            odd = b"never"
        garbage = [
            (b"payload", b"p"),
            (b"headers", b"{not json"),
            (b"deliveries", b"many"),
            (b"enqueued", odd),
        ]
        before = await broker.publish(names.s, b"ours", headers=HEADERS)
        foreign = [
            await _harness_can(harness.add_foreign(broker, names.s, f))
            for f in (extra, no_payload, garbage)
        ]
        after = await broker.publish(names.s, b"ours too")
        got = await c1.fetch(10, 0)
        assert _ids(got) == [before, *foreign, after]
        ours, dup, bare, junk, ours_too = got
        assert (ours.payload, dict(ours.headers)) == (b"ours", HEADERS)
        assert ours_too.payload == b"ours too"
        assert (dup.fields, dup.payload) == (extra, b"first")
        assert (bare.fields, bare.payload, dict(bare.headers)) == (no_payload, b"", {})
        assert (junk.fields, junk.payload, dict(junk.headers)) == (garbage, b"p", {})
        assert all(e.deliveries == 1 for e in got)
        assert junk.enqueued_ms > 0
        await _settle(c1, *[(e, Retry()) for e in got])
        again = await _fetch_n(c1, 5)
        assert all(e.deliveries == 2 for e in again)
        assert [e.payload for e in again] == [b"ours", b"first", b"", b"p", b"ours too"]

    async def test_closing_twice_is_harmless_and_use_after_close_raises_broker_closed(
        self, harness: BrokerHarness, broker: Broker[Any], names: _Names
    ) -> None:
        c1 = await _ready(broker, names.g, "c1", names.s)
        await c1.aclose()
        await c1.aclose()
        with pytest.raises(BrokerClosed):
            await c1.fetch(1, 0)
        other = await harness.connect()
        c2 = await _ready(other, names.g, "c2", names.s)
        await other.aclose()
        await other.aclose()
        with pytest.raises(BrokerClosed):
            await other.publish(names.s, b"x")
        with pytest.raises(BrokerClosed):
            await c2.fetch(1, 0)
        await c2.aclose()
        # Other handles are unaffected.
        c3 = await _ready(broker, names.g, "c3", names.s)
        entry_id = await broker.publish(names.s, b"still works")
        assert _ids(await _fetch_n(c3, 1)) == [entry_id]

    async def test_errors_are_pulses_errors_naming_stream_or_group_and_never_the_password(
        self, harness: BrokerHarness, names: _Names
    ) -> None:
        broker = await harness.connect()
        c1 = await _ready(broker, names.g, "c1", names.s)
        secret = harness.secret
        shown = [broker.url, repr(broker), repr(c1)]
        await c1.aclose()
        errors: list[tuple[PulsesError, str]] = []
        calls: list[tuple[Callable[[], Awaitable[object]], str]] = [
            (lambda: c1.fetch(1, 0), names.g),
            (lambda: c1.settle([]), names.g),
        ]
        if broker.capabilities.reclaim:
            calls.append((lambda: c1.reclaim(IDLE_MS, 1), names.g))
        for call, named in calls:
            with pytest.raises(PulsesError) as info:
                await call()
            errors.append((info.value, named))
        await broker.aclose()
        with pytest.raises(PulsesError) as published:
            await broker.publish(names.s, b"x")
        errors.append((published.value, names.s))
        for error, named in errors:
            assert named in str(error), f"{error!r} does not name {named!r}"
            shown.append(str(error))
        if secret:
            for text in shown:
                assert secret not in text, text

    # -- added after the first independent checks (27-30) ------------------------------

    async def test_a_silent_consumers_messages_are_taken_over_and_a_live_ones_are_not(
        self, harness: BrokerHarness, broker: Broker[Any], names: _Names
    ) -> None:
        _require(broker, "liveness", "reclaim")
        dies = await _ready(broker, names.g, "dies", names.s)
        lives = await _ready(broker, names.g, "lives", names.s)
        taker = await _ready(broker, names.g, "taker", names.s)
        await dies.heartbeat(IDLE_MS)
        await lives.heartbeat(100 * IDLE_MS)
        await taker.heartbeat(100 * IDLE_MS)
        ids = await broker.publish_many(names.s, [b"held by the dead", b"held by the living"])
        [orphan] = await _fetch_n(dies, 1)
        [running] = await _fetch_n(lives, 1)
        long_idle = 100 * IDLE_MS
        # Not yet lapsed: nothing is taken.
        assert list((await taker.reclaim(long_idle, 10)).envelopes) == []
        await harness.advance(PAST_IDLE_MS)
        # Lapsed, but within the grace a caller gives after an outage: still nothing.
        assert list((await taker.reclaim(long_idle, 10, grace_ms=long_idle)).envelopes) == []
        [taken] = (await taker.reclaim(long_idle, 10)).envelopes
        assert (taken.id, taken.deliveries, taken.suspect) == (ids[0], 2, True)
        assert orphan.id == taken.id
        # The living consumer's message is never taken by liveness ...
        await lives.heartbeat(100 * IDLE_MS)
        assert list((await taker.reclaim(long_idle, 10)).envelopes) == []
        # ... but alive and stuck (idle past min_idle) it is.
        [stuck] = (await taker.reclaim(IDLE_MS, 10)).envelopes
        assert (stuck.id, stuck.deliveries) == (running.id, 2)
        await _settle(taker, (taken, Ack()), (stuck, Ack()))
        if admin := _admin(broker):
            [group] = (await admin.stats(names.s)).groups
            alive = {c.name: c.alive for c in group.consumers}
            assert alive.get("dies") is False, alive
            assert alive.get("lives") is True, alive

    async def test_suspects_come_alone_so_a_poison_raises_only_its_own_count(
        self, harness: BrokerHarness, broker: Broker[Any], names: _Names
    ) -> None:
        _require_take_over(broker)
        first = await _ready(broker, names.g, "first", names.s)
        ids = await broker.publish_many(names.s, [b"poison", b"a", b"b", b"c"])
        await _fetch_n(first, 4)  # ... and its process dies
        await harness.advance(_past_lease(broker))
        second = await _ready(broker, names.g, "second", names.s)
        [poison] = await _taken_over(broker, second, 1)  # ... and kills it too
        assert (poison.id, poison.deliveries, poison.suspect) == (ids[0], 2, True)
        await harness.advance(_past_lease(broker))
        third = await _ready(broker, names.g, "third", names.s)
        seen = {e.id: e.deliveries for e in await _suspects_alone(broker, third, 4)}
        # The poison's two deaths raised its own count twice; its batch-mates' once.
        assert seen == {ids[0]: 3, ids[1]: 2, ids[2]: 2, ids[3]: 2}

    @pytest.mark.parametrize(
        "bad", ["a}b", "{}x", "x\ud800y", "", "line\nbreak", "nul\x00"], ids=repr
    )
    async def test_a_bad_name_is_refused_at_the_first_call_naming_the_argument(
        self, broker: Broker[Any], names: _Names, bad: str
    ) -> None:
        calls: list[tuple[str, Any]] = [
            ("stream", lambda: broker.publish(bad, b"x")),
            ("stream", lambda: broker.publish_many(bad, [b"x"])),
        ]
        for where, call in calls:
            with pytest.raises(InvalidName, match=where):
                await call()
        if "}" not in bad:  # a group or consumer name is no key: a '}' is fine there
            with pytest.raises(InvalidName, match="group"):
                broker.subscription(bad)
            with pytest.raises(InvalidName, match="consumer"):
                broker.subscription(names.g, consumer=bad)
        with pytest.raises(InvalidName, match="streams"):
            broker.consumer(broker.subscription(names.g), [names.s, bad], handler="h")
        # A name with a hash tag, spaces or any printable Unicode is fine everywhere.
        good = "{orders}:eü rope"
        await broker.publish(good, b"x")
        consumer = await _ready(broker, names.g, "c1", good)
        assert [e.payload for e in await _fetch_n(consumer, 1)] == [b"x"]

    async def test_foreign_fields_are_never_read_as_bookkeeping(
        self, harness: BrokerHarness, broker: Broker[Any], names: _Names
    ) -> None:
        c1 = await _ready(broker, names.g, "c1", names.s)
        lookalike = [
            (b"payload", b"p"),
            (b"deliveries", b"50"),
            (b"headers", b'{"a": "b"}'),
            (b"enqueued", b"5"),
            (b"id", b"x"),
        ]
        entry_id = await _harness_can(harness.add_foreign(broker, names.s, lookalike))
        [msg] = await _fetch_n(c1, 1)
        assert (msg.id, msg.payload, dict(msg.headers), msg.deliveries) == (
            entry_id,
            b"p",
            {},
            1,
        )
        assert msg.fields == lookalike
        assert msg.enqueued_ms != 5
        await _settle(c1, (msg, Retry()))
        [again] = await _fetch_n(c1, 1)
        assert (again.payload, dict(again.headers), again.deliveries) == (b"p", {}, 2)
        assert [f for f in again.fields if not f[0].startswith(b"pulses:")] == lookalike

    # -- typed messages, identity and idempotency (31-33) ----------------------------

    async def test_a_message_keeps_one_message_id_over_retry_reclaim_dead_letter_and_replay(
        self, harness: BrokerHarness, broker: Broker[Any], names: _Names
    ) -> None:
        admin = _require_admin(broker)
        _require(broker, "dead_letters")
        caps = broker.capabilities
        c1 = await _ready(broker, names.g, "c1", names.s)
        c2 = await _ready(broker, names.g, "c2", names.s)
        first = await broker.publish(names.s, b"one life")
        [m] = await _fetch_n(c1, 1)
        assert (m.id, m.message_id) == (first, first)
        await _settle(c1, (m, Retry()))
        [m] = await _fetch_n(c1, 1)
        assert m.message_id == first
        if caps.delayed_retry:
            await _settle(c1, (m, Retry(after_ms=IDLE_MS)))
            await harness.advance(PAST_IDLE_MS)
            [m] = await _fetch_n(c1, 1)
            assert m.message_id == first
        if caps.reclaim or caps.lease_ms is not None:
            await harness.advance(_past_lease(broker))
            [m] = await _taken_over(broker, c2, 1)
            assert m.message_id == first
        await _settle(c2, (m, DeadLetter("parked")))
        [record] = await admin.dead_letters(names.s)
        assert (record.message_id, record.original_id) == (first, m.id)
        await admin.replay(names.s, [record.id])
        [replayed] = await _fetch_n(c1, 1)
        assert replayed.message_id == first
        assert replayed.deliveries == 1
        if caps.delayed_publish:
            ticket = await broker.publish(names.s, b"later", delay_ms=IDLE_MS)
            await harness.advance(PAST_IDLE_MS)
            [later] = await _fetch_n(c1, 1)
            assert later.message_id == ticket != later.id

    async def test_a_publish_with_a_key_used_within_the_window_is_dropped_and_after_it_kept(
        self, harness: BrokerHarness, broker: Broker[Any], names: _Names
    ) -> None:
        c1 = await _ready(broker, names.g, "c1", names.s)
        first = await broker.publish(names.s, b"one", key="order-1")
        assert await broker.publish(names.s, b"one again", key="order-1") == first
        ids = await broker.publish_many(
            names.s,
            [b"dup", b"two", b"plain", b"two again"],
            keys=["order-1", "order-2", None, "order-2"],
        )
        assert ids[0] == first
        assert ids[1] == ids[3] != ids[2]
        assert [e.payload for e in await _fetch_n(c1, 3)] == [b"one", b"two", b"plain"]
        await _nothing(c1)
        # A key belongs to its stream.
        on_t = await _ready(broker, names.g, "c1", names.t)
        await broker.publish(names.t, b"elsewhere", key="order-1")
        assert [e.payload for e in await _fetch_n(on_t, 1)] == [b"elsewhere"]
        # After the window the key is free again.
        short = await broker.publish(names.s, b"short", key="k", key_window_ms=IDLE_MS)
        assert (
            await broker.publish(names.s, b"short again", key="k", key_window_ms=IDLE_MS) == short
        )
        await harness.advance(PAST_IDLE_MS)
        later = await broker.publish(names.s, b"after", key="k", key_window_ms=IDLE_MS)
        assert later != short
        assert [e.payload for e in await _fetch_n(c1, 2)] == [b"short", b"after"]
        await _nothing(c1)
        with pytest.raises(ValueError, match="keys for stream"):
            await broker.publish_many(names.s, [b"a", b"b"], keys=["only one"])

    async def test_a_payload_that_does_not_decode_is_dead_lettered_at_once_without_a_retry(
        self, broker: Broker[Any], names: _Names
    ) -> None:
        admin = _require_admin(broker)
        _require(broker, "dead_letters")
        points = Stream(names.s, _Point)
        as_msgpack = Stream(names.s, _Point, codec="msgpack")
        seen: list[_Point] = []

        class OnPoint(Handler[Broker[Any], _Point]):
            STREAM = points
            MAX_DELIVERIES = 3

            async def handle(self, ctx: Context[Broker[Any]], msg: Envelope[_Point]) -> Outcome:
                seen.append(msg.body)
                return Ack()

        await points.publish(broker, _Point(x=1))
        await broker.publish(names.s, b'{"x": "one"}')
        await broker.publish(names.s, b"\xff not json")
        await as_msgpack.publish(broker, _Point(x=2))
        app = App(broker, broker.subscription(names.g), block_ms=50).register(OnPoint())
        stats = (await run_until_drained(app, timeout=20)).total
        assert sorted(p.x for p in seen) == [1, 2]
        assert (stats.undecodable, stats.dead_lettered, stats.retried) == (2, 2, 0)
        assert (stats.handled, stats.failed) == (2, 0)
        records = await admin.dead_letters(names.s)
        assert [(r.payload, r.deliveries) for r in records] == [
            (b'{"x": "one"}', 1),
            (b"\xff not json", 1),
        ]
        assert "Expected `int`, got `str` - at `$.x`" in records[0].reason
        assert records[1].reason.startswith("PayloadError: ")
