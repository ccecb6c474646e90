"""Helpers for testing handlers and brokers.

``run_until_drained`` (also ``pulses.run_until_drained``, where production code takes it)
runs an app against the memory broker (or any broker with the admin facet) until its
work is done. Broker authors find the conformance suite in ``pulses.testing.conformance``
(needs pytest).
"""

from pulses import run_until_drained
from pulses._public import claim as _claim
from pulses.testing._draining import Drain
from pulses.testing._harness import BrokerHarness

__all__ = ["BrokerHarness", "Drain", "run_until_drained"]

_claim(__name__, globals())
