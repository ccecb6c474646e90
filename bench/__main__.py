"""``python -m bench``: Pulses against a raw redis-py loop, on one Redis; see
``docs/performance.md`` for what each figure means and the latest table."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import redis
from redis.asyncio import Redis
from redis.cluster import RedisCluster

from bench.app import Small
from pulses import Ack, App, CancellationToken, Context, Envelope, Handler, Outcome, Stream
from pulses_memory import MemoryBroker
from pulses_redis import RedisBroker
from pulses_redis.testing import redis_cluster, redis_url

STREAM = "bench"
GROUP = "bench"
PAYLOAD = b"x" * 100
SMALL = Small(user_id=1234567, email="someone@example.com", plan="pro", active=True)
SMALL_PAYLOAD = msgspec.json.encode(SMALL)
"""The typed comparison's payload (74 bytes), handled as bytes and as ``Small``."""
RESULTS = Path(__file__).parent / "results"
MAX_IN_FLIGHT = 0
"""The workers' MAX_IN_FLIGHT; 0 leaves the handler's default (``--max-in-flight``)."""
ROOT = Path(__file__).parent.parent
SCRAPE_EVERY = 0.1
"""Seconds between two scrapes of a worker's ``/metrics`` in the Prometheus comparison."""
STALL_S = 30.0
"""Seconds without a message read or settled after which a worker counts as stuck."""


# -- helpers ------------------------------------------------------------------------


def _client(url: str) -> redis.Redis | RedisCluster:
    """A plain client, or for a ``redis+cluster://`` URL a cluster client of its first seed."""
    if url.startswith("redis+cluster://"):
        host, _, port = url.removeprefix("redis+cluster://").split(",")[0].partition(":")
        return RedisCluster(host=host, port=int(port.rstrip("/")))
    return redis.Redis.from_url(url)


def _fill(
    url: str,
    n: int,
    *,
    group: bool = True,
    payload: bytes = PAYLOAD,
    streams: Sequence[str] = (STREAM,),
) -> None:
    """Fresh streams of ``n`` no-op messages each (Pulses' plain layout) and the group."""
    with _client(url) as client:
        for stream in streams:
            client.delete(stream)
            for start in range(0, n, 10_000):
                pipe = client.pipeline(transaction=False)
                for _ in range(min(10_000, n - start)):
                    pipe.execute_command("XADD", stream, "*", "payload", payload)
                pipe.execute()
            if group:
                client.xgroup_create(stream, GROUP, "0", mkstream=True)


def _progress(client: redis.Redis | RedisCluster, streams: Sequence[str]) -> tuple[int, int]:
    """The group's (entries read, entries pending) over ``streams``."""
    read = pending = 0
    for stream in streams:
        for info in client.xinfo_groups(stream):
            if info["name"] == GROUP.encode():
                read += int(info.get("entries-read") or 0)
                pending += int(info["pending"])
    return read, pending


def _wait_drained(
    client: redis.Redis | RedisCluster,
    n: int,
    process: subprocess.Popen[bytes],
    streams: Sequence[str] = (STREAM,),
) -> None:
    """Until the group read and settled all ``n``; an error if the worker exits or stalls
    (it logs only errors, so a worker stuck retrying warnings would otherwise hang here)."""
    progress, since = (-1, -1), time.monotonic()
    while (now := _progress(client, streams)) != (n, 0):
        if process.poll() is not None:
            raise RuntimeError(f"worker exited with {process.returncode}")
        if now != progress:
            progress, since = now, time.monotonic()
        elif time.monotonic() - since > STALL_S:
            raise RuntimeError(
                f"the worker made no progress for {STALL_S:.0f} s (read {now[0]} of {n},"
                f" {now[1]} pending); run `pulses worker bench.app:app -l info` to see why"
            )
        time.sleep(0.02)


