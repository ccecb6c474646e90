from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

APP_MODULE = '''
import os
from pathlib import Path

import pulses
from pulses import Ack, App, Broker, Context, DeadLetter, Envelope, Handler, Outcome
from pulses_memory import MemoryBroker

LEDGER = Path(os.environ.get("LEDGER", "ledger.txt"))
STREAM = os.environ.get("STREAM", "jobs")


class Record(Handler[Broker]):
    """Appends each payload to the ledger (O_APPEND survives a SIGKILL), then acks."""

    STREAMS = (STREAM,)
    WORKERS = 2
    MAX_IN_FLIGHT = 4

    async def handle(self, ctx: Context[Broker], msg: Envelope) -> Outcome:
        if msg.payload.startswith(b"sleep:"):
            import asyncio
            record(b"started " + msg.payload)
            await asyncio.sleep(float(msg.payload[6:]))
        record(msg.payload)
        if msg.payload.startswith(b"dead:"):
            return DeadLetter("asked to")
        return Ack()


def record(line: bytes) -> None:
    fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, line + b"\\n")
    os.close(fd)


broker = MemoryBroker("cli-tests")
app = App(broker, broker.subscription("workers"), block_ms=50, claim_idle_ms=1000)
app.register(Record())
not_an_app = 42
'''


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory holding ``jobs.py`` (a small app), made the current directory."""
    (tmp_path / "jobs.py").write_text(textwrap.dedent(APP_MODULE))
    (tmp_path / "broken.py").write_text("import does_not_exist\n")
    (tmp_path / "attribute_error.py").write_text("import os\nos.no_such_thing\n")
    (tmp_path / "bad_settings.py").write_text(textwrap.dedent(BAD_SETTINGS_MODULE))
    monkeypatch.chdir(tmp_path)
    for module in ("jobs", "broken", "attribute_error", "bad_settings"):  # each test its own
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setenv("LEDGER", str(tmp_path / "ledger.txt"))
    for name in list(os.environ):
        if (name.startswith("PULSES_") and name != "PULSES_REQUIRE_REDIS") or name == "REDIS_URL":
            monkeypatch.delenv(name)
    return tmp_path


BAD_SETTINGS_MODULE = """
from pulses import Ack, App, Context, Envelope, Handler, Outcome
from pulses_memory import MemoryBroker


class NoWorkers(Handler[MemoryBroker]):
    STREAMS = ("jobs",)
    WORKERS = 0

    async def handle(self, ctx: Context[MemoryBroker], msg: Envelope) -> Outcome:
        return Ack()


broker = MemoryBroker("bad-settings")
app = App(broker, broker.subscription("workers")).register(NoWorkers())
"""


@pytest.fixture(autouse=True)
def pulses_log_level() -> Iterator[None]:
    """The command sets the level of Pulses' loggers (-l, -v); in-process runs share them."""
    yield
    logging.getLogger("pulses").setLevel(logging.NOTSET)


Spawn = Callable[..., "subprocess.Popen[str]"]


@pytest.fixture
def spawn(app_dir: Path) -> Iterator[Spawn]:
    """Start ``python -m pulses ARGS`` in the app directory, as a process manager would;
    whatever still runs at the end of the test is killed by its pid."""
    started: list[subprocess.Popen[str]] = []

    def start(
        *args: str, env: dict[str, str] | None = None, stdin: int | IO[bytes] | None = None
    ) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pulses", *args],
            cwd=app_dir,
            env={**os.environ, **(env or {})},
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            # A supervisor's children have their own process groups: end them by pid too.
            found = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
            for child in found.stdout.split():
                os.kill(int(child), signal.SIGKILL)
            proc.kill()
        proc.communicate(timeout=10)
