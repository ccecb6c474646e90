"""The README's quick start runs, and prints the same summary on memory and on Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
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
