from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

APP_MODULE = '''
import os
from pathlib import Path

import pulses
from pulses import Ack, App, Broker, Context, Envelope, Handler, Outcome
from pulses_memory import MemoryBroker

LEDGER = Path(os.environ.get("LEDGER", "ledger.txt"))
STREAM = os.environ.get("STREAM", "jobs")


class Record(Handler[Broker]):
    """Appends each payload to the ledger (O_APPEND survives a SIGKILL), then acks."""

    STREAMS = (STREAM,)
    WORKERS = 2

    async def handle(self, ctx: Context[Broker], msg: Envelope) -> Outcome:
        if msg.payload.startswith(b"sleep:"):
            import asyncio
            await asyncio.sleep(float(msg.payload[6:]))
        fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, msg.payload + b"\\n")
        os.close(fd)
        return Ack()


broker = MemoryBroker("cli-tests")
app = App(broker, broker.subscription("workers"), block_ms=50, claim_idle_ms=1000).register(Record())
not_an_app = 42
'''


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory holding ``jobs.py`` (a small app), made the current directory."""
    (tmp_path / "jobs.py").write_text(textwrap.dedent(APP_MODULE))
    (tmp_path / "broken.py").write_text("import does_not_exist\n")
    monkeypatch.chdir(tmp_path)
    for module in ("jobs", "broken"):  # each test imports its own copy
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setenv("LEDGER", str(tmp_path / "ledger.txt"))
    for name in ("PULSES_URL", "REDIS_URL", "PULSES_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def pulses_process(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``python -m pulses ARGS`` as its own process, as a process manager would start it."""
    return subprocess.Popen(
        [sys.executable, "-m", "pulses", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; any still running at the end are killed by pid."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
