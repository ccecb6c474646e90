"""Time as the runtime and the memory broker see it: real, or moved by hand in tests."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "MonotonicClock", "wake"]


class Clock(Protocol):
    """Where time is read and waited for; ``pulses_memory.ManualClock`` is one that
    tests move by hand (``App(..., clock=clock)`` and ``MemoryBroker(clock=clock)``)."""

    def now_ms(self) -> int:
        """The current time in milliseconds."""
        ...

    async def sleep_until(self, deadline_ms: int, woken: asyncio.Future[None]) -> None:
        """Return once ``deadline_ms`` has come, or sooner when ``woken`` is done."""
        ...


class MonotonicClock:
    """Real time that never steps back: the runtime's default."""

    __slots__ = ()

    def now_ms(self) -> int:
        return int(time.monotonic() * 1000)

    async def sleep_until(self, deadline_ms: int, woken: asyncio.Future[None]) -> None:
        delay = (deadline_ms - self.now_ms()) / 1000
        if delay > 0:
            await asyncio.wait((woken,), timeout=delay)

    def __repr__(self) -> str:
        return "MonotonicClock()"


def wake(woken: asyncio.Future[None]) -> None:
    """Resolve a waiter's future from any event loop, or from none.

    Each wait makes its future in the loop it runs in, so an object that outlives one
    loop (a test's) never holds a primitive bound to it; a waiter whose loop has since
    closed is simply skipped.
    """
    if woken.done():
        return
    loop = woken.get_loop()
    if loop.is_closed():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        woken.set_result(None)
    else:
        loop.call_soon_threadsafe(_resolve, woken)


def _resolve(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)
