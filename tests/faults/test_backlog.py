"""A backlog of one million messages drained by one worker with memory flat."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from faults.fault_harness import (
    Case,
    Workers,
    group_state,
    rss_bytes,
    wait_for,
)
from redis_server import RedisServer, redis_server_binary

pytestmark = pytest.mark.redis

BACKLOG = 1_000_000
MAX_IN_FLIGHT = 256


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_million_backlog_memory_flat(
    case_dir: Path, workers: Callable[..., Workers], seed: int
) -> None:
    # No AOF here: a million fsyncs would measure the disk, not the worker.
    data = case_dir / "redis-backlog"
    data.mkdir()
    server = RedisServer(redis_server_binary(), data)
    server.start()
    try:
        client = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=30)
        with Case("backlog-1m", seed) as case:
            w = workers(
                server.url,
                FAULT_WORKERS="16",
                FAULT_MAX_IN_FLIGHT=str(MAX_IN_FLIGHT),
                FAULT_START_RECORDS="0",
                FAULT_CLAIM_IDLE_MS="30000",
            )
            proc = w.start()
            wait_for(lambda: client.exists("jobs"), 20, "the worker to create the group")
            wait_for(lambda: group_state(client)["lag"] == 0, 10, "the worker to be idle")
            idle = rss_bytes(proc.pid)
            proc.send_signal(signal.SIGSTOP)
            body = b"x|ok||" + b"." * 100
            pipe = client.pipeline(transaction=False)
            for i in range(BACKLOG):
                pipe.xadd("jobs", {"payload": body})
                if i % 10_000 == 9_999:
                    pipe.execute()
            pipe.execute()
            proc.send_signal(signal.SIGCONT)
            t0 = time.monotonic()
            peak, max_pending = idle, 0
            while True:
                state = group_state(client)
                peak = max(peak, rss_bytes(proc.pid))
                max_pending = max(max_pending, state["pending"])
                if not state["lag"] and not state["pending"]:
                    break
                assert time.monotonic() - t0 < 600, f"not drained: {state}"
                time.sleep(0.05)  # sampling interval of RSS and pending
            took = time.monotonic() - t0
            case.figures.update(
                backlog=BACKLOG,
                idle_rss_mib=round(idle / 2**20, 1),
                peak_rss_mib=round(peak / 2**20, 1),
                growth_mib=round((peak - idle) / 2**20, 1),
                max_pending=max_pending,
                max_in_flight=MAX_IN_FLIGHT,
                drain_s=round(took, 1),
                rate_per_s=round(BACKLOG / took),
            )
            assert peak - idle <= 64 * 2**20
            assert max_pending <= MAX_IN_FLIGHT
    finally:
        server.stop()
