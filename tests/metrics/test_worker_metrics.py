"""``pulses worker --metrics-port``: a real worker process on a real Redis, scraped over
HTTP."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from metrics_helpers import Samples, Spawn, free_port, scrape, value, wait_for
from pulses.cli import EXIT
from redis_server import RedisServer, start_server

pytestmark = pytest.mark.redis

ACKS, RETRIES, DEAD, FAILS = 5, 3, 2, 4
"""Payloads published: each retry is retried once then acked; each fail raises on both
of its deliveries (MAX_DELIVERIES = 2), so it is retried once, then dead-lettered."""
HELD = 4
"""Published behind a message that holds the only slot: never read while it runs."""


def publish(url: str, stream: str, payloads: list[bytes]) -> None:
    with redis.Redis.from_url(url) as client:
        for payload in payloads:
            client.xadd(stream, {"payload": payload})


def test_metrics_show_exactly_what_the_worker_did_and_the_streams_depth(
    spawn: Spawn, redis_url: str
) -> None:
    stream, group = f"m-{uuid.uuid4().hex[:8]}", "metrics"
    payloads = [b"ack"] * ACKS + [b"retry"] * RETRIES + [b"dead"] * DEAD + [b"fail"] * FAILS
    publish(redis_url, stream, payloads)
    port = free_port()
    proc = spawn(
        "worker", "jobs:app", "--shutdown-timeout", "1", env={
            "STREAM": stream, "GROUP": group, "PULSES_METRICS_PORT": str(port)
        }
    )  # fmt: skip
    key = {"group": group, "handler": "Jobs"}
    settled = "pulses_messages_settled_total"
    expected = {
        "acked": ACKS + RETRIES,
        "retried": RETRIES + FAILS,
        "dead_lettered": DEAD + FAILS,
        "dropped": 0,
    }
    every = sum(expected.values())

    def outcomes(samples: Samples) -> dict[str, float | None]:
        return {o: value(samples, settled, **key, outcome=o) for o in expected}

    # Once every message is settled, the counts must be exactly these, not more.
    samples = wait_for(port, lambda s: sum(filter(None, outcomes(s).values())) >= every, proc)
    assert outcomes(samples) == expected
    assert value(samples, "pulses_messages_failed_total", **key) == 2 * FAILS
    assert value(samples, "pulses_messages_timed_out_total", **key) == 0
    calls = ACKS + 2 * RETRIES + DEAD + 2 * FAILS
    assert value(samples, "pulses_messages_handled_total", **key) == calls
    assert value(samples, "pulses_handler_duration_seconds_count", **key) == calls
    assert value(samples, "pulses_handler_duration_seconds_bucket", **key, le="+Inf") == calls
    assert value(samples, "pulses_workers", **key) == 1
    assert value(samples, "pulses_handler_stream_info", **key, stream=stream) == 1

    # One message holds the only slot (MAX_IN_FLIGHT = 1); what comes after it waits unread.
    publish(redis_url, stream, [b"hold"])
    at = {"stream": stream, "group": group}
    wait_for(port, lambda s: value(s, "pulses_workers_busy", **key) == 1, proc)
    published = time.monotonic()
    publish(redis_url, stream, [b"ack"] * HELD)
    time.sleep(0.2)  # the hold's age grows past what a rounding could hide
    samples = wait_for(port, lambda s: value(s, "pulses_group_lag", **at) == HELD, proc)
    assert value(samples, "pulses_group_pending", **at) == 1
    assert value(samples, "pulses_messages_in_flight", **key) == 1
    oldest = value(samples, "pulses_group_oldest_pending_seconds", **at)
    assert oldest is not None
    assert 0.2 <= oldest <= time.monotonic() - published + 1
    assert value(samples, "pulses_stream_length", stream=stream) == len(payloads) + 1 + HELD
    assert value(samples, "pulses_stream_dead_letters", stream=stream) == DEAD + FAILS
    assert value(samples, "pulses_group_delayed", **at) == 0
    age = value(samples, "pulses_broker_stats_age_seconds")
    assert age is not None
    assert age < 1.5

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0


def test_one_endpoint_sums_the_processes_of_workers_2(spawn: Spawn, redis_url: str) -> None:
    stream, group, n = f"m-{uuid.uuid4().hex[:8]}", "metrics", 200
    port = free_port()
    proc = spawn(
        "worker", "jobs:app", "-w", "2", "--metrics-port", str(port), env={
            "STREAM": stream, "GROUP": group, "WORKERS": "3", "MAX_IN_FLIGHT": "6"
        }
    )  # fmt: skip
    key = {"group": group, "handler": "Jobs"}
    # Both children up: the summed worker tasks say so.
    wait_for(port, lambda s: value(s, "pulses_workers", **key) == 6, proc)
    publish(redis_url, stream, [b"ack"] * n)
    settled = "pulses_messages_settled_total"
    samples = wait_for(port, lambda s: value(s, settled, **key, outcome="acked") == n, proc)
    assert value(samples, "pulses_handler_duration_seconds_count", **key) == n
    at = {"stream": stream, "group": group}
    # The broker's figures come from one child, not the sum of both (once they are
    # fetched after the last settle: a scrape may reuse figures up to a second old).
    figures = ("pulses_stream_length", "pulses_group_lag", "pulses_group_pending")

    def settled_figures(s: Samples) -> tuple[float | None, ...]:
        return (value(s, figures[0], stream=stream), *(value(s, f, **at) for f in figures[1:]))

    wait_for(port, lambda s: settled_figures(s) == (n, 0, 0), proc)
    assert value(samples, "pulses_handler_stream_info", **key, stream=stream) == 1

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


def test_a_metrics_port_without_the_extra_names_it(spawn: Spawn, tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    (blocked / "prometheus_client").mkdir(parents=True)
    (blocked / "prometheus_client" / "__init__.py").write_text(
        "raise ImportError('No module named prometheus_client')\n"
    )
    env = {"PYTHONPATH": str(blocked), "STREAM": "unused", "GROUP": "unused"}
    proc = spawn("worker", "jobs:app", "--metrics-port", str(free_port()), env=env)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == EXIT["config"], err
    assert "pip install 'pulses-core[prometheus]'" in err
    library = subprocess.run(
        [sys.executable, "-c", "import pulses.prometheus"],
        env={**env, "PATH": ""},
        capture_output=True,
        text=True,
        check=False,
    )
    assert "pip install 'pulses-core[prometheus]'" in library.stderr


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_metrics_port_in_use_is_an_error_naming_it(spawn: Spawn, processes: str) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # where the worker binds too
        taken.listen()
        port = taken.getsockname()[1]
        env = {"STREAM": "unused", "GROUP": "unused"}
        proc = spawn("worker", "jobs:app", "-w", processes, "--metrics-port", str(port), env=env)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == EXIT["failed"], err
    assert f"cannot serve metrics on port {port}: Address already in use" in err


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, to stall."""
    yield from start_server()


