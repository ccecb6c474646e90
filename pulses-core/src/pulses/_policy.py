"""Retry backoff and delivery limits: what happens when a handler fails."""

from __future__ import annotations

import random
from dataclasses import dataclass

from pulses._outcome import DeadLetter, Outcome, Retry

__all__ = ["RetryPolicy", "jittered_backoff"]


def jittered_backoff(failures: int, base: float, cap: float) -> float:
    """The pause after ``failures`` failures in a row (1 for the first), in the unit of
    ``base`` and ``cap``: exponential, capped, with full jitter.

    Full jitter (a uniform draw between 0 and the exponential cap) spreads a burst of
    failures instead of retrying them in lockstep against a struggling dependency.
    """
    return random.uniform(0, min(cap, base * 2 ** min(max(failures, 1) - 1, 62)))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, then a dead letter after ``max_deliveries``."""

    max_deliveries: int
    backoff_ms: int
    backoff_max_ms: int

    def delay_ms(self, deliveries: int) -> int:
        """The wait before the next delivery, after ``deliveries`` failed ones."""
        return round(jittered_backoff(deliveries, self.backoff_ms, self.backoff_max_ms))

    def on_failure(self, deliveries: int, reason: str) -> Outcome:
        """The outcome for a delivery that raised, timed out or returned garbage."""
        if deliveries >= self.max_deliveries:
            return DeadLetter(f"{reason} (after {deliveries} deliveries)")
        return Retry(self.delay_ms(deliveries))

    def exhausted(self, deliveries: int) -> bool:
        """A message delivered more often than allowed: dead-letter it without running it.

        More than, not as many as: the delivery that reached the limit was allowed to
        run; one beyond it means that run never settled (its process died).
        """
        return deliveries > self.max_deliveries
