"""Connections reset, refused, stalled and slowed between the workers and Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from faults.fault_harness import (
    AofRedis,
    Case,
    Workers,
    payload,
    read_ledger,
    tally,
    wait_drained,
    wait_for,
)
from faults.fault_proxy import Proxy

pytestmark = pytest.mark.redis

SOCKET_TIMEOUT = 3.0


@pytest.fixture
def proxy(aof_redis: AofRedis) -> Iterator[Proxy]:
    p = Proxy(aof_redis.port)
    p.start()
    yield p
    p.stop()


def handled(w: Workers) -> int:
    return sum(1 for r in read_ledger(w.ledger) if r["ev"] == "E")


def test_connection_faults(
    aof_redis: AofRedis, proxy: Proxy, workers: Callable[..., Workers], seed: int
) -> None:
    client = aof_redis.client()
    with Case("proxy", seed) as case:
        w = workers(proxy.url(f"?socket_timeout={SOCKET_TIMEOUT}"), FAULT_BLOCK_MS="200")
        procs = [w.start(), w.start()]
        wait_for(lambda: client.exists("jobs"), 20, "the workers to create the group")
        ids: list[str] = []
        stop = threading.Event()

        def flow() -> None:
            publisher = aof_redis.client()  # straight to Redis, not through the proxy
            n = 0
            while not stop.is_set():
                ident = f"m{n}"
                publisher.xadd("jobs", {"payload": payload(ident, "ok", "0.001")})
                ids.append(ident)
                n += 1
                time.sleep(0.005)  # pacing of the flow (~200/s), not a wait

        publisher = threading.Thread(target=flow, daemon=True)
        publisher.start()
        wait_for(lambda: handled(w) >= 100, 20, "messages to flow")

        def recovered(since: float) -> float:
            base = handled(w)
            wait_for(lambda: handled(w) >= base + 50, 30, "throughput to come back")
            return round(time.monotonic() - since, 2)

        faults: dict[str, dict[str, float]] = {}
        proxy.reset()
        faults["reset"] = {"recovered_after_s": recovered(time.monotonic())}

        proxy.refuse()
        time.sleep(2)  # the fault lasts 2 s
        proxy.reset()
        proxy.accept()
        faults["refuse_2s"] = {"recovered_after_s": recovered(time.monotonic())}

        closes = len(proxy.client_closes)
        proxy.stalled = True
        stalled_at = time.monotonic()
        wait_for(
            lambda: len(proxy.client_closes) > closes,
            SOCKET_TIMEOUT + 5,
            "a client to give up on a stalled connection",
        )
        detected = proxy.client_closes[closes] - stalled_at
        time.sleep(max(0.0, SOCKET_TIMEOUT + 2 - (time.monotonic() - stalled_at)))  # fault
        proxy.stalled = False
        faults["stall"] = {
            "detected_after_s": round(detected, 2),
            "recovered_after_s": recovered(time.monotonic()),
        }

        proxy.delay = 0.05
        slow_start, slow_base = time.monotonic(), handled(w)
        time.sleep(3)  # the fault lasts 3 s
        slow_rate = (handled(w) - slow_base) / (time.monotonic() - slow_start)
        proxy.delay = 0.0
        faults["delay_50ms"] = {
            "rate_during_per_s": round(slow_rate, 1),
            "recovered_after_s": recovered(time.monotonic()),
        }

        stop.set()
        publisher.join(5)
        wait_drained(client, w.ledger, ids, 60)
        figures = tally(client, w.ledger, ids)
        alive = all(p.poll() is None for p in procs)
        case.figures.update(
            figures, faults=faults, socket_timeout_s=SOCKET_TIMEOUT, workers_alive=alive
        )
        assert alive
        assert figures["lost"] == 0
        assert figures["unexpected"] == 0
        assert detected <= SOCKET_TIMEOUT + 1
        for fault in faults.values():
            assert fault["recovered_after_s"] < 10
