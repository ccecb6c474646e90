"""One handler's consumer in a memory broker's group: fetch, settle, leases, reclaim."""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections.abc import Sequence
from typing import TYPE_CHECKING, assert_never

from pulses import (
    Ack,
    BrokerClosed,
    BrokerError,
    DeadLetter,
    DeadLetterRecord,
    Drop,
    Envelope,
    Outcome,
    Retry,
)
from pulses.broker import Reclaimed, redelivery_fields
from pulses_memory._clock import wake
from pulses_memory._store import Counters, Group, Pending, Store, Stream

if TYPE_CHECKING:
    from pulses_memory._broker import MemoryBroker

__all__ = ["FORGET_DEAD_MS", "RELEASED", "MemoryConsumer"]

FORGET_DEAD_MS = 60_000
"""A consumer whose heartbeat lapsed this long ago and that holds nothing is removed."""
RELEASED = "(released)"
"""The pseudo-consumer that holds released messages, idle since forever, for any reclaim."""
_LONG_AGO = -(2**62)

_Source = tuple[str, Stream, Group]
"""A logical stream name, a stream the group reads for it, and the group there."""


class MemoryConsumer:
    """A consumer of some streams in one group of a memory broker; see ``pulses.broker.Consumer``.

    For each stream it reads the group's retry stream first (older work), then the
    stream; over several streams it starts at the next one on every fetch, so none starves.
    """

    def __init__(
        self,
        broker: MemoryBroker,
        store: Store,
        group: str,
        name: str,
        streams: Sequence[str],
        handler: str,
    ) -> None:
        self._broker = broker
        self._store = store
        self._group = group
        self._name = name
        self._streams = tuple(streams)
        self._handler = handler
        self._sources: list[tuple[_Source, _Source]] | None = None
        self._keys = [k for s in self._streams for k in (s, f"{s}:retry:{group}")]
        # (stream key, entry id) -> source: ids repeat across a stream and its retry stream
        self._recovery: dict[tuple[str, str], _Source] = {}
        self._turn = 0
        self._woken: asyncio.Future[None] | None = None
        self._closed = False

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return (
            f"MemoryConsumer({self._name!r}, group={self._group!r}, "
            f"streams={list(self._streams)!r}, broker={self._broker.url!r})"
        )

    # -- group ------------------------------------------------------------------------

    async def ensure(self) -> None:
        self._check_open("ensure")
        store, group = self._store, self._group
        for name in self._streams:
            stream = store.stream(name)
            if group not in stream.groups:
                stream.groups[group] = Group()
                stream.counters.setdefault(group, Counters())
            store.retry_stream(name, group)
        self._resolve()

    def _resolve(self) -> list[tuple[_Source, _Source]]:
        sources = self._sources
        if sources is None:
            sources = []
            for name in self._streams:
                stream = self._store.streams.get(name)
                if stream is None or self._group not in stream.groups:
                    raise BrokerError(
                        f"consumer group {self._group!r} does not exist on stream {name!r} "
                        f"of {self._broker.url}; call ensure() first"
                    )
                retry = self._store.retry_stream(name, self._group)
                sources.append(
                    (
                        (name, retry, retry.groups[self._group]),
                        (name, stream, stream.groups[self._group]),
                    )
                )
            self._sources = sources
            # What this name holds when the consumer first meets its group was held by
            # an earlier life of it (a crashed process): fetch hands that back first.
            self._recovery = self._own_pending(sources)
        return sources

    # -- fetch ------------------------------------------------------------------------

    async def fetch(self, max_count: int, block_ms: int) -> Sequence[Envelope]:
        self._check_open("fetch")
        if max_count <= 0:
            return []
        clock = self._store.clock
        deadline: int | None = None
        while True:
            now = clock.now_ms()
            batch = self._read(max_count, now)
            if batch or block_ms <= 0:
                return batch
            if deadline is None:
                deadline = now + block_ms
            if now >= deadline:
                return batch
            woken = self._woken = asyncio.get_running_loop().create_future()
            try:
                await self._store.wait(self._keys, min(deadline, self._next_due()), woken)
            finally:
                self._woken = None
            self._check_open("fetch")

    def _read(self, max_count: int, now: int) -> list[Envelope]:
        sources = self._resolve()
        out: list[Envelope] = []
        if self._recovery:
            self._recover(max_count, now, out)
            if out:
                return out
        n = len(sources)
        start = self._turn
        self._turn = (start + 1) % n
        # First pass: a fair share per stream; second: whatever is left, to anyone.
        for rnd in range(2):
            for i in range(n):
                left = max_count - len(out)
                if left <= 0:
                    return out
                share = -(-left // (n - i)) if rnd == 0 else left
                for source in sources[(start + i) % n]:
                    share -= self._take(source, share, now, out)
        return out

    def _take(self, source: _Source, count: int, now: int, out: list[Envelope]) -> int:
        if count <= 0:
            return 0
        logical, stream, group = source
        if stream.scheduled:
            stream.promote(now)
        keys = stream.keys
        i = bisect_right(keys, group.last)
        chunk = keys[i : i + count]
        if not chunk:
            return 0
        entries, pending, name = stream.entries, group.pending, self._name
        for key in chunk:
            entry_id, fields = entries[key]
            pending[entry_id] = Pending(key, name, now, 1)
            out.append(stream.envelope(entry_id, fields, logical, 1, key))
        group.last = chunk[-1]
        group.consumers[name] = now
        return len(chunk)

    def _own_pending(
        self, sources: list[tuple[_Source, _Source]]
    ) -> dict[tuple[str, str], _Source]:
        """What this consumer's name held before this object existed: a previous life's."""
        return {
            (source[1].key, entry_id): source
            for pair in sources
            for source in pair
            for entry_id, p in source[2].pending.items()
            if p.consumer == self._name
        }

    def _recover(self, max_count: int, now: int, out: list[Envelope]) -> None:
        # What a previous life held was delivered before: each is a suspect, handed out
        # alone (the fetch returns it by itself).
        recovery = self._recovery
        while recovery and not out:
            where = next(iter(recovery))
            logical, stream, group = recovery.pop(where)
            entry_id = where[1]
            p = group.pending.get(entry_id)
            if p is None or p.consumer != self._name:
                continue  # settled or taken over since
            entry = stream.entries.get(p.key)
            if entry is None:
                continue  # deleted: left pending for reclaim to report as vanished
            p.count += 1
            p.delivered_ms = now
            out.append(stream.envelope(entry_id, entry[1], logical, p.count, p.key))

    def _next_due(self) -> int:
        due = [s.scheduled[0][0] for pair in self._resolve() for _, s, _ in pair if s.scheduled]
        return min(due, default=2**62)

    # -- settle -----------------------------------------------------------------------

    async def settle(self, items: Sequence[tuple[Envelope, Outcome]]) -> None:
        self._check_open("settle")
        store, group = self._store, self._group
        now = store.clock.now_ms()
        for envelope, outcome in items:
            stream = store.source(envelope)
            p = None if stream is None else stream.groups[group].pending.pop(envelope.id, None)
            if stream is None or p is None:
                continue  # already settled, or never ours: settling again is a no-op
            logical = store.streams[envelope.stream]
            if stream is not logical:  # a retry stream is ours: its settled entries go
                stream.delete(p.key)
            counters = logical.counters[group]
            match outcome:
                case Ack():
                    counters.acked += 1
                case Drop():
                    counters.dropped += 1
                case Retry(after_ms=after_ms):
                    fields = redelivery_fields(
                        envelope.raw, envelope.deliveries, envelope.enqueued_ms, envelope.message_id
                    )
                    store.schedule(
                        store.retry_stream(envelope.stream, group), now + after_ms, fields
                    )
                case DeadLetter(reason=reason):
                    counters.dead_lettered += 1
                    self._dead_letter(logical, envelope, reason, now)
                case _:
                    assert_never(outcome)

    def _dead_letter(self, logical: Stream, envelope: Envelope, reason: str, now: int) -> None:
        # Dead letters take ids in the stream's id space, so they list oldest first.
        dead_id = logical.next_id(now)[1]
        record = DeadLetterRecord(
            id=dead_id,
            original_id=envelope.id,
            stream=envelope.stream,
            payload=envelope.payload,
            headers=dict(envelope.headers),
            reason=reason,
            deliveries=envelope.deliveries,
            handler=self._handler,
            group=self._group,
            dead_at_ms=now,
            message_id=envelope.message_id,
        )
        logical.dead[dead_id] = (record, envelope.raw)

    # -- leases -----------------------------------------------------------------------

    def _held(self, envelopes: Sequence[Envelope]) -> list[Pending]:
        """The pending entries of these envelopes that this consumer holds, each once."""
        held: dict[int, Pending] = {}
        for envelope in envelopes:
            stream = self._store.source(envelope)
            if stream is None:
                continue
            p = stream.groups[self._group].pending.get(envelope.id)
            if p is not None and p.consumer == self._name:
                held[id(p)] = p
        return list(held.values())

    async def extend(self, envelopes: Sequence[Envelope]) -> None:
        self._check_open("extend")
        now = self._store.clock.now_ms()
        for p in self._held(envelopes):
            p.delivered_ms = now

    async def release(self, envelopes: Sequence[Envelope]) -> None:
        self._check_open("release")
        for p in self._held(envelopes):
            # Reclaim counts one delivery; un-count the one that never started.
            p.consumer = RELEASED
            p.delivered_ms = _LONG_AGO
            p.count -= 1

    async def heartbeat(self, ttl_ms: int) -> None:
        self._check_open("heartbeat")
        store = self._store
        store.alive[self._group, self._name] = store.clock.now_ms() + ttl_ms

    async def reclaim(self, min_idle_ms: int, max_count: int, *, grace_ms: int = 0) -> Reclaimed:
        self._check_open("reclaim")
        store = self._store
        now = store.clock.now_ms()
        name = self._name
        dead = self._dead(now - grace_ms)
        out: list[Envelope] = []
        vanished: list[str] = []
        for pair in self._resolve():
            for logical, stream, group in pair:
                pending = group.pending
                for entry_id, p in list(pending.items()):
                    if len(out) >= max_count:
                        break
                    if now - p.delivered_ms < min_idle_ms and p.consumer not in dead:
                        continue
                    entry = stream.entries.get(p.key)
                    if entry is None:
                        del pending[entry_id]
                        vanished.append(entry_id)
                        continue
                    if p.count >= 1 and out:
                        # A suspect (delivered before, never settled) comes alone.
                        return Reclaimed(out, vanished)
                    p.consumer = name
                    p.count += 1
                    p.delivered_ms = now
                    self._recovery.pop((stream.key, entry_id), None)  # this life's now
                    out.append(stream.envelope(entry_id, entry[1], logical, p.count, p.key))
                    group.consumers[name] = now
                    if p.count > 1:
                        return Reclaimed(out, vanished)
        self._forget(dead, now)
        return Reclaimed(out, vanished)

    def _dead(self, before_ms: int) -> set[str]:
        """Consumers of this group whose heartbeat lapsed before ``before_ms``."""
        group = self._group
        return {
            c for (g, c), until in self._store.alive.items() if g == group and until < before_ms
        }

    def _forget(self, dead: set[str], now: int) -> None:
        """Remove consumers dead for FORGET_DEAD_MS that hold nothing, so that stats
        do not list them forever."""
        alive, group_name = self._store.alive, self._group
        for consumer in dead:
            if now - alive[group_name, consumer] < FORGET_DEAD_MS:
                continue
            groups = [g for pair in self._resolve() for _, _, g in pair]
            if any(p.consumer == consumer for g in groups for p in g.pending.values()):
                continue
            for g in groups:
                g.consumers.pop(consumer, None)
            del alive[group_name, consumer]

    # -- closing ----------------------------------------------------------------------

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """Close at once; a fetch waiting now raises ``BrokerClosed``."""
        self._closed = True
        if self._woken is not None:
            wake(self._woken)

    def _check_open(self, operation: str) -> None:
        if self._closed or self._broker.closed:
            what = "consumer" if self._closed else "broker"
            raise BrokerClosed(
                f"{operation} on a closed {what}: consumer {self._name!r} of group "
                f"{self._group!r} on streams {', '.join(self._streams)} ({self._broker.url})"
            )
