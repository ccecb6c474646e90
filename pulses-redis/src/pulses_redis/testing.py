"""A real Redis for your tests: ``REDIS_URL``, or a throwaway ``redis-server``.

The throwaway server is the ``redis-server`` on your ``PATH``, listening on a free
127.0.0.1 port, working in a temporary directory that is removed afterwards, and stopped
by its pid. It keeps nothing on disk unless asked (``appendonly=True``)::

    from pulses_redis import RedisBroker
    from pulses_redis.testing import redis_server

    with redis_server() as server:
        broker = await RedisBroker.connect(server.url)

A pytest fixture for a whole session::

    @pytest.fixture(scope="session")
    def redis_url() -> Iterator[str]:
        with pulses_redis.testing.redis_url() as url:
            yield url

This module imports neither redis-py nor pytest.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = ["RedisServer", "find_redis_server", "redis_server", "redis_url"]

_LOG = "redis-server.log"


def find_redis_server() -> str:
    """The path of the ``redis-server`` on ``PATH``; ``FileNotFoundError`` if none."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError(
            "no redis-server on PATH (install Redis, or set REDIS_URL to a Redis to use)"
        )
    return binary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process on a free 127.0.0.1 port, working in ``directory``.

    ``extra`` are more ``redis-server`` arguments (``["--maxmemory", "10mb"]``); given
    after Pulses' own, they win. Without ``appendonly`` nothing is written to disk, so a
    ``restart()`` comes back empty, like a crashed Redis that kept nothing; with it, every
    write is fsynced to an AOF first and survives ``kill()`` and ``restart()``. The port
    stays the same across restarts, so clients can reconnect.
    """

    def __init__(
        self,
        binary: str,
        directory: Path,
        extra: Sequence[str] = (),
        *,
        appendonly: bool = False,
    ) -> None:
        self.binary = binary
        self.directory = directory
        self.extra = list(extra)
        self.appendonly = appendonly
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _args(self) -> list[str]:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"]
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            *(persistence if self.appendonly else ["--appendonly", "no"]),
            "--dir",
            str(self.directory),
            *self.extra,
        ]

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and return once it answers ``PING``; ``RuntimeError`` with the
        end of its log if it exits or stays silent for ``timeout`` seconds."""
        args = self._args()
        with open(self.directory / _LOG, "ab") as log:
            # No shell; the binary is the caller's or the one on PATH.
            self.process = subprocess.Popen(  # noqa: S603
                args, cwd=self.directory, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}: {' '.join(args)}\n"
                    f"{self._log_tail()}"
                )
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(
            f"redis-server did not answer on port {self.port} in {timeout}s\n{self._log_tail()}"
        )

    def ping(self) -> bool:
        """Whether the server answers (a server that requires a password answers too)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM, and SIGKILL if it has not exited within five seconds."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def kill(self) -> None:
        """SIGKILL: the server gets no chance to write anything more."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=5)

    def restart(self) -> None:
        """Stop and start again on the same port and directory."""
        self.stop()
        self.start()

    def _log_tail(self, lines: int = 10) -> str:
        try:
            text = (self.directory / _LOG).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@contextmanager
def redis_server(extra: Sequence[str] = (), *, appendonly: bool = False) -> Iterator[RedisServer]:
    """A started :class:`RedisServer` in a temporary directory; stopped and removed on exit.

    ``FileNotFoundError`` without a ``redis-server`` on ``PATH``.
    """
    binary = find_redis_server()
    with tempfile.TemporaryDirectory(prefix="pulses-redis-") as directory:
        server = RedisServer(binary, Path(directory), extra, appendonly=appendonly)
        for attempt in range(3):
            try:
                server.start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
                # Another process may have taken the free port before the server bound it.
                server.port = _free_port()
        try:
            yield server
        finally:
            server.stop()


@contextmanager
def redis_url() -> Iterator[str]:
    """``REDIS_URL`` if set (that Redis is written to: never point it at one you care
    about), else the URL of a throwaway :func:`redis_server`."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    with redis_server() as server:
        yield server.url
