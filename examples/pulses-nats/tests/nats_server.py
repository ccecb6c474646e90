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
from pathlib import Path

import pytest

__all__ = ["PASSWORD", "NatsServer", "running_nats_server"]

PASSWORD = "s3cret-nats-pw"  # noqa: S105  (a throwaway server's, checked never to leak)
_USER = "pulses"
_READY_WITHIN_S = 10.0


class NatsServer:
    """A running server: its port, its version, and a restart on the same store."""

    def __init__(self, binary: str, version: str, workdir: Path) -> None:
        self.version = version
        self.port = _free_port()
        self._command = [binary, "-c", str(workdir / "nats.conf")]
        self._log = workdir / "nats.log"
        (workdir / "nats.conf").write_text(
            f"listen: 127.0.0.1:{self.port}\n"
            "max_payload: 8MB\n"
            f'authorization {{ user: "{_USER}", password: "{PASSWORD}" }}\n'
            f'jetstream {{ store_dir: "{workdir}/store" }}\n'
        )
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{_USER}:{PASSWORD}@127.0.0.1:{self.port}"

    def start(self) -> None:
        with self._log.open("w") as out:
            self._process = process = subprocess.Popen(  # noqa: S603  (our own arguments)
                self._command, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + _READY_WITHIN_S
        while "Server is ready" not in self._log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nats-server did not start:\n{self._log.read_text()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop it by its pid: gracefully, then by force."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


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
        server = NatsServer(binary, version, Path(tmp))
        server.start()
        try:
            yield server
        finally:
            server.stop()
