"""MemoryBroker: the Redis broker's semantics in one process, for tests and server-free runs."""

from __future__ import annotations

import itertools
import os
import re
import socket
import uuid
import weakref
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import ClassVar, Self

from pulses import (
    BrokerClosed,
    ConfigurationError,
    ConsumerInfo,
    DeadLetterRecord,
    GroupStats,
    InvalidURL,
    StreamStats,
    redact_url,
)
from pulses.broker import (
    DEFAULT_KEY_WINDOW_MS,
    Capabilities,
    Subscription,
    TrimStats,
    check_codec,
    check_history,
    check_keys,
    check_publish,
    check_streams,
    check_window,
    encode_fields,
    redelivery_fields,
)
from pulses_memory._clock import Clock, SystemClock
from pulses_memory._consumer import RELEASED, MemoryConsumer
from pulses_memory._store import Store, Stream, Trims

__all__ = ["MemoryBroker", "MemorySubscription", "parse_memory_url"]

_NAME = re.compile(r"[A-Za-z0-9_.-]*")
_URL = re.compile(r"memory://(?P<name>[^/?#]*)/?", re.IGNORECASE)


_Keys = dict[tuple[str, str], tuple[int, str]]
"""(stream, idempotency key) → (until when, in clock ms, it holds; the message id it got)."""
# Per store, so every handle on one store's data sees the same keys; kept here, beside
# the publishing that uses them, and gone with the store.
_KEYS: weakref.WeakKeyDictionary[Store, _Keys] = weakref.WeakKeyDictionary()


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class MemorySubscription(Subscription["MemoryBroker"]):
    """Which group of a memory broker to join, and under which consumer name."""

    group: str
    consumer: str = field(default_factory=_default_consumer)
    """Unique per process and subscription unless given; a restart that reuses a name
    gets back what that consumer held."""


def parse_memory_url(url: str) -> str:
    """The store name in ``memory://`` (the process's default store) or ``memory://name``."""
    match = _URL.fullmatch(str(url))
    if match is None or not _NAME.fullmatch(match["name"]):
        raise InvalidURL(
            f"invalid memory broker URL {redact_url(str(url))!r}: expected 'memory://' or "
            "'memory://name' (a name of letters, digits, '.', '_' and '-'; "
            "no user, port, path or query)"
        )
    return match["name"]