def _env(url: str, report: str, **extra: str) -> dict[str, str]:
    """The environment of a worker or raw-loop process: its URL given as ``BENCH_URL``.

    ``PULSES_URL`` or ``REDIS_URL`` would make ``pulses worker`` swap the broker that
    ``bench/app.py`` builds (and that writes the reports) for one of its own, and any
    other ``PULSES_*`` setting would measure something else than the defaults.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BENCH_", "PULSES_")) and k != "REDIS_URL"
    }
    env.update(BENCH_URL=url, BENCH_STREAM=STREAM, BENCH_REPORT=report, **extra)
    if MAX_IN_FLIGHT:
        env["BENCH_MAX_IN_FLIGHT"] = str(MAX_IN_FLIGHT)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _pulses_worker(
    url: str,
    n: int,
    *,
    processes: int = 1,
    timeout: float | None = None,
    typed: bool = False,
    otel: str | None = None,
    metrics: bool = False,
    streams: Sequence[str] = (STREAM,),
) -> dict[str, Any]:
    """Drain the stream with ``pulses worker bench.app:app``; SIGTERM once drained.
    ``otel``: ``all`` or ``drop``, the tracing of ``bench/app.py``'s BENCH_OTEL."""
    with tempfile.TemporaryDirectory(prefix="pulses-bench-") as report:
        extra = {"BENCH_TIMEOUT": str(timeout)} if timeout else {}
        if typed:
            extra["BENCH_TYPED"] = "1"
        if otel:
            extra["BENCH_OTEL"] = otel
        command = [sys.executable, "-m", "pulses", "worker", "bench.app:app", "-l", "error"]
        command += ["-w", str(processes)] if processes > 1 else []
        scraper = _Scraper() if metrics else None
        command += ["--metrics-port", str(scraper.port)] if scraper else []
        env = {**_env(url, report, **extra), "BENCH_STREAM": ",".join(streams)}
        process = subprocess.Popen(command, env=env, cwd=ROOT)
        try:
            with _client(url) as client, scraper or contextlib.nullcontext():
                _wait_drained(client, n, process, streams)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        if scraper is not None and not scraper.scrapes:
            raise RuntimeError(f"no scrape of the worker's /metrics succeeded: {scraper.error}")
        reports = [json.loads(p.read_text()) for p in Path(report).glob("*.json")]
    if len(reports) != processes:
        raise RuntimeError(f"expected {processes} worker reports, got {len(reports)}")
    first = min(r["first_fetch"] for r in reports)
    last = max(r["last_settle"] for r in reports)
    return {
        "rate": n / (last - first),
        "idle_rss_kib": max(r["idle_rss_kib"] for r in reports),
        "peak_rss_kib": max(r["peak_rss_kib"] for r in reports),
        "latencies_ns": [x for r in reports for x in r["latencies_ns"]],
    }


