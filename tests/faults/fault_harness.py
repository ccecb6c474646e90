"""What the fault cases share: a Redis that can be killed and restarted, worker processes
started as ``pulses worker`` starts them, a ledger, a checker and JSON records.

Everything here waits on conditions with deadlines; processes are signalled by the pids
this harness started (or their children, found through /proc), never by name.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis

from pulses_redis import RedisBroker
from redis_server import RedisServer

HERE = Path(__file__).parent
RESULTS = Path(os.environ.get("PULSES_FAULT_RESULTS", HERE / "results"))
STREAM = "jobs"
GROUP = "g"

AOF = ["--appendonly", "yes", "--appendfsync", "always", "--maxmemory-policy", "noeviction"]

SETTINGS: dict[str, dict[str, str]] = {
    # fault_app's own: claim_idle 1 s, MAX_IN_FLIGHT 8, WORKERS 4, block 200 ms, ...
    "tuned": {},
    # The library's defaults, as an operator runs it: only WORKERS is chosen.
    "defaults": {"FAULT_DEFAULTS": "1", "FAULT_WORKERS": "8"},
}
"""Worker environments by name: each case that can runs under both (DESIGN §10: tuned
timings alone once hid a 60 s takeover and a poison that took good jobs with it)."""


def case_name(base: str, settings: str) -> str:
    """The record's case name: ``base`` for tuned settings, ``base-defaults`` else."""
    return base if settings == "tuned" else f"{base}-{settings}"


class AofRedis(RedisServer):
    """A redis-server with an fsync-always AOF, killable and restartable on its port and
    directory; ``wipe()`` before ``start()`` makes it come back empty."""

    def __init__(self, binary: str, directory: Path, extra: Iterable[str] = ()) -> None:
        super().__init__(binary, directory, [*AOF, *extra])

    def kill(self) -> None:
        """SIGKILL: what the AOF did not fsync is gone (with ``always``, nothing acked)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=5)

    def wipe(self) -> None:
        for path in self.directory.iterdir():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# -- workers --------------------------------------------------------------------------


@dataclass
class Workers:
    """``python -m pulses worker fault_app:app`` processes in one case directory."""

    directory: Path
    url: str
    env: Mapping[str, str] = field(default_factory=dict)
    name: str = "worker"
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def ledger(self) -> Path:
        return self.directory / "ledger.jsonl"

    def start(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        full_env = {
            **os.environ,
            # Ahead of the caller's path, which may point at another checkout's sources.
            "PYTHONPATH": os.pathsep.join(
                [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            "PULSES_URL": self.url,
            "LEDGER": str(self.ledger),
            **self.env,
            **(env or {}),
        }
        for name in ("REDIS_URL", "PULSES_WORKERS"):
            full_env.pop(name, None)
        log = open(self.directory / f"{self.name}-{n}.log", "wb")  # noqa: SIM115  (the child owns it)
        proc = subprocess.Popen(
            [sys.executable, "-m", "pulses", "worker", "fault_app:app", *args],
            cwd=self.directory,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def log(self, n: int) -> str:
        return (self.directory / f"{self.name}-{n}.log").read_text(errors="replace")

    def logs(self) -> str:
        return "".join(self.log(n) for n in range(len(self.procs)))

    def stop(self) -> None:
        """Kill what is left, by pid, children (a supervisor's) first."""
        for proc in self.procs:
            if proc.poll() is None:
                for child in children(proc.pid):
                    with _gone():
                        os.kill(child, signal.SIGKILL)
                proc.kill()
                proc.wait(10)


class Restarter:
    """Starts the worker again as soon as it exits, from a thread, as a service manager
    restarts a service (systemd's ``Restart=always``); ``restarts`` counts it.
    ``pulses worker`` with one process (``-w 1``, the default) supervises nothing."""

    def __init__(self, workers: Workers, *args: str) -> None:
        self.workers = workers
        self.args = args
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Restarter:
        self.proc = self.workers.start(*self.args)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.02):  # the poll interval of a process watcher
            if self.proc.poll() is not None:
                self.restarts += 1
                self.proc = self.workers.start(*self.args)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


class _gone:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is ProcessLookupError


def dead(pid: int) -> bool:
    """Whether a process is gone or a zombie (a supervisor's child not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def children(pid: int) -> list[int]:
    """Direct children of a process we started (Linux /proc)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


# -- publishing ---------------------------------------------------------------------


def payload(ident: str, kind: str = "ok", arg: str = "") -> bytes:
    return f"{ident}|{kind}|{arg}".encode()


def publish(url: str, payloads: list[bytes], stream: str = STREAM) -> list[str]:
    async def go() -> list[str]:
        async with RedisBroker.from_url(url) as broker:
            ids: list[str] = []
            for start in range(0, len(payloads), 1000):
                ids += await broker.publish_many(stream, payloads[start : start + 1000])
            return ids

    return asyncio.run(go())


class Flow:
    """Publishes ``m<n>|ok|<arg>`` straight to Redis at about ``rate`` a second, from a
    thread, until ``stop()``; ``ids`` are what it published."""

    def __init__(self, server: AofRedis, rate: float, arg: str = "0.001") -> None:
        self.server = server
        self.rate = rate
        self.arg = arg
        self.ids: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Flow:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        client = self.server.client()
        while not self._stop.wait(1 / self.rate):  # the pace of the flow, not a wait
            ident = f"m{len(self.ids)}"
            client.xadd(STREAM, {"payload": payload(ident, "ok", self.arg)})
            self.ids.append(ident)

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(5)
        return self.ids


