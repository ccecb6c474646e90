"""A worker process SIGKILLed mid-batch, once or several times: one of three supervised
processes, or the only one, restarted at once (a new, unique consumer name)."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable

import pytest
import redis

from faults.fault_harness import (
    SETTINGS,
    AofRedis,
    Case,
    Workers,
    case_name,
    children,
    dead,
    held_by,
    payload,
    pending_ids,
    publish,
    read_ledger,
    tally,
    wait_drained,
    wait_for,
)

pytestmark = pytest.mark.redis

TUNED_CLAIM_IDLE_MS = 1000
RERUN_BOUND_S = 5.0
"""Issue 9: a killed worker's jobs run again elsewhere within 5 s, with defaults."""
SERIAL = (
    "library limit: every job a dead consumer held is a suspect and runs alone, one after "
    "another, once its heartbeat lapsed (2-3 s): 8-16 held jobs of 0.5 s ran again 6.8-11 s "
    "after the kill"
)
TAKEOVER_DEADLINE_S = 30.0
"""How long a test waits for a takeover: far past the bound, which is checked apart."""


class SlowRerun(AssertionError):
    """The jobs a killed worker held ran again later than RERUN_BOUND_S: the one failure
    that SERIAL explains, so an xfail for it lets no other failure through."""


def rerun_elsewhere(
    client: redis.Redis, w: Workers, held: list[str], victim: int, since: float
) -> bool:
    """Whether every message ``victim`` held when it died started again in another
    process; one that the victim's last settle (in the socket as it died) acked counts
    as done."""
    records = read_ledger(w.ledger)
    missing = set(held) - {
        r["eid"] for r in records if r["ev"] == "S" and r["pid"] != victim and r["t"] >= since
    }
    if not missing:
        return True
    done_by_victim = {r["eid"] for r in records if r["ev"] == "E" and r["pid"] == victim}
    return missing <= done_by_victim - set(pending_ids(client))


def run_kills(
    aof_redis: AofRedis,
    workers: Callable[..., Workers],
    seed: int,
    *,
    settings: str,
    processes: int,
    messages: int,
    kills: int,
    sleep: str,
    case: Case,
) -> None:
    """Kill a process holding messages ``kills`` times. With ``processes`` > 1 the
    ``pulses worker -w`` supervisor restarts it; a single process is restarted here at
    once, as a service manager would."""
    rng = random.Random(seed)
    client = aof_redis.client()
    w = workers(aof_redis.url, **SETTINGS[settings])
    if processes == 1:
        w.start()

        def live() -> list[int]:
            return [p.pid for p in w.procs if p.poll() is None]

    else:
        supervisor = w.start("-w", str(processes))

        def live() -> list[int]:
            return children(supervisor.pid)

    wait_for(lambda: len(live()) == processes, 20, f"{processes} worker processes")
    ids = [f"m{i}" for i in range(messages)]
    publish(aof_redis.url, [payload(i, "ok", sleep) for i in ids])

    taken_over, rerun, in_flight = [], [], []
    for _ in range(kills):
        time.sleep(rng.uniform(0.3, 0.9))  # a random point of the run, not a wait
        victim = wait_for(
            lambda: next((p for p in live() if held_by(client, p)), None),
            20,
            "a worker holding messages",
            interval=0.01,
        )
        os.kill(victim, signal.SIGKILL)
        killed_at, killed_wall = time.monotonic(), time.time()
        if processes == 1:
            w.start()
        wait_for(lambda: dead(victim), 5, f"pid {victim} to die", interval=0.005)  # noqa: B023  (called at once)
        held = held_by(client, victim)
        in_flight.append(len(held))
        wait_for(
            lambda: not held_by(client, victim),  # noqa: B023  (called at once)
            TAKEOVER_DEADLINE_S,
            f"the messages of killed pid {victim} to be taken over",
            interval=0.02,
        )
        taken_over.append(round(time.monotonic() - killed_at, 3))
        wait_for(
            lambda: rerun_elsewhere(client, w, held, victim, killed_wall),  # noqa: B023  (called at once)
            TAKEOVER_DEADLINE_S,
            f"the messages of killed pid {victim} to run again elsewhere",
            interval=0.02,
        )
        rerun.append(round(time.monotonic() - killed_at, 3))
        wait_for(lambda: len(live()) == processes, 10, f"{processes} worker processes again")

    drain = wait_drained(client, w.ledger, ids, 120)
    figures = tally(client, w.ledger, ids)
    case.figures.update(
        figures,
        settings=settings,
        processes=processes,
        kills=kills,
        in_flight_at_kills=in_flight,
        takeover_s=taken_over,
        rerun_s=rerun,
        drain_after_last_kill_s=round(drain, 2),
    )
    assert figures["lost"] == 0
    assert figures["unexpected"] == 0
    assert figures["dead_lettered"] == 0
    assert figures["duplicates"] <= sum(in_flight)
    if max(rerun) > RERUN_BOUND_S:
        raise SlowRerun(f"held jobs ran again {max(rerun)} s after a kill, not {RERUN_BOUND_S}")
    if settings == "tuned":
        # claim_idle, plus one reclaim interval, plus a second for polling and a restart.
        case.figures["takeover_bound_s"] = TUNED_CLAIM_IDLE_MS * 1.5 / 1000 + 1
        assert max(taken_over) <= case.figures["takeover_bound_s"]


def test_sigkill_once_mid_batch(
    aof_redis: AofRedis, workers: Callable[..., Workers], seed: int
) -> None:
    with Case("sigkill-once", seed) as case:
        run_kills(
            aof_redis,
            workers,
            seed,
            settings="tuned",
            processes=3,
            messages=1500,
            kills=1,
            sleep="0.01",
            case=case,
        )


@pytest.mark.parametrize(
    ("settings", "sleep"),
    [
        ("defaults", "0.02"),
        pytest.param(
            "defaults",
            "0.5",
            marks=pytest.mark.xfail(raises=SlowRerun, strict=True, reason=SERIAL),
        ),
        pytest.param("tuned", "0.02", marks=pytest.mark.slow),
    ],
)
def test_sigkill_and_restart_at_once(
    aof_redis: AofRedis, workers: Callable[..., Workers], seed: int, settings: str, sleep: str
) -> None:
    """Issue 9: one `pulses worker`, jobs published ahead, SIGKILLed and restarted at
    once under a new consumer name: its jobs ran again only after claim_idle (60 s)."""
    base = "sigkill-restart" if sleep == "0.02" else f"sigkill-restart-{sleep}s-jobs"
    with Case(case_name(base, settings), seed) as case:
        run_kills(
            aof_redis,
            workers,
            seed,
            settings=settings,
            processes=1,
            messages=int(40 / float(sleep)),  # 5 s of work for 8 workers
            kills=1,
            sleep=sleep,
            case=case,
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("settings", "messages", "sleep"),
    # Work to outlast four kills and takeovers: with defaults 8 workers a process, and a
    # takeover by liveness takes about 4 s.
    [("defaults", 18000, "0.03"), ("tuned", 6000, "0.03")],
)
def test_sigkill_repeatedly_mid_batch(
    aof_redis: AofRedis,
    workers: Callable[..., Workers],
    seed: int,
    settings: str,
    messages: int,
    sleep: str,
) -> None:
    with Case(case_name("sigkill-repeated", settings), seed) as case:
        run_kills(
            aof_redis,
            workers,
            seed,
            settings=settings,
            processes=3,
            messages=messages,
            kills=4,
            sleep=sleep,
            case=case,
        )
