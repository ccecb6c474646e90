"""Run an app in a test until its streams are drained, then stop it."""

from __future__ import annotations

import asyncio
from typing import Any

from pulses._app import App
from pulses._broker import StreamAdmin
from pulses._cancel import CancellationToken
from pulses._errors import Unsupported
from pulses._stats import RunStats

__all__ = ["run_until_drained"]


async def run_until_drained(
    app: App[Any], *, timeout: float = 10.0, poll_interval: float = 0.01
) -> RunStats:
    """Run ``app`` until none of its streams has anything unread, pending or delayed for
    its group, then shut it down gracefully and return the run's counters.

    >>> stats = await run_until_drained(app)      # doctest: +SKIP
    >>> assert stats.total.dead_lettered == 1     # doctest: +SKIP

    Raises ``TimeoutError`` naming what is left when ``timeout`` seconds pass first.
    """
    broker = app.broker
    if not broker.capabilities.admin or not isinstance(broker, StreamAdmin):
        raise Unsupported(f"run_until_drained needs a broker with the admin facet; {broker.url} "
                          "has none")
    streams = [stream for handler in app.handlers for stream in handler.STREAMS]
    group = app.subscription.group
    token = CancellationToken()
    run = asyncio.create_task(app.run(token))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    left: list[str] = []
    try:
        while not run.done():
            left = await _left(broker, streams, group)
            if not left:
                break
            if loop.time() > deadline:
                raise TimeoutError(f"not drained after {timeout}s: " + "; ".join(left))
            await asyncio.wait([run], timeout=poll_interval)
    finally:
        token.cancel()
    return await run


async def _left(admin: StreamAdmin, streams: list[str], group: str) -> list[str]:
    left = []
    for stream in streams:
        stats = await admin.stats(stream)
        if stats.delayed:
            left.append(f"{stream}: {stats.delayed} delayed publishes")
        for g in stats.groups:
            if g.group == group and (g.pending or g.lag or g.delayed):
                left.append(f"{stream}/{group}: {g.lag} unread, {g.pending} pending, "
                            f"{g.delayed} delayed retries")
        if not any(g.group == group for g in stats.groups) and stats.length:
            left.append(f"{stream}: group {group} not created yet")
    return left
