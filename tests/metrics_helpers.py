"""What the metrics tests share: a free port, a scrape of /metrics, waiting on a scrape."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample of http://127.0.0.1:PORT/metrics, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def wait_for(
    port: int,
    condition: Callable[[Samples], bool],
    proc: subprocess.Popen[str],
    timeout: float = 30,
) -> Samples:
    """Scrape until ``condition`` holds (the endpoint may not be up yet at first)."""
    deadline = time.monotonic() + timeout
    last: Samples = {}
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"the worker exited with {proc.returncode}: {proc.communicate()}")
        with contextlib.suppress(OSError):  # not serving yet
            last = scrape(port)
        if last and condition(last):
            return last
        if time.monotonic() >= deadline:
            proc.send_signal(signal.SIGTERM)  # drains, and says why it got stuck
            try:
                _, err = proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                err = "(still running)"
            raise AssertionError(f"timed out; last scrape: {last}\nthe worker's stderr:\n{err}")
        time.sleep(0.05)


Spawn = Callable[..., "subprocess.Popen[str]"]
"""The ``spawn`` fixture: start ``python -m pulses ARGS``."""
