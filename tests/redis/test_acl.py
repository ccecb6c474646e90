"""The ACL command list of docs/deploy.md, proven: an app, the worker command and the admin
commands run as a Redis user that may run only those commands, and Redis refuses nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

import pulses_redis
from pulses import Ack, App, Context, DeadLetter, Drop, Envelope, Handler, Outcome, Retry
from pulses.testing import run_until_drained
from pulses_redis import RedisBroker
from redis_server import RedisServer, start_server

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "docs" / "deploy.md"


def documented_acl() -> list[str]:
    """The ``ACL SETUSER`` rules that docs/deploy.md gives, after the user name."""
    text = DEPLOY.read_text()
    found = re.search(r"^ACL SETUSER pulses (.*?)(?:\n\n|\n```)", text, re.M | re.S)
    assert found is not None, "docs/deploy.md shows no 'ACL SETUSER pulses ...' block"
    return found[1].replace("\\\n", " ").split()


def test_the_pulses_redis_docstring_gives_the_same_list() -> None:
    assert pulses_redis.__doc__ is not None
    found = re.search(r"ACL SETUSER pulses (.*?)\n\n", pulses_redis.__doc__, re.S)
    assert found is not None
    assert found[1].replace("\\\n", " ").split() == documented_acl()


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    # A server of its own: the test adds a user and reads the server's ACL log.
    yield from start_server()


@pytest.fixture
def user_url(server: RedisServer) -> Iterator[str]:
    admin = Redis(port=server.port)
    password = uuid.uuid4().hex
    rules = [rule for rule in documented_acl() if not rule.startswith(">")]
    acl(admin, "SETUSER", "pulses", "reset", f">{password}", *rules)
    acl(admin, "LOG", "RESET")
    yield f"redis://pulses:{password}@127.0.0.1:{server.port}/0"
    acl(admin, "DELUSER", "pulses")
    admin.close()


def acl(client: Redis, *args: str) -> Any:
    return client.execute_command("ACL", *args)  # type: ignore[no-untyped-call]  # redis-py leaves execute_command untyped


def refusals(server: RedisServer) -> list[str]:
    """What the server refused since the log was reset, as ``command by user``."""
    admin = Redis(port=server.port)
    try:
        log: list[dict[str, Any]] = admin.acl_log()
    finally:
        admin.close()
    return [f"{entry['object']} ({entry['reason']}) by {entry['username']}" for entry in log]


def test_the_documented_user_may_run_nothing_else() -> None:
    rules = documented_acl()
    commands = rules[rules.index("-@all") + 1 :]
    assert commands, rules
    # Single commands (or subcommands) only: no category, nothing allowed before -@all.
    assert all(re.fullmatch(r"\+[a-z]+(\|[a-z]+)?", rule) for rule in commands), commands
    assert not [rule for rule in rules[: rules.index("-@all")] if rule.startswith("+")]


class Judge(Handler[RedisBroker]):
    STREAMS = ("acl-orders",)
    MAX_DELIVERIES = 2
    RETRY_BACKOFF_MS = RETRY_BACKOFF_MAX_MS = 5

    async def handle(self, ctx: Context[RedisBroker], msg: Envelope) -> Outcome:
        match msg.payload:
            case b"retry" if msg.deliveries == 1:
                return Retry(after_ms=20)
            case b"drop":
                return Drop("duplicate")
            case b"dead":
                return DeadLetter("refused")
            case b"boom":
                raise ValueError("fails every time")
        await ctx.publish("acl-receipts", msg.payload)
        return Ack()


async def test_an_app_runs_every_path_as_the_documented_user(
    server: RedisServer, user_url: str
) -> None:
    stream = Judge.STREAMS[0]
    async with await RedisBroker.connect(user_url) as broker:
        await broker.publish_many(stream, [b"ok", b"retry", b"drop", b"dead", b"boom"])
        await broker.publish(stream, b"later", delay_ms=30)
        await broker.publish(stream, b"once", key="order-1")
        await broker.publish(stream, b"once", key="order-1")  # dropped by its key
        # A consumer that takes a message and dies: the app takes it over.
        dead = broker.consumer(
            broker.subscription("judges", consumer="dead"), [stream], handler="x"
        )
        await dead.ensure()
        await dead.heartbeat(100)
        assert len(await dead.fetch(1, 0)) == 1
        await dead.aclose()
        app = App(broker, broker.subscription("judges"), liveness_ms=300, block_ms=50)
        stats = (await run_until_drained(app.register(Judge()), timeout=30)).total
        assert (stats.acked, stats.dropped, stats.dead_lettered) == (4, 1, 2), stats
        assert stats.reclaimed == 1
        info = await broker.stats(stream)
        assert [g.pending for g in info.groups] == [0]
    assert refusals(server) == []


def pulses(url: str, *args: str, cwd: Path | None = None, timeout: float = 30) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pulses", *args],
        env={**os.environ, "PULSES_URL": url},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"pulses {' '.join(args)}: {done.stderr}"
    return done.stdout


APP_MODULE = """
from typing import Any

from pulses import Ack, App, Context, DeadLetter, Envelope, Handler, Outcome
from pulses_memory import MemoryBroker


class Mark(Handler[Any]):
    STREAMS = ("acl-cli",)

    async def handle(self, ctx: Context[Any], msg: Envelope) -> Outcome:
        return DeadLetter("marked") if msg.payload == b"dead" else Ack()


broker = MemoryBroker("replaced-by-pulses-url")
app = App(broker, broker.subscription("markers"), block_ms=50).register(Mark())
"""


def test_the_worker_and_admin_commands_run_as_the_documented_user(
    server: RedisServer, user_url: str, tmp_path: Path
) -> None:
    (tmp_path / "marks.py").write_text(textwrap.dedent(APP_MODULE))
    pulses(user_url, "worker", "marks:app", "--check", cwd=tmp_path)
    pulses(user_url, "publish", "acl-cli", "a")
    pulses(user_url, "publish", "acl-cli", "dead")
    pulses(user_url, "worker", "marks:app", "--burst", cwd=tmp_path)
    assert "dead letters 1" in pulses(user_url, "info")
    assert "marked" in pulses(user_url, "dlq", "list", "acl-cli")
    assert "replayed 1 dead letter" in pulses(user_url, "dlq", "replay", "acl-cli", "--all")
    pulses(user_url, "worker", "marks:app", "--burst", cwd=tmp_path)
    assert "purged 1 dead letter" in pulses(user_url, "dlq", "purge", "acl-cli", "--all", "--yes")
    assert "removed" in pulses(user_url, "trim", "acl-cli")
    assert refusals(server) == []
