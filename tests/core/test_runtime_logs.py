"""What the runtime logs: one WARNING line per dead letter, with its fields; a broker that
cannot be reached at start, at once and then every 30 seconds until it can."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from pulses import (
    Ack,
    App,
    CancellationToken,
    ConnectionLost,
    Context,
    DeadLetter,
    Envelope,
    Handler,
    Outcome,
    Retry,
)
from pulses._runtime import REMIND_EVERY
from pulses.broker import Consumer
from pulses.testing import run_until_drained
from pulses_memory import ManualClock, MemoryBroker


@pytest.fixture
async def broker() -> AsyncIterator[MemoryBroker]:
    async with MemoryBroker() as broker:
        yield broker


@pytest.fixture
def stream() -> str:
    return f"logs-{uuid.uuid4().hex[:8]}"


def dead_letter_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "dead-lettered message" in r.getMessage()]


async def run(broker: MemoryBroker, handler: Handler[Any, Any]) -> None:
    app = App(broker, broker.subscription("loggers"), block_ms=20).register(handler)
    await run_until_drained(app)


async def test_a_returned_dead_letter_is_one_warning_naming_handler_stream_id_and_reason(
    broker: MemoryBroker, stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    class Judge(Handler[MemoryBroker]):
        STREAMS = (stream,)

        async def handle(self, ctx: Context[MemoryBroker], msg: Envelope) -> Outcome:
            return DeadLetter("customer unknown") if msg.payload == b"bad" else Ack()

    ids = await broker.publish_many(stream, [b"ok", b"bad", b"ok"])
    with caplog.at_level(logging.DEBUG, "pulses"):
        await run(broker, Judge())
    [line] = dead_letter_lines(caplog)
    assert line.levelno == logging.WARNING
    assert line.name == "pulses.runtime"
    assert line.getMessage() == (
        f"handler Judge dead-lettered message {ids[1]} of {stream} after 1 deliveries: "
        "customer unknown"
    )
    fields = {k: getattr(line, k) for k in ("handler", "stream", "message_id", "deliveries")}
    assert fields == {"handler": "Judge", "stream": stream, "message_id": ids[1], "deliveries": 1}
    assert line.reason == "customer unknown"  # type: ignore[attr-defined]  # a logging extra
    # Acknowledged messages log nothing at WARNING or above.
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == [line]


async def test_failures_up_to_max_deliveries_end_in_one_line_with_the_last_error(
    broker: MemoryBroker, stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    class Failing(Handler[MemoryBroker]):
        STREAMS = (stream,)
        MAX_DELIVERIES = 3
        RETRY_BACKOFF_MS = RETRY_BACKOFF_MAX_MS = 1

        async def handle(self, ctx: Context[MemoryBroker], msg: Envelope) -> Outcome:
            raise ValueError(f"boom on delivery {msg.deliveries}")

    [message_id] = await broker.publish_many(stream, [b"x"])
    with caplog.at_level(logging.WARNING, "pulses"):
        await run(broker, Failing())
    [line] = dead_letter_lines(caplog)
    assert line.message_id == message_id  # type: ignore[attr-defined]  # a logging extra
    assert line.deliveries == 3  # type: ignore[attr-defined]  # a logging extra
    assert line.reason.startswith("ValueError: boom on delivery 3")  # type: ignore[attr-defined]  # a logging extra


async def test_a_retry_past_max_deliveries_and_garbage_are_logged_too(
    broker: MemoryBroker, stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    class Stubborn(Handler[MemoryBroker]):
        STREAMS = (stream,)
        MAX_DELIVERIES = 2

        async def handle(self, ctx: Context[MemoryBroker], msg: Envelope) -> Outcome:
            if msg.payload == b"garbage":
                return "done"  # type: ignore[return-value]  # not an Outcome, on purpose
            return Retry()

    await broker.publish_many(stream, [b"retry", b"garbage"])
    with caplog.at_level(logging.WARNING, "pulses"):
        await run(broker, Stubborn())
    reasons = sorted(r.reason for r in dead_letter_lines(caplog))  # type: ignore[attr-defined]  # a logging extra
    assert len(reasons) == 2
    assert "returned str, not an Outcome" in reasons[0]
    assert "more than MAX_DELIVERIES=2 allows" in reasons[1]


@dataclass
class Point:
    x: int
    y: int


async def test_an_undecodable_payload_is_logged_as_a_dead_letter(
    broker: MemoryBroker, stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    class Plot(Handler[MemoryBroker, Point]):
        STREAMS = (stream,)

        async def handle(self, ctx: Context[MemoryBroker], msg: Envelope[Point]) -> Outcome:
            return Ack()

    await broker.publish_many(stream, [b"not json"])
    with caplog.at_level(logging.WARNING, "pulses"):
        await run(broker, Plot())
    [line] = dead_letter_lines(caplog)
    assert line.reason.startswith("PayloadError:")  # type: ignore[attr-defined]  # a logging extra


class FailingSettles:
    """A consumer whose first ``failures`` settles raise, as a dropped connection would."""

    def __init__(self, inner: Consumer, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def settle(self, items: Sequence[tuple[Envelope, Outcome]]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionLost("connection lost during settle")
        await self.inner.settle(items)


class FlakySettleBroker(MemoryBroker):
    failures: ClassVar[int] = 0

    def consumer(self, subscription: Any, streams: Sequence[str], *, handler: str) -> Any:
        inner = super().consumer(subscription, streams, handler=handler)
        return FailingSettles(inner, self.failures)


async def test_the_line_is_logged_once_after_the_dead_letter_is_stored(
    stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    class Reject(Handler[Any]):
        STREAMS = (stream,)

        async def handle(self, ctx: Context[Any], msg: Envelope) -> Outcome:
            return DeadLetter("rejected")

    FlakySettleBroker.failures = 2
    async with FlakySettleBroker() as broker:
        await broker.publish(stream, b"x")
        with caplog.at_level(logging.WARNING, "pulses"):
            stats = await run_until_drained(
                App(broker, broker.subscription("loggers"), block_ms=20).register(Reject())
            )
        stored = await broker.dead_letters(stream)
    assert stats.total.dead_lettered == 1
    assert len(stored) == 1
    assert len(dead_letter_lines(caplog)) == 1
    settle_failure = next(r for r in caplog.records if "settle failed" in r.getMessage())
    # The settle failed first: the dead-letter line comes after it, not before.
    assert caplog.records.index(settle_failure) < caplog.records.index(dead_letter_lines(caplog)[0])


class DownAtStart(MemoryBroker):
    """A broker that refuses to create groups while ``down``, as an unreachable one would."""

    down: ClassVar[bool] = True

    def consumer(self, subscription: Any, streams: Sequence[str], *, handler: str) -> Any:
        return Unreachable(super().consumer(subscription, streams, handler=handler))


class Unreachable:
    def __init__(self, inner: Consumer) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def ensure(self) -> None:
        if DownAtStart.down:
            raise ConnectionLost("connecting to 127.0.0.1:6379: Connection refused")
        await self.inner.ensure()


async def advance(clock: ManualClock, ms: int, steps: int) -> None:
    """Move ``clock`` by ``ms`` ``steps`` times, letting every task run in between."""
    for _ in range(steps):
        clock.advance(ms)
        for _ in range(20):
            await asyncio.sleep(0)


def test_the_reminder_interval_users_get_is_30_seconds() -> None:
    assert REMIND_EVERY == 30.0


async def test_a_broker_unreachable_at_start_is_reported_at_once_then_every_30s(
    stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    class Count(Handler[Any]):
        STREAMS = (stream,)

        async def handle(self, ctx: Context[Any], msg: Envelope) -> Outcome:
            return Ack()

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    clock = ManualClock()
    DownAtStart.down = True
    async with DownAtStart(clock=clock) as broker:
        app = App(broker, broker.subscription("g"), clock=clock).register(Count())
        token = CancellationToken()
        with caplog.at_level(logging.WARNING, "pulses.runtime"):
            run = asyncio.create_task(app.run(token))
            await wait_for(lambda: len(warnings()) == 1)
            assert warnings() == [
                "handler Count: creating the consumer group failed, retrying with backoff: "
                "ConnectionLost: connecting to 127.0.0.1:6379: Connection refused"
            ]
            await advance(clock, 250, 4 * 95)  # 95 seconds of a broker that stays down
            reminders = warnings()[1:]
            assert len(reminders) == 3, reminders
            for n, line in enumerate(reminders, 1):
                found = re.fullmatch(
                    r"handler Count: creating the consumer group still failing for (\d+)s "
                    r"\(\d+ attempts\), retrying: ConnectionLost: .*Connection refused",
                    line,
                )
                assert found is not None, line
                # On the 30 s grid, late by at most one backoff (5 s), never drifting.
                assert 30 * n <= int(found[1]) <= 30 * n + 5, reminders
            DownAtStart.down = False
            await advance(clock, 250, 4 * 6)
            await wait_for(lambda: "works again" in warnings()[-1])
            assert len(warnings()) == 5
            token.cancel()
            await run


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109  (a deadline for the whole wait)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.005)
