"""Test helpers for the memory broker: what a foreign producer or an operator does
behind a broker's back, for tests of how handlers and brokers cope with it.

>>> entry_id = await add_foreign(broker, "jobs", [(b"user", b"42")])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

from pulses_memory._broker import MemoryBroker
from pulses_memory._store import parse_id as _parse_id

__all__ = ["add_foreign", "delete_entry"]


async def add_foreign(
    broker: MemoryBroker, stream: str, fields: Sequence[tuple[bytes, bytes]]
) -> str:
    """Append an entry with exactly these field/value pairs, as a program that is not
    Pulses would (``XADD`` on Redis); its id."""
    # Checked at run time too: tests hand in odd shapes on purpose.
    pairs: Sequence[Sequence[object]] = fields
    if not all(len(pair) == 2 and all(isinstance(x, bytes) for x in pair) for pair in pairs):
        raise TypeError(f"fields for stream {stream!r} must be (bytes, bytes) pairs")
    broker._check_open(f"add an entry to stream {stream!r}")
    store = broker._store
    flat = [part for pair in fields for part in pair]
    entry_id = store.stream(stream).append(flat, store.clock.now_ms())
    store.notify(stream)
    return entry_id


async def delete_entry(broker: MemoryBroker, stream: str, entry_id: str) -> bool:
    """Delete one stored entry, pending or not (``XDEL`` on Redis); whether it existed."""
    broker._check_open(f"remove an entry of stream {stream!r}")
    target = broker._store.streams.get(stream)
    key = _parse_id(entry_id)
    return target is not None and key is not None and target.delete(key)
