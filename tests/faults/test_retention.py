"""Retention under real worker processes: a million acknowledged entries trimmed to the
history while the server keeps answering, and a group that lags behind never loses an
entry it has not acknowledged."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from faults.fault_harness import (
    STREAM,
    AofRedis,
    Case,
    Workers,
    acked,
    group_state,
    payload,
    publish,
    read_ledger,
    wait_for,
)
from redis_server import RedisServer, redis_server_binary

pytestmark = pytest.mark.redis

MILLION = 1_000_000
HISTORY = 1000
TRIMMED = "{" + STREAM + "}:trimmed"

# A million entries in ten server-side loops: a Python pipeline would take a minute.
_FILL = """
for i = 1, tonumber(ARGV[1]) do redis.call('XADD', KEYS[1], '*', 'payload', ARGV[2]) end
"""


class _Pings:
    """The slowest PING answer while it runs: how long the server stalled at most."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=30)
        self.worst = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            t0 = time.perf_counter()
            self.client.ping()
            self.worst = max(self.worst, time.perf_counter() - t0)
            self.stop.wait(0.002)

    def __enter__(self) -> _Pings:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_worker_keeps_a_million_acknowledged_entries_within_the_history(
    case_dir: Path, workers: Callable[..., Workers], seed: int
) -> None:
    data = case_dir / "redis-retention"
    data.mkdir()
    server = RedisServer(redis_server_binary(), data)  # no AOF: a million fsyncs
    server.start()
    try:
        client = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=60)
        with Case("retention-1m", seed) as case:
            t0 = time.monotonic()
            for _ in range(MILLION // 100_000):
                client.eval(_FILL, 1, STREAM, 100_000, payload("old"))
            # The group has read every entry and holds none: all acknowledged.
            client.xgroup_create(STREAM, "g", id="$")
            case.figures["fill_s"] = round(time.monotonic() - t0, 1)
            w = workers(server.url, PULSES_RETENTION=str(HISTORY))
            with _Pings(server.url) as pings:
                started = time.monotonic()
                w.start()
                wait_for(lambda: client.xlen(STREAM) == HISTORY, 120, "the first trim")
                case.figures["trim_s"] = round(time.monotonic() - started, 1)
            case.figures["worst_ping_ms"] = round(pings.worst * 1000, 1)
            # The worker goes on: what it handles now is trimmed in the next rounds.
            ids = publish(server.url, [payload(f"n{i}") for i in range(5000)])
            wait_for(
                lambda: group_state(client)["lag"] == 0 and group_state(client)["pending"] == 0,
                60,
                "the worker to handle the new messages",
            )
            wait_for(lambda: client.xlen(STREAM) == HISTORY, 30, "the next trim")
            kept = _stream_ids(client)
            assert kept == ids[-HISTORY:]
            info = subprocess.run(
                [sys.executable, "-m", "pulses", "info", server.url, STREAM],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            removed = MILLION + 5000 - HISTORY
            assert f"  trimmed {removed} in total," in info
            assert f"which kept the newest {HISTORY} entries" in info
            case.figures.update(entries=MILLION, history=HISTORY, removed=removed)
            # The trim pauses the server for one chunk at a time, not for the whole million.
            assert pings.worst < 0.5
    finally:
        server.stop()


def _unacknowledged_are_readable(client: redis.Redis, ids: list[str], done: set[str]) -> int:
    """Every entry the lagging group has not acknowledged is still in the stream; how
    many entries the stream holds below the oldest of them (what a trim may still take)."""
    present = set(_stream_ids(client))
    missing = [i for i in ids if i not in done and i not in present]
    assert not missing, f"{len(missing)} unacknowledged entries were trimmed: {missing[:5]}"
    oldest = next(i for i in ids if i not in done)
    return sum(1 for i in present if tuple(map(int, i.split("-"))) < _key(oldest))


def _raw(client: redis.Redis, *args: str | int) -> Any:
    """One command's reply as the server sent it (redis-py's typed methods are unions)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped


def _stream_ids(client: redis.Redis) -> list[str]:
    entries: list[list[Any]] = _raw(client, "XRANGE", STREAM, "-", "+")
    return [entry[0].decode() for entry in entries]


def _key(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


def _trim_after(client: redis.Redis, since: bytes | None) -> bytes:
    """Wait for a trim that ran after the one recorded as ``since``."""

    def newer() -> bytes | None:
        last: bytes | None = _raw(client, "HGET", TRIMMED, "last_ms")
        return last if last is not None and last != since else None

    found: bytes = wait_for(newer, 20, "a trim by the worker")
    return found


def test_a_lagging_group_never_loses_an_entry_it_has_not_acknowledged(
    aof_redis: AofRedis, workers: Callable[..., Workers], seed: int
) -> None:
    client = aof_redis.client()
    with Case("retention-lagging-group", seed) as case:
        client.xgroup_create(STREAM, "lagging", id="0", mkstream=True)
        kinds = [("retry", "300") if i % 50 == 0 else ("ok", "") for i in range(3000)]
        ids = publish(aof_redis.url, [payload(f"m{i}", *kind) for i, kind in enumerate(kinds)])
        # Keep nothing acknowledged, trim every 50 ms: the most a trim can take.
        w = workers(aof_redis.url, FAULT_RETENTION="0:50")
        w.start()
        wait_for(
            lambda: len(acked(read_ledger(w.ledger))) == 3000,
            60,
            "the worker to handle every message (retries included)",
        )
        since = _trim_after(client, None)
        since = _trim_after(client, since)
        done: set[str] = set()
        assert _unacknowledged_are_readable(client, ids, done) == 0
        assert client.xlen(STREAM) == 3000  # the lagging group has read nothing yet
        rounds = 0
        while len(done) < len(ids):
            # Read 400, acknowledge them out of order, leaving every fourth pending
            # until the next round: the oldest pending entry holds the trim back.
            reply: list[list[Any]] | None = _raw(
                client, "XREADGROUP", "GROUP", "lagging", "c", "COUNT", 400, "STREAMS", STREAM, ">"
            )
            read = [entry[0].decode() for entry in reply[0][1]] if reply else []
            held = [i for n, i in enumerate(read) if n % 4 == 0]
            now = [i for i in read if i not in held]
            if now:
                client.xack(STREAM, "lagging", *now)
            done.update(now)
            since = _trim_after(client, _trim_after(client, since))
            below = _unacknowledged_are_readable(client, ids, done) if len(done) < len(ids) else 0
            assert below == 0, f"{below} acknowledged entries below the oldest unacknowledged"
            if held:
                client.xack(STREAM, "lagging", *held)
                done.update(held)
            rounds += 1
        since = _trim_after(client, _trim_after(client, since))
        assert client.xlen(STREAM) == 0
        assert group_state(client)["pending"] == 0
        ledger = read_ledger(w.ledger)
        retried = {f"m{i}" for i, kind in enumerate(kinds) if kind[0] == "retry"}
        assert all(acked(ledger)[ident] == 1 for ident in retried)
        case.figures.update(entries=len(ids), rounds=rounds, retried=len(retried))
