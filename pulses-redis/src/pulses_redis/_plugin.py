"""Registers the Redis broker for ``redis://``, ``rediss://`` and ``unix://`` URLs.

Cheap to import: redis-py is imported only when a URL is connected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pulses.broker import Register, hookimpl

if TYPE_CHECKING:
    from pulses_redis._broker import RedisBroker

__all__ = ["register_brokers"]


async def _connect(url: str) -> RedisBroker:
    from pulses_redis._broker import RedisBroker

    return await RedisBroker.connect(url)


@hookimpl
def register_brokers(register: Register) -> None:
    """Claim the schemes of redis-py's URL grammar."""
    for scheme in ("redis", "rediss", "unix"):
        register(scheme, _connect)
