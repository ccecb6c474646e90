"""The collector in process: bounded scrapes when the broker hangs, the supervisor's sums."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import pulses.prometheus
from pulses import (
    Ack,
    App,
    CancellationToken,
    Context,
    Envelope,
    Handler,
    Outcome,
    Retention,
    StreamStats,
)
from pulses._metrics_group import GroupCollector
from pulses._stats import Durations
from pulses_memory import MemoryBroker


def test_public_names_are_pinned() -> None:
    assert sorted(pulses.prometheus.__all__) == ["DURATION_BUCKETS", "Metrics", "PulsesCollector"]


def test_a_duration_equal_to_a_bound_falls_in_that_bounds_bucket() -> None:
    durations = Durations((0.1, 1.0))
    durations.observe([0.1, 0.5, 1.0, 2.0])
    assert durations.counts == [1, 2, 1]
    with pytest.raises(ValueError, match="increasing"):
        Durations((1.0, 0.1))


class Hanging(MemoryBroker):
    """A broker whose admin answers never come: a Redis that stalls."""

    async def stats(self, stream: str) -> StreamStats:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class Noop(Handler[MemoryBroker]):
    STREAMS = ("jobs",)

    async def handle(self, ctx: Context[MemoryBroker], msg: Envelope) -> Outcome:
        return Ack()


def samples(registry: CollectorRegistry) -> dict[str, float]:
    text = generate_latest(registry).decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


async def test_a_broker_that_never_answers_costs_a_scrape_its_timeout_not_forever() -> None:
    broker = Hanging()
    metrics = pulses.prometheus.Metrics()
    app = App(broker, broker.subscription("g"), middleware=[metrics]).register(Noop())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics.collector(app, broker_timeout=0.2))
    token = CancellationToken()
    run = asyncio.create_task(app.run(token))
    await broker.publish("jobs", b"x")
    started = time.monotonic()
    first = await asyncio.to_thread(samples, registry)
    second = await asyncio.to_thread(samples, registry)
    assert time.monotonic() - started < 2.0
    # No broker figures, and the age says how stale they are; the runtime's are there.
    assert "pulses_group_lag" not in second
    assert second["pulses_broker_stats_age_seconds"] >= first["pulses_broker_stats_age_seconds"]
    assert "pulses_workers" in second
    token.cancel()
    await run


def family_text(name: str, kind: str, value: float, **labels: str) -> str:
    label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    sample = f"{name}_total" if kind == "counter" else name
    return f"# TYPE {sample} {kind}\n{sample}{{{label_text}}} {value}\n"


def child(acked: float, busy: float, lag: float) -> str:
    return (
        family_text("pulses_messages_settled", "counter", acked, handler="H", outcome="acked")
        + family_text("pulses_workers_busy", "gauge", busy, handler="H")
        + family_text("pulses_group_lag", "gauge", lag, stream="s", group="g")
    )


def test_the_supervisor_sums_children_and_keeps_the_counts_of_those_gone(tmp_path: Path) -> None:
    answers = {1001: child(10, 1, 7), 1002: child(5, 2, 7)}

    def scrape(port: int) -> str:
        if port not in answers:
            raise OSError("connection refused")
        return answers[port]

    for pid in answers:
        (tmp_path / str(pid)).write_text(str(pid))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GroupCollector(tmp_path, scrape))
    assert samples(registry) == {
        "pulses_messages_settled_total": 15,
        "pulses_workers_busy": 3,
        "pulses_group_lag": 7,  # the same broker seen twice: one child's figure
    }
    # A child that does not answer counts with its last counters; its gauges are unknown.
    answers[1002] = child(8, 2, 6)
    del answers[1001]
    assert samples(registry) == {
        "pulses_messages_settled_total": 18,
        "pulses_workers_busy": 2,
        "pulses_group_lag": 6,
    }
    # A child that exited (the supervisor removed its file) keeps its last counts in the sum.
    (tmp_path / "1001").unlink()
    assert samples(registry)["pulses_messages_settled_total"] == 18


async def test_a_scrape_from_the_apps_own_loop_does_not_wait_and_the_next_one_has_figures() -> None:
    broker = MemoryBroker()
    app = App(broker, broker.subscription("g")).register(Noop())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(pulses.prometheus.PulsesCollector(app, broker_timeout=5.0))
    await broker.publish("jobs", b"x")
    started = time.monotonic()
    assert "pulses_stream_length" not in samples(registry)  # nothing fetched yet
    assert time.monotonic() - started < 1.0
    deadline = time.monotonic() + 5
    while "pulses_stream_length" not in (now := samples(registry)):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)  # the loop runs the fetch the first scrape asked for
    assert now["pulses_stream_length"] == 1


def test_figures_that_are_ready_at_once_do_not_deadlock_the_scrape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fetch can finish before its done-callback is added; the callback then runs at
    # once, in the scraping thread (once, that thread held the lock the callback takes).
    def done_at_once(coro: Any, loop: asyncio.AbstractEventLoop) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(asyncio.run(coro))
        return future

    monkeypatch.setattr(asyncio, "run_coroutine_threadsafe", done_at_once)
    broker = MemoryBroker()
    app = App(broker, broker.subscription("g")).register(Noop())
    registry = CollectorRegistry(auto_describe=False)
    loop = asyncio.new_event_loop()
    registry.register(pulses.prometheus.PulsesCollector(app, loop=loop))
    scraped: list[dict[str, float]] = []
    scraper = threading.Thread(target=lambda: scraped.append(samples(registry)), daemon=True)
    scraper.start()
    scraper.join(10)
    loop.close()
    assert not scraper.is_alive(), "the scrape hung"
    assert scraped[0]["pulses_stream_length"] == 0  # the figures, from this very scrape


async def test_what_retention_trimmed_is_exported_per_stream() -> None:
    broker = MemoryBroker()
    retention = Retention(keep=0, interval_ms=10)
    app = App(broker, broker.subscription("g"), retention=retention).register(Noop())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(pulses.prometheus.PulsesCollector(app))
    await broker.publish_many("jobs", [b"x"] * 5)
    token = CancellationToken()
    run = asyncio.create_task(app.run(token))
    deadline = time.monotonic() + 10
    while (await asyncio.to_thread(samples, registry)).get("pulses_stream_trimmed_total") != 5:
        assert time.monotonic() < deadline, "the five acknowledged entries were never trimmed"
        await asyncio.sleep(0.05)
    now = await asyncio.to_thread(samples, registry)
    assert 0 <= now["pulses_stream_last_trim_age_seconds"] < 5
    token.cancel()
    await run
