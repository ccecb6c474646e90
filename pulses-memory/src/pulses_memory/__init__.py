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

for _name in __all__:  # reprs, help() and pickles name the path users import
    _obj = globals()[_name]
    if _obj.__module__.startswith(f"{__name__}._"):
        _obj.__module__ = __name__
del _name, _obj
