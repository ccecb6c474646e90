"""Middleware: the chains it builds, what it sees, and that a failing one loses nothing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pulses import (
    Ack,
    App,
    CallHandle,
    CallPublish,
    CallSettle,
    ConfigurationError,
    Context,
    Envelope,
    Handler,
    Middleware,
    Outcome,
    Publishing,
    Retry,
    Stream,
    observe_publishes,
    run_until_drained,
)
from pulses._middleware import chain_handle
from pulses_memory import MemoryBroker

jobs = Stream("jobs", str)


class Recorder(Middleware):
    """Writes what it sees to a shared log, named."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def handle(self, ctx: Context[Any], msg: Envelope[Any], call_next: CallHandle) -> Outcome:
        self.log.append(f"{self.name} before {msg.body}")
        try:
            outcome = await call_next(ctx, msg)
        except Exception as exc:
            self.log.append(f"{self.name} saw {type(exc).__name__}")
            raise
        self.log.append(f"{self.name} after {type(outcome).__name__}")
        return outcome

    async def settle(
        self,
        ctx: Context[Any],
        batch: Sequence[tuple[Envelope[Any], Outcome]],
        call_next: CallSettle,
    ) -> None:
        self.log.append(f"{self.name} settles {len(batch)} for {ctx.group}")
        await call_next(batch)

    async def publish(self, publishing: Publishing, call_next: CallPublish) -> list[str]:
        publishing.headers[self.name] = str(publishing.count)
        self.log.append(f"{self.name} publishes to {publishing.stream}")
        return await call_next()


class Echo(Handler[MemoryBroker, str]):
    STREAM = jobs
    RETRY_BACKOFF_MS = 0
    RETRY_BACKOFF_MAX_MS = 0
    seen: ClassVar[list[tuple[str, dict[str, str]]]]

    async def handle(self, ctx: Context[MemoryBroker], msg: Envelope[str]) -> Outcome:
        self.seen.append((msg.body, dict(msg.headers)))
        if msg.body == "boom":
            raise RuntimeError("boom")
        return Ack()


@pytest.fixture(autouse=True)
def fresh_seen() -> None:
    Echo.seen = []


def app_with(*middleware: Middleware) -> App[MemoryBroker]:
    broker = MemoryBroker()
    return App(broker, broker.subscription("g"), middleware=middleware).register(Echo())


async def test_the_first_middleware_is_the_outermost_around_handle_settle_and_publish() -> None:
    log: list[str] = []
    app = app_with(Recorder("a", log), Recorder("b", log))
    await jobs.publish(app.broker, "x")
    await run_until_drained(app)
    assert log == [
        "a publishes to jobs",
        "b publishes to jobs",
        "a before x",
        "b before x",
        "b after Ack",
        "a after Ack",
        "a settles 1 for g",
        "b settles 1 for g",
    ]
    assert Echo.seen == [("x", {"a": "1", "b": "1"})]


async def test_publish_hooks_run_for_publish_many_and_context_publish() -> None:
    log: list[str] = []
    app = app_with(Recorder("a", log))
    await jobs.publish_many(app.broker, ["x", "y"], headers={"kept": "yes"})

    class Forward(Handler[MemoryBroker, str]):
        STREAMS = ("incoming",)

        async def handle(self, ctx: Context[MemoryBroker], msg: Envelope[str]) -> Outcome:
            await ctx.publish("jobs", b"z")
            return Ack()

    app.register(Forward())
    await app.broker.publish("incoming", b"w")  # the raw call: no hooks
    await run_until_drained(app)
    assert sorted(Echo.seen) == [
        ("x", {"a": "2", "kept": "yes"}),
        ("y", {"a": "2", "kept": "yes"}),
        ("z", {"a": "1"}),
    ]


async def test_a_handler_exception_passes_through_middleware_to_the_retry_policy() -> None:
    log: list[str] = []
    app = app_with(Recorder("a", log))
    Echo.MAX_DELIVERIES = 2
    try:
        await jobs.publish(app.broker, "boom")
        stats = await run_until_drained(app)
    finally:
        del Echo.MAX_DELIVERIES
    assert [line for line in log if "saw" in line] == ["a saw RuntimeError"] * 2
    assert (stats.total.failed, stats.total.retried, stats.total.dead_lettered) == (2, 1, 1)


class FailsFirst(Middleware):
    """Raises on each message's first delivery; lets the later ones through."""

    async def handle(self, ctx: Context[Any], msg: Envelope[Any], call_next: CallHandle) -> Outcome:
        if msg.deliveries == 1:
            raise ValueError("middleware failed")
        return await call_next(ctx, msg)


async def test_a_middleware_that_raises_fails_the_delivery_and_the_message_is_retried() -> None:
    app = app_with(FailsFirst())
    await jobs.publish_many(app.broker, ["x", "y"])
    stats = await run_until_drained(app)
    assert sorted(body for body, _ in Echo.seen) == ["x", "y"]  # each ran once, on retry
    total = stats.total
    assert (total.failed, total.retried, total.acked, total.handled) == (2, 2, 2, 4)


