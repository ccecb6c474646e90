"""The Redis the benchmark runs against: REDIS_URL, or a redis-server of its own."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

__all__ = ["redis_url"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def redis_url() -> Iterator[tuple[str, str]]:
    """The URL to use and the Redis version; a started server stops on exit."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url, _version(url)
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("bench: no REDIS_URL and no redis-server on PATH")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="pulses-bench-") as directory:
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                directory,
            ],
            stdout=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    version = _version(url)
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise
                    time.sleep(0.05)
            yield url, version
        finally:
            process.terminate()
            process.wait(10)


def _version(url: str) -> str:
    with redis.Redis.from_url(url) as client:
        info = client.info("server")
        return str(info["redis_version"])
