"""The benchmark runs as docs/performance.md says, whatever the shell's environment holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(180)]


def test_bench_runs_with_redis_url_and_pulses_settings_in_the_environment(
    redis_url: str, tmp_path: Path
) -> None:
    # REDIS_URL once reached `pulses worker` as its --url: the worker swapped the bench's
    # reporting broker for a plain one and the bench died on "got 0 worker reports".
    env = {**os.environ, "REDIS_URL": redis_url, "PULSES_WORKERS": "2"}
    smallest = ["--only", "consume", "-n", "200", "--rounds", "1", "--results", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "bench", *smallest],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["consume"]["ours"] > 0
    assert result["consume_timeout"]["ours"] > 0
    assert [p.suffix for p in tmp_path.iterdir()] == [".json"]
