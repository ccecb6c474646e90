"""A real Redis for tests: ``REDIS_URL`` if set, else a throwaway ``redis-server``.

The throwaway server listens on a free loopback port, keeps nothing on disk, runs in a
temporary directory and is stopped by its pid. Without a ``redis-server`` binary the
tests that need it are skipped, unless ``PULSES_REQUIRE_REDIS=1`` (CI), where that is a
failure. Import :func:`session_redis_url` into a session-scoped fixture.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path

import pytest

__all__ = ["RedisServer", "redis_server_binary", "session_redis_url", "start_server"]


def redis_server_binary() -> str:
    """The redis-server to run, or skip (fail under PULSES_REQUIRE_REDIS=1)."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "no redis-server on PATH (install it, or set REDIS_URL to a Redis to use)"
        if os.environ.get("PULSES_REQUIRE_REDIS") == "1":
            pytest.fail(f"PULSES_REQUIRE_REDIS=1 but {message}", pytrace=False)
        pytest.skip(message)
    return binary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process; ``restart()`` keeps its port (and, without disk, loses
    its data, like a crashed Redis)."""

    def __init__(self, binary: str, directory: Path, extra: Sequence[str] = ()) -> None:
        self.binary = binary
        self.directory = directory
        self.extra = list(extra)
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            *self.extra,
        ]
        self.process = subprocess.Popen(
            args, cwd=self.directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}: {' '.join(args)}"
                )
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} in {timeout}s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()


def start_server(extra: Sequence[str] = ()) -> Generator[RedisServer, None, None]:
    """A throwaway server for as long as the generator is suspended (fixture style)."""
    binary = redis_server_binary()
    with tempfile.TemporaryDirectory(prefix="pulses-redis-") as directory:
        server = RedisServer(binary, Path(directory), extra)
        for attempt in range(3):
            try:
                server.start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
                server.port = _free_port()  # someone took the port meanwhile
        try:
            yield server
        finally:
            server.stop()


def session_redis_url() -> Iterator[str]:
    """Body of a session-scoped ``redis_url`` fixture."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    for server in start_server():
        yield server.url
