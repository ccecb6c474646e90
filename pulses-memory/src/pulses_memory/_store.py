"""The data behind memory brokers: streams, groups, pending lists, schedules, dead letters.

Plain structures shaped like Redis Streams, so the broker's semantics can follow the
Redis broker's step by step. One store is shared by every handle of one broker name.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from pulses import DeadLetterRecord, Envelope
from pulses.broker import decode_fields
from pulses_memory._clock import Clock, wake

__all__ = ["Counters", "Group", "Pending", "Store", "Stream", "Trims", "parse_id"]

Key = tuple[int, int]
"""An entry id as (milliseconds, sequence), which orders like Redis ids."""


def parse_id(entry_id: str) -> Key | None:
    ms, sep, seq = entry_id.partition("-")
    if not sep or not ms.isdigit() or not seq.isdigit():
        return None
    return int(ms), int(seq)


class Pending:
    """One entry of a group's pending list: who holds it, since when, how often delivered."""

    __slots__ = ("consumer", "count", "delivered_ms", "key")

    def __init__(self, key: Key, consumer: str, delivered_ms: int, count: int) -> None:
        self.key = key
        self.consumer = consumer
        self.delivered_ms = delivered_ms
        self.count = count


class Group:
    """A consumer group on one stream: its read position and its pending list."""

    __slots__ = ("consumers", "last", "pending")

    def __init__(self) -> None:
        self.last: Key = (0, 0)  # created "from 0": every entry is still to be read
        self.pending: dict[str, Pending] = {}
        self.consumers: dict[str, int] = {}
        """Consumer name → when it last read or claimed, for idle times in stats."""

    def unread(self, stream: Stream) -> int:
        return len(stream.keys) - bisect_right(stream.keys, self.last)


@dataclass(slots=True)
class Trims:
    """What trimming removed from one stream: in total, and at the last trim."""

    removed: int
    last_removed: int
    last_ms: int
    """When the last trim ran, in clock ms."""
    keep: int | None
    keep_ms: int | None


@dataclass(slots=True)
class Counters:
    """Settlements of one group on one stream, kept with the settlement itself."""

    acked: int = 0
    dropped: int = 0
    dead_lettered: int = 0


class Stream:
    """Entries in id order, the groups reading them, and entries scheduled to be appended.

    A logical stream's ``scheduled`` holds delayed publishes; a group's retry stream's
    holds that group's delayed retries.
    """

    __slots__ = (
        "counters",
        "dead",
        "entries",
        "groups",
        "key",
        "keys",
        "last_id",
        "scheduled",
        "trims",
    )

    def __init__(self, key: str) -> None:
        self.key = key
        self.keys: list[Key] = []
        self.entries: dict[Key, tuple[str, Sequence[bytes]]] = {}
        self.groups: dict[str, Group] = {}
        self.scheduled: list[tuple[int, int, Sequence[bytes]]] = []
        self.last_id: Key = (0, 0)
        self.counters: dict[str, Counters] = {}
        self.dead: dict[str, tuple[DeadLetterRecord, Sequence[bytes]]] = {}
        self.trims: Trims | None = None
        """What trimming removed so far; None until the first trim."""

    def next_id(self, now: int) -> tuple[Key, str]:
        """A new id above every earlier one, even when the clock stands still or steps back."""
        ms, seq = self.last_id
        key = (now, 0) if now > ms else (ms, seq + 1)
        self.last_id = key
        return key, f"{key[0]}-{key[1]}"

    def append(self, fields: Sequence[bytes], now: int) -> str:
        key, entry_id = self.next_id(now)
        self.keys.append(key)
        self.entries[key] = (entry_id, fields)
        return entry_id

    def promote(self, now: int) -> bool:
        """Append the scheduled entries that are due; whether there were any."""
        scheduled = self.scheduled
        if not scheduled or scheduled[0][0] > now:
            return False
        while scheduled and scheduled[0][0] <= now:
            self.append(heapq.heappop(scheduled)[2], now)
        return True

    def delete(self, key: Key) -> bool:
        if self.entries.pop(key, None) is None:
            return False
        del self.keys[bisect_left(self.keys, key)]
        return True

    def trim_oldest(self, count: int) -> None:
        """Remove the ``count`` oldest entries."""
        for key in self.keys[:count]:
            del self.entries[key]
        del self.keys[:count]

    def oldest_needed(self) -> Key | None:
        """The lowest id some group still has pending or unread; None when no group has."""
        bounds: list[Key] = []
        for group in self.groups.values():
            i = bisect_right(self.keys, group.last)
            if i < len(self.keys):
                bounds.append(self.keys[i])
            bounds.extend(p.key for p in group.pending.values())
        return min(bounds, default=None)

    def envelope(
        self, entry_id: str, fields: Sequence[bytes], logical: str, count: int, key: Key
    ) -> Envelope:
        """The delivery of an entry whose group delivery count is now ``count``: one
        above 1 means an earlier delivery was never settled (a suspect)."""
        payload, headers, prior, enqueued = decode_fields(fields)
        source = None if self.key == logical else self.key
        return Envelope(
            entry_id,
            logical,
            payload,
            headers,
            prior + count,
            enqueued or key[0],
            fields,
            source,
            suspect=count > 1,
        )


class Store:
    """Every stream of one broker name, the clock they run on, and the fetches waiting."""

    __slots__ = (
        "__weakref__",
        "alive",
        "clock",
        "name",
        "retries",
        "streams",
        "tickets",
        "waiters",
    )

    def __init__(self, name: str, clock: Clock) -> None:
        self.name = name
        self.clock = clock
        self.alive: dict[tuple[str, str], int] = {}
        """(group, consumer) → until when (clock ms) its last heartbeat holds."""
        self.streams: dict[str, Stream] = {}
        self.retries: dict[str, Stream] = {}
        self.waiters: dict[str, set[asyncio.Future[None]]] = {}
        self.tickets = itertools.count(1)

    def stream(self, name: str) -> Stream:
        stream = self.streams.get(name)
        if stream is None:
            stream = self.streams[name] = Stream(name)
        return stream

    def retry_stream(self, stream: str, group: str) -> Stream:
        """The stream of one group's due retries, which only that group reads."""
        key = f"{stream}:retry:{group}"
        retry = self.retries.get(key)
        if retry is None:
            retry = self.retries[key] = Stream(key)
            retry.groups[group] = Group()
        return retry

    def source(self, envelope: Envelope) -> Stream | None:
        """Where an envelope's entry lives: its stream, or a group's retry stream."""
        if envelope.source == envelope.stream:
            return self.streams.get(envelope.stream)
        return self.retries.get(envelope.source)

    def schedule(self, stream: Stream, due_ms: int, fields: Sequence[bytes]) -> None:
        heapq.heappush(stream.scheduled, (due_ms, next(self.tickets), fields))
        self.notify(stream.key)  # a waiting fetch recomputes when to wake

    def notify(self, key: str) -> None:
        waiters = self.waiters.get(key)
        if waiters:
            # A copy: a publish from another thread iterates while the waiting loop's
            # thread removes its waiter (copying a set holds the GIL throughout).
            for woken in tuple(waiters):
                wake(woken)

    async def wait(self, keys: Sequence[str], until_ms: int, woken: asyncio.Future[None]) -> None:
        """Wait until ``until_ms`` or until something is appended to one of ``keys``."""
        waiters = self.waiters
        for key in keys:
            waiters.setdefault(key, set()).add(woken)
        try:
            await self.clock.sleep_until(until_ms, woken)
        finally:
            for key in keys:
                waiters[key].discard(woken)