class _Scraper:
    """Scrapes a worker's ``/metrics`` every SCRAPE_EVERY seconds while a run lasts: far
    more often than a Prometheus server does (15 s is usual), so that what a scrape
    costs the worker shows in its rate."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port: int = sock.getsockname()[1]
        self.scrapes = 0
        self.error: Exception | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def __enter__(self) -> None:
        self.thread.start()

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        if not self.scrapes:  # a run too short for one: the endpoint must answer still
            self.scrape()

    def run(self) -> None:
        while not self.stop.wait(SCRAPE_EVERY):
            self.scrape()

    def scrape(self) -> None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                r.read()
            self.scrapes += 1
        except OSError as exc:  # not serving yet
            self.error = exc


def _raw(url: str, mode: str, **popen: Any) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "bench.raw", mode, url, STREAM, GROUP]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=_env(url, ""), **popen
    )


def _raw_consume(url: str, n: int) -> dict[str, Any]:
    out, _ = _raw(url, "consume").communicate(timeout=600)
    result = json.loads(out)
    if result["settled"] != n:
        raise RuntimeError(f"raw loop settled {result['settled']} of {n}")
    return {"rate": n / (result["last_settle"] - result["first_fetch"])}


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _alternate(
    rounds: int, runs: Mapping[str, Callable[[], dict[str, Any]]]
) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
    for i in range(rounds):
        for name, run in runs.items():
            results[name].append(run())
            _say(f"  round {i + 1}/{rounds} {name}: {results[name][-1]['rate']:,.0f}/s")
    return results


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def _ratio_summary(
    results: dict[str, list[dict[str, Any]]], ours: str, theirs: str
) -> dict[str, Any]:
    ratios = [a["rate"] / b["rate"] for a, b in zip(results[ours], results[theirs], strict=True)]
    return {
        "ours": _median([r["rate"] for r in results[ours]]),
        "theirs": _median([r["rate"] for r in results[theirs]]),
        "ratio": _median(ratios),
        "ratios": ratios,
    }


# -- the measurements ---------------------------------------------------------------


def consume(url: str, n: int, rounds: int, timeout: float | None) -> dict[str, Any]:
    def pulses() -> dict[str, Any]:
        _fill(url, n)
        return _pulses_worker(url, n, timeout=timeout)

    def raw() -> dict[str, Any]:
        _fill(url, n)
        return _raw_consume(url, n)

    return _ratio_summary(_alternate(rounds, {"pulses": pulses, "raw": raw}), "pulses", "raw")


def typed_consume(url: str, n: int, rounds: int) -> dict[str, Any]:
    """A handler typed on a small msgspec struct against a bytes handler, same payloads."""

    def typed() -> dict[str, Any]:
        _fill(url, n, payload=SMALL_PAYLOAD)
        return _pulses_worker(url, n, typed=True)

    def untyped() -> dict[str, Any]:
        _fill(url, n, payload=SMALL_PAYLOAD)
        return _pulses_worker(url, n)

    return _ratio_summary(_alternate(rounds, {"typed": typed, "bytes": untyped}), "typed", "bytes")


def otel_consume(url: str, n: int, rounds: int) -> dict[str, Any]:
    """The worker with ``pulses.otel`` tracing against the same worker without: every
    span sampled, and a parent-based sampler that drops (the messages carry no trace
    context, so every one is dropped)."""

    def run(otel: str | None) -> Callable[[], dict[str, Any]]:
        def drain() -> dict[str, Any]:
            _fill(url, n)
            return _pulses_worker(url, n, otel=otel)

        return drain

    results = _alternate(rounds, {"none": run(None), "all": run("all"), "drop": run("drop")})
    return {
        "all_sampled": _ratio_summary(results, "all", "none"),
        "dropped": _ratio_summary(results, "drop", "none"),
    }


def prometheus_consume(url: str, n: int, rounds: int) -> dict[str, Any]:
    """The worker with ``--metrics-port`` (scraped every SCRAPE_EVERY seconds) against
    the same worker without, in the order ABBA..., so that neither always runs first."""

    def run(metrics: bool) -> Callable[[], dict[str, Any]]:
        def drain() -> dict[str, Any]:
            _fill(url, n)
            return _pulses_worker(url, n, metrics=metrics)

        return drain

    results: dict[str, list[dict[str, Any]]] = {"metrics": [], "plain": []}
    for i in range(rounds):
        order = ["metrics", "plain"][:: 1 if i % 2 == 0 else -1]
        for name in order:
            results[name].append(run(name == "metrics")())
            _say(f"  round {i + 1}/{rounds} {name}: {results[name][-1]['rate']:,.0f}/s")
    return _ratio_summary(results, "metrics", "plain")


async def _typed_publish_many(url: str, n: int, rounds: int) -> dict[str, Any]:
    """``Stream.publish_many`` of ``Small`` values (encoding included) against
    ``publish_many`` of the same payloads already encoded, in batches of 1000."""
    broker = RedisBroker.from_url(url)
    client = Redis.from_url(url)
    stream = Stream(STREAM, Small)
    values = [SMALL] * n
    payloads = [SMALL_PAYLOAD] * n
    batch = 1_000

    async def typed() -> float:
        started = time.perf_counter()
        for i in range(0, n, batch):
            await stream.publish_many(broker, values[i : i + batch])
        return n / (time.perf_counter() - started)

    async def untyped() -> float:
        started = time.perf_counter()
        for i in range(0, n, batch):
            await broker.publish_many(STREAM, payloads[i : i + batch])
        return n / (time.perf_counter() - started)

    results: dict[str, list[dict[str, Any]]] = {"typed": [], "bytes": []}
    await untyped()  # connections open, caches warm
    for _ in range(rounds):
        for name, run in (("typed", typed), ("bytes", untyped)):
            await client.delete(STREAM)
            results[name].append({"rate": await run()})
    await client.delete(STREAM)
    await broker.aclose()
    await client.aclose()
    return _ratio_summary(results, "typed", "bytes")


def scaling(url: str, n: int) -> dict[str, float]:
    one, two = [], []
    for _ in range(3):
        _fill(url, n)
        one.append(_pulses_worker(url, n)["rate"])
        _fill(url, n)
        two.append(_pulses_worker(url, n, processes=2)["rate"])
    return {"one": _median(one), "two": _median(two), "ratio": _median(two) / _median(one)}


CLUSTER_STREAMS = tuple(f"bench-{i}" for i in range(12))
"""Twelve streams: on a three-master cluster, spread over all three."""


def cluster_scaling(single: str, cluster: str, n: int, rounds: int) -> dict[str, float]:
    """Consume rate of 1, 2 and 4 worker processes over CLUSTER_STREAMS (``n`` messages
    in all), on one Redis and on the cluster, alternating; the median of ``rounds``."""
    rates: dict[str, list[float]] = {}
    for _ in range(rounds):
        for processes in (1, 2, 4):
            for name, url in (("one_redis", single), ("cluster", cluster)):
                _fill(url, n // len(CLUSTER_STREAMS), streams=CLUSTER_STREAMS)
                rate = _pulses_worker(
                    url, n // len(CLUSTER_STREAMS) * len(CLUSTER_STREAMS),
                    processes=processes, streams=CLUSTER_STREAMS,
                )["rate"]  # fmt: skip
                rates.setdefault(f"{name}_w{processes}", []).append(rate)
    out = {key: _median(values) for key, values in rates.items()}
    for processes in (1, 2, 4):
        out[f"cluster_vs_one_redis_w{processes}"] = (
            out[f"cluster_w{processes}"] / out[f"one_redis_w{processes}"]
        )
        for name in ("one_redis", "cluster"):
            out[f"{name}_w{processes}_vs_w1"] = out[f"{name}_w{processes}"] / out[f"{name}_w1"]
    return out


def backlog(url: str, n: int) -> dict[str, float]:
    _say(f"  publishing a backlog of {n:,}")
    _fill(url, n)
    _say("  draining it with one worker")
    result = _pulses_worker(url, n)
    with redis.Redis.from_url(url) as client:
        client.delete(STREAM)
    return {
        "n": n,
        "rate": result["rate"],
        "idle_rss_mib": result["idle_rss_kib"] / 1024,
        "peak_rss_mib": result["peak_rss_kib"] / 1024,
        "growth_mib": (result["peak_rss_kib"] - result["idle_rss_kib"]) / 1024,
    }


async def _publish_rates(url: str, n: int, sequential_n: int, rounds: int) -> dict[str, Any]:
    broker = RedisBroker.from_url(url)
    client = Redis.from_url(url)
    payloads = [PAYLOAD] * n
    batch = 1_000

    async def pulses_many() -> float:
        started = time.perf_counter()
        for i in range(0, n, batch):
            await broker.publish_many(STREAM, payloads[i : i + batch])
        return n / (time.perf_counter() - started)

    async def raw_many() -> float:
        started = time.perf_counter()
        for i in range(0, n, batch):
            pipe = client.pipeline(transaction=False)
            for payload in payloads[i : i + batch]:
                pipe.xadd(STREAM, {"payload": payload})
            await pipe.execute()
        return n / (time.perf_counter() - started)

    async def pulses_one() -> float:
        started = time.perf_counter()
        for _ in range(sequential_n):
            await broker.publish(STREAM, PAYLOAD)
        return sequential_n / (time.perf_counter() - started)

    async def raw_one() -> float:
        started = time.perf_counter()
        for _ in range(sequential_n):
            await client.xadd(STREAM, {"payload": PAYLOAD})
        return sequential_n / (time.perf_counter() - started)

    runs = {
        "pulses_many": pulses_many,
        "raw_many": raw_many,
        "pulses_one": pulses_one,
        "raw_one": raw_one,
    }
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
    await client.delete(STREAM)
    await raw_one()  # connections open, scripts and caches warm
    for _ in range(rounds):
        for name, run in runs.items():
            results[name].append({"rate": await run()})
            await client.delete(STREAM)
    await broker.aclose()
    await client.aclose()
    return {
        "publish_many": _ratio_summary(results, "pulses_many", "raw_many"),
        "publish": _ratio_summary(results, "pulses_one", "raw_one"),
    }


async def _pace(url: str, rate: float, seconds: float) -> None:
    """Publish timestamped messages at a steady ``rate``."""
    client = Redis.from_url(url)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
        stamp = str(time.monotonic_ns()).encode().rjust(20, b"0")
        await client.xadd(STREAM, {"payload": stamp + PAYLOAD[20:]})
    await client.aclose()


def _percentiles(samples_ns: Sequence[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    return {
        "p50_ms": ordered[len(ordered) // 2] / 1e6,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1e6,
        "samples": len(ordered),
    }


def latency(url: str, rate: float, seconds: float) -> dict[str, dict[str, float]]:
    def settle_in() -> None:
        time.sleep(1.5)  # the worker's imports and first fetch happen before we publish

    _fill(url, 0)
    with tempfile.TemporaryDirectory(prefix="pulses-bench-") as report:
        command = [sys.executable, "-m", "pulses", "worker", "bench.app:app", "-l", "error"]
        env = _env(url, report, BENCH_LATENCY="1")
        process = subprocess.Popen(command, env=env, cwd=ROOT)
        settle_in()
        asyncio.run(_pace(url, rate, seconds))
        time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        (path,) = Path(report).glob("*.json")
        ours = json.loads(path.read_text())["latencies_ns"]
    _fill(url, 0)
    raw = _raw(url, "latency")
    settle_in()
    asyncio.run(_pace(url, rate, seconds))
    time.sleep(0.2)
    raw.send_signal(signal.SIGTERM)
    out, _ = raw.communicate(timeout=30)
    theirs = json.loads(out)["latencies_ns"]
    return {"pulses": _percentiles(ours), "raw": _percentiles(theirs)}


class _Count(Handler[MemoryBroker]):
    STREAMS = (STREAM,)

    def __init__(self, n: int, token: CancellationToken) -> None:
        self.left = n
        self.token = token
        self.done = 0.0

    async def handle(self, ctx: Context[MemoryBroker], msg: Envelope) -> Outcome:
        self.left -= 1
        if not self.left:
            self.done = time.perf_counter()
            self.token.cancel()
        return Ack()


async def _memory(n: int) -> dict[str, float]:
    broker = MemoryBroker()
    payloads = [PAYLOAD] * n
    started = time.perf_counter()
    for i in range(0, n, 1_000):
        await broker.publish_many(STREAM, payloads[i : i + 1_000])
    published = time.perf_counter()
    token = CancellationToken()
    handler = _Count(n, token)
    app = App(broker, broker.subscription(GROUP)).register(handler)
    started_run = time.perf_counter()
    await app.run(token)
    await broker.aclose()
    return {"publish": n / (published - started), "consume": n / (handler.done - started_run)}


# -- the report ---------------------------------------------------------------------


def _machine(url: str) -> dict[str, str]:
    with redis.Redis.from_url(url) as client:
        redis_version = str(client.info("server")["redis_version"])
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    import hiredis

    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "os": platform.platform(),
        "python": platform.python_version(),
        "redis": redis_version,
        "redis-py": redis.__version__,
        "hiredis": hiredis.__version__,
    }


def _table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str]] = []
    for key, label in (
        ("consume", "consume (no TIMEOUT)"),
        ("consume_timeout", "consume (TIMEOUT=30)"),
    ):
        c = results[key]
        rows.append((label, f"{c['ours']:,.0f}/s", f"{c['theirs']:,.0f}/s", f"{c['ratio']:.2f}x"))
    for key, label in (
        ("publish_many", "publish_many (batches of 1000)"),
        ("publish", "publish, sequential"),
    ):
        p = results[key]
        rows.append((label, f"{p['ours']:,.0f}/s", f"{p['theirs']:,.0f}/s", f"{p['ratio']:.2f}x"))
    for key, label in (
        ("typed_consume", "typed handler (msgspec Struct) vs bytes handler"),
        ("typed_publish_many", "typed publish_many vs bytes publish_many"),
    ):
        if key in results:
            t = results[key]
            rows.append(
                (label, f"{t['ours']:,.0f}/s", f"bytes: {t['theirs']:,.0f}/s", f"{t['ratio']:.2f}x")
            )
    if "otel_consume" in results:
        o = results["otel_consume"]
        for key, label in (
            ("all_sampled", "pulses.otel, every span sampled, vs no tracing"),
            ("dropped", "pulses.otel, ParentBased(ALWAYS_OFF), vs no tracing"),
        ):
            t = o[key]
            rows.append(
                (label, f"{t['ours']:,.0f}/s", f"off: {t['theirs']:,.0f}/s", f"{t['ratio']:.2f}x")
            )
    if "prometheus_consume" in results:
        m = results["prometheus_consume"]
        rows.append(
            (
                f"--metrics-port, scraped every {SCRAPE_EVERY:g} s, vs none",
                f"{m['ours']:,.0f}/s",
                f"off: {m['theirs']:,.0f}/s",
                f"{m['ratio']:.2f}x",
            )
        )
    lat = results["latency"]
    for q in ("p50_ms", "p99_ms"):
        ours, theirs = lat["pulses"][q], lat["raw"][q]
        rows.append(
            (
                f"latency {q[:3]} @ {results['config']['latency_rate']:.0f}/s",
                f"{ours:.3f} ms",
                f"{theirs:.3f} ms",
                f"{ours / theirs:.2f}x",
            )
        )
    s = results["scaling"]
    rows.append(
        (
            "pulses worker -w 2 vs -w 1",
            f"{s['two']:,.0f}/s",
            f"-w 1: {s['one']:,.0f}/s",
            f"{s['ratio']:.2f}x",
        )
    )
    m = results["memory_broker"]
    rows.append(
        (
            "memory broker, in process",
            f"publish {m['publish']:,.0f}/s",
            f"consume {m['consume']:,.0f}/s",
            "",
        )
    )
    if results.get("backlog"):
        b = results["backlog"]
        rows.append(
            (
                f"RSS draining {b['n']:,} backlog",
                f"peak {b['peak_rss_mib']:.1f} MiB",
                f"idle {b['idle_rss_mib']:.1f} MiB",
                f"+{b['growth_mib']:.1f} MiB",
            )
        )
    head = ("measure", "pulses", "raw redis-py", "ratio")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    lines = [
        " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in [head, *rows]
    ]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("-n", type=int, default=20_000, help="messages per consume run")
    parser.add_argument("--rounds", type=int, default=5, help="alternations per comparison")
    parser.add_argument("--backlog", type=int, default=1_000_000, help="messages for --full")
    parser.add_argument("--full", action="store_true", help="also drain a 1M backlog (RSS)")
    parser.add_argument("--latency-rate", type=float, default=200.0)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument(
        "--only", nargs="*", help="run only these parts (consume, typed, publish, ...)"
    )
    parser.add_argument("--max-in-flight", type=int, default=0, help="set on the handler")
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="directory for the JSON [bench/results]"
    )
    args = parser.parse_args()
    global MAX_IN_FLIGHT
    MAX_IN_FLIGHT = args.max_in_flight
    parts = set(
        args.only
        or [
            "consume",
            "otel",
            "prometheus",
            "typed",
            "publish",
            "latency",
            "scaling",
            "memory",
            "backlog",
        ]
    )
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(redis_url())
        except FileNotFoundError as missing:
            raise SystemExit(f"python -m bench: {missing}") from None
        results["machine"] = _machine(url)
        results["config"] = {
            "n": args.n,
            "rounds": args.rounds,
            "latency_rate": args.latency_rate,
            "latency_seconds": args.latency_seconds,
            "payload_bytes": len(PAYLOAD),
            "max_in_flight": MAX_IN_FLIGHT or "default",
        }
        if "consume" in parts:
            _say(f"consume: {args.n:,} no-op messages, Pulses worker vs raw loop")
            results["consume"] = consume(url, args.n, args.rounds, None)
            _say("consume with TIMEOUT=30 on the handler")
            results["consume_timeout"] = consume(url, args.n, args.rounds, 30.0)
        if "otel" in parts:
            _say(f"otel: {args.n:,} no-op messages, tracing on (all sampled, dropped) vs off")
            results["otel_consume"] = otel_consume(url, args.n, args.rounds)
        if "prometheus" in parts:
            _say(f"prometheus: {args.n:,} no-op messages, --metrics-port on vs off")
            results["prometheus_consume"] = prometheus_consume(url, args.n, args.rounds)
        if "typed" in parts:
            _say(f"typed: {args.n:,} messages of a small struct, typed vs bytes handler")
            results["typed_consume"] = typed_consume(url, args.n, args.rounds)
            _say("typed: Stream.publish_many vs bytes publish_many")
            results["typed_publish_many"] = asyncio.run(
                _typed_publish_many(url, args.n, 3 * args.rounds)
            )
        if "publish" in parts:
            _say("publish")
            results.update(asyncio.run(_publish_rates(url, args.n, 2_000, 3 * args.rounds)))
        if "latency" in parts:
            _say(f"latency at {args.latency_rate:.0f}/s for {args.latency_seconds:.0f}s each")
            results["latency"] = latency(url, args.latency_rate, args.latency_seconds)
        if "scaling" in parts:
            _say("scaling: -w 2 vs -w 1")
            results["scaling"] = scaling(url, args.n * 5)
        if "memory" in parts:
            _say("memory broker")
            results["memory_broker"] = asyncio.run(_memory(args.n))
        if "cluster" in parts:
            _say("cluster: 1, 2, 4 worker processes over 12 streams, 3-master cluster vs one Redis")
            try:
                cluster = stack.enter_context(redis_cluster())
            except FileNotFoundError as missing:
                raise SystemExit(f"python -m bench: {missing}") from None
            # Six times -n: every worker process starts before the backlog is gone.
            results["cluster_scaling"] = cluster_scaling(url, cluster.url, 6 * args.n, args.rounds)
        if "backlog" in parts and args.full:
            _say("backlog")
            results["backlog"] = backlog(url, args.backlog)
    results["command"] = " ".join(["python -m bench", *sys.argv[1:]])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args.results.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2)
    (args.results / f"{stamp}.json").write_text(text)
    if parts >= {"consume", "publish", "latency", "scaling", "memory"}:
        (args.results / "latest.json").write_text(text)
        machine = ", ".join(f"{k} {v}" for k, v in results["machine"].items())
        print(f"{results['command']}  ({machine})\n")
        print(_table(results))
    else:
        print(text)


if __name__ == "__main__":
    main()
