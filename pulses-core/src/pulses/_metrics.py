"""Prometheus metrics of a running App, read when scraped, never counted per message.

The runtime already counts what happens to every message (``HandlerStats``); the
collector turns those counters into metric families when Prometheus asks. Handler
durations come from a middleware that notes each call's duration in a list and adds
the list to plain bucket counts (``Durations``) once per settle batch. Queue depth and
age come from the broker's admin facet: the collector runs in the HTTP server's thread,
the broker's client lives in the app's event loop, so a scrape asks that loop for
fresh figures and waits a bounded time; a broker that is slow or down costs a scrape
at most ``broker_timeout`` seconds and shows up as stale figures
(``pulses_broker_stats_age_seconds``), never as a hung scrape.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from pulses._broker import StreamAdmin, StreamStats
from pulses._middleware import CallHandle, CallSettle, Middleware
from pulses._stats import DURATION_BUCKETS, Durations

if TYPE_CHECKING:
    from pulses._app import App
    from pulses._envelope import Envelope
    from pulses._handler import Context
    from pulses._outcome import Outcome

__all__ = ["BROKER_FAMILIES", "Metrics", "PulsesCollector"]

logger = logging.getLogger("pulses.metrics")

OUTCOMES = ("acked", "retried", "dropped", "dead_lettered")
"""How a message was settled: each settled message is counted under exactly one."""

_COUNTERS = {
    # HandlerStats field: the help text of pulses_messages_<field>_total
    "fetched": "Messages fetched from the broker.",
    "reclaimed": "Messages taken over from consumers that died or hung.",
    "handled": "handle() calls that returned or raised.",
    "failed": "handle() calls that raised, timed out or returned no Outcome; each is "
    "also counted as retried or dead_lettered in pulses_messages_settled_total.",
    "timed_out": "handle() calls cancelled after the handler's TIMEOUT (also counted as failed).",
    "undecodable": "Payloads that did not decode to the handler's type: dead-lettered unrun.",
    "isolated": "Suspects (delivered before, never settled) that were run alone.",
    "released": "Fetched but unstarted at shutdown, handed back to the group.",
    "vanished": "Pending messages whose entry had been deleted or trimmed from the stream.",
    "abandoned": "Still running when the shutdown timeout ran out; left pending.",
    "unsettled": "Handled, but not settled before shutdown; left pending.",
}

BROKER_FAMILIES = frozenset(
    {
        "pulses_stream_length",
        "pulses_stream_delayed",
        "pulses_stream_dead_letters",
        "pulses_stream_trimmed",  # a counter: parsed back without its _total
        "pulses_stream_last_trim_age_seconds",
        "pulses_group_lag",
        "pulses_group_pending",
        "pulses_group_delayed",
        "pulses_group_oldest_pending_seconds",
        "pulses_broker_stats_age_seconds",
        "pulses_handler_stream_info",
    }
)
"""Families, as exposed, that every process of a worker group reads from the same
broker (or the same code): one process's values stand for all of them, where the
others are summed."""

FRESH = 1.0
"""Seconds for which broker figures are reused: two Prometheus servers scraping one
worker do not double the admin calls."""


class Metrics(Middleware):
    """A middleware that times every ``handle`` call into a histogram per handler, and
    the factory of the collector that exports it with the rest of an App's metrics::

        metrics = Metrics()
        app = App(broker, subscription, middleware=[metrics]).register(...)
        prometheus_client.REGISTRY.register(metrics.collector(app))  # in app's loop

    Without it in the app's middleware the collector exports everything but
    ``pulses_handler_duration_seconds``.
    """

    def __init__(self, buckets: Sequence[float] = DURATION_BUCKETS) -> None:
        Durations(buckets)  # the bounds are checked once, here, not at the first message
        self.buckets = tuple(buckets)
        self.durations: dict[str, Durations] = {}
        """Per handler name: what the collector exports."""
        self.calls: defaultdict[Context[Any], list[float]] = defaultdict(list)
        """Per handler (its one Context): durations not yet in ``durations``."""

    async def handle(self, ctx: Context[Any], msg: Envelope[Any], call_next: CallHandle) -> Outcome:
        # Per message only a clock read and an append (measured: about 0.2 us with the
        # call through this middleware); the buckets are filled per settle batch.
        started = perf_counter()
        try:
            return await call_next(ctx, msg)
        finally:
            self.calls[ctx].append(perf_counter() - started)

    async def settle(
        self,
        ctx: Context[Any],
        batch: Sequence[tuple[Envelope[Any], Outcome]],
        call_next: CallSettle,
    ) -> None:
        calls = self.calls.get(ctx)
        if calls:
            name = ctx.handler.name
            durations = self.durations.get(name)
            if durations is None:
                durations = self.durations[name] = Durations(self.buckets)
            durations.observe(calls)
            calls.clear()
        await call_next(batch)

    def collector(
        self,
        app: App[Any],
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        broker_timeout: float = 2.0,
    ) -> PulsesCollector:
        """A collector of ``app``'s metrics with this middleware's durations; see
        ``PulsesCollector``."""
        return PulsesCollector(app, metrics=self, loop=loop, broker_timeout=broker_timeout)


class PulsesCollector(Collector):
    """Every ``pulses_*`` metric of one App, built when scraped.

    Create it in the event loop that runs (or will run) the app, or pass that ``loop``:
    broker figures are fetched there, within ``broker_timeout`` seconds per scrape.
    """

    def __init__(
        self,
        app: App[Any],
        *,
        metrics: Metrics | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        broker_timeout: float = 2.0,
    ) -> None:
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise RuntimeError(
                    "PulsesCollector: no running event loop; create it in the coroutine "
                    "that runs the app, or pass loop="
                ) from None
        self._app = app
        self._metrics = metrics
        self._broker = _BrokerStats(app, loop, broker_timeout)

    def describe(self) -> list[Metric]:
        # Nothing is read at registration (a scrape would reach for the broker).
        return []

    def collect(self) -> Iterator[Metric]:
        group = self._app.subscription.group
        yield from self._runtime(group)
        yield from self._broker.families(group)

    def _runtime(self, group: str) -> Iterator[Metric]:
        labels = ["group", "handler"]
        info = InfoMetricFamily(
            "pulses_handler_stream",
            "The streams each handler reads (join the per-stream broker figures on it).",
            labels=["group", "handler", "stream"],
        )
        for handler in self._app.handlers:
            for stream in handler.STREAMS:
                info.add_metric([group, handler.name, stream], {})
        yield info
        runs = list(self._app._runs)
        settled = CounterMetricFamily(
            "pulses_messages_settled",
            "Messages settled, by outcome; every message fetched or reclaimed is settled "
            "at most once.",
            labels=[*labels, "outcome"],
        )
        counters = {
            name: CounterMetricFamily(f"pulses_messages_{name}", text, labels=labels)
            for name, text in _COUNTERS.items()
        }
        in_flight = GaugeMetricFamily(
            "pulses_messages_in_flight",
            "Messages fetched and not yet settled (bounded by MAX_IN_FLIGHT).",
            labels=labels,
        )
        workers = GaugeMetricFamily(
            "pulses_workers", "Worker tasks of the handler (its WORKERS).", labels=labels
        )
        busy = GaugeMetricFamily(
            "pulses_workers_busy", "Worker tasks running handle() now.", labels=labels
        )
        for run in runs:
            stats = run.stats
            key = [group, stats.handler]
            for outcome in OUTCOMES:
                settled.add_metric([*key, outcome], getattr(stats, outcome))
            for name, family in counters.items():
                family.add_metric(key, getattr(stats, name))
            in_flight.add_metric(key, len(run.inflight))
            workers.add_metric(key, len(run.workers))
            busy.add_metric(key, sum(1 for w in run.workers if w.current is not None))
        yield settled
        yield from counters.values()
        yield in_flight
        yield workers
        yield busy
        if self._metrics is not None:
            yield self._durations(group)

    def _durations(self, group: str) -> Metric:
        assert self._metrics is not None
        family = HistogramMetricFamily(
            "pulses_handler_duration_seconds",
            "Time handle() took, per call, in seconds (timeouts included).",
            labels=["group", "handler"],
        )
        for name, durations in list(self._metrics.durations.items()):
            # Copied first: the event loop may add to them while this thread reads.
            counts, total = list(durations.counts), durations.total
            buckets: list[tuple[str, float]] = []
            cumulative = 0
            for bound, count in zip((*durations.bounds, float("inf")), counts, strict=True):
                cumulative += count
                buckets.append((_le(bound), cumulative))
            family.add_metric([group, name], buckets, total)
        return family


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class _BrokerStats:
    """The app's streams as the broker's admin facet sees them, fetched in the app's
    loop for a scrape in another thread, at most once per FRESH seconds."""

    def __init__(self, app: App[Any], loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.app = app
        self.loop = loop
        self.timeout = timeout
        self.lock = threading.Lock()
        self.pending: concurrent.futures.Future[list[StreamStats]] | None = None
        self.stats: list[StreamStats] = []
        self.fetched_at: float | None = None
        self.since = time.monotonic()
        broker = app.broker
        self.admin = (
            broker if broker.capabilities.admin and isinstance(broker, StreamAdmin) else None
        )

    def families(self, group: str) -> Iterator[Metric]:
        if self.admin is None:
            return
        stats = self.read()
        age = time.monotonic() - (self.since if self.fetched_at is None else self.fetched_at)
        yield GaugeMetricFamily(
            "pulses_broker_stats_age_seconds",
            "Seconds since the broker figures below were fetched (large: the broker did "
            "not answer in time).",
            value=age,
        )
        gauges = {
            "length": ("pulses_stream_length", "Entries in the stream."),
            "delayed": ("pulses_stream_delayed", "Delayed publishes not yet in the stream."),
            "dead_letters": ("pulses_stream_dead_letters", "Dead letters of the stream."),
        }
        by_stream = {
            key: GaugeMetricFamily(name, text, labels=["stream"])
            for key, (name, text) in gauges.items()
        }
        trimmed = CounterMetricFamily(
            "pulses_stream_trimmed",
            "Acknowledged entries removed from the stream by retention (or pulses trim).",
            labels=["stream"],
        )
        last_trim = GaugeMetricFamily(
            "pulses_stream_last_trim_age_seconds",
            "Seconds since the stream was last trimmed (grows: retention stopped).",
            labels=["stream"],
        )
        labels = ["stream", "group"]
        lag = GaugeMetricFamily(
            "pulses_group_lag", "Entries the group has not read yet.", labels=labels
        )
        pending = GaugeMetricFamily(
            "pulses_group_pending", "Entries read by the group and not yet settled.", labels=labels
        )
        delayed = GaugeMetricFamily(
            "pulses_group_delayed", "The group's retries waiting for their time.", labels=labels
        )
        oldest = GaugeMetricFamily(
            "pulses_group_oldest_pending_seconds",
            "Age of the group's oldest pending entry, in seconds (0: none pending).",
            labels=labels,
        )
        for stream in stats:
            for key, family in by_stream.items():
                family.add_metric([stream.stream], getattr(stream, key))
            if stream.trimmed is not None:
                trimmed.add_metric([stream.stream], stream.trimmed.removed)
                last_trim.add_metric([stream.stream], stream.trimmed.last_ago_ms / 1000)
            for g in stream.groups:
                if g.group != group:
                    continue  # other groups' workers export their own
                at = [stream.stream, group]
                lag.add_metric(at, g.lag)
                pending.add_metric(at, g.pending)
                delayed.add_metric(at, g.delayed)
                oldest.add_metric(at, (g.oldest_pending_ms or 0) / 1000)
        yield from by_stream.values()
        yield trimmed
        yield last_trim
        yield from (lag, pending, delayed, oldest)

    def read(self) -> list[StreamStats]:
        """Fresh figures if the broker answers within the timeout, else the last ones."""
        started = None
        with self.lock:
            if self.fetched_at is not None and time.monotonic() - self.fetched_at < FRESH:
                return self.stats
            if (self.pending is None or self.pending.done()) and not self.loop.is_closed():
                coro = self.fetch()
                try:
                    self.pending = started = asyncio.run_coroutine_threadsafe(coro, self.loop)
                except RuntimeError:  # the loop closed meanwhile
                    coro.close()
            pending = self.pending
        if started is not None:
            # Kept when they come, even after this scrape stopped waiting. Outside the
            # lock: a future already done runs the callback at once, in this thread.
            started.add_done_callback(self.store)
        if pending is None or _in_loop(self.loop):
            # Scraped from the loop's own thread, a wait would block the very loop that
            # must answer: the figures come at the next scrape.
            return self.stats
        try:
            return pending.result(self.timeout)
        except concurrent.futures.TimeoutError:
            logger.debug("broker figures: no answer within %.1fs", self.timeout)
        except Exception as exc:
            logger.debug("broker figures: %s: %s", type(exc).__name__, exc)
        return self.stats

    def store(self, done: concurrent.futures.Future[list[StreamStats]]) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        with self.lock:
            self.stats, self.fetched_at = done.result(), time.monotonic()

    async def fetch(self) -> list[StreamStats]:
        assert self.admin is not None
        admin = self.admin
        streams = [stream for handler in self.app.handlers for stream in handler.STREAMS]
        # Bounded here too: a call that never returns would block every later scrape's
        # refresh behind it.
        async with asyncio.timeout(self.timeout * 5):
            return list(await asyncio.gather(*(admin.stats(s) for s in streams)))
