"""The memory broker's sense of time: the system clock, or one that tests move by hand.

A ManualClock given to the broker and to the App (``App(..., clock=clock)``) moves the
broker's delays and the runtime's leases, heartbeats, reclaims and TIMEOUT together.
"""

from __future__ import annotations

import asyncio
import time

from pulses import Clock, wake

__all__ = ["Clock", "ManualClock", "SystemClock", "wake"]


class SystemClock:
    """Real time: ``time.time()``, and waits that take real time."""

    __slots__ = ()

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    async def sleep_until(self, deadline_ms: int, woken: asyncio.Future[None]) -> None:
        delay = (deadline_ms - self.now_ms()) / 1000
        if delay > 0:
            await asyncio.wait((woken,), timeout=delay)

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that stands still until ``advance`` moves it; waits end when it passes them.

    >>> clock = ManualClock(start_ms=1_000)
    >>> clock.advance(250)
    >>> clock.now_ms()
    1250
    """

    __slots__ = ("_now", "_sleepers")

    def __init__(self, start_ms: int | None = None) -> None:
        self._now = int(time.time() * 1000) if start_ms is None else _check_ms("start_ms", start_ms)
        self._sleepers: list[tuple[int, asyncio.Future[None]]] = []

    def now_ms(self) -> int:
        return self._now

    def advance(self, ms: int) -> None:
        """Move time forward by ``ms`` milliseconds, waking every wait that is now over."""
        self._now += _check_ms("ManualClock.advance(ms)", ms)
        due = [woken for deadline, woken in self._sleepers if deadline <= self._now]
        self._sleepers = [(d, w) for d, w in self._sleepers if d > self._now]
        for woken in due:
            wake(woken)

    async def sleep_until(self, deadline_ms: int, woken: asyncio.Future[None]) -> None:
        if deadline_ms <= self._now:
            return
        sleeper = (deadline_ms, woken)
        self._sleepers.append(sleeper)
        try:
            await woken
        finally:
            if sleeper in self._sleepers:
                self._sleepers.remove(sleeper)

    def __repr__(self) -> str:
        return f"ManualClock(now_ms={self._now})"


def _check_ms(what: str, ms: object) -> int:
    if isinstance(ms, bool) or not isinstance(ms, int) or ms < 0:
        raise ValueError(f"{what} must be a non-negative int of milliseconds, got {ms!r}")
    return ms
