"""Pulses in-memory broker: the Redis broker's semantics in one process, with a clock
that tests can move by hand."""

from pulses_memory._broker import MemoryBroker, MemorySubscription
from pulses_memory._clock import Clock, ManualClock, SystemClock
from pulses_memory._consumer import MemoryConsumer

__version__ = "0.1.0"  # the same as pulses.__version__

__all__ = [
    "Clock",
    "ManualClock",
    "MemoryBroker",
    "MemoryConsumer",
    "MemorySubscription",
    "SystemClock",
]
