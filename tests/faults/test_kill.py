"""A worker process SIGKILLed mid-batch, several times, while others run."""

from __future__ import annotations

import functools
import os
import random
import signal
import time
from collections.abc import Callable

import pytest

from faults.fault_harness import (
    GROUP,
    STREAM,
    AofRedis,
    Case,
    Workers,
    children,
    payload,
    publish,
    tally,
    wait_drained,
    wait_for,
)

pytestmark = pytest.mark.redis

CLAIM_IDLE_MS = 1000
MAX_IN_FLIGHT = 8


def consumer_pending(client: object, pid: int) -> int:
    """Messages the consumer of process ``pid`` holds, over the stream and retry stream."""
    total = 0
    for key in (STREAM, "{" + STREAM + "}:retry:" + GROUP):
        try:
            infos = client.xinfo_consumers(key, GROUP)  # type: ignore[attr-defined]  # the sync client types lack it
        except Exception:
            continue
        for info in infos:
            name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
            if f"-{pid}-" in name:
                total += int(info["pending"])
    return total


def gone(client: object, pid: int) -> bool:
    return consumer_pending(client, pid) == 0


def run_kills(
    aof_redis: AofRedis,
    workers: Callable[..., Workers],
    seed: int,
    *,
    messages: int,
    kills: int,
    sleep: str,
    case: Case,
) -> None:
    rng = random.Random(seed)
    client = aof_redis.client()
    w = workers(
        aof_redis.url,
        FAULT_MAX_IN_FLIGHT=str(MAX_IN_FLIGHT),
        FAULT_CLAIM_IDLE_MS=str(CLAIM_IDLE_MS),
    )
    supervisor = w.start("-w", "3")
    wait_for(lambda: len(children(supervisor.pid)) == 3, 20, "3 worker processes")
    ids = [f"m{i}" for i in range(messages)]
    publish(aof_redis.url, [payload(i, "ok", sleep) for i in ids])

    takeovers, in_flight = [], []
    for _ in range(kills):
        time.sleep(rng.uniform(0.3, 0.9))  # a random point of the run, not a wait
        victim = wait_for(
            lambda: next(
                (p for p in children(supervisor.pid) if consumer_pending(client, p) > 0), None
            ),
            20,
            "a worker holding messages",
            interval=0.01,
        )
        held = consumer_pending(client, victim)
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        in_flight.append(held)
        wait_for(
            functools.partial(gone, client, victim),
            CLAIM_IDLE_MS / 1000 * 5 + 10,
            f"the messages of killed pid {victim} to be taken over",
            interval=0.02,
        )
        takeovers.append(round(time.monotonic() - killed_at, 3))
        wait_for(
            lambda: len(children(supervisor.pid)) == 3,
            10,
            "the supervisor to start a new worker",
        )

    drain = wait_drained(client, w.ledger, ids, 120)
    figures = tally(client, w.ledger, ids)
    case.figures.update(
        figures,
        kills=kills,
        in_flight_at_kills=in_flight,
        takeover_s=takeovers,
        takeover_bound_s=(CLAIM_IDLE_MS + CLAIM_IDLE_MS // 2) / 1000 + 1,
        drain_after_last_kill_s=round(drain, 2),
    )
    assert figures["lost"] == 0
    assert figures["unexpected"] == 0
    assert figures["dead_lettered"] == 0
    assert figures["duplicates"] <= sum(in_flight)
    # claim_idle, plus one reclaim interval, plus a second for polling and a restart.
    assert max(takeovers) <= case.figures["takeover_bound_s"]


def test_sigkill_once_mid_batch(
    aof_redis: AofRedis, workers: Callable[..., Workers], seed: int
) -> None:
    with Case("sigkill-once", seed) as case:
        run_kills(aof_redis, workers, seed, messages=1500, kills=1, sleep="0.01", case=case)


@pytest.mark.slow
def test_sigkill_repeatedly_mid_batch(
    aof_redis: AofRedis, workers: Callable[..., Workers], seed: int
) -> None:
    with Case("sigkill-repeated", seed) as case:
        run_kills(aof_redis, workers, seed, messages=6000, kills=4, sleep="0.03", case=case)
