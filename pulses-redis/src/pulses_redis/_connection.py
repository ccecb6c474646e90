"""The redis-py client a broker and its consumers share, built from a URL."""

from __future__ import annotations

from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from pulses import BrokerClosed, InvalidURL, redact_url
from pulses.broker import redact_secrets, url_secrets
from pulses_redis._errors import ErrorMap

__all__ = ["Connection", "client_from_url"]

# Replies Pulses parses itself: redis-py's callbacks would turn an entry's fields into a
# dict, losing duplicate field names and the order of a foreign producer's entry.
_RAW_REPLIES = (
    "XREAD",
    "XREADGROUP",
    "XRANGE",
    "XREVRANGE",
    "XCLAIM",
    "XAUTOCLAIM",
    "XPENDING",
    "XINFO GROUPS",
    "XINFO CONSUMERS",
    "XINFO STREAM",
    "HGETALL",
)

SOCKET_TIMEOUT = 15.0
"""Seconds a reply may take; a blocking read never asks Redis to wait longer than
this minus ``BLOCK_MARGIN``, so a stalled connection is told apart from a quiet stream."""
BLOCK_MARGIN = 2.0


def client_from_url(url: str) -> Redis:
    """A client by redis-py's URL grammar (``redis://``, ``rediss://``, ``unix://``).

    Pinned: RESP2 (no HELLO, so Redis 6.2+ and the same reply shapes everywhere), raw
    bytes replies, reconnects with jittered backoff (a couple of quick attempts, then the
    error reaches the runtime, which backs off further), health checks on idle
    connections. ``rediss://`` verifies certificates unless the URL says
    ``ssl_cert_reqs=none``. Query parameters of the URL override the other defaults.
    """
    try:
        options = parse_url(url)
    except (ValueError, TypeError) as exc:
        raise InvalidURL(
            f"cannot parse Redis URL {redact_url(url)!r}: "
            f"{redact_secrets(str(exc), url_secrets(url))}"
        ) from None
    protocol = options.get("protocol", 2)
    if str(protocol) != "2":
        raise InvalidURL(
            f"Redis URL {redact_url(url)!r}: pulses-redis speaks RESP2; drop protocol={protocol}"
        )
    if options.get("decode_responses"):
        raise InvalidURL(
            f"Redis URL {redact_url(url)!r}: pulses-redis reads raw bytes; drop decode_responses"
        )
    defaults: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": 5.0,
        "health_check_interval": 10,
        # No retry inside redis-py: a read it re-sends after a lost reply leaves the
        # entries the first one took in our pending list, and nobody would know. Every
        # caller retries in its own way instead: the runtime's loops with backoff (after
        # a failed fetch, re-reading the pending list), publish once (_broker.py).
        "retry": Retry(NoBackoff(), retries=0),
        "client_name": "pulses",
    }
    pool = ConnectionPool.from_url(url, **defaults, protocol=2)
    return Redis.from_pool(pool)


class Connection:
    """A client, its error map and whether the broker was closed; shared by consumers."""

    __slots__ = ("client", "closed", "errors", "url")

    def __init__(self, client: Redis, url: str | None = None) -> None:
        for name in _RAW_REPLIES:
            client.response_callbacks.pop(name, None)
        kwargs = client.connection_pool.connection_kwargs
        if url is None:
            where = (
                kwargs.get("path")
                or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
            )
            url = f"redis://{where}/{kwargs.get('db', 0)}"
        self.client = client
        self.url = redact_url(url)
        password = kwargs.get("password")
        secrets = [*url_secrets(url), *([str(password)] if password else [])]
        self.errors = ErrorMap(client, self.url, secrets)
        self.closed = False

    def check(self, what: str) -> None:
        if self.closed:
            raise BrokerClosed(f"{what}: the Redis broker {self.url} is closed")
