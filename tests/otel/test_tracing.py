"""pulses.otel on the memory broker and a real Redis, seen through the SDK's in-memory
exporter: one trace per message from publish through retries and dead-letter replays."""

from __future__ import annotations

import asyncio
import importlib
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import SpanContext, SpanKind, StatusCode

from pulses import (
    Ack,
    App,
    Broker,
    Context,
    Envelope,
    Handler,
    Outcome,
    Stream,
    StreamAdmin,
    run_until_drained,
)
from pulses.otel import tracing
from pulses_memory import MemoryBroker
from pulses_redis import RedisBroker


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker[Any]]:
    if request.param == "memory":
        yield MemoryBroker()
        return
    redis = await RedisBroker.connect(request.getfixturevalue("redis_url"))
    yield redis
    await redis.aclose()


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def provider_for(exporter: InMemorySpanExporter, **settings: Any) -> TracerProvider:
    provider = TracerProvider(**settings)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def stream_named() -> Stream[str]:
    return Stream(f"t-{uuid.uuid4().hex[:10]}:jobs", str)


def handler_for(jobs: Stream[str], failing: set[int], max_deliveries: int = 5) -> Handler[Any, str]:
    """Raises on the deliveries numbered in ``failing``; acks the others."""

    class Jobs(Handler[Broker[Any], str]):
        STREAM = jobs
        MAX_DELIVERIES = max_deliveries
        RETRY_BACKOFF_MS = 0
        RETRY_BACKOFF_MAX_MS = 0

        async def handle(self, ctx: Context[Broker[Any]], msg: Envelope[str]) -> Outcome:
            if msg.deliveries in failing:
                raise ValueError(f"failed delivery {msg.deliveries}")
            return Ack()

    return Jobs()


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def ids(span: ReadableSpan) -> SpanContext:
    context: SpanContext | None = span.context
    assert context is not None
    return context


def parent_id(span: ReadableSpan) -> int:
    assert span.parent is not None
    return span.parent.span_id


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_one_trace_runs_from_publish_through_a_retry_to_the_final_process_span(
    broker: Broker[Any], exporter: InMemorySpanExporter
) -> None:
    jobs = stream_named()
    system = "memory" if isinstance(broker, MemoryBroker) else "redis"
    app = App(broker, broker.subscription("mailer"), middleware=[tracing(provider_for(exporter))])
    app.register(handler_for(jobs, failing={1}))
    message_id = await jobs.publish(broker, "hello")
    stats = await run_until_drained(app)
    assert (stats.total.retried, stats.total.acked) == (1, 1)

    spans = exporter.get_finished_spans()
    [send] = named(spans, f"send {jobs}")
    assert send.kind is SpanKind.PRODUCER
    assert attributes(send) == {
        "messaging.system": system,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": jobs,
        "messaging.message.id": message_id,
    }
    trace_id = ids(send).trace_id

    first, last = sorted(named(spans, f"process {jobs}"), key=lambda s: s.start_time or 0)
    for delivery, span in enumerate((first, last), start=1):
        assert span.kind is SpanKind.CONSUMER
        assert ids(span).trace_id == trace_id
        assert parent_id(span) == ids(send).span_id
        assert attributes(span) == {
            "messaging.system": system,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": jobs,
            "messaging.consumer.group.name": "mailer",
            "messaging.message.id": message_id,
            "messaging.pulses.message.delivery_count": delivery,
            **({"messaging.pulses.outcome": "ack"} if delivery == 2 else {}),
        }
    assert first.status.status_code is StatusCode.ERROR
    assert first.status.description == "ValueError: failed delivery 1"
    [event] = first.events
    assert event.name == "exception"
    assert dict(event.attributes or {})["exception.type"] == "ValueError"
    assert last.status.status_code is StatusCode.UNSET

    settles = named(spans, f"settle {jobs}")
    assert sum(attributes(s)["messaging.batch.message_count"] for s in settles) == 2
    for settle in settles:
        assert settle.kind is SpanKind.CLIENT
        assert attributes(settle)["messaging.operation.type"] == "settle"
        assert attributes(settle)["messaging.consumer.group.name"] == "mailer"
        assert [link.context.trace_id for link in settle.links] == [trace_id]
        assert settle.parent is None  # its own trace: one batch settles many messages' traces


