"""The package as a user meets it: installed into a fresh venv and found by its scheme,
the conformance kit run there with its one command, and the README's quick start, which
prints on NATS what it prints on memory."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from nats_server import PASSWORD, NatsServer

pytest_plugins = ["nats_fixtures"]

REPO = Path(__file__).resolve().parents[3]
QUICKSTART = REPO / "examples" / "quickstart.py"

_CHECK = """
import asyncio, sys
import pulses

async def main(url):
    async with await pulses.connect(url) as broker:
        print(type(broker).__module__, type(broker).__name__, broker.url)
        print("published", await broker.publish("install-check", b"x"))
    try:
        await pulses.connect("amqp://nowhere")
    except pulses.UnknownScheme as exc:
        print(exc)

asyncio.run(main(sys.argv[1]))
"""


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The python of a fresh venv with this package, pulses-core (and its kit's extra)
    and the memory broker installed."""
    where = tmp_path_factory.mktemp("fresh")
    venv.create(where / "venv", with_pip=True)
    python = str(where / "venv" / "bin" / "python")
    subprocess.run(  # noqa: S603  (our own arguments)
        [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-e",
            f"{REPO / 'pulses-core'}[conformance]",
            "-e",
            str(REPO / "pulses-memory"),
            "-e",
            str(REPO / "examples" / "pulses-nats"),
        ],
        check=True,
        timeout=540,
    )
    return python


@pytest.mark.timeout(600)
def test_a_fresh_venv_finds_the_broker_by_its_scheme(
    nats_server: NatsServer, fresh_python: str, tmp_path: Path
) -> None:
    out = subprocess.run(  # noqa: S603
        [fresh_python, "-c", _CHECK, nats_server.url],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        cwd=tmp_path,
    ).stdout.splitlines()
    assert out[0].startswith("pulses_nats._broker NatsBroker nats://pulses:***@127.0.0.1:")
    assert out[1] == "published 1"
    assert "nats" in out[2], out[2]  # the installed schemes, listed in UnknownScheme
    assert "memory" in out[2], out[2]
    assert all(PASSWORD not in line for line in out)


@pytest.mark.timeout(600)
def test_the_kits_one_command_passes_on_nats_skipping_only_by_capability_or_harness(
    nats_server: NatsServer, fresh_python: str, tmp_path: Path
) -> None:
    # From a directory with no pytest configuration: pytest-asyncio's default (strict)
    # mode, as an author who just installed the kit has it.
    done = subprocess.run(  # noqa: S603
        [
            *(fresh_python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs"),
            *("-o", "asyncio_default_fixture_loop_scope=function"),
            *("--pyargs", "pulses.testing.kit"),
            *("--pulses-url", f"{nats_server.url}?ack_wait_ms=1000"),
        ],
        capture_output=True,
        text=True,
        timeout=500,
        cwd=tmp_path,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    skipped = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert all(
        "needs Capabilities." in line or "does not implement BrokerHarness." in line
        for line in skipped
    ), skipped
    summary = out.splitlines()[-1]
    assert " passed" in summary, summary
    assert " failed" not in summary, summary
    assert " error" not in summary, summary
    assert PASSWORD not in out


def _quickstart(url: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PULSES_URL", "REDIS_URL")}
    if url is not None:
        env["PULSES_URL"] = url
    done = subprocess.run(  # noqa: S603
        [sys.executable, str(QUICKSTART)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
        cwd=REPO,
    )
    # The broker's URL and the rate differ by nature; every other line must not.
    return [line for line in done.stdout.splitlines() if not line.startswith(("broker:", "rate:"))]


@pytest.mark.timeout(180)
def test_the_quick_start_prints_on_nats_what_it_prints_on_memory(
    nats_server: NatsServer,
) -> None:
    on_nats = _quickstart(nats_server.url)
    assert on_nats == _quickstart(None)
    assert "dead-lettered:  1" in on_nats
