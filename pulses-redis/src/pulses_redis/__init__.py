"""Pulses on Redis Streams: ``RedisBroker`` and ``RedisSubscription``.

Keys share the stream's hash tag: for a stream
``emails`` (``{orders}`` keeps its own tag) the companions are ``{emails}:dead`` (dead
letters), ``{emails}:delayed`` (delayed publishes), and per group ``g``
``{emails}:retry:g`` (due retries, read by ``g`` only), ``{emails}:retry-delayed:g``
(retries waiting for their time), ``{emails}:counts:g`` (acked / dropped /
dead_lettered counters) and ``{emails}:alive:g`` (each consumer's heartbeat).

An ACL user needs these commands and nothing else (docs/deploy.md explains them; a test
runs every path as this user)::

    ACL SETUSER pulses on >CHANGE-ME ~* resetchannels -@all \\
        +ping +client|setname +time \\
        +xadd +xreadgroup +xack +xclaim +xpending +xrange +xlen +xdel +xtrim \\
        +xinfo|groups +xinfo|consumers +xgroup|create +xgroup|delconsumer \\
        +zadd +zrange +zrangebyscore +zrem +zcard \\
        +hget +hgetall +hset +hdel +hincrby \\
        +get +set +del +exists +type +scan \\
        +evalsha +script|load

(``~*`` can be narrowed to the streams and their ``{stream}:*`` companions.)
Requires Redis 6.2 or later.
"""

import importlib
import typing

if typing.TYPE_CHECKING:
    from pulses_redis._broker import RedisBroker, RedisSubscription
    from pulses_redis._consumer import RedisConsumer

__version__ = "0.1.0"  # the same as pulses.__version__

__all__ = ["RedisBroker", "RedisConsumer", "RedisSubscription"]

_HOMES = {"RedisBroker": "_broker", "RedisSubscription": "_broker", "RedisConsumer": "_consumer"}


def __getattr__(name: str) -> typing.Any:
    # Lazy, so that loading the plugin entry point does not import redis-py.
    if name not in _HOMES:
        raise AttributeError(f"module 'pulses_redis' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    value.__module__ = __name__  # reprs, help() and pickles name the path users import
    return value
