"""Leases: Retry(after_ms) longer than claim_idle, a handler far longer than claim_idle,
and a worker frozen with SIGSTOP that must not take a message back once resumed."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable

import pytest

from faults.fault_harness import (
    AofRedis,
    Case,
    Workers,
    payload,
    publish,
    read_ledger,
    started,
    tally,
    wait_drained,
    wait_for,
)

pytestmark = pytest.mark.redis

CLAIM_IDLE_MS = 1000


def test_retry_longer_than_claim_idle_and_long_handler(
    aof_redis: AofRedis, workers: Callable[..., Workers], seed: int
) -> None:
    client = aof_redis.client()
    with Case("leases", seed) as case:
        w = workers(aof_redis.url, FAULT_CLAIM_IDLE_MS=str(CLAIM_IDLE_MS))
        w.start()
        w.start()
        wait_for(lambda: client.exists("jobs"), 20, "the workers to create the group")
        retries = [f"r{i}" for i in range(20)]
        longs = [f"long{i}" for i in range(4)]
        after_ms = 3 * CLAIM_IDLE_MS
        publish(
            aof_redis.url,
            [payload(r, "retry", str(after_ms)) for r in retries]
            + [payload(x, "ok", str(4 * CLAIM_IDLE_MS / 1000)) for x in longs],
        )
        wait_drained(client, w.ledger, retries + longs, 30)
        records = read_ledger(w.ledger)
        runs = started(records)
        gaps = []
        for r in retries:
            first_end = next(x["t"] for x in records if x["id"] == r and x.get("out") == "retry")
            gaps.append(runs[r][1]["t"] - first_end)
        case.figures.update(
            tally(client, w.ledger, retries + longs),
            retry_runs=sorted(Counter(len(runs[r]) for r in retries).items()),
            retry_after_s=after_ms / 1000,
            retry_min_gap_s=round(min(gaps), 3),
            long_handler_s=4 * CLAIM_IDLE_MS / 1000,
            long_runs=[len(runs[x]) for x in longs],
        )
        assert all(len(runs[r]) == 2 for r in retries)
        assert min(gaps) >= after_ms / 1000 - 0.01
        assert all(len(runs[x]) == 1 for x in longs)


def pending_owner(client: object, entry_id: bytes) -> str | None:
    rows = client.xpending_range("jobs", "g", entry_id, entry_id, 1)  # type: ignore[attr-defined]  # the sync client types lack it
    return rows[0]["consumer"].decode() if rows else None


def test_sigstopped_worker_never_takes_a_message_back(
    aof_redis: AofRedis, workers: Callable[..., Workers], seed: int
) -> None:
    client = aof_redis.client()
    with Case("sigstop", seed) as case:
        w = workers(aof_redis.url, FAULT_CLAIM_IDLE_MS=str(CLAIM_IDLE_MS))
        a = w.start()
        wait_for(lambda: client.exists("jobs"), 20, "worker A to create the group")
        (entry,) = publish(aof_redis.url, [payload("m", "ok", "4")])
        wait_for(lambda: started(read_ledger(w.ledger))["m"], 20, "A to start it")
        a.send_signal(signal.SIGSTOP)
        b = w.start()
        wait_for(
            lambda: f"-{b.pid}-" in (pending_owner(client, entry.encode()) or ""),
            20,
            "B to reclaim the message of the frozen A",
        )
        a.send_signal(signal.SIGCONT)
        owners = set()
        # Until B settles it, the message must stay B's: A's lease keeper runs every
        # claim_idle / 3 and must not claim it back.
        while (owner := pending_owner(client, entry.encode())) is not None:
            owners.add("A" if f"-{a.pid}-" in owner else "B" if f"-{b.pid}-" in owner else owner)
            time.sleep(0.02)
        wait_drained(client, w.ledger, ["m"], 20)
        runs = [(r["ev"], "A" if r["pid"] == a.pid else "B") for r in read_ledger(w.ledger)]
        case.figures.update(owners_after_resume=sorted(owners), runs=runs)
        assert owners == {"B"}
