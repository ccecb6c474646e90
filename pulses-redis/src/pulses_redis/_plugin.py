"""Registers the Redis broker for ``redis://``, ``rediss://`` and ``unix://`` URLs, and
for a Redis Cluster (``redis+cluster://``, ``rediss+cluster://``) or a Sentinel-managed
master (``redis+sentinel://``, ``rediss+sentinel://``).

Cheap to import: redis-py is imported only when a URL is connected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pulses.broker import Register, hookimpl

if TYPE_CHECKING:
    from pulses_redis._broker import RedisBroker

__all__ = ["CLUSTER_SCHEMES", "SENTINEL_SCHEMES", "register_brokers"]

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")


async def _connect(url: str) -> RedisBroker:
    from pulses_redis._broker import RedisBroker

    return await RedisBroker.connect(url)


@hookimpl
def register_brokers(register: Register) -> None:
    """Claim the schemes of redis-py's URL grammar, and those of a cluster and Sentinel."""
    for scheme in ("redis", "rediss", "unix", *CLUSTER_SCHEMES, *SENTINEL_SCHEMES):
        register(scheme, _connect)
