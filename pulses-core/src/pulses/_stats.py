"""Counters a run returns: what happened to every message a handler fetched."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

__all__ = ["HandlerStats", "RunStats"]


@dataclass(slots=True)
class HandlerStats:
    """Counts for one handler over one ``App.run``.

    Every fetched or reclaimed message ends in exactly one of acked, retried, dropped,
    dead_lettered, released, vanished, abandoned or unsettled.
    """

    handler: str = ""
    fetched: int = 0
    reclaimed: int = 0
    handled: int = 0
    """``handle()`` calls that returned or raised."""
    failed: int = 0
    """Calls that raised, timed out or returned something that is not an Outcome."""
    timed_out: int = 0
    acked: int = 0
    retried: int = 0
    dropped: int = 0
    dead_lettered: int = 0
    undecodable: int = 0
    """Payloads that did not decode to the handler's type: dead-lettered unrun."""
    isolated: int = 0
    """Suspects (an earlier delivery never settled) that were run alone."""
    released: int = 0
    """Fetched but unstarted at shutdown, handed back to the group."""
    vanished: int = 0
    """Pending messages whose stored entry had been deleted or trimmed."""
    abandoned: int = 0
    """Still running when the shutdown timeout ran out; left pending for reclaim."""
    unsettled: int = 0
    """Handled, but the broker could not record the outcome before shutdown; left pending."""

    def add(self, other: HandlerStats) -> None:
        for f in fields(self):
            if f.name != "handler":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def settled(self) -> int:
        return self.acked + self.retried + self.dropped + self.dead_lettered


@dataclass(frozen=True, slots=True)
class RunStats:
    """What ``App.run`` returns: counters per handler name, and their sum."""

    handlers: Mapping[str, HandlerStats] = field(default_factory=dict)

    @property
    def total(self) -> HandlerStats:
        total = HandlerStats(handler="*")
        for stats in self.handlers.values():
            total.add(stats)
        return total
