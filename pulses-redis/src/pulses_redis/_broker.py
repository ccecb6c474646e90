"""RedisBroker and RedisSubscription: Pulses on Redis Streams consumer groups."""

from __future__ import annotations

import asyncio
import os
import random
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

from pulses import ConfigurationError, ConnectionLost
from pulses.broker import (
    DEFAULT_KEY_WINDOW_MS,
    Capabilities,
    Subscription,
    check_codec,
    check_keys,
    check_publish,
    check_streams,
    check_window,
    encode_fields,
)
from pulses_redis._admin import AdminFacet
from pulses_redis._connection import Connection, client_from_url
from pulses_redis._consumer import RedisConsumer
from pulses_redis._keys import StreamKeys
from pulses_redis._scripts import (
    PUBLISH_ONCE,
    SCHEDULE,
    Arg,
    Client,
    command,
    run_pipeline,
    run_script,
)

__all__ = ["RedisBroker", "RedisSubscription", "default_consumer_name"]

T = TypeVar("T")

_CAPABILITIES = Capabilities(
    delayed_publish=True,
    delayed_retry=True,
    dead_letters=True,
    reclaim=True,
    extend=True,
    release=True,
    admin=True,
    liveness=True,
    max_payload_bytes=512 * 1024 * 1024,
)


