"""The pulses command as real processes against a real redis-server."""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from pulses import Envelope
from pulses.cli import EXIT
from pulses_redis import RedisBroker
from redis_helpers import fetch_n

pytestmark = pytest.mark.redis

Spawn = Callable[..., subprocess.Popen[str]]  # the spawn fixture of tests/cli/conftest.py


def wait_until(condition: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.02)


def read_until(pipe: IO[str] | None, *texts: str, timeout: float = 15.0) -> str:
    """What the process wrote on ``pipe`` until every one of ``texts`` appeared."""
    assert pipe is not None
    deadline = time.monotonic() + timeout
    seen = ""
    with selectors.DefaultSelector() as selector:
        selector.register(pipe, selectors.EVENT_READ)
        while not all(text in seen for text in texts):
            left = deadline - time.monotonic()
            assert left > 0, f"{texts!r} did not all appear: {seen}"
            if selector.select(left):
                # Raw reads: a buffered readline could hold lines select() cannot see.
                chunk = os.read(pipe.fileno(), 65536)
                assert chunk, f"closed before {texts!r}: {seen}"
                seen += chunk.decode()
    return seen


def read_stderr_until(proc: subprocess.Popen[str], *texts: str, timeout: float = 15.0) -> str:
    return read_until(proc.stderr, *texts, timeout=timeout)


def ledger(app_dir: Path) -> list[str]:
    path = app_dir / "ledger.txt"
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("STREAM", name)
    return name


@pytest.fixture
async def broker(redis_url: str) -> AsyncIterator[RedisBroker]:
    async with await RedisBroker.connect(redis_url) as broker:
        yield broker


@dataclass
class Done:
    stdout: str
    stderr: str


def pulses(
    spawn: Spawn, *args: str, env: dict[str, str] | None = None, stdin: str = "", code: int = 0
) -> Done:
    """Run one pulses command to its end and check its exit code."""
    proc = spawn(*args, env=env, stdin=subprocess.PIPE)
    stdout, stderr = proc.communicate(stdin, timeout=30)
    assert proc.returncode == code, stderr
    return Done(stdout, stderr)


@pytest.fixture
def start_worker(spawn: Spawn, redis_url: str, stream: str) -> Spawn:
    def start(*args: str, url: str = redis_url) -> subprocess.Popen[str]:
        return spawn("worker", "jobs:app", "--url", url, *args, env={"STREAM": stream})

    return start


async def pending(broker: RedisBroker, stream: str) -> int:
    stats = await broker.stats(stream)
    return sum(g.pending for g in stats.groups)


async def test_sigterm_drains_a_running_handler_and_exits_0(
    app_dir: Path, stream: str, broker: RedisBroker, start_worker: Spawn, redis_url: str
) -> None:
    await broker.publish_many(stream, [b"a", b"b", b"sleep:0.5"])
    worker = start_worker()
    wait_until(lambda: "started sleep:0.5" in ledger(app_dir), what="the slow job to start")
    worker.send_signal(signal.SIGTERM)
    _, stderr = worker.communicate(timeout=15)
    assert worker.returncode == 0, stderr
    assert sorted(ledger(app_dir)) == ["a", "b", "sleep:0.5", "started sleep:0.5"]
    assert "press Ctrl+C again to force" in stderr
    assert "pulses stopped: handled 3 (acked 3" in stderr
    assert await pending(broker, stream) == 0


async def test_a_second_signal_forces_the_stop_and_acknowledges_nothing_unfinished(
    app_dir: Path, stream: str, broker: RedisBroker, start_worker: Spawn, redis_url: str
) -> None:
    await broker.publish(stream, b"sleep:30")
    worker = start_worker()
    wait_until(lambda: "started sleep:30" in ledger(app_dir), what="the job to start")
    worker.send_signal(signal.SIGINT)
    # Two signals sent at once may arrive as one; the second goes once the first is seen.
    seen = read_stderr_until(worker, "press Ctrl+C again")
    worker.send_signal(signal.SIGINT)
    _, rest = worker.communicate(timeout=10)
    stderr = seen + rest
    assert worker.returncode == EXIT["forced"], stderr
    assert "sleep:30" not in ledger(app_dir)  # never finished...
    assert await pending(broker, stream) == 1  # ...so never acknowledged


async def test_burst_drains_the_stream_then_exits_0(
    app_dir: Path, stream: str, broker: RedisBroker, start_worker: Spawn, redis_url: str
) -> None:
    await broker.publish_many(stream, [str(i).encode() for i in range(25)] + [b"dead:x"])
    worker = start_worker("--burst")
    _, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 0, stderr
    assert len(ledger(app_dir)) == 26
    assert f"Record[{stream}]x2" in stderr


