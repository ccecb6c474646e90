"""A worker app on a real Redis, and a way to start ``pulses worker`` processes on it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from metrics_helpers import Spawn

APP_MODULE = '''
import asyncio
import os

from pulses import Ack, App, Context, DeadLetter, Envelope, Handler, Outcome, Retry
from pulses_redis import RedisBroker


class Jobs(Handler[RedisBroker]):
    """What each payload asks for: ack, retry (once), dead, fail (raise, every time),
    hold (until shutdown)."""

    STREAMS = (os.environ["STREAM"],)
    WORKERS = int(os.environ.get("WORKERS", "1"))
    MAX_IN_FLIGHT = int(os.environ.get("MAX_IN_FLIGHT", "1"))
    MAX_DELIVERIES = 2
    RETRY_BACKOFF_MS = 0
    RETRY_BACKOFF_MAX_MS = 0

    async def handle(self, ctx: Context[RedisBroker], msg: Envelope) -> Outcome:
        match msg.payload:
            case b"retry" if msg.deliveries == 1:
                return Retry()
            case b"dead":
                return DeadLetter("asked to")
            case b"fail":
                raise ValueError("asked to")
            case b"hold":
                await ctx.token.wait()
        return Ack()


broker = RedisBroker.from_url(os.environ["TEST_REDIS_URL"])
app = App(broker, broker.subscription(os.environ["GROUP"]), block_ms=50)
app.register(Jobs())
'''


@pytest.fixture
def spawn(tmp_path: Path, redis_url: str) -> Iterator[Spawn]:
    """Start ``python -m pulses ARGS`` in a directory holding ``jobs.py``; whatever still
    runs at the end is killed by its pid (a supervisor's children too)."""
    (tmp_path / "jobs.py").write_text(textwrap.dedent(APP_MODULE))
    started: list[subprocess.Popen[str]] = []
    base = {k: v for k, v in os.environ.items() if not k.startswith("PULSES_")}
    base = {**base, "TEST_REDIS_URL": redis_url}

    def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pulses", *args],
            cwd=tmp_path,
            env={**base, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            found = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
            for child in found.stdout.split():
                os.kill(int(child), signal.SIGKILL)
            proc.kill()
        proc.communicate(timeout=10)
