"""Graceful shutdown (SIGTERM) under load, a handler longer than the shutdown timeout,
and a second signal that forces the stop."""

from __future__ import annotations

import re
import signal
import time
from collections import Counter
from collections.abc import Callable

import pytest
import redis

from faults.fault_harness import (
    AofRedis,
    Case,
    Workers,
    group_state,
    payload,
    publish,
    read_ledger,
    tally,
    wait_drained,
    wait_for,
)

pytestmark = pytest.mark.redis

CLAIM_IDLE_MS = 4000


def runs_by(w: Workers, pid: int, event: str) -> Counter[str]:
    return Counter(r["id"] for r in read_ledger(w.ledger) if r["ev"] == event and r["pid"] == pid)


def released_pending(client: redis.Redis) -> int:
    """Messages a stopping worker released, not yet taken by another."""
    for info in client.xinfo_consumers("jobs", "g"):
        if info["name"] == b"pulses:released":
            return int(info["pending"])
    return 0


def test_sigterm_drains_under_load(
    aof_redis: AofRedis, workers: Callable[..., Workers], seed: int
) -> None:
    client = aof_redis.client()
    with Case("sigterm-under-load", seed) as case:
        w = workers(
            aof_redis.url,
            FAULT_WORKERS="4",
            FAULT_MAX_IN_FLIGHT="16",
            FAULT_CLAIM_IDLE_MS=str(CLAIM_IDLE_MS),
        )
        a, b = w.start(), w.start()
        wait_for(lambda: client.exists("jobs"), 20, "the workers to create the group")
        ids = [f"m{i}" for i in range(200)]
        publish(aof_redis.url, [payload(i, "ok", "0.1") for i in ids])
        wait_for(lambda: sum(runs_by(w, a.pid, "S").values()) >= 8, 20, "worker A to be busy")
        a.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = a.wait(20)
        exited = time.monotonic() - signalled
        wait_for(lambda: released_pending(client) == 0, 30, "B to take the released messages")
        taken = time.monotonic() - signalled
        released = int(re.findall(r"released (\d+)", w.log(0))[-1])
        drain = wait_drained(client, w.ledger, ids, 30)
        started_a, ended_a = runs_by(w, a.pid, "S"), runs_by(w, a.pid, "E")
        figures = tally(client, w.ledger, ids)
        case.figures.update(
            figures,
            exit_code=code,
            exit_after_sigterm_s=round(exited, 2),
            started_by_a=sum(started_a.values()),
            unfinished_by_a=sum((started_a - ended_a).values()),
            released_by_a=released,
            released_taken_after_sigterm_s=round(taken, 2),
            drain_after_exit_s=round(drain, 2),
            claim_idle_s=CLAIM_IDLE_MS / 1000,
        )
        assert code == 0
        assert started_a == ended_a  # every handler A started finished there
        assert figures["lost"] == 0
        assert figures["duplicates"] == 0
        assert figures["unexpected"] == 0
        # What A released was taken at once by B, not by its next reclaim (every 2 s).
        assert released > 0
        assert taken < CLAIM_IDLE_MS / 2000 * 0.75
        assert b.poll() is None


def test_handler_longer_than_shutdown_timeout(
    aof_redis: AofRedis, workers: Callable[..., Workers], seed: int
) -> None:
    client = aof_redis.client()
    with Case("sigterm-long-handler", seed) as case:
        w = workers(aof_redis.url, FAULT_CLAIM_IDLE_MS=str(CLAIM_IDLE_MS))
        a = w.start("--shutdown-timeout", "0.5")
        wait_for(lambda: client.exists("jobs"), 20, "worker A to create the group")
        publish(aof_redis.url, [payload("long", "ok", "3")])
        wait_for(lambda: runs_by(w, a.pid, "S")["long"], 20, "worker A to start it")
        b = w.start()
        a.send_signal(signal.SIGTERM)
        code = a.wait(20)
        pending_after_exit = group_state(client)["pending"]
        wait_drained(client, w.ledger, ["long"], 30)
        runs = [r for r in read_ledger(w.ledger) if r.get("id") == "long"]
        case.figures.update(
            tally(client, w.ledger, ["long"]),
            exit_code=code,
            pending_after_exit=pending_after_exit,
            runs=[(r["ev"], "A" if r["pid"] == a.pid else "B", r["d"]) for r in runs],
        )
        assert code == 0
        assert pending_after_exit == 1  # never acked by A
        assert ("E", a.pid) not in {(r["ev"], r["pid"]) for r in runs}
        assert [(r["ev"], r["pid"], r["d"]) for r in runs if r["pid"] == b.pid] == [
            ("S", b.pid, 2),
            ("E", b.pid, 2),
        ]


def test_second_signal_forces_the_stop(
    aof_redis: AofRedis, workers: Callable[..., Workers], seed: int
) -> None:
    client = aof_redis.client()
    with Case("sigterm-twice", seed) as case:
        w = workers(aof_redis.url, FAULT_CLAIM_IDLE_MS=str(CLAIM_IDLE_MS))
        a = w.start()
        wait_for(lambda: client.exists("jobs"), 20, "worker A to create the group")
        publish(aof_redis.url, [payload("long", "ok", "5")])
        wait_for(lambda: runs_by(w, a.pid, "S")["long"], 20, "worker A to start it")
        a.send_signal(signal.SIGTERM)
        wait_for(lambda: "finishing running handlers" in w.log(0), 10, "the first signal")
        a.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        code = a.wait(20)
        stopped = time.monotonic() - t0
        pending_after_exit = group_state(client)["pending"]
        b = w.start()
        wait_drained(client, w.ledger, ["long"], 30)
        runs = [(r["ev"], r["pid"], r["d"]) for r in read_ledger(w.ledger) if r["id"] == "long"]
        case.figures.update(
            tally(client, w.ledger, ["long"]),
            exit_code=code,
            stopped_after_second_signal_s=round(stopped, 2),
            pending_after_exit=pending_after_exit,
        )
        assert code == 130
        assert stopped < 2
        assert pending_after_exit == 1
        assert runs == [("S", a.pid, 1), ("S", b.pid, 2), ("E", b.pid, 2)]