async def test_check_tells_a_live_broker_from_a_dead_one(start_worker: Spawn) -> None:
    live = start_worker("--check")
    out, err = live.communicate(timeout=15)
    assert live.returncode == 0, err
    assert out.startswith("ok: redis://")
    dead_url = "redis://:hunter2@127.0.0.1:1/0"  # nothing listens on port 1
    dead = start_worker("--check", url=dead_url)
    out, err = dead.communicate(timeout=30)
    assert dead.returncode == EXIT["failed"]
    assert "pulses: check:" in err
    assert "broker redis://:***@127.0.0.1:1/0, from --url (instead of the app's own" in err
    assert "hunter2" not in out + err
    assert "Traceback" not in err


async def consumer_count(broker: RedisBroker, stream: str) -> int:
    return sum(len(g.consumers) for g in (await broker.stats(stream)).groups)


async def eventually(
    value: Callable[[], Awaitable[int]],
    at_least: int,
    timeout: float = 15.0,  # noqa: ASYNC109  (a deadline for the whole wait)
) -> None:
    deadline = time.monotonic() + timeout
    while (got := await value()) < at_least:
        assert time.monotonic() < deadline, f"only {got}, wanted {at_least}"
        await asyncio.sleep(0.05)


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_text()


def children_of(pid: int) -> set[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return {int(p) for p in found.split()}


async def test_two_processes_share_the_work_and_a_killed_one_is_restarted(
    app_dir: Path, stream: str, broker: RedisBroker, start_worker: Spawn, redis_url: str
) -> None:
    supervisor = start_worker("-w", "2")
    wait_until(lambda: len(children_of(supervisor.pid)) == 2, what="two children")
    first = children_of(supervisor.pid)
    for pid in first:  # the URL (and any password in it) reaches children by environment
        assert redis_url not in cmdline(pid)
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: len(children_of(supervisor.pid)) == 2 and victim not in children_of(supervisor.pid),
        what="the killed child to be replaced",
    )
    # The surviving child and the replacement have both started (their consumer names
    # hold their pids).
    read_stderr_until(supervisor, *(f"-{pid}-" for pid in children_of(supervisor.pid)))
    # Slow jobs: one process holds at most MAX_IN_FLIGHT (4) and alone would need 3 s,
    # longer than the other takes to reach its first fetch even on a busy machine.
    await broker.publish_many(stream, [b"sleep:0.5"] * 12)
    await eventually(lambda: consumer_count(broker, stream), at_least=2)
    wait_until(lambda: ledger(app_dir).count("sleep:0.5") == 12, what="all 12 jobs")
    supervisor.send_signal(signal.SIGTERM)
    _, stderr = supervisor.communicate(timeout=20)
    assert supervisor.returncode == 0, stderr
    assert children_of(supervisor.pid) == set()


async def test_info_and_dlq_show_replay_and_purge_dead_letters(
    stream: str, broker: RedisBroker, start_worker: Spawn, redis_url: str, spawn: Spawn
) -> None:
    await broker.publish_many(stream, [b"ok", b"dead:1", b"dead:2"])
    worker = start_worker("--burst")
    assert worker.wait(30) == 0

    result = pulses(spawn, "info", redis_url, stream, "--json")
    [info] = json.loads(result.stdout)
    [group] = info["groups"]
    assert (info["stream"], info["dead_letters"]) == (stream, 2)
    assert (group["group"], group["acked"], group["dead_lettered"], group["pending"]) == (
        "workers",
        1,
        2,
        0,
    )
    assert {"lag", "delayed", "oldest_pending_ms", "consumers"} <= set(group)

    text = pulses(spawn, "info", redis_url, stream, env={"NO_COLOR": "1"}).stdout
    assert f"stream {stream}" in text
    assert "\x1b[" not in text

    listed = pulses(spawn, "dlq", "list", redis_url, stream).stdout.splitlines()
    assert len(listed) == 2
    assert all("asked to" in line and "deliveries 1" in line for line in listed)
    first_id = listed[0].split()[0]
    shown = json.loads(pulses(spawn, "dlq", "show", redis_url, stream, first_id).stdout)
    assert (shown["payload"], shown["reason"], shown["group"]) == ("dead:1", "asked to", "workers")

    result = pulses(spawn, "dlq", "replay", redis_url, stream, first_id)
    assert "replayed 1 dead letter into" in result.stdout
    result = pulses(spawn, "dlq", "purge", redis_url, stream, "--all", stdin="n\n", code=1)
    assert "Aborted" in result.stderr  # declined: nothing removed
    assert len(await broker.dead_letters(stream)) == 1
    result = pulses(spawn, "dlq", "purge", redis_url, stream, "--all", "--yes")
    assert "purged 1 dead letter of" in result.stdout
    assert await broker.dead_letters(stream) == []
    assert (await broker.stats(stream)).groups[0].lag == 1  # the replayed one waits anew


