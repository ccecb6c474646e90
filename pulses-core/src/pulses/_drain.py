"""Run an app until its streams are drained, then stop it: for tests and batch runs."""

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
    app: App[Any],
    *,
    timeout: float | None = 10.0,  # noqa: ASYNC109  (a deadline for the drain, not for one await)
    token: CancellationToken | None = None,
    poll_interval: float = 0.01,
) -> RunStats:
    """Run ``app`` until none of its streams has anything unread, pending or delayed for
    its group, then shut it down gracefully and return the run's counters.

    >>> stats = await run_until_drained(app)      # doctest: +SKIP
    >>> assert stats.total.dead_lettered == 1     # doctest: +SKIP

    Raises ``TimeoutError`` naming what is left when ``timeout`` seconds pass first
    (``None``: no limit). Firing ``token`` stops the run early, as with ``App.run``.
    """
    broker = app.broker
    if not broker.capabilities.admin or not isinstance(broker, StreamAdmin):
        raise Unsupported(
            f"run_until_drained needs a broker with the admin facet; {broker.url} has none"
        )
    streams = [stream for handler in app.handlers for stream in handler.STREAMS]
    group = app.subscription.group
    stop = token.child() if token is not None else CancellationToken()
    run = asyncio.create_task(app.run(stop))
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    try:
        while not run.done() and not stop.cancelled:
            left = await _left(broker, streams, group)
            if not left:
                break
            if deadline is not None and loop.time() > deadline:
                raise TimeoutError(f"not drained after {timeout}s: " + "; ".join(left))
            await asyncio.wait([run], timeout=poll_interval)
    except BaseException:
        stop.cancel()
        await asyncio.gather(run, return_exceptions=True)  # shut down before reporting
        raise
    stop.cancel()
    return await run


async def _left(admin: StreamAdmin, streams: list[str], group: str) -> list[str]:
    left = []
    for stream in streams:
        stats = await admin.stats(stream)
        if stats.delayed:
            left.append(f"{stream}: {stats.delayed} delayed publishes")
        left.extend(
            f"{stream}/{group}: {g.lag} unread, {g.pending} pending, {g.delayed} delayed retries"
            for g in stats.groups
            if g.group == group and (g.pending or g.lag or g.delayed)
        )
        if not any(g.group == group for g in stats.groups) and stats.length:
            left.append(f"{stream}: group {group} not created yet")
    return left