def default_consumer_name() -> str:
    """Unique per subscription: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


@dataclass(frozen=True, slots=True)
class RedisSubscription(Subscription["RedisBroker"]):
    """Join consumer group ``group`` as consumer ``consumer``.

    Keep the consumer name across restarts of one worker (e.g. from its pod name) and it
    gets back, on start, what it held when it died; by default it is unique per process.
    """

    group: str
    consumer: str = field(default_factory=default_consumer_name)


class RedisBroker(AdminFacet):
    """A Redis Streams broker; see the package docstring for keys, scripts and ACLs.

    >>> broker = await RedisBroker.connect("redis://127.0.0.1:6379/0")  # doctest: +SKIP
    >>> await broker.publish("emails", b"hello")  # doctest: +SKIP

    ``RedisBroker(client)`` wraps an existing redis-py asyncio client (or fakeredis's);
    the broker then owns it: it takes raw replies for stream commands and closes it.
    """

    def __init__(self, client: Client, *, url: str | None = None) -> None:
        self._conn = Connection(client, url)

    @classmethod
    async def connect(cls, url: str) -> RedisBroker:
        """Connect by redis-py's URL grammar; connections open lazily and heal themselves."""
        return cls.from_url(url)

    @classmethod
    def from_url(cls, url: str) -> RedisBroker:
        """The same as ``connect``, without awaiting: for an app defined at module level,
        which ``pulses worker module:app`` imports. Nothing is sent until first use."""
        return cls(client_from_url(url), url=url)

    @property
    def url(self) -> str:
        return self._conn.url

    @property
    def capabilities(self) -> Capabilities:
        return _CAPABILITIES

    def __repr__(self) -> str:
        return f"RedisBroker({self._conn.url!r})"

    async def publish(
        self,
        stream: str,
        payload: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        delay_ms: int = 0,
        key: str | None = None,
        key_window_ms: int = DEFAULT_KEY_WINDOW_MS,
        codec: str | None = None,
    ) -> str:
        check_publish(stream, payload, headers, delay_ms)
        check_keys(stream, None if key is None else [key], 1)
        check_window(key_window_ms)
        check_codec(stream, codec)
        self._conn.check(f"publishing to stream {stream!r}")
        client = self._conn.client
        if key is not None:
            once = _once(stream, payload, headers, codec, (key, key_window_ms), delay_ms)

            async def publish_once() -> list[Any]:
                async with self._conn.errors("publishing", stream=stream, keys={stream: "stream"}):
                    reply: list[Any] = await run_script(client, PUBLISH_ONCE, *once)
                return reply

            return bytes((await _once_more(publish_once))[1]).decode()
        if delay_ms:
            keys = StreamKeys(stream)
            # No entry id before it is due: the ticket is its message id for life.
            ticket = f"delayed-{os.urandom(8).hex()}"
            fields = encode_fields(payload, headers, codec=codec, message_id=ticket)

            async def schedule() -> None:
                async with self._conn.errors(
                    "publishing", stream=stream, keys={keys.delayed: "zset"}
                ):
                    await run_script(client, SCHEDULE, [keys.delayed], [delay_ms, ticket, *fields])

            await _once_more(schedule)
            return ticket
        fields = encode_fields(payload, headers, codec=codec)

        async def append() -> bytes:
            async with self._conn.errors("publishing", stream=stream, keys={stream: "stream"}):
                entry_id: bytes = await command(client, "XADD", stream, "*", *fields)
            return entry_id

        return (await _once_more(append)).decode()

    async def publish_many(
        self,
        stream: str,
        payloads: Sequence[bytes],
        *,
        headers: Mapping[str, str] | None = None,
        keys: Sequence[str | None] | None = None,
        key_window_ms: int = DEFAULT_KEY_WINDOW_MS,
        codec: str | None = None,
    ) -> list[str]:
        for payload in payloads:
            check_publish(stream, payload, headers, 0)
        check_keys(stream, keys, len(payloads))
        check_window(key_window_ms)
        check_codec(stream, codec)
        self._conn.check(f"publishing to stream {stream!r}")
        commands: list[tuple[Arg, ...]] = [
            ("XADD", stream, "*", *encode_fields(p, headers, codec=codec)) for p in payloads
        ]
        if keys is not None:
            for i, key in enumerate(keys):
                if key is not None:
                    once = _once(stream, payloads[i], headers, codec, (key, key_window_ms), 0)
                    commands[i] = PUBLISH_ONCE.call(*once)

        async def append() -> list[Any]:
            async with self._conn.errors("publishing", stream=stream, keys={stream: "stream"}):
                results = await run_pipeline(self._conn.client, commands)
                for result in results:
                    if isinstance(result, Exception):
                        raise result
            return results

        # A keyed publish replies [appended, message id]; a plain one, the entry id.
        return [
            bytes(reply[1] if isinstance(reply, list) else reply).decode()
            for reply in await _once_more(append)
        ]

    def subscription(self, group: str, *, consumer: str | None = None) -> RedisSubscription:
        if consumer is None:
            return RedisSubscription(group)
        return RedisSubscription(group, consumer)

    def consumer(
        self, subscription: RedisSubscription, streams: Sequence[str], *, handler: str
    ) -> RedisConsumer:
        self._conn.check("consumer")
        if not isinstance(subscription, RedisSubscription):
            raise ConfigurationError(
                f"RedisBroker.consumer needs a RedisSubscription, got {type(subscription).__name__}"
            )
        streams = check_streams(streams, f"streams of group {subscription.group!r}")
        return RedisConsumer(
            self._conn, subscription.group, subscription.consumer, streams, handler
        )

    async def aclose(self) -> None:
        if self._conn.closed:
            return
        await self._conn.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _once(
    stream: str,
    payload: bytes,
    headers: Mapping[str, str] | None,
    codec: str | None,
    key: tuple[str, int],
    delay_ms: int,
) -> tuple[list[str], list[Arg]]:
    """The keys and arguments of the script that publishes unless ``key`` (a key, its
    window in ms) was used within its window."""
    keys = StreamKeys(stream)
    ticket = f"delayed-{os.urandom(8).hex()}"
    fields = encode_fields(payload, headers, codec=codec, message_id=ticket if delay_ms else None)
    return [stream, keys.delayed, keys.idempotency(key[0])], [key[1], delay_ms, ticket, *fields]


async def _once_more(publish: Callable[[], Awaitable[T]]) -> T:
    """Publish, and once more after a short pause when the connection broke: what a
    caller in a web request expects of one dropped connection. A reply lost after Redis
    appended means the message is there twice (at least once, never lost)."""
    try:
        return await publish()
    except ConnectionLost:
        await asyncio.sleep(random.uniform(0.05, 0.1))
        return await publish()