async def test_trim_dry_run_then_trim_removes_only_what_every_group_acked(
    stream: str, broker: RedisBroker, start_worker: Spawn, redis_url: str, spawn: Spawn
) -> None:
    await broker.publish_many(stream, [b"1", b"2", b"3"])
    worker = start_worker("--burst")
    assert worker.wait(30) == 0
    await broker.publish(stream, b"unread")
    dry = pulses(spawn, "trim", redis_url, stream, "--dry-run")
    assert "would remove 3 acknowledged entries" in dry.stdout
    assert (await broker.stats(stream)).length == 4
    done = pulses(spawn, "trim", redis_url, stream)
    assert "removed 3 acknowledged entries" in done.stdout
    assert (await broker.stats(stream)).length == 1


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan is reaped by init, not by us)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_children_of_a_killed_supervisor_drain_and_stop_by_themselves(start_worker: Spawn) -> None:
    supervisor = start_worker("-w", "2")
    wait_until(lambda: len(children_of(supervisor.pid)) == 2, what="two children")
    children = children_of(supervisor.pid)
    read_stderr_until(supervisor, *(f"-{pid}-" for pid in children))  # both started
    supervisor.kill()  # SIGKILL: no signal is forwarded
    supervisor.wait(5)
    wait_until(lambda: not any(running(pid) for pid in children), what="orphans to stop")


BINARY = bytes(range(256)).replace(b"\n", b"") + b"\xff\xfe\x00"


async def test_publish_takes_binary_lines_from_stdin(
    stream: str, broker: RedisBroker, spawn: Spawn, redis_url: str, tmp_path: Path
) -> None:
    lines = tmp_path / "lines"
    lines.write_bytes(BINARY + b"\n" + b"\x80 second\n")
    with lines.open("rb") as stdin:
        proc = spawn("publish", redis_url, stream, stdin=stdin)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"published 2 to {stream}" in out
    assert [e.payload for e in await read_all(broker, stream)] == [BINARY, b"\x80 second"]


async def test_publish_takes_one_binary_payload_from_a_file_or_all_of_stdin(
    stream: str, broker: RedisBroker, spawn: Spawn, redis_url: str, tmp_path: Path
) -> None:
    body = tmp_path / "body.bin"
    body.write_bytes(BINARY + b"\nand a second line\n")
    pulses(spawn, "publish", redis_url, stream, "--file", str(body))
    with body.open("rb") as stdin:
        proc = spawn("publish", redis_url, stream, "--file", "-", stdin=stdin)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert [e.payload for e in await read_all(broker, stream)] == [body.read_bytes()] * 2


async def read_all(broker: RedisBroker, stream: str) -> list[Envelope]:
    """Every payload of the stream, through a consumer group of its own."""
    consumer = broker.consumer(broker.subscription("reader"), [stream], handler="reader")
    try:
        await consumer.ensure()
        return await fetch_n(consumer, (await broker.stats(stream)).length)
    finally:
        await consumer.aclose()


async def test_with_pulses_url_set_publish_takes_the_stream_first(
    stream: str, broker: RedisBroker, spawn: Spawn, redis_url: str
) -> None:
    done = pulses(spawn, "publish", stream, "hi", env={"PULSES_URL": redis_url})
    assert f"published 1 to {stream}" in done.stdout
    listed = pulses(spawn, "dlq", "list", stream, env={"PULSES_URL": redis_url})
    assert f"no dead letters in {stream}" in listed.stdout
    assert [e.payload for e in await read_all(broker, stream)] == [b"hi"]


def test_info_watch_shows_a_header_with_the_time_and_interval(
    stream: str, spawn: Spawn, redis_url: str
) -> None:
    pulses(spawn, "publish", redis_url, stream, "x")
    watch = spawn("info", redis_url, stream, "--watch", "0.2")
    seen = read_until(watch.stdout, f"{redis_url}  every 0.2s  ", f"stream {stream}")
    header = next(line for line in seen.splitlines() if "every 0.2s" in line)
    stamp = header.split("every 0.2s  ")[1].split("  (Ctrl+C")[0]
    assert time.strptime(stamp, "%Y-%m-%d %H:%M:%S")
    read_until(watch.stdout, "every 0.2s")  # it refreshes
    watch.send_signal(signal.SIGINT)
    assert watch.wait(10) == 0


def test_two_processes_say_each_warning_once_and_log_their_pids(start_worker: Spawn) -> None:
    supervisor = start_worker("-w", "2")
    wait_until(lambda: len(children_of(supervisor.pid)) == 2, what="two children")
    children = children_of(supervisor.pid)
    seen = read_stderr_until(supervisor, *(f"-{pid}-" for pid in children))  # both started
    supervisor.send_signal(signal.SIGTERM)
    _, rest = supervisor.communicate(timeout=20)
    stderr = seen + rest
    assert supervisor.returncode == 0, stderr
    assert stderr.count("press Ctrl+C again to force") == 1, stderr
    assert f"[{supervisor.pid}] WARNING pulses.worker: SIGTERM: the 2 worker processes" in stderr
    for pid in children:
        assert f"[{pid}] INFO pulses: pulses stopped" in stderr
