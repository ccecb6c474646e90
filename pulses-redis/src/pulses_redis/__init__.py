"""Pulses on Redis Streams: ``RedisBroker`` and ``RedisSubscription``.

Keys (all in :mod:`pulses_redis._keys`) share the stream's hash tag: for a stream
``emails`` (``{orders}`` keeps its own tag) the companions are ``{emails}:dead`` (dead
letters), ``{emails}:delayed`` (delayed publishes), and per group ``g``
``{emails}:retry:g`` (due retries, read by ``g`` only), ``{emails}:retry-delayed:g``
(retries waiting for their time), ``{emails}:counts:g`` (acked / dropped /
dead_lettered counters) and ``{emails}:alive:g`` (each consumer's heartbeat).

An ACL user needs these commands and nothing else::

    ACL SETUSER worker on >password ~* -@all +ping +client|setname +time
        +xadd +xreadgroup +xack +xclaim +xpending +xrange +xlen +xdel +xtrim
        +xinfo|groups +xinfo|consumers +xgroup|create +xgroup|delconsumer
        +zadd +zrange +zrangebyscore +zrem +zcard +hincrby +hgetall +hget +hset +hdel
        +del +exists +type +scan +evalsha +script|load

(``~*`` can be narrowed to the streams and their ``{stream}:*`` companions.)
Requires Redis 6.2 or later.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pulses_redis._broker import RedisBroker, RedisSubscription
    from pulses_redis._consumer import RedisConsumer

__version__ = "0.1.0"  # the same as pulses.__version__

__all__ = ["RedisBroker", "RedisConsumer", "RedisSubscription"]


def __getattr__(name: str) -> Any:
    # Lazy, so that loading the plugin entry point does not import redis-py.
    if name in ("RedisBroker", "RedisSubscription"):
        from pulses_redis import _broker

        return getattr(_broker, name)
    if name == "RedisConsumer":
        from pulses_redis import _consumer

        return _consumer.RedisConsumer
    raise AttributeError(f"module 'pulses_redis' has no attribute {name!r}")
