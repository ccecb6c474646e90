"""What only the memory broker does: names, URLs, its clocks, handles and event loops."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import uuid

import pytest

import pulses
from pulses import (
    Ack,
    BrokerClosed,
    BrokerError,
    ConfigurationError,
    DeadLetter,
    Drop,
    InvalidURL,
    Outcome,
    Retry,
)
from pulses_memory import ManualClock, MemoryBroker, MemorySubscription


def _name() -> str:
    return f"n-{uuid.uuid4().hex[:8]}"


async def test_two_connects_with_one_name_share_data_and_close_independently() -> None:
    url = f"memory://{_name()}"
    producer = await MemoryBroker.connect(url)
    worker = await pulses.connect(url)  # through the plugin, by URL alone
    assert isinstance(worker, MemoryBroker)
    assert producer.url == worker.url == url
    consumer = worker.consumer(worker.subscription("g"), ["jobs"], handler="h")
    await consumer.ensure()
    entry_id = await producer.publish("jobs", b"hello")
    await producer.aclose()
    [envelope] = await consumer.fetch(10, 0)
    assert (envelope.id, envelope.payload) == (entry_id, b"hello")
    await consumer.settle([(envelope, Ack())])
    again = await MemoryBroker.connect(url)  # the data outlives every handle
    assert (await again.stats("jobs")).groups[0].acked == 1
    await worker.aclose()
    await again.aclose()


async def test_unnamed_brokers_keep_their_data_to_themselves() -> None:
    async with MemoryBroker() as one, MemoryBroker() as two:
        await one.publish("jobs", b"x")
        assert (await one.stats("jobs")).length == 1
        assert (await two.stats("jobs")).length == 0
        assert one.url != two.url
        shared = one.share()
        assert (await shared.stats("jobs")).length == 1
        assert shared.url == one.url
        await shared.aclose()
        await one.publish("jobs", b"y")  # closing a shared handle closes only it


@pytest.mark.parametrize(
    "url",
    [
        "memory://a/b",
        "memory://name?size=1",
        "memory://host:1234",
        "memory://user:s3cret@name",
        "memory:name",
        "redis://localhost",
    ],
)
async def test_a_bad_memory_url_is_an_invalid_url_error_naming_it_without_a_password(
    url: str,
) -> None:
    with pytest.raises(InvalidURL) as info:
        await MemoryBroker.connect(url)
    assert "s3cret" not in str(info.value)
    assert pulses.redact_url(url) in str(info.value)


async def test_one_name_runs_on_one_clock() -> None:
    name = _name()
    clock = ManualClock()
    first = MemoryBroker(name, clock=clock)
    assert MemoryBroker(name, clock=clock).clock is clock
    assert MemoryBroker(name).clock is clock
    with pytest.raises(ConfigurationError, match=name):
        MemoryBroker(name, clock=ManualClock())
    await first.aclose()


def test_manual_clock_moves_only_forward_by_whole_milliseconds() -> None:
    clock = ManualClock(start_ms=5_000)
    clock.advance(0)
    clock.advance(250)
    assert clock.now_ms() == 5_250
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="advance"):
            clock.advance(bad)  # type: ignore[arg-type]  # wrong on purpose


async def test_a_blocked_fetch_wakes_when_the_manual_clock_passes_a_delayed_message() -> None:
    clock = ManualClock()
    async with MemoryBroker(clock=clock) as broker:
        consumer = broker.consumer(broker.subscription("g"), ["jobs"], handler="h")
        await consumer.ensure()
        await broker.publish("jobs", b"later", delay_ms=500)
        fetch = asyncio.create_task(consumer.fetch(10, 60_000))
        await asyncio.sleep(0)
        clock.advance(499)
        await asyncio.sleep(0)
        assert not fetch.done()
        clock.advance(1)
        [envelope] = await asyncio.wait_for(fetch, 5)
        assert envelope.payload == b"later"
        assert envelope.enqueued_ms == clock.now_ms()


async def test_a_blocked_fetch_on_real_time_wakes_when_a_retry_falls_due() -> None:
    async with MemoryBroker() as broker:
        consumer = broker.consumer(broker.subscription("g"), ["jobs"], handler="h")
        await consumer.ensure()
        await broker.publish("jobs", b"again")
        [first] = await consumer.fetch(1, 0)
        fetch = asyncio.create_task(consumer.fetch(10, 10_000))
        await asyncio.sleep(0)
        await consumer.settle([(first, pulses.Retry(after_ms=30))])
        [again] = await asyncio.wait_for(fetch, 5)  # long before block_ms
        assert again.deliveries == 2


async def test_closing_a_consumer_or_its_broker_ends_a_waiting_fetch_with_broker_closed() -> None:
    async with MemoryBroker(clock=ManualClock()) as broker:
        for close in ("consumer", "broker"):
            handle = broker.share()
            consumer = handle.consumer(handle.subscription("g"), ["jobs"], handler="h")
            await consumer.ensure()
            fetch = asyncio.create_task(consumer.fetch(10, 60_000))
            await asyncio.sleep(0)
            await (consumer.aclose() if close == "consumer" else handle.aclose())
            with pytest.raises(BrokerClosed, match="'g'"):
                await asyncio.wait_for(fetch, 5)


async def test_fetch_before_the_group_exists_names_group_and_stream() -> None:
    async with MemoryBroker() as broker:
        consumer = broker.consumer(broker.subscription("late"), ["jobs"], handler="h")
        with pytest.raises(BrokerError, match=r"'late'.*'jobs'"):
            await consumer.fetch(1, 0)


async def test_consumer_arguments_are_checked_with_errors_naming_them() -> None:
    async with MemoryBroker() as broker:
        subscription = broker.subscription("g")
        for streams in ("jobs", [], ["jobs", ""], ["jobs", "jobs"]):
            with pytest.raises(ConfigurationError, match="streams"):
                broker.consumer(subscription, streams, handler="h")
        with pytest.raises(ConfigurationError, match="MemorySubscription"):
            broker.consumer(object(), ["jobs"], handler="h")  # type: ignore[arg-type]  # on purpose
        with pytest.raises(ConfigurationError, match="group"):
            MemorySubscription("")
    assert MemorySubscription("g").consumer != MemorySubscription("g").consumer


def test_a_named_broker_outlives_the_event_loops_that_used_it() -> None:
    name = _name()

    async def leave_a_fetch_waiting() -> None:
        broker = MemoryBroker(name)
        consumer = broker.consumer(broker.subscription("g"), ["jobs"], handler="h")
        await consumer.ensure()
        asyncio.get_running_loop().create_task(consumer.fetch(10, 60_000))
        await asyncio.sleep(0)  # the fetch now waits; then this loop ends under it

    async def use_it_again() -> bytes:
        broker = MemoryBroker(name)
        consumer = broker.consumer(broker.subscription("g"), ["jobs"], handler="h")
        await consumer.ensure()
        fetch = asyncio.create_task(consumer.fetch(10, 60_000))
        await asyncio.sleep(0)
        await broker.publish("jobs", b"next loop")  # wakes this loop's waiter only
        [envelope] = await asyncio.wait_for(fetch, 5)
        return envelope.payload

    asyncio.run(leave_a_fetch_waiting())
    assert asyncio.run(use_it_again()) == b"next loop"


async def test_a_publish_from_another_thread_and_loop_wakes_a_waiting_fetch() -> None:
    name = _name()
    broker = MemoryBroker(name)
    consumer = broker.consumer(broker.subscription("g"), ["jobs"], handler="h")
    await consumer.ensure()
    fetch = asyncio.create_task(consumer.fetch(10, 60_000))
    await asyncio.sleep(0)
    thread = threading.Thread(
        target=lambda: asyncio.run(MemoryBroker(name).publish("jobs", b"from a thread"))
    )
    thread.start()
    [envelope] = await asyncio.wait_for(fetch, 5)
    thread.join()
    assert envelope.payload == b"from a thread"
    await broker.aclose()


async def test_the_test_helpers_add_foreign_entries_and_delete_entries() -> None:
    from pulses_memory.testing import add_foreign, delete_entry

    async with MemoryBroker() as broker:
        entry_id = await broker.publish("jobs", b"x")
        assert await delete_entry(broker, "jobs", entry_id)
        assert not await delete_entry(broker, "jobs", entry_id)
        assert not await delete_entry(broker, "jobs", "not-an-id")
        assert not await delete_entry(broker, "nowhere", entry_id)
        with pytest.raises(TypeError, match="jobs"):
            await add_foreign(broker, "jobs", [(b"odd",)])  # type: ignore[list-item]  # wrong on purpose
        foreign = await add_foreign(broker, "jobs", [(b"user", b"42")])
        assert not hasattr(broker, "add_raw")
        assert foreign > entry_id


def test_the_plugin_module_imports_nothing_beyond_pulses_and_the_standard_library() -> None:
    code = (
        "import sys; import pulses; before = set(sys.modules); "
        "import pulses_memory._plugin; "
        "print(sorted(m for m in set(sys.modules) - before if not m.startswith('pulses_memory')"
        " and m not in sys.stdlib_module_names and not m.startswith('_')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


async def test_settled_entries_of_a_retry_stream_are_deleted_as_redis_does() -> None:
    broker = MemoryBroker()
    consumer = broker.consumer(MemorySubscription("g", "c"), ["s"], handler="H")
    await consumer.ensure()
    await broker.publish_many("s", [b"ack", b"drop", b"dead", b"retry"])
    batch = list(await consumer.fetch(10, 0))
    await consumer.settle([(env, Retry()) for env in batch])
    again = list(await consumer.fetch(10, 0))
    assert [e.payload for e in again] == [b"ack", b"drop", b"dead", b"retry"]
    outcomes: list[Outcome] = [Ack(), Drop(), DeadLetter("x"), Retry()]
    await consumer.settle(list(zip(again, outcomes, strict=True)))
    retry_stream = broker._store.retries["s:retry:g"]
    [last] = await consumer.fetch(10, 0)
    assert len(retry_stream.keys) == len(retry_stream.entries) == 1  # only the new retry
    await consumer.settle([(last, Ack())])
    assert retry_stream.keys == []
    assert retry_stream.entries == {}
