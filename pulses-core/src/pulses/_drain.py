"""Run an app until its streams are drained, then stop it: for batch runs and tests."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from pulses._app import App
from pulses._broker import StreamAdmin
from pulses._cancel import CancellationToken
from pulses._errors import Unsupported
from pulses._stats import RunStats

__all__ = ["run_until_drained"]

logger = logging.getLogger("pulses")


async def run_until_drained(
    app: App[Any],
    *,
    timeout: float | None = 10.0,  # noqa: ASYNC109  (a deadline for the drain, not for one await)
    token: CancellationToken | None = None,
    poll_interval: float = 0.01,
    delayed_grace: float | None = None,
) -> RunStats:
    """Run ``app`` until none of its streams has anything unread, pending or delayed for
    its group, then shut it down gracefully and return the run's counters.

    >>> stats = await run_until_drained(app)      # doctest: +SKIP
    >>> assert stats.total.dead_lettered == 1     # doctest: +SKIP

    Delayed messages (delayed publishes, retries waiting for their time) are waited for
    until they are handled; with ``delayed_grace`` seconds, the run stops once only
    delayed messages are left and none of them has come due for that long, and logs
    what is left. Raises ``TimeoutError`` naming what is left when ``timeout`` seconds
    pass first (``None``: no limit). Firing ``token`` stops the run early, as with
    ``App.run``.
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
    only_delayed_since: float | None = None
    try:
        while not run.done() and not stop.cancelled:
            left = await _left(broker, streams, group)
            if not left.busy and not left.delayed:
                break
            now = loop.time()
            if left.busy or delayed_grace is None:
                only_delayed_since = None
            elif only_delayed_since is None:
                only_delayed_since = now
            elif now - only_delayed_since >= delayed_grace:
                logger.warning(
                    "drained; left for a later run, none due within %gs: %s",
                    delayed_grace,
                    "; ".join(left.delayed),
                )
                break
            if deadline is not None and now > deadline:
                raise TimeoutError(
                    f"not drained after {timeout}s: " + "; ".join(left.busy + left.delayed)
                )
            await asyncio.wait([run], timeout=poll_interval)
    except BaseException:
        stop.cancel()
        await asyncio.gather(run, return_exceptions=True)  # shut down before reporting
        raise
    stop.cancel()
    return await run


@dataclass
class _Left:
    busy: list[str] = field(default_factory=list)
    """Unread or pending messages, or a group not created yet: work the run will do."""
    delayed: list[str] = field(default_factory=list)
    """Delayed publishes and retries: work for when they come due."""


async def _left(admin: StreamAdmin, streams: list[str], group: str) -> _Left:
    left = _Left()
    for stream in streams:
        stats = await admin.stats(stream)
        if stats.delayed:
            left.delayed.append(f"{stream}: delayed publishes {stats.delayed}")
        for g in stats.groups:
            if g.group != group:
                continue
            if g.pending or g.lag:
                left.busy.append(f"{stream}/{group}: unread {g.lag}, pending {g.pending}")
            if g.delayed:
                left.delayed.append(f"{stream}/{group}: delayed retries {g.delayed}")
        if not any(g.group == group for g in stats.groups) and stats.length:
            left.busy.append(f"{stream}: group {group} not created yet")
    return left