async def test_a_dead_letter_replay_continues_the_trace(
    broker: Broker[Any], exporter: InMemorySpanExporter
) -> None:
    jobs = stream_named()
    middleware = tracing(provider_for(exporter))
    app = App(broker, broker.subscription("mailer"), middleware=[middleware])
    failing = {1}
    app.register(handler_for(jobs, failing, max_deliveries=1))
    await jobs.publish(broker, "hello")
    assert (await run_until_drained(app)).total.dead_lettered == 1
    failing.clear()  # fixed: the replayed delivery (numbered 1 again) succeeds
    assert isinstance(broker, StreamAdmin)
    assert len(await broker.replay(jobs)) == 1
    assert (await run_until_drained(app)).total.acked == 1

    spans = exporter.get_finished_spans()
    [send] = named(spans, f"send {jobs}")
    processed = sorted(named(spans, f"process {jobs}"), key=lambda s: s.start_time or 0)
    assert [attributes(s)["messaging.pulses.message.delivery_count"] for s in processed] == [1, 1]
    assert [s.status.status_code for s in processed] == [StatusCode.ERROR, StatusCode.UNSET]
    for span in processed:
        assert ids(span).trace_id == ids(send).trace_id
        assert parent_id(span) == ids(send).span_id


async def test_a_publish_from_a_handler_continues_the_trace_of_the_message_it_handles(
    exporter: InMemorySpanExporter,
) -> None:
    broker = MemoryBroker()
    first, second = stream_named(), stream_named()

    class Forward(Handler[MemoryBroker, str]):
        STREAM = first

        async def handle(self, ctx: Context[MemoryBroker], msg: Envelope[str]) -> Outcome:
            await second.publish(ctx.broker, msg.body)
            return Ack()

    app = App(broker, broker.subscription("g"), middleware=[tracing(provider_for(exporter))])
    app.register(Forward(), handler_for(second, failing=set()))
    await first.publish(broker, "hello")
    await run_until_drained(app)

    spans = exporter.get_finished_spans()
    [process_first] = named(spans, f"process {first}")
    [send_second] = named(spans, f"send {second}")
    [process_second] = named(spans, f"process {second}")
    assert parent_id(send_second) == ids(process_first).span_id
    assert parent_id(process_second) == ids(send_second).span_id
    assert ids(process_second).trace_id == ids(process_first).trace_id


async def test_a_sampler_known_to_drop_adds_no_headers_and_records_nothing(
    exporter: InMemorySpanExporter,
) -> None:
    broker = MemoryBroker()
    jobs = stream_named()
    seen: list[dict[str, str]] = []

    class Record(Handler[MemoryBroker, str]):
        STREAM = jobs

        async def handle(self, ctx: Context[MemoryBroker], msg: Envelope[str]) -> Outcome:
            seen.append(dict(msg.headers))
            return Ack()

    provider = provider_for(exporter, sampler=ParentBased(ALWAYS_OFF))
    app = App(broker, broker.subscription("g"), middleware=[tracing(provider)])
    app.register(Record())
    await jobs.publish(broker, "no parent")
    unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    await jobs.publish(broker, "unsampled parent", headers={"traceparent": unsampled})
    await run_until_drained(app)
    assert seen == [{}, {"traceparent": unsampled}]
    assert exporter.get_finished_spans() == ()


def test_importing_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "pulses.otel")
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ImportError, match=r"pip install 'pulses-core\[otel\]'"):
        importlib.import_module("pulses.otel")


async def test_a_handler_cancelled_at_its_timeout_ends_its_span_as_an_error(
    exporter: InMemorySpanExporter,
) -> None:
    broker = MemoryBroker()
    jobs = stream_named()

    class Slow(Handler[MemoryBroker, str]):
        STREAM = jobs
        TIMEOUT = 0.05
        MAX_DELIVERIES = 1

        async def handle(self, ctx: Context[MemoryBroker], msg: Envelope[str]) -> Outcome:
            await asyncio.sleep(30)
            return Ack()

    app = App(broker, broker.subscription("g"), middleware=[tracing(provider_for(exporter))])
    app.register(Slow())
    await jobs.publish(broker, "hello")
    stats = await run_until_drained(app)
    assert (stats.total.timed_out, stats.total.dead_lettered) == (1, 1)
    [process] = named(exporter.get_finished_spans(), f"process {jobs}")
    assert process.status.status_code is StatusCode.ERROR
    assert process.status.description == "cancelled: TIMEOUT or shutdown"


async def test_without_middleware_a_publish_adds_no_headers(broker: Broker[Any]) -> None:
    jobs = stream_named()
    seen: list[dict[str, str]] = []

    class Record(Handler[Broker[Any], str]):
        STREAM = jobs

        async def handle(self, ctx: Context[Broker[Any]], msg: Envelope[str]) -> Outcome:
            seen.append(dict(msg.headers))
            return Ack()

    tracing(provider_for(InMemorySpanExporter()))  # built, never registered: no effect
    app = App(broker, broker.subscription("g")).register(Record())
    await jobs.publish(broker, "plain")
    await jobs.publish(broker, "own", headers={"tenant": "acme"})
    await run_until_drained(app)
    assert sorted(seen, key=len) == [{}, {"tenant": "acme"}]