class ReturnsNone(Middleware):
    async def handle(self, ctx: Context[Any], msg: Envelope[Any], call_next: CallHandle) -> Outcome:
        await call_next(ctx, msg)
        return None  # type: ignore[return-value]  # the mistake under test


async def test_a_middleware_that_returns_no_outcome_fails_the_delivery() -> None:
    app = app_with(ReturnsNone())
    Echo.MAX_DELIVERIES = 1
    try:
        await jobs.publish(app.broker, "x")
        stats = await run_until_drained(app)
    finally:
        del Echo.MAX_DELIVERIES
    assert (stats.total.failed, stats.total.dead_lettered, stats.total.acked) == (1, 1, 0)


class SettleFailsOnce(Middleware):
    def __init__(self) -> None:
        self.calls = 0

    async def settle(
        self,
        ctx: Context[Any],
        batch: Sequence[tuple[Envelope[Any], Outcome]],
        call_next: CallSettle,
    ) -> None:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("settle middleware failed")
        await call_next(batch)


async def test_a_settle_middleware_that_raises_has_the_batch_settled_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    middleware = SettleFailsOnce()
    app = app_with(middleware)
    await jobs.publish(app.broker, "x")
    stats = await run_until_drained(app)
    assert stats.total.acked == 1
    assert middleware.calls == 2
    assert "settle failed, retrying with backoff" in caplog.text


async def test_retry_outcome_keeps_the_headers_a_publish_hook_added() -> None:
    class RetryOnce(Handler[MemoryBroker, str]):
        STREAM = jobs
        RETRY_BACKOFF_MS = 0
        RETRY_BACKOFF_MAX_MS = 0

        async def handle(self, ctx: Context[MemoryBroker], msg: Envelope[str]) -> Outcome:
            Echo.seen.append((msg.body, dict(msg.headers)))
            return Ack() if msg.deliveries > 1 else Retry()

    broker = MemoryBroker()
    app = App(broker, broker.subscription("g"), middleware=[Recorder("a", [])])
    app.register(RetryOnce())
    await jobs.publish(broker, "x")
    await run_until_drained(app)
    assert Echo.seen == [("x", {"a": "1"}), ("x", {"a": "1"})]


async def test_without_middleware_nothing_is_added_and_handle_is_called_directly() -> None:
    app = app_with()
    await jobs.publish(app.broker, "x")
    await run_until_drained(app)
    assert Echo.seen == [("x", {})]
    handler = Echo()
    assert chain_handle(handler.handle, []) == handler.handle
    # A middleware that overrides no hook is not in the chain either.
    assert chain_handle(handler.handle, [Middleware()]) == handler.handle


async def test_observe_publishes_serves_a_process_that_builds_no_app() -> None:
    broker = MemoryBroker()
    log: list[str] = []
    recorder = Recorder("a", log)
    observe_publishes(broker, recorder)
    observe_publishes(broker, recorder)  # once is enough, twice is the same
    await jobs.publish(broker, "x")
    await jobs.publish(MemoryBroker(), "y")  # another broker: not observed
    assert log == ["a publishes to jobs"]


def test_app_refuses_what_is_not_a_middleware_instance() -> None:
    broker = MemoryBroker()
    with pytest.raises(ConfigurationError, match=r"App.middleware: .*Recorder.* \(did you pass"):
        App(broker, broker.subscription("g"), middleware=[Recorder])  # type: ignore[list-item]  # the mistake under test


class Tag(Middleware):
    def __init__(self, name: str, raises: bool) -> None:
        self.name = name
        self.raises = raises

    async def handle(self, ctx: Context[Any], msg: Envelope[Any], call_next: CallHandle) -> Outcome:
        trail: list[str] = msg.body
        trail.append(f"{self.name}>")
        if self.raises:
            raise LookupError(self.name)
        try:
            return await call_next(ctx, msg)
        finally:
            trail.append(f"<{self.name}")


@given(st.lists(st.booleans(), max_size=6))
async def test_chains_nest_in_list_order_and_stop_at_the_first_that_raises(
    raises: list[bool],
) -> None:
    middleware = [Tag(str(i), r) for i, r in enumerate(raises)]

    async def handle(ctx: Context[Any], msg: Envelope[Any]) -> Outcome:
        msg.body.append("handle")
        return Ack()

    trail: list[str] = []
    msg: Envelope[Any] = Envelope("1-0", "jobs", b"", {}, 1, None)
    msg._body = trail
    first = raises.index(True) if True in raises else None
    ctx: Any = None
    if first is None:
        assert await chain_handle(handle, middleware)(ctx, msg) == Ack()
        names = [str(i) for i in range(len(raises))]
        assert trail == [f"{n}>" for n in names] + ["handle"] + [f"<{n}" for n in names[::-1]]
    else:
        with pytest.raises(LookupError, match=str(first)):
            await chain_handle(handle, middleware)(ctx, msg)
        outer = [str(i) for i in range(first)]
        assert trail == [f"{n}>" for n in outer] + [f"{first}>"] + [f"<{n}" for n in outer[::-1]]
