"""One ``/metrics`` endpoint for ``pulses worker -w N``: the supervisor sums its children.

Each child serves its own metrics on a loopback port the system picks and writes that
port to ``<directory>/<pid>``; the supervisor's endpoint scrapes every child when it
is scraped and adds their samples up, series by series. Why not prometheus-client's
multiprocess mode: it aggregates only metrics that each process writes to files as it
counts, and Pulses counts nothing for Prometheus per message: its collectors read the
runtime's own counters when scraped, which only a live process can answer.

Counters stay monotonic while children come and go: a child that dies keeps its last
scraped counts in the sum (what it counted after that scrape is lost, as in any
process that is killed between two scrapes), and a child that does not answer in time
counts with its last answer. Gauges are summed over the children that answered, except
the broker's figures (``BROKER_FAMILIES``), which every child reads from the same
broker: one child's values stand for the group.
"""

from __future__ import annotations

import logging
import os
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from pulses._metrics import BROKER_FAMILIES

__all__ = ["GroupCollector", "serve_child", "serve_group", "start_server"]

CHILD_TIMEOUT = 5.0
"""Seconds the supervisor waits for a child's metrics: more than a child waits for its
broker's figures (2 s), so a slow broker shows as stale figures, not a missing child."""

logger = logging.getLogger("pulses.metrics")

_MONOTONIC = ("counter", "histogram")

_Key = tuple[str, tuple[tuple[str, str], ...]]
"""A sample's name and sorted labels: one series."""


def start_server(registry: Collector, port: int, addr: str = "0.0.0.0") -> WSGIServer:  # noqa: S104  (an exporter is scraped from other hosts)
    """prometheus-client's HTTP server for ``registry``, in a daemon thread."""
    server, _ = start_http_server(port, addr=addr, registry=registry)
    return server


def serve_child(registry: Collector, directory: Path) -> WSGIServer:
    """Serve a child's metrics on a free loopback port and tell the supervisor which."""
    server = start_server(registry, 0, "127.0.0.1")
    path = directory / str(os.getpid())
    partial = path.with_suffix(".tmp")
    partial.write_text(str(server.server_port))
    partial.replace(path)  # atomic: the supervisor never reads half a port number
    return server


def serve_group(port: int) -> tuple[WSGIServer, Path]:
    """The supervisor's endpoint on ``port``, and the directory its children report to."""
    directory = Path(tempfile.mkdtemp(prefix="pulses-metrics-"))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GroupCollector(directory))
    try:
        return start_server(registry, port), directory
    except OSError:
        directory.rmdir()
        raise


class GroupCollector(Collector):
    """The sum of the metrics of the children that report their ports to ``directory``."""

    def __init__(self, directory: Path, scrape: Callable[[int], str] | None = None) -> None:
        self.directory = directory
        self.scrape = scrape or _scrape
        self.last: dict[int, list[Metric]] = {}
        """Each child's last answer, by pid."""
        self.retired: dict[str, dict[_Key, float]] = {}
        """Counter and histogram samples of children that exited, summed, by family."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        ports = self.ports()
        answers: dict[int, list[Metric] | None] = {}
        if ports:
            with ThreadPoolExecutor(max_workers=len(ports)) as pool:
                texts = pool.map(self.answer, ports.values())
                answers = dict(zip(ports, texts, strict=True))
        for pid in [pid for pid in self.last if pid not in ports]:
            for family in self.last.pop(pid):
                if family.type in _MONOTONIC:
                    into = self.retired.setdefault(family.name, {})
                    for key, value in _series(family):
                        into[key] = into.get(key, 0.0) + value
        for pid, families in answers.items():
            if families is not None:
                self.last[pid] = families
        yield from self.merge(answers)

    def ports(self) -> dict[int, int]:
        found = {}
        for path in self.directory.iterdir():
            if path.name.isdigit():
                try:
                    found[int(path.name)] = int(path.read_text())
                except (OSError, ValueError):
                    continue  # removed as its child exited
        return found

    def answer(self, port: int) -> list[Metric] | None:
        try:
            return list(text_string_to_metric_families(self.scrape(port)))
        except Exception as exc:  # one process's trouble must not fail the group's scrape
            logger.warning(
                "the metrics of the worker process on port %d are left out of this scrape: %r",
                port,
                exc,
            )
            return None

    def merge(self, answers: dict[int, list[Metric] | None]) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        sums: dict[str, dict[_Key, float]] = {}
        for pid, answer in answers.items():
            # A child that did not answer counts with its last counters, never less.
            families = answer if answer is not None else self.last.get(pid, [])
            for family in families:
                if answer is None and family.type not in _MONOTONIC:
                    continue
                if family.name not in merged:
                    merged[family.name] = Metric(family.name, family.documentation, family.type)
                    sums[family.name] = {}
                elif family.name in BROKER_FAMILIES:
                    continue  # one child's figures stand for all
                into = sums[family.name]
                for key, value in _series(family):
                    into[key] = into.get(key, 0.0) + value
        for name, retired in self.retired.items():
            if name in sums:
                into = sums[name]
                for key, value in retired.items():
                    into[key] = into.get(key, 0.0) + value
        for name, family in merged.items():
            for (sample, labels), value in sums[name].items():
                family.add_sample(sample, dict(labels), value)
            yield family


def _series(family: Metric) -> Iterator[tuple[_Key, float]]:
    for sample in family.samples:
        yield (sample.name, tuple(sorted(sample.labels.items()))), sample.value


def _scrape(port: int) -> str:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=CHILD_TIMEOUT) as response:
        text: str = response.read().decode()
    return text