def test_a_stalled_redis_costs_a_scrape_its_timeout_and_shows_as_stale_figures(
    spawn: Spawn, own_redis: RedisServer
) -> None:
    stream, group = f"m-{uuid.uuid4().hex[:8]}", "metrics"
    port = free_port()
    env = {"STREAM": stream, "GROUP": group, "TEST_REDIS_URL": own_redis.url}
    proc = spawn("worker", "jobs:app", "--metrics-port", str(port), env=env)
    at = {"stream": stream, "group": group}
    age = "pulses_broker_stats_age_seconds"
    wait_for(port, lambda s: value(s, "pulses_group_lag", **at) == 0, proc)
    assert own_redis.process is not None
    own_redis.process.send_signal(signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 20
        while True:
            started = time.monotonic()
            samples = scrape(port)
            assert time.monotonic() - started < 4, "a scrape waited past the 2 s broker timeout"
            stale = value(samples, age)
            assert stale is not None
            if stale >= 3:
                break
            assert time.monotonic() < deadline, f"the figures never went stale: {stale}"
        assert value(samples, "pulses_group_lag", **at) == 0  # the last figures, kept
    finally:
        own_redis.process.send_signal(signal.SIGCONT)
    wait_for(port, lambda s: (value(s, age) or 0) < 1, proc)