class MemoryBroker:
    """A broker whose streams live in this process.

    ``MemoryBroker()`` has data of its own; ``MemoryBroker("jobs")`` (or
    ``connect("memory://jobs")``) shares the data of every broker named ``jobs`` in the
    process, so a producer and a worker can meet there; named data lives as long as the
    process. Each broker is a handle that closes on its own. Pass ``clock=ManualClock()``
    to move time by hand instead of waiting.

    One thread at a time: handles may be used from several event loops in turn.
    """

    _named: ClassVar[dict[str, Store]] = {}
    _unnamed: ClassVar[weakref.WeakValueDictionary[str, Store]] = weakref.WeakValueDictionary()
    _private_ids: ClassVar[itertools.count[int]] = itertools.count(1)

    def __init__(self, name: str | None = None, *, clock: Clock | None = None) -> None:
        if name is None:
            store = Store(f"private-{next(self._private_ids)}", clock or SystemClock())
            self._unnamed[store.name] = store
        else:
            parse_memory_url(f"memory://{name}")
            store = self._lookup(name) or self._named.setdefault(
                name, Store(name, clock or SystemClock())
            )
            if clock is not None and clock is not store.clock:
                raise ConfigurationError(
                    f"memory broker {name!r} already runs on {store.clock!r}; "
                    "every handle of one name shares one clock"
                )
        self._store = store
        self._closed = False
        self._consumers: weakref.WeakSet[MemoryConsumer] = weakref.WeakSet()

    @classmethod
    def _lookup(cls, name: str) -> Store | None:
        return cls._named.get(name) or cls._unnamed.get(name)

    @classmethod
    async def connect(cls, url: str) -> MemoryBroker:
        """A handle on the store the URL names: ``memory://`` or ``memory://name``."""
        return cls(parse_memory_url(url))

    def share(self) -> MemoryBroker:
        """Another handle on this broker's data and clock, closed independently."""
        other = type(self).__new__(type(self))
        other._store = self._store
        other._closed = False
        other._consumers = weakref.WeakSet()
        return other

    @property
    def url(self) -> str:
        return f"memory://{self._store.name}"

    @property
    def clock(self) -> Clock:
        return self._store.clock

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def capabilities(self) -> Capabilities:
        return _CAPABILITIES

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return f"MemoryBroker({self.url!r}{state})"

    # -- publishing -------------------------------------------------------------------

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
        self._check_open(f"publish to stream {stream!r}")
        store = self._store
        now = store.clock.now_ms()
        if key is not None and (first := self._first(stream, key, now)) is not None:
            return first
        target = store.stream(stream)
        if delay_ms:
            # No entry id before it is due: the ticket is its message id for life.
            ticket = f"delayed-{uuid.uuid4().hex}"
            fields = encode_fields(payload, headers, codec=codec, message_id=ticket)
            store.schedule(target, now + delay_ms, fields)
            message_id = ticket
        else:
            message_id = target.append(encode_fields(payload, headers, codec=codec), now)
            store.notify(stream)
        if key is not None:
            self._remember(stream, key, now + key_window_ms, message_id)
        return message_id

    def _first(self, stream: str, key: str, now: int) -> str | None:
        """The message id of the publish that used ``key`` within its window, if any."""
        held = _KEYS.get(self._store, {}).get((stream, key))
        if held is None or held[0] <= now:
            return None
        return held[1]

    def _remember(self, stream: str, key: str, until: int, message_id: str) -> None:
        keys = _KEYS.setdefault(self._store, {})
        if len(keys) >= 1024 and len(keys) & (len(keys) - 1) == 0:
            # At each power of two: forget expired keys in time amortised per publish.
            now = self._store.clock.now_ms()
            for expired in [k for k, (held, _) in keys.items() if held <= now]:
                del keys[expired]
        keys[(stream, key)] = (until, message_id)

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
        self._check_open(f"publish to stream {stream!r}")
        store = self._store
        now = store.clock.now_ms()
        target = store.stream(stream)
        if keys is None:
            ids = [
                target.append(encode_fields(payload, headers, codec=codec), now)
                for payload in payloads
            ]
        else:
            ids = []
            for payload, key in zip(payloads, keys, strict=True):
                first = None if key is None else self._first(stream, key, now)
                if first is None:
                    first = target.append(encode_fields(payload, headers, codec=codec), now)
                    if key is not None:
                        self._remember(stream, key, now + key_window_ms, first)
                ids.append(first)
        store.notify(stream)
        return ids

    # -- consuming --------------------------------------------------------------------

    def subscription(self, group: str, *, consumer: str | None = None) -> MemorySubscription:
        if consumer is None:
            return MemorySubscription(group)
        return MemorySubscription(group, consumer)

    def consumer(
        self, subscription: MemorySubscription, streams: Sequence[str], *, handler: str
    ) -> MemoryConsumer:
        if not isinstance(subscription, MemorySubscription):
            raise ConfigurationError(
                f"{self.url} needs a MemorySubscription, got {type(subscription).__name__}"
            )
        streams = check_streams(streams, f"streams of group {subscription.group!r}")
        self._check_open(f"consume streams {', '.join(streams)} in group {subscription.group!r}")
        consumer = MemoryConsumer(
            self, self._store, subscription.group, subscription.consumer, streams, handler
        )
        self._consumers.add(consumer)
        return consumer

    # -- administration ---------------------------------------------------------------

    async def streams(self) -> list[str]:
        self._check_open("list streams")
        return sorted(name for name, s in self._store.streams.items() if s.groups or s.dead)

    async def stats(self, stream: str) -> StreamStats:
        self._check_open(f"stats of stream {stream!r}")
        store = self._store
        now = store.clock.now_ms()
        target = store.streams.get(stream)
        if target is None:
            return StreamStats(stream, 0, 0, 0, ())
        target.promote(now)
        groups = []
        for name, group in target.groups.items():
            retry = store.retry_stream(stream, name)
            retry.promote(now)
            retry_group = retry.groups[name]
            pending = [*group.pending.values(), *retry_group.pending.values()]
            seen = {**retry_group.consumers, **group.consumers}
            held = dict.fromkeys(seen, 0)
            for p in pending:
                held[p.consumer] = held.get(p.consumer, 0) + 1
            beats = {c: until >= now for (g, c), until in store.alive.items() if g == name}
            consumers = [
                ConsumerInfo(c, n, now - seen.get(c, now), beats.get(c))
                for c, n in held.items()
                if c != RELEASED
            ]
            counters = target.counters[name]
            oldest = min((p.key[0] for p in pending), default=None)
            groups.append(
                GroupStats(
                    group=name,
                    acked=counters.acked,
                    dropped=counters.dropped,
                    dead_lettered=counters.dead_lettered,
                    pending=len(pending),
                    lag=group.unread(target) + retry_group.unread(retry),
                    delayed=len(retry.scheduled),
                    oldest_pending_ms=None if oldest is None else max(0, now - oldest),
                    consumers=tuple(consumers),
                )
            )
        trims = target.trims
        trimmed = (
            None
            if trims is None
            else TrimStats(
                trims.removed,
                trims.last_removed,
                max(0, now - trims.last_ms),
                trims.keep,
                trims.keep_ms,
            )
        )
        return StreamStats(
            stream,
            len(target.keys),
            len(target.scheduled),
            len(target.dead),
            tuple(groups),
            trimmed,
        )

    async def dead_letters(self, stream: str, *, limit: int = 100) -> list[DeadLetterRecord]:
        self._check_open(f"list dead letters of stream {stream!r}")
        target = self._store.streams.get(stream)
        if target is None:
            return []
        return [record for record, _ in list(target.dead.values())[:limit]]

    async def replay(self, stream: str, ids: Sequence[str] | None = None) -> list[str]:
        """Hand dead letters again, with deliveries reset, to the group that dead-lettered
        each (through its retry stream), and remove them."""
        self._check_open(f"replay dead letters of stream {stream!r}")
        target = self._store.streams.get(stream)
        if target is None:
            return []
        store = self._store
        now = store.clock.now_ms()
        new_ids = []
        for dead_id in list(target.dead) if ids is None else ids:
            dead = target.dead.pop(dead_id, None)
            if dead is None:  # replayed or purged already: nothing to do
                continue
            record, raw = dead
            # Only the group that dead-lettered it gets it again, like a retry: the
            # stream itself would hand it to every fan-out group once more.
            into = store.retry_stream(stream, record.group) if record.group else target
            fields = redelivery_fields(raw, message_id=record.message_id or record.original_id)
            new_ids.append(into.append(fields, now))
            store.notify(into.key)
        return new_ids

    async def purge(self, stream: str, ids: Sequence[str] | None = None) -> int:
        self._check_open(f"purge dead letters of stream {stream!r}")
        target = self._store.streams.get(stream)
        if target is None:
            return 0
        if ids is None:
            count = len(target.dead)
            target.dead.clear()
            return count
        return sum(target.dead.pop(dead_id, None) is not None for dead_id in ids)

    async def trim(
        self,
        stream: str,
        *,
        dry_run: bool = False,
        keep: int | None = None,
        keep_ms: int | None = None,
    ) -> int:
        """Remove the oldest entries every group has acknowledged, but the newest ``keep``
        or those younger than ``keep_ms``; a trim that is no dry run is recorded."""
        self._check_open(f"trim stream {stream!r}")
        check_history(keep, keep_ms)
        target = self._store.streams.get(stream)
        # Without a group, nothing is known to be acknowledged: jobs published before
        # the first worker must survive.
        if target is None or not target.groups:
            return 0
        # A group's retry stream needs no trim: its entries are deleted as they settle.
        now = self._store.clock.now_ms()
        count = _trimmable(target, now, keep, keep_ms)
        if dry_run:
            return count
        target.trim_oldest(count)
        total = count + (target.trims.removed if target.trims else 0)
        target.trims = Trims(total, count, now, keep, keep_ms)
        return count

    # -- closing ----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close this handle and its consumers; the data stays for other handles."""
        self._closed = True
        for consumer in list(self._consumers):
            consumer.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _check_open(self, operation: str) -> None:
        if self._closed:
            raise BrokerClosed(f"cannot {operation}: the broker {self.url} is closed")


def _trimmable(stream: Stream, now: int, keep: int | None, keep_ms: int | None) -> int:
    """How many of the oldest entries may go: all below what any group still needs,
    but the newest ``keep`` or those younger than ``keep_ms``."""
    bound = stream.oldest_needed()
    if bound is None:
        bound = (stream.last_id[0], stream.last_id[1] + 1)
    if keep_ms is not None:
        bound = min(bound, (now - keep_ms, 0))
    count = bisect_left(stream.keys, bound)
    if keep is not None:
        count = min(count, max(0, len(stream.keys) - keep))
    return count


_CAPABILITIES = Capabilities(
    delayed_publish=True,
    delayed_retry=True,
    dead_letters=True,
    reclaim=True,
    extend=True,
    release=True,
    admin=True,
    process_local=True,
    liveness=True,
)
