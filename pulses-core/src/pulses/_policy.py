"""Retry backoff and delivery limits: what happens when a handler fails."""

from __future__ import annotations

import random
from dataclasses import dataclass

from pulses._outcome import DeadLetter, Outcome, Retry

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, then a dead letter after ``max_deliveries``.

    Full jitter (a uniform draw between 0 and the exponential cap) spreads a burst of
    failures instead of retrying them in lockstep against a struggling dependency.
    """

    max_deliveries: int
    backoff_ms: int
    backoff_max_ms: int

    def delay_ms(self, deliveries: int, rng: random.Random | None = None) -> int:
        """The wait before the next delivery, after ``deliveries`` failed ones."""
        cap = min(self.backoff_max_ms, self.backoff_ms * 2 ** min(deliveries - 1, 62))
        return round((rng or random).uniform(0, cap))

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
