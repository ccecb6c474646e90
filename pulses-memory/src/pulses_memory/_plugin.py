"""Registers the ``memory`` URL scheme; imports the broker only when a URL is connected."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pulses import Register, hookimpl

if TYPE_CHECKING:
    from pulses_memory._broker import MemoryBroker


async def connect(url: str) -> MemoryBroker:
    from pulses_memory._broker import MemoryBroker

    return await MemoryBroker.connect(url)


@hookimpl
def register_brokers(register: Register) -> None:
    """``memory://`` and ``memory://name``."""
    register("memory", connect)
