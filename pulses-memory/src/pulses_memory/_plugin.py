"""Registers the ``memory`` URL scheme. Cheap to import: the broker is plain Python."""

from __future__ import annotations

from pulses.broker import Register, hookimpl
from pulses_memory._broker import MemoryBroker


@hookimpl
def register_brokers(register: Register) -> None:
    """``memory://`` and ``memory://name``."""
    register("memory", MemoryBroker.connect)
