"""One worker process: run an app until SIGTERM/SIGINT, drain on the first, force on the second."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pulses._app import App
from pulses._broker import StreamAdmin
from pulses._cancel import CancellationToken
from pulses._drain import run_until_drained
from pulses._stats import RunStats
from pulses._supervisor import SUPERVISOR_ENV

__all__ = ["BURST_GRACE", "EXIT_FORCED", "CheckResult", "check", "serve"]

logger = logging.getLogger("pulses.worker")

EXIT_FORCED = 130
"""A second signal stopped the worker before running handlers finished."""

BURST_GRACE = 5.0
"""Seconds ``--burst`` waits, once only delayed messages are left, for one to come due.
A retry a moment away is part of the batch; a publish delayed by ten minutes is not,
and waiting for it silently would look like a hang."""


async def serve(app: App[Any], *, burst: bool) -> int:
    """Run until a signal (or, with ``burst``, until the streams are drained); exit code."""
    token = CancellationToken()
    runner = (
        run_until_drained(app, timeout=None, token=token, delayed_grace=BURST_GRACE)
        if burst
        else app.run(token)
    )
    run: asyncio.Task[RunStats] = asyncio.create_task(runner)
    signals = 0
    supervisor = os.environ.get(SUPERVISOR_ENV)
    # Under a supervisor, which tells the user once for all its processes, not N times.
    say = logger.debug if supervisor else logger.warning

    def on_signal(signum: signal.Signals) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            say(
                "%s: finishing running handlers, then stopping; press Ctrl+C again to force",
                signum.name,
            )
            token.cancel()
        else:
            say("%s again: stopping now; unfinished messages stay pending", signum.name)
            run.cancel()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    watch = (
        asyncio.create_task(_watch_supervisor(int(supervisor), on_signal)) if supervisor else None
    )
    try:
        await run
    except asyncio.CancelledError:
        return EXIT_FORCED
    finally:
        if watch is not None:
            watch.cancel()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await app.broker.aclose()
    return 0


async def _watch_supervisor(supervisor: int, on_signal: Callable[[signal.Signals], None]) -> None:
    """Drain, as on SIGTERM, once the supervisor is gone (this process was re-parented):
    a SIGKILLed supervisor can forward no signal, and its children must not run on."""
    while os.getppid() == supervisor:  # noqa: ASYNC110  (no event exists for a parent's death)
        await asyncio.sleep(1.0)
    logger.warning("the supervisor (pid %d) is gone", supervisor)
    on_signal(signal.SIGTERM)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What ``pulses worker --check`` found."""

    problems: list[str]
    """What keeps the app from working: an unreachable broker, a stream it cannot read."""
    groups_missing: list[str]
    """Streams where the app's group does not exist yet: no problem, a starting worker
    creates it."""
    read: bool
    """Whether the broker was asked at all: one without an admin facet offers no
    read-only call, and is not touched."""


async def check(app: App[Any]) -> CheckResult:
    """Whether the app's broker answers and its streams can be read, without changing
    anything: no group, stream or key is created. A probe runs this every few seconds
    beside live workers; one that created groups would also create them from a
    misconfigured deployment, on streams nobody meant."""
    problems: list[str] = []
    missing: list[str] = []
    broker = app.broker
    group = app.subscription.group
    admin = broker if broker.capabilities.admin and isinstance(broker, StreamAdmin) else None
    try:
        if admin is not None:
            for handler in app.handlers:
                for stream in handler.STREAMS:
                    try:
                        stats = await admin.stats(stream)
                    except Exception as exc:
                        problems.append(f"{handler.name}: {type(exc).__name__}: {exc}")
                        break  # one line per handler: a broker that is down fails them all
                    if all(g.group != group for g in stats.groups):
                        missing.append(stream)
    finally:
        await broker.aclose()
    return CheckResult(problems, missing, read=admin is not None)
