"""Retention on the memory broker: the same rule as on Redis (a history, and never an
entry some group has not acknowledged), by a running app and by ``trim``."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable

import click
import pytest
from click.testing import CliRunner

from pulses import (
    Ack,
    App,
    BrokerError,
    CancellationToken,
    ConfigurationError,
    Context,
    DeadLetter,
    Envelope,
    Handler,
    Outcome,
    Retention,
    Retry,
)
from pulses._retention import start_keeper, stop_keeper
from pulses.cli import _retention, main
from pulses_memory import ManualClock, MemoryBroker, MemoryConsumer, SystemClock

DEADLINE = 10.0


async def _wait(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def _fetch(consumer: MemoryConsumer, n: int) -> list[Envelope]:
    got: list[Envelope] = []
    while len(got) < n:
        got += await consumer.fetch(n - len(got), 0)
    return got


def _ids(broker: MemoryBroker, stream: str) -> list[str]:
    target = broker._store.streams[stream]
    return [target.entries[key][0] for key in target.keys]


async def test_trim_leaves_the_newest_entries_and_everything_a_group_has_not_acknowledged() -> None:
    async with MemoryBroker() as broker:
        ahead = broker.consumer(broker.subscription("ahead"), ["jobs"], handler="H")
        behind = broker.consumer(broker.subscription("behind"), ["jobs"], handler="H")
        await ahead.ensure()
        await behind.ensure()
        ids = await broker.publish_many("jobs", [str(i).encode() for i in range(100)])
        await ahead.settle([(e, Ack()) for e in await _fetch(ahead, 100)])
        read = await _fetch(behind, 50)
        await behind.settle([(e, Ack()) for e in read[:40]])

        assert await broker.trim("jobs", keep=80, dry_run=True) == 20
        assert await broker.trim("jobs", keep=80) == 20
        assert _ids(broker, "jobs") == ids[20:]
        assert await broker.trim("jobs", keep=5) == 20  # 40-49 pending, 50-99 unread
        assert _ids(broker, "jobs") == ids[40:]
        trimmed = (await broker.stats("jobs")).trimmed
        assert trimmed is not None
        assert (trimmed.removed, trimmed.last_removed, trimmed.keep, trimmed.keep_ms) == (
            40,
            20,
            5,
            None,
        )


async def test_trim_by_age_keeps_entries_younger_than_keep_ms() -> None:
    clock = ManualClock(start_ms=1_000_000)
    async with MemoryBroker(clock=clock) as broker:
        consumer = broker.consumer(broker.subscription("g"), ["jobs"], handler="H")
        await consumer.ensure()
        await broker.publish_many("jobs", [b"old"] * 10)
        clock.advance(3_600_000)
        await broker.publish_many("jobs", [b"new"] * 5)
        await consumer.settle([(e, Ack()) for e in await _fetch(consumer, 15)])
        clock.advance(1000)

        assert await broker.trim("jobs", keep_ms=60_000, dry_run=True) == 10
        assert await broker.trim("jobs", keep_ms=60_000) == 10
        assert (await broker.stats("jobs")).length == 5
        trimmed = (await broker.stats("jobs")).trimmed
        assert trimmed is not None
        assert (trimmed.keep, trimmed.keep_ms, trimmed.last_ago_ms) == (None, 60_000, 0)


async def test_a_bad_history_is_refused_naming_it() -> None:
    async with MemoryBroker() as broker:
        with pytest.raises(ValueError, match="not both"):
            await broker.trim("jobs", keep=1, keep_ms=1)
        with pytest.raises(TypeError, match="keep"):
            await broker.trim("jobs", keep=True)
    with pytest.raises(ConfigurationError, match=r"Retention\.interval_ms"):
        Retention(keep=1, interval_ms=0)
    with pytest.raises(ConfigurationError, match="keep_ms must be >= 0"):
        Retention(keep_ms=-1)
    broker = MemoryBroker()
    with pytest.raises(ConfigurationError, match=r"App\.retention"):
        App(broker, broker.subscription("g"), retention=1000)  # type: ignore[arg-type]  # the point


class _Jobs(Handler[MemoryBroker]):
    STREAMS = ("jobs",)
    RETRY_BACKOFF_MS = RETRY_BACKOFF_MAX_MS = 0

    async def handle(self, ctx: Context[MemoryBroker], msg: Envelope) -> Outcome:
        # Every tenth message once more: retries, on their own stream, never block a trim.
        return Retry() if msg.deliveries == 1 and msg.payload.endswith(b"0") else Ack()


async def test_a_running_app_keeps_its_stream_within_the_history_and_a_lagging_group_whole() -> (
    None
):
    async with MemoryBroker() as broker:
        slow = broker.consumer(broker.subscription("slow"), ["jobs"], handler="H")
        await slow.ensure()
        ids = await broker.publish_many("jobs", [str(i).encode() for i in range(1000)])
        app = App(
            broker, broker.subscription("fast"), retention=Retention(keep=100, interval_ms=10)
        ).register(_Jobs())
        token = CancellationToken()
        run = asyncio.create_task(app.run(token))
        try:

            async def fast_done() -> bool:
                stats = await broker.stats("jobs")
                fast = [(g.lag, g.pending, g.acked) for g in stats.groups if g.group == "fast"]
                return fast == [(0, 0, 1000)]

            await _wait("the app to handle every message", fast_done)
            target = broker._store.streams["jobs"]
            for _ in range(3):  # trims after that one: none may touch what "slow" needs
                seen = target.trims

                async def trimmed_again(seen: object = seen) -> bool:
                    return target.trims is not seen

                await _wait("another trim", trimmed_again)
            assert _ids(broker, "jobs") == ids
            read = await _fetch(slow, 600)
            await slow.settle([(e, Ack()) for e in read[:500]])  # 500-599 stay pending

            async def trimmed() -> bool:
                return _ids(broker, "jobs") == ids[500:]

            await _wait("the trim up to the lagging group's oldest pending entry", trimmed)
            await slow.settle([(e, Ack()) for e in read[500:]])
            await slow.settle([(e, Ack()) for e in await _fetch(slow, 400)])

            async def within_history() -> bool:
                return _ids(broker, "jobs") == ids[-100:]

            await _wait("the trim down to the history", within_history)
        finally:
            token.cancel()
            await run


async def test_with_retention_off_a_running_app_trims_nothing() -> None:
    async with MemoryBroker() as broker:
        await broker.publish_many("jobs", [b"x"] * 300)
        app = App(broker, broker.subscription("g"), retention=None).register(_Jobs())
        token = CancellationToken()
        run = asyncio.create_task(app.run(token))
        try:

            async def done() -> bool:
                groups = (await broker.stats("jobs")).groups
                return bool(groups) and groups[0].acked == 300

            await _wait("every message to be handled", done)
        finally:
            token.cancel()
            await run
        stats = await broker.stats("jobs")
        assert (stats.length, stats.trimmed) == (300, None)


def test_info_shows_what_trims_removed_and_the_history_they_kept() -> None:
    name = f"retention-{uuid.uuid4().hex[:8]}"

    async def setup() -> None:
        broker = MemoryBroker(name)
        consumer = broker.consumer(broker.subscription("g"), ["orders"], handler="H")
        await consumer.ensure()
        await broker.publish_many("orders", [b"x"] * 30)
        await consumer.settle([(e, Ack()) for e in await _fetch(consumer, 30)])

    asyncio.run(setup())
    runner = CliRunner()
    before = runner.invoke(main, ["info", f"memory://{name}", "orders"])
    assert "  never trimmed\n" in before.output
    trimmed = runner.invoke(main, ["trim", f"memory://{name}", "orders", "--keep", "10"])
    assert (trimmed.exit_code, trimmed.output) == (0, "removed 20 acknowledged entries of orders\n")
    line = runner.invoke(main, ["info", f"memory://{name}", "orders"]).output.splitlines()[1]
    assert line.startswith("  trimmed 20 in total, 20 by the last trim ")
    assert line.endswith(" ago, which kept the newest 10 entries")
    trimmed = runner.invoke(main, ["trim", f"memory://{name}", "orders"])
    assert trimmed.exit_code == 0, trimmed.output
    line = runner.invoke(main, ["info", f"memory://{name}", "orders"]).output.splitlines()[1]
    assert line.startswith("  trimmed 30 in total, 10 by the last trim ")
    assert line.endswith(" ago, which kept no acknowledged entry")
    bad = runner.invoke(main, ["trim", f"memory://{name}", "orders", "--keep", "a day"])
    assert bad.exit_code != 0
    assert "'--keep'" in bad.output


@pytest.mark.parametrize(
    ("spec", "retention"),
    [
        ("off", None),
        ("1000", Retention(keep=1000)),
        ("24h", Retention(keep_ms=86_400_000)),
        ("1.5s", Retention(keep_ms=1500)),
        ("250ms", Retention(keep_ms=250)),
    ],
)
def test_worker_retention_option_reads_off_a_count_or_an_age(
    spec: str, retention: Retention | None
) -> None:
    assert _retention(spec) == retention


def test_worker_retention_option_refuses_anything_else_naming_the_forms() -> None:
    with pytest.raises(click.BadParameter, match="neither off, a count"):
        _retention("a day")


class _Flaky(MemoryBroker):
    """Trims fail the first three times, as while Redis restarts."""

    failures = 3

    async def trim(
        self,
        stream: str,
        *,
        dry_run: bool = False,
        keep: int | None = None,
        keep_ms: int | None = None,
    ) -> int:
        if self.failures:
            self.failures -= 1
            raise BrokerError("connection refused")
        return await super().trim(stream, dry_run=dry_run, keep=keep, keep_ms=keep_ms)


async def test_a_failing_trim_is_logged_once_and_its_recovery_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "pulses.retention")
    async with _Flaky() as broker:
        consumer = broker.consumer(broker.subscription("g"), ["jobs"], handler="H")
        await consumer.ensure()
        await broker.publish_many("jobs", [b"x"] * 5)
        await consumer.settle([(e, Ack()) for e in await _fetch(consumer, 5)])
        token = CancellationToken()
        keeper = start_keeper(
            broker, ["jobs"], Retention(keep=0, interval_ms=5), SystemClock(), token
        )

        async def trimmed() -> bool:
            return (await broker.stats("jobs")).length == 0

        await _wait("a trim after the failures", trimmed)
        token.cancel()
        await stop_keeper(keeper)
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno > logging.INFO]
    assert lines == [
        (
            "WARNING",
            "retention: trimming stream jobs failed, trying again every 0.005s: "
            "BrokerError: connection refused",
        )
    ]
    assert "retention: trimming stream jobs works again" in caplog.messages


async def test_a_trim_leaves_delayed_retries_and_dead_letters_whole() -> None:
    async with MemoryBroker() as broker:
        consumer = broker.consumer(broker.subscription("g"), ["jobs"], handler="H")
        await consumer.ensure()
        await broker.publish_many("jobs", [b"later", b"dead", b"done"])
        got = await _fetch(consumer, 3)
        await consumer.settle(
            [(got[0], Retry(60_000)), (got[1], DeadLetter("bad")), (got[2], Ack())]
        )

        assert await broker.trim("jobs") == 3
        stats = await broker.stats("jobs")
        assert (stats.length, stats.groups[0].delayed, stats.dead_letters) == (0, 1, 1)
        await broker.replay("jobs")
        [again] = await _fetch(consumer, 1)
        assert (again.payload, again.deliveries) == (b"dead", 1)