# -- the ledger and the checker -------------------------------------------------------


def read_ledger(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    # The last line may be half written by a running worker: only whole lines count.
    lines = path.read_bytes().split(b"\n")[:-1]
    return [json.loads(line) for line in lines if line]


def ended(ledger: list[dict[str, Any]]) -> Counter[str]:
    """How many calls of each message id returned (acked or retried)."""
    return Counter(r["id"] for r in ledger if r["ev"] == "E")


def acked(ledger: list[dict[str, Any]]) -> Counter[str]:
    return Counter(r["id"] for r in ledger if r["ev"] == "E" and r.get("out") != "retry")


def started(ledger: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in ledger:
        if r["ev"] == "S":
            runs[r["id"]].append(r)
    return runs


def group_state(client: redis.Redis, stream: str = STREAM, group: str = GROUP) -> dict[str, int]:
    """pending, lag (stream and retry stream) and delayed retries/publishes of the group."""
    base = "{" + stream + "}"
    state = {"pending": 0, "lag": 0, "delayed": int(client.zcard(f"{base}:delayed"))}
    state["delayed"] += int(client.zcard(f"{base}:retry-delayed:{group}"))
    for key in (stream, f"{base}:retry:{group}"):
        try:
            infos = client.xinfo_groups(key)
        except redis.ResponseError:
            continue
        for info in infos:
            if info["name"] in (group, group.encode()):
                state["pending"] += int(info["pending"])
                state["lag"] += int(info.get("lag") or 0)
    return state


def pending_ids(client: redis.Redis, key: str = STREAM, consumer: bytes | None = None) -> list[str]:
    """Entry ids pending in the group on ``key`` (in one consumer, if named)."""
    rows = client.xpending_range(key, GROUP, "-", "+", 100_000, consumer)
    return [cast("bytes", row["message_id"]).decode() for row in rows]


def held_by(client: redis.Redis, pid: int) -> list[str]:
    """Entry ids pending in the consumer of process ``pid`` (default consumer names hold
    the pid), over the stream and its retry stream."""
    ids: list[str] = []
    for key in (STREAM, "{" + STREAM + "}:retry:" + GROUP):
        try:
            infos = client.xinfo_consumers(key, GROUP)
        except redis.ResponseError:
            continue
        for info in infos:
            if f"-{pid}-".encode() in info["name"] and info["pending"]:
                ids += pending_ids(client, key, info["name"])
    return ids


def dead_letters(client: redis.Redis, stream: str = STREAM) -> list[dict[bytes, bytes]]:
    entries = client.xrange("{" + stream + "}:dead") or []
    return [cast("dict[bytes, bytes]", fields) for _, fields in entries]


def dead_ids(client: redis.Redis, stream: str = STREAM) -> Counter[str]:
    found: Counter[str] = Counter()
    for fields in dead_letters(client, stream):
        body = fields.get(b"payload", b"")
        found[body.split(b"|", 1)[0].decode(errors="replace")] += 1
    return found


def wait_drained(
    client: redis.Redis, ledger: Path, expected: Iterable[str], timeout: float
) -> float:
    """Wait until every expected id was acked or dead-lettered and the group has nothing
    pending, unread or delayed; return how long that took."""
    want = set(expected)
    t0 = time.monotonic()

    def done() -> bool:
        state = group_state(client)
        if any(state.values()):
            return False
        seen = set(acked(read_ledger(ledger))) | set(dead_ids(client))
        return want <= seen

    wait_for(done, timeout, f"the group to drain ({group_state(client)})", interval=0.1)
    return time.monotonic() - t0


def tally(client: redis.Redis, ledger: Path, published: Iterable[str]) -> dict[str, Any]:
    """lost = published - handled - dead-lettered; unexpected; duplicates."""
    pub = set(published)
    records = read_ledger(ledger)
    handled = acked(records)
    dead = dead_ids(client)
    return {
        "published": len(pub),
        "handled": len(set(handled) & pub),
        "dead_lettered": len(set(dead) & pub),
        "lost": len(pub - set(handled) - set(dead)),
        "unexpected": len((set(handled) | set(dead)) - pub),
        "duplicates": sum(n - 1 for n in handled.values()) + sum(n - 1 for n in dead.values()),
        "both_handled_and_dead": len(set(handled) & set(dead)),
    }


def write_record(case: str, seed: int, figures: Mapping[str, Any], passed: bool) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "case": case,
        "seed": seed,
        "passed": passed,
        "python": sys.version.split()[0],
        "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "figures": dict(figures),
    }
    path = RESULTS / f"{case}-seed{seed}.json"
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


class Case:
    """Collects a case's figures and writes its JSON record however the case ends."""

    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        self.seed = seed
        self.figures: dict[str, Any] = {}

    def __enter__(self) -> Case:
        self.t0 = time.monotonic()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.figures["seconds"] = round(time.monotonic() - self.t0, 2)
        if exc is not None:
            self.figures["failure"] = str(exc)[:500]
        write_record(self.name, self.seed, self.figures, exc is None)


def pids_in(ledger: list[dict[str, Any]]) -> Iterator[int]:
    yield from {r["pid"] for r in ledger}
