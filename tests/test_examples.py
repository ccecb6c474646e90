"""The README's examples: the quick start prints the same summary on memory and on Redis,
and the worker module greets what is published."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from pulses_redis import RedisBroker

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
QUICKSTART = EXAMPLES / "quickstart.py"
EXPECTED = [
    "handled:        1064 calls (1020 acked)",
    "retried:        43",
    "dead-lettered:  1",
    "dead letter:    b'poison': ValueError: card number is not a number (after 4 deliveries)",
]


def run_quickstart(url: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PULSES_URL", "REDIS_URL"}}
    if url is not None:
        env["PULSES_URL"] = url
    done = subprocess.run(
        [sys.executable, str(QUICKSTART)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_quickstart_on_the_memory_broker() -> None:
    lines = run_quickstart(None)
    assert lines[0] == "broker:         memory://quickstart"
    assert [line for line in lines if not line.startswith(("broker", "rate"))] == EXPECTED


@pytest.mark.redis
def test_quickstart_runs_unchanged_on_redis(redis_url: str) -> None:
    lines = run_quickstart(redis_url)
    assert lines[0].startswith("broker:         redis://127.0.0.1:")
    assert [line for line in lines if not line.startswith(("broker", "rate"))] == EXPECTED


@pytest.mark.redis
def test_the_worker_module_greets_what_is_published(redis_url: str) -> None:
    name = f"world-{uuid.uuid4().hex[:8]}"

    async def publish() -> None:
        async with await RedisBroker.connect(redis_url) as broker:
            await broker.publish("greetings", name.encode())

    asyncio.run(publish())
    env = {k: v for k, v in os.environ.items() if k not in {"PULSES_URL", "REDIS_URL"}}
    done = subprocess.run(
        [sys.executable, "-m", "pulses", "worker", "tasks:app", "--url", redis_url, "--burst"],
        cwd=EXAMPLES,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"INFO pulses.handler.Greet: hello, {name}" in done.stderr
