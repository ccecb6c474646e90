"""The redis-py client a broker and its consumers share, built from a URL.

Three shapes, chosen by the scheme: one server (``redis://``, ``rediss://``,
``unix://``, redis-py's grammar), a Redis Cluster (``redis+cluster://`` or
``rediss+cluster://`` with one or more seed nodes), and a master that Sentinels watch
(``redis+sentinel://`` or ``rediss+sentinel://`` with the Sentinels and the service).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from pulses import BrokerClosed, InvalidURL, redact_url
from pulses.broker import redact_secrets, url_secrets
from pulses_redis._errors import ErrorMap
from pulses_redis._plugin import CLUSTER_SCHEMES, SENTINEL_SCHEMES
from pulses_redis._scripts import Client

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


def client_from_url(url: str) -> Client:
    """A client by redis-py's URL grammar (``redis://``, ``rediss://``, ``unix://``), or
    for a cluster or a Sentinel-managed master (see :func:`_split`).

    Pinned: RESP2 (no HELLO, so Redis 6.2+ and the same reply shapes everywhere), raw
    bytes replies, reconnects with jittered backoff (a couple of quick attempts, then the
    error reaches the runtime, which backs off further), health checks on idle
    connections. ``rediss://`` verifies certificates unless the URL says
    ``ssl_cert_reqs=none``. Query parameters of the URL override the other defaults.
    """
    scheme = url.partition("://")[0].lower()
    if scheme in CLUSTER_SCHEMES:
        return _cluster_client(url)
    if scheme in SENTINEL_SCHEMES:
        return _sentinel_client(url)
    _parse(url, url)
    pool = ConnectionPool.from_url(url, **_defaults(), protocol=2)
    return Redis.from_pool(pool)


def _parse(url: str, single: str) -> dict[str, Any]:
    """redis-py's reading of ``single`` (``url`` itself, or the one-server URL standing
    for a cluster or Sentinel URL), refusing what Pulses cannot work with."""
    try:
        options: dict[str, Any] = dict(parse_url(single))
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
    return options


def _defaults() -> dict[str, Any]:
    return {
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


def _split(url: str) -> tuple[str, list[tuple[str, int]], str]:
    """``scheme://[user:password@]host:port[,host:port...][/path][?query]`` → the
    one-server URL redis-py parses the credentials and query of, the hosts, the path."""
    scheme, _, rest = url.partition("://")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    addresses: list[tuple[str, int]] = []
    for part in hosts.split(","):
        host, port = part, "6379"
        if part.startswith("["):  # [::1]:7000
            host, _, after = part[1:].partition("]")
            port = after.removeprefix(":") or port
        elif ":" in part:
            host, _, port = part.rpartition(":")
        if not host or not port.isdigit():
            raise InvalidURL(
                f"Redis URL {redact_url(url)!r}: {unquote(part)!r} is not host:port; "
                "list the nodes as host:port,host:port"
            )
        addresses.append((host, int(port)))
    single = (
        f"{scheme.partition('+')[0]}://{userinfo + '@' if userinfo else ''}{hosts.split(',')[0]}"
    )
    return f"{single}/?{query}" if query else f"{single}/", addresses, path


def _cluster_client(url: str) -> RedisCluster:
    single, addresses, path = _split(url)
    if path.strip("/") not in ("", "0"):
        raise InvalidURL(
            f"Redis URL {redact_url(url)!r}: a Redis Cluster has database 0 only; drop /{path}"
        )
    options = _connection_options(url, single)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in addresses],
        **options,
        # MOVED, ASK and TRYAGAIN are still followed: Redis did not run the command.
        # A lost connection is not retried, for the reason given in _defaults.
        retry=Retry(NoBackoff(), retries=0),
        protocol=2,
    )


def _sentinel_client(url: str) -> Redis:
    single, addresses, path = _split(url)
    service, _, db = path.strip("/").partition("/")
    if not service or not (db == "" or db.isdigit()):
        raise InvalidURL(
            f"Redis URL {redact_url(url)!r}: name the master Sentinels watch and optionally "
            "the database, as redis+sentinel://host:port,host:port/mymaster/0"
        )
    options = _connection_options(url, single)
    # The credentials and TLS options are the master's; Sentinels are asked without.
    sentinels = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves Sentinel untyped
        addresses,
        sentinel_kwargs={k: v for k, v in options.items() if k.startswith("socket_")},
    )
    client: Redis = sentinels.master_for(
        service,
        **options,
        db=int(db or 0),
        retry=Retry(NoBackoff(), retries=0),
        protocol=2,
    )
    return client


def _connection_options(url: str, single: str) -> dict[str, Any]:
    """What the URL's credentials and query set, over the defaults, without the address."""
    options = {**_defaults(), **_parse(url, single)}
    options.pop("retry")
    for key in ("host", "port", "db", "path"):
        options.pop(key, None)
    connection_class = options.pop("connection_class", None)
    if connection_class is not None and issubclass(connection_class, SSLConnection):
        options["ssl"] = True
    return options


class Connection:
    """A client, its error map and whether the broker was closed; shared by consumers."""

    __slots__ = ("client", "closed", "cluster", "errors", "socket_timeout", "url")

    def __init__(self, client: Client, url: str | None = None) -> None:
        for name in _RAW_REPLIES:
            client.response_callbacks.pop(name, None)
        self.cluster = isinstance(client, RedisCluster)
        """Keys of different slots may live on different nodes: no command or script
        may touch more than one slot."""
        if isinstance(client, RedisCluster):
            kwargs = client.connection_kwargs
            where = ",".join(
                f"{n.host}:{n.port}" for n in client.nodes_manager.startup_nodes.values()
            )
            tls = issubclass(kwargs.get("connection_class", object), SSLConnection)
            scheme = "rediss+cluster" if tls else "redis+cluster"
            default_url = f"{scheme}://{where}/"
        else:
            kwargs = client.connection_pool.connection_kwargs
            where = (
                kwargs.get("path")
                or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
            )
            default_url = f"redis://{where}/{kwargs.get('db', 0)}"
        url = url or default_url
        self.client = client
        self.url = redact_url(url)
        self.socket_timeout: float | None = kwargs.get("socket_timeout")
        password = kwargs.get("password")
        secrets = [*url_secrets(url), *([str(password)] if password else [])]
        self.errors = ErrorMap(client, self.url, secrets)
        self.closed = False

    def slot(self, key: str) -> int:
        """The cluster slot of ``key``; 0 for every key on one server."""
        if isinstance(self.client, RedisCluster):
            return self.client.keyslot(key)
        return 0

    def check(self, what: str) -> None:
        if self.closed:
            raise BrokerClosed(f"{what}: the Redis broker {self.url} is closed")

    async def aclose(self) -> None:
        """Close the client, and the clients of the Sentinels it asks for its master."""
        self.closed = True
        await self.client.aclose()
        if isinstance(self.client, Redis):
            pool = self.client.connection_pool
            if isinstance(pool, SentinelConnectionPool):
                for sentinel in pool.sentinel_manager.sentinels:
                    await sentinel.aclose()
