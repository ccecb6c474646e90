"""A throwaway ``nats-server -js`` on a free loopback port, for the tests.

It runs with a temporary store, a user and password (so that the tests see that no error
or repr shows the password) and a max_payload of 8 MiB (the conformance suite sends
1 MiB payloads with headers; the server's default limit is exactly 1 MiB). It is stopped
by its pid. Without ``nats-server`` on the PATH the tests skip, unless
``PULSES_REQUIRE_NATS=1`` is set, when they fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["PASSWORD", "NatsServer", "running_nats_server"]

PASSWORD = "s3cret-nats-pw"  # noqa: S105  (a throwaway server's, checked never to leak)
_USER = "pulses"
_READY_WITHIN_S = 10.0


@dataclass(frozen=True, slots=True)
class NatsServer:
    port: int
    version: str

    @property
    def url(self) -> str:
        return f"nats://{_USER}:{PASSWORD}@127.0.0.1:{self.port}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _binary() -> str:
    found = shutil.which("nats-server")
    if found is None:
        message = "nats-server is not installed (apt-get install nats-server)"
        if os.environ.get("PULSES_REQUIRE_NATS") == "1":
            pytest.fail(f"{message}; PULSES_REQUIRE_NATS=1 requires it", pytrace=False)
        pytest.skip(message)
    return found


def running_nats_server() -> Iterator[NatsServer]:
    """Start a server, yield it once it accepts connections, stop it by its pid."""
    binary = _binary()
    version = subprocess.run(  # noqa: S603  (our own arguments)
        [binary, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="pulses-nats-") as tmp:
        port = _free_port()
        config = Path(tmp, "nats.conf")
        config.write_text(
            f"listen: 127.0.0.1:{port}\n"
            "max_payload: 8MB\n"
            f'authorization {{ user: "{_USER}", password: "{PASSWORD}" }}\n'
            f'jetstream {{ store_dir: "{tmp}/store" }}\n'
        )
        log = Path(tmp, "nats.log")
        with log.open("w") as out:
            process = subprocess.Popen(  # noqa: S603  (our own arguments)
                [binary, "-c", str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        try:
            deadline = time.monotonic() + _READY_WITHIN_S
            while "Server is ready" not in log.read_text():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nats-server did not start:\n{log.read_text()}")
                time.sleep(0.02)
            yield NatsServer(port, version)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
