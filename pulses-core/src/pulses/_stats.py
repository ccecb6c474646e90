"""Counters a run returns: what happened to every message a handler fetched."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields

__all__ = ["DURATION_BUCKETS", "Durations", "HandlerStats", "RunStats"]

DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0,
)  # fmt: skip
"""Upper bounds, in seconds, of the handler duration histogram's buckets: from a
millisecond (a quick job) to five minutes (a long one)."""


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


class Durations:
    """A histogram of handler call durations, kept as plain bucket counts.

    Durations are added in batches, a bisect and two additions each; a metrics
    exporter reads the counts when it is scraped, instead of calling a metrics
    library per message.
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float] = DURATION_BUCKETS) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError(f"histogram bounds must be increasing and distinct, got {bounds!r}")
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        """Per bucket, not cumulative; the last one is above every bound."""
        self.total = 0.0
        """The sum of every observed duration, in seconds."""

    def observe(self, seconds: Iterable[float]) -> None:
        """Add a batch of durations: one call per batch, not per message."""
        counts, bounds = self.counts, self.bounds
        for value in seconds:
            # bisect_left puts a value equal to a bound in that bound's bucket:
            # Prometheus' buckets are "less than or equal".
            counts[bisect_left(bounds, value)] += 1
            self.total += value
