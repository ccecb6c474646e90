"""``Drain``: what the ``drain`` fixture of the pytest plugin gives a test.

No pytest here: ``pulses.testing`` exports ``Drain`` (for type annotations) to code
that runs without pytest too.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pulses import App, RunStats, StreamAdmin, run_until_drained

if TYPE_CHECKING:
    from pulses_memory import ManualClock

__all__ = ["Drain"]

# Real time between two looks at what is left, while a drain runs.
_POLL_SECONDS = 0.005
# A standing clock's first jump; it doubles while the app has nothing in hand, so the
# longest default backoff (600 s) is passed in 13 looks.
_FIRST_JUMP_MS = 100
_LONGEST_JUMP_MS = 3_600_000


class Drain:
    """The ``drain`` fixture: ``stats = await drain(app)`` runs the app until its work is
    done, then stops it gracefully and returns its counters.

    Done means: none of the app's streams has anything unread, pending or delayed for
    the app's group. On a broker whose clock is a ``ManualClock`` (``memory_broker``'s),
    time jumps ahead whenever the app has nothing in hand (nothing unread or pending),
    so a retry's backoff, a ``Retry(after_ms=...)`` or a delayed publish comes due at
    once: a test of ``MAX_DELIVERIES`` with the default backoff takes milliseconds, not
    minutes. Raises ``TimeoutError`` naming what is left after ``timeout`` seconds.
    """

    async def __call__(
        self,
        app: App[Any],
        *,
        timeout: float = 10.0,  # noqa: ASYNC109  (a deadline for the whole drain)
    ) -> RunStats:
        clock = _manual_clock(app)
        if clock is None:
            return await run_until_drained(app, timeout=timeout)
        mover = asyncio.create_task(_move_time(app, clock))
        try:
            return await run_until_drained(app, timeout=timeout)
        finally:
            mover.cancel()
            await asyncio.gather(mover, return_exceptions=True)


def _manual_clock(app: App[Any]) -> ManualClock | None:
    try:
        from pulses_memory import ManualClock
    except ImportError:  # then no broker runs on one
        return None
    clock = getattr(app.broker, "clock", None)
    return clock if isinstance(clock, ManualClock) else None


async def _move_time(app: App[Any], clock: ManualClock) -> None:
    """While the app has nothing in hand, jump ``clock`` ahead, further each time: to the
    end of what is delayed, and past the wait of a fetch that finds nothing at all (which
    a graceful stop would otherwise wait for in real time)."""
    admin = app.broker
    assert isinstance(admin, StreamAdmin)  # a MemoryBroker's (the only ManualClock's)
    streams = [stream for handler in app.handlers for stream in handler.STREAMS]
    group = app.subscription.group
    jump = _FIRST_JUMP_MS
    while True:
        await asyncio.sleep(_POLL_SECONDS)
        if await _in_hand(admin, streams, group):
            jump = _FIRST_JUMP_MS
        else:
            clock.advance(jump)
            jump = min(2 * jump, _LONGEST_JUMP_MS)


async def _in_hand(admin: StreamAdmin, streams: list[str], group: str) -> bool:
    """Whether ``group`` has messages unread or pending (being handled), so that time
    must not jump: a lease could look expired."""
    for stream in streams:
        stats = await admin.stats(stream)
        mine = [g for g in stats.groups if g.group == group]
        if any(g.pending or g.lag for g in mine) or (stats.length and not mine):
            return True
    return False
