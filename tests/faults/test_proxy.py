"""Connections reset, refused, stalled and slowed between the workers and Redis; a fetch
whose reply is lost; one stalled connection (open and silent) under a live worker."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator

import pytest

from faults.fault_harness import (
    SETTINGS,
    AofRedis,
    Case,
    Flow,
    Workers,
    case_name,
    held_by,
    payload,
    publish,
    read_ledger,
    started,
    tally,
    wait_drained,
    wait_for,
)
from faults.fault_proxy import Proxy
from pulses_redis._connection import SOCKET_TIMEOUT as DEFAULT_SOCKET_TIMEOUT
from pulses_redis._scripts import READ

pytestmark = pytest.mark.redis

SOCKET_TIMEOUT = 3.0
ENTRY_ID = re.compile(rb"\b\d{13}-\d+\b")
RECOVERY_BOUND_S = 10.0
"""Far below the default claim_idle (60 s), which is what a stranded message waited."""


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
        with Flow(aof_redis, 200) as flow:
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

            ids = flow.stop()
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


def socket_timeout(settings: str) -> tuple[float, str]:
    """The socket timeout of ``settings`` and the URL query that sets it, if any."""
    if settings == "defaults":
        return DEFAULT_SOCKET_TIMEOUT, ""
    return SOCKET_TIMEOUT, f"?socket_timeout={SOCKET_TIMEOUT}"


@pytest.mark.parametrize("settings", ["defaults", "tuned"])
def test_a_lost_fetch_reply_is_read_again(
    aof_redis: AofRedis,
    proxy: Proxy,
    workers: Callable[..., Workers],
    seed: int,
    settings: str,
) -> None:
    """Issue 9: a fetch whose reply was lost (Redis took entries for the consumer, the
    answer never came back) left them in the live worker's own pending list, where no
    one took them before claim_idle (60 s by default)."""
    client = aof_redis.client()
    timeout, query = socket_timeout(settings)
    with Case(case_name("lost-fetch-reply", settings), seed) as case:
        w = workers(proxy.url(query), **SETTINGS[settings])
        worker = w.start()
        wait_for(lambda: client.exists("jobs"), 20, "the worker to create the group")
        ids = [f"m{i}" for i in range(1500)]
        publish(aof_redis.url, [payload(i, "ok", "0.01") for i in ids])
        wait_for(lambda: handled(w) >= 100, 20, "messages to flow")
        proxy.lose_replies_to = (b"XREADGROUP", READ.sha.encode())
        lost = wait_for(
            lambda: set(ENTRY_ID.findall(b"".join(proxy.lost_replies))),
            timeout,
            "a fetch whose reply is lost",
            interval=0.005,
        )
        proxy.lose_replies_to = ()
        lost = {entry_id.decode() for entry_id in lost}
        # Redis took them for the worker, which never heard of them.
        assert lost <= set(held_by(client, worker.pid))
        proxy.reset()  # the reply is lost for good: the connection broke
        reset_at = time.monotonic()
        wait_for(
            lambda: lost <= {r["eid"] for r in read_ledger(w.ledger) if r["ev"] == "E"},
            RECOVERY_BOUND_S,
            f"the {len(lost)} entries of the lost fetch to be handled",
            interval=0.05,
        )
        recovered = time.monotonic() - reset_at
        wait_drained(client, w.ledger, ids, 60)
        figures = tally(client, w.ledger, ids)
        case.figures.update(
            figures,
            settings=settings,
            lost_fetch_entries=len(lost),
            lost_fetch_handled_after_s=round(recovered, 2),
            worker_alive=worker.poll() is None,
        )
        assert figures["lost"] == 0
        assert figures["unexpected"] == 0
        assert figures["dead_lettered"] == 0
        assert case.figures["worker_alive"]


@pytest.mark.parametrize("settings", [pytest.param("defaults", marks=pytest.mark.slow), "tuned"])
def test_a_stalled_connection_delays_no_job_past_the_socket_timeout(
    aof_redis: AofRedis,
    proxy: Proxy,
    workers: Callable[..., Workers],
    seed: int,
    settings: str,
) -> None:
    """Issue 9: a connection that stalled (open, silent) left a job waiting 87 s after
    the worker had recovered, and neither the stall nor the recovery was logged."""
    client = aof_redis.client()
    timeout, query = socket_timeout(settings)
    with Case(case_name("stalled-connection", settings), seed) as case:
        w = workers(proxy.url(query), **SETTINGS[settings])
        worker = w.start()
        wait_for(lambda: client.exists("jobs"), 20, "the worker to create the group")
        with Flow(aof_redis, 100) as flow:
            wait_for(lambda: handled(w) >= 100, 20, "messages to flow")
            log_before = len(w.log(0))
            closes = len(proxy.client_closes)
            stalled_at = time.monotonic()
            stalled = proxy.stall_open()
            wait_for(
                lambda: len(proxy.client_closes) > closes,
                timeout + 5,
                "the worker to give up on a stalled connection",
            )
            detected = proxy.client_closes[closes] - stalled_at
            after = {f"m{n}" for n in range(len(flow.ids), len(flow.ids) + 50)}
            wait_for(
                lambda: after <= set(started(read_ledger(w.ledger))),
                timeout + 10,
                "jobs published after the stall was detected to run",
            )
            ids = flow.stop()
        # The last jobs were published just now: they too wait no longer than promised.
        wait_drained(client, w.ledger, ids, timeout + 3)
        records = read_ledger(w.ledger)
        waits = [float(r["lat"]) for r in records if r["ev"] == "S"]

        def warnings_now() -> list[str]:
            return [line for line in w.log(0)[log_before:].splitlines() if " WARNING " in line]

        def settled_down() -> bool:
            # A stalled connection still in the pool fails the call that next uses it,
            # up to a socket timeout later: wait until each failure has its recovery.
            lines = warnings_now()
            return sum(" failed, " in x for x in lines) == sum(" works again " in x for x in lines)

        wait_for(settled_down, timeout + 5, "each connection failure to be followed by a recovery")
        warnings = warnings_now()
        figures = tally(client, w.ledger, ids)
        case.figures.update(
            figures,
            settings=settings,
            socket_timeout_s=timeout,
            stalled_connections=stalled,
            detected_after_s=round(detected, 2),
            longest_wait_s=round(max(waits), 2),
            # What each says, without the logger's name and the exception's details.
            warnings=[line.split(" WARNING ", 1)[1].split(": ", 1)[1][:70] for line in warnings],
            worker_alive=worker.poll() is None,
        )
        assert figures["lost"] == 0
        assert figures["unexpected"] == 0
        assert case.figures["worker_alive"]
        assert max(waits) <= timeout + 3
        # Each stalled connection is one WARNING when a call on it times out and one when
        # the next call works: never one line per loop, never silence.
        failures = [line for line in warnings if " failed, " in line]
        recoveries = [line for line in warnings if " works again " in line]
        assert 1 <= len(failures) == len(recoveries) <= stalled
