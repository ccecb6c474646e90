"""What ``pulses worker`` logs (plain or JSON lines), and ``--check`` as a read-only probe."""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from pulses._logging import JsonFormatter
from pulses.cli import EXIT
from pulses_redis import RedisBroker

Spawn = Callable[..., subprocess.Popen[str]]  # the spawn fixture of tests/cli/conftest.py

JUDGE_MODULE = """
import os

from pulses import Ack, App, Broker, Context, DeadLetter, Envelope, Handler, Outcome
from pulses_memory import MemoryBroker


class Judge(Handler[Broker]):
    STREAMS = (os.environ.get("STREAM", "judged"),)
    MAX_DELIVERIES = 1

    async def handle(self, ctx: Context[Broker], msg: Envelope) -> Outcome:
        if msg.payload == b"boom":
            raise ValueError("no such customer")
        if msg.payload == b"reject":
            return DeadLetter("refund above the limit")
        ctx.logger.info("handled", extra={"order": msg.payload.decode()})
        return Ack()


broker = MemoryBroker("judge")
app = App(broker, broker.subscription("judges"), block_ms=50)
app.register(Judge())
"""


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"logs-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("STREAM", name)
    return name


@pytest.fixture
def judge(app_dir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (app_dir / "judge.py").write_text(textwrap.dedent(JUDGE_MODULE))
    monkeypatch.delitem(sys.modules, "judge", raising=False)
    return "judge:app"


@pytest.fixture
async def broker(redis_url: str) -> AsyncIterator[RedisBroker]:
    async with await RedisBroker.connect(redis_url) as broker:
        yield broker


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every line of ``stderr`` as a JSON object; fails on any line that is not one."""
    records = []
    for line in stderr.splitlines():
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert {"ts", "level", "logger", "message", "pid"} <= record.keys(), line
        records.append(record)
    return records


@pytest.mark.redis
@pytest.mark.parametrize("how", ["flag", "environment"])
async def test_json_logs_are_one_object_per_line_with_the_messages_fields(
    spawn: Spawn, judge: str, stream: str, broker: RedisBroker, redis_url: str, how: str
) -> None:
    ids = await broker.publish_many(stream, [b"A-1", b"boom", b"reject"])
    args, env = ["--log-format", "json"], {}
    if how == "environment":
        args, env = [], {"PULSES_LOG_FORMAT": "json"}
    worker = spawn("worker", judge, "--url", redis_url, "--burst", *args, env=env)
    _, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 0, stderr
    records = json_lines(stderr)
    dead = [r for r in records if "dead-lettered message" in r["message"]]
    assert [(r["message_id"], r["reason"].split(":")[0]) for r in dead] == [
        (ids[1], "ValueError"),
        (ids[2], "refund above the limit"),
    ]
    for r in dead:
        assert (r["level"], r["logger"], r["handler"], r["stream"], r["deliveries"]) == (
            "WARNING",
            "pulses.runtime",
            "Judge",
            stream,
            1,
        )
    [raised] = [r for r in records if "raised on message" in r["message"]]
    assert raised["level"] == "ERROR"
    assert raised["message_id"] == ids[1]
    assert "ValueError: no such customer" in raised["exception"]
    assert "Traceback" in raised["exception"]
    [handled] = [r for r in records if r["message"] == "handled"]
    assert (handled["logger"], handled["order"]) == ("pulses.handler.Judge", "A-1")


def test_a_worker_started_while_the_broker_is_down_says_so_at_once(
    spawn: Spawn, judge: str
) -> None:
    # Nothing listens on port 1. The reminders every 30 s are tested with a moved clock
    # (tests/core/test_runtime_logs.py); here, the first report and a clean stop.
    worker = spawn(
        "worker", judge, "--url", "redis://:hunter2@127.0.0.1:1/0", "--log-format", "json"
    )
    assert worker.stderr is not None
    seen = ""
    while "creating the consumer group failed" not in seen:  # pytest's timeout bounds it
        line = worker.stderr.readline()
        assert line, f"exited before reporting the broker: {seen}"
        seen += line
    worker.send_signal(signal.SIGTERM)
    _, rest = worker.communicate(timeout=30)
    assert worker.returncode == 0, seen + rest
    records = json_lines(seen + rest)
    [down] = [r for r in records if "failed, retrying" in r["message"]]
    assert down["level"] == "WARNING"
    assert "handler Judge: creating the consumer group failed" in down["message"]
    assert "127.0.0.1:1" in down["message"]
    assert "hunter2" not in seen + rest


def test_a_command_error_is_a_json_line_too(spawn: Spawn, judge: str) -> None:
    worker = spawn("worker", "no_such_module:app", "--log-format", "json")
    _, stderr = worker.communicate(timeout=30)
    assert worker.returncode == EXIT["import"]
    [record] = json_lines(stderr)
    assert record["level"] == "ERROR"
    assert "cannot import module 'no_such_module'" in record["message"]


def test_the_text_format_stays_the_default(spawn: Spawn, judge: str) -> None:
    worker = spawn("worker", judge, "--check")
    _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert " INFO pulses.worker: broker memory://judge" in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err.splitlines()[0])


def test_the_json_formatter_keeps_extras_and_never_fails_on_a_value() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger(f"pulses.test.{uuid.uuid4().hex}")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("odd %s", "values", extra={"path": Path("/x"), "level": "mine", "n": 3})
        try:
            raise KeyError("k")
        except KeyError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "odd values"
    assert (first["path"], first["n"]) == ("/x", 3)
    assert first["level"] == "WARNING"  # an extra never replaces a fixed key
    assert first["ts"].endswith("+00:00")
    assert "KeyError: 'k'" in second["exception"]


def test_importing_pulses_configures_no_logging() -> None:
    # As a library, Pulses must leave handlers to the application.
    code = (
        "import logging, pulses, pulses.cli, pulses_memory, pulses_redis, pulses_redis._broker\n"
        "names = ['', 'pulses', 'pulses.runtime', 'pulses.worker', 'pulses.redis']\n"
        "assert all(not logging.getLogger(n).handlers for n in names)\n"
        "assert logging.getLogger().level == logging.WARNING\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


# -- --check -------------------------------------------------------------------------


async def keys_of(broker: RedisBroker, stream: str) -> list[bytes]:
    """Every key of the stream and its companions ({stream}:dead, ...)."""
    found = [key async for key in broker._conn.client.scan_iter(match=f"*{stream}*")]
    return sorted(found)


@pytest.mark.redis
async def test_check_is_read_only_and_says_when_a_group_is_not_created_yet(
    spawn: Spawn, judge: str, stream: str, broker: RedisBroker, redis_url: str
) -> None:
    check = spawn("worker", judge, "--url", redis_url, "--check")
    out, err = check.communicate(timeout=30)
    assert check.returncode == 0, err
    assert out == f"ok: {redis_url}, group 'judges'; the group is not created yet on {stream}\n"
    assert await keys_of(broker, stream) == []  # no stream, no group, no companion
    # Once a worker ran, the group is there and the check says no more.
    await broker.publish(stream, b"A-2")
    worker = spawn("worker", judge, "--url", redis_url, "--burst")
    assert worker.wait(timeout=30) == 0
    before = await keys_of(broker, stream)
    check = spawn("worker", judge, "--url", redis_url, "--check")
    out, err = check.communicate(timeout=30)
    assert check.returncode == 0, err
    assert out == f"ok: {redis_url}, group 'judges'\n"
    assert await keys_of(broker, stream) == before


@pytest.mark.redis
async def test_check_fails_on_a_stream_it_cannot_read(
    spawn: Spawn, judge: str, stream: str, broker: RedisBroker, redis_url: str
) -> None:
    await broker._conn.client.set(stream, b"a string, not a stream")
    check = spawn("worker", judge, "--url", redis_url, "--check")
    out, err = check.communicate(timeout=30)
    assert check.returncode == EXIT["failed"], out + err
    assert "pulses: check: Judge:" in err
    assert stream in err
