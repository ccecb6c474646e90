"""The app the benchmark's worker processes run: ``python -m pulses worker bench.app:app``.

Configured by environment, since the CLI imports it in every worker process:
``BENCH_URL``, ``BENCH_STREAM`` (streams separated by commas), ``BENCH_TIMEOUT``
(seconds; unset: no TIMEOUT), ``BENCH_MAX_IN_FLIGHT`` (unset: the default),
``BENCH_LATENCY=1`` (record publish→handle-start latencies from the payload's
timestamp), ``BENCH_OTEL`` (``all``: ``pulses.otel`` tracing with every span sampled and
exported in batches to nowhere; ``drop``: tracing with a parent-based sampler that
drops what has no sampled parent), ``BENCH_TYPED=1`` (a handler typed on ``Small``,
whose payloads msgspec decodes before it runs) and ``BENCH_REPORT`` (a directory where
each process writes ``<pid>.json`` when it stops). The handler does nothing; the
consumer is the real ``RedisConsumer``, wrapped once per batch to note when the first
fetch started and the last settle ended.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from pulses import Ack, App, Context, Envelope, Handler, Middleware, Outcome
from pulses.broker import Consumer
from pulses_redis import RedisBroker, RedisSubscription

__all__ = ["Small", "app"]


class Small(msgspec.Struct):
    """The typed benchmark's payload: a small event of a few fields."""

    user_id: int
    email: str
    plan: str
    active: bool


_ACK = Ack()


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


class _Report:
    def __init__(self) -> None:
        self.first_fetch = 0.0
        self.last_settle = 0.0
        self.settled = 0
        self.idle_rss_kib = 0
        self.latencies_ns: list[int] = []

    def write(self) -> None:
        directory = os.environ.get("BENCH_REPORT")
        if not directory:
            return
        report = {
            "first_fetch": self.first_fetch,
            "last_settle": self.last_settle,
            "settled": self.settled,
            "idle_rss_kib": self.idle_rss_kib,
            "peak_rss_kib": _rss_kib("VmHWM:"),
            "latencies_ns": self.latencies_ns,
        }
        Path(directory, f"{os.getpid()}.json").write_text(json.dumps(report))


REPORT = _Report()


class _TimedConsumer:
    """The broker's consumer, timing fetch and settle per call (never per message).

    Everything else goes straight to the inner consumer, so a method the Consumer
    protocol gains (``heartbeat`` did) cannot break the benchmark.
    """

    def __init__(self, inner: Consumer) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def fetch(self, max_count: int, block_ms: int) -> Sequence[Envelope]:
        if not REPORT.first_fetch:
            REPORT.idle_rss_kib = _rss_kib("VmRSS:")
            REPORT.first_fetch = time.monotonic()
        return await self._inner.fetch(max_count, block_ms)

    async def settle(self, items: Sequence[tuple[Envelope, Any]]) -> None:
        await self._inner.settle(items)
        REPORT.settled += len(items)
        REPORT.last_settle = time.monotonic()

    async def aclose(self) -> None:
        await self._inner.aclose()
        REPORT.write()


class _TimedBroker(RedisBroker):
    def consumer(
        self, subscription: RedisSubscription, streams: Sequence[str], *, handler: str
    ) -> Any:
        return _TimedConsumer(super().consumer(subscription, streams, handler=handler))


class NoOp(Handler[RedisBroker]):
    STREAMS: ClassVar[tuple[str, ...]] = tuple(os.environ.get("BENCH_STREAM", "bench").split(","))
    TIMEOUT: ClassVar[float | None] = (
        float(os.environ["BENCH_TIMEOUT"]) if os.environ.get("BENCH_TIMEOUT") else None
    )
    MAX_IN_FLIGHT: ClassVar[int | None] = (
        int(os.environ["BENCH_MAX_IN_FLIGHT"]) if os.environ.get("BENCH_MAX_IN_FLIGHT") else None
    )

    async def handle(self, ctx: Context[RedisBroker], msg: Envelope) -> Outcome:
        return _ACK


class Typed(Handler[RedisBroker, Small]):
    STREAMS: ClassVar[tuple[str, ...]] = NoOp.STREAMS
    MAX_IN_FLIGHT: ClassVar[int | None] = NoOp.MAX_IN_FLIGHT

    async def handle(self, ctx: Context[RedisBroker], msg: Envelope[Small]) -> Outcome:
        return _ACK


class Latency(NoOp):
    async def handle(self, ctx: Context[RedisBroker], msg: Envelope) -> Outcome:
        REPORT.latencies_ns.append(time.monotonic_ns() - int(msg.payload[:20]))
        return _ACK


def _middleware() -> list[Middleware]:
    mode = os.environ.get("BENCH_OTEL")
    if not mode:
        return []
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased

    from pulses.otel import tracing

    class Discard(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON if mode == "all" else ALWAYS_OFF))
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    return [tracing(provider)]


broker = _TimedBroker.from_url(os.environ.get("BENCH_URL", "redis://127.0.0.1:6379/0"))
app = App(broker, broker.subscription("bench"), middleware=_middleware()).register(
    Latency()
    if os.environ.get("BENCH_LATENCY")
    else Typed()
    if os.environ.get("BENCH_TYPED")
    else NoOp()
)
