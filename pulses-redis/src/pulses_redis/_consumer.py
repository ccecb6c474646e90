"""One handler's consumer of its streams in a consumer group.

The life of a message on Redis:

- ``publish`` appends it to the stream with ``XADD`` (a delayed one waits in the
  ``{stream}:delayed`` sorted set until the mover appends it).
- ``fetch`` reads new entries with ``XREADGROUP ... >`` over the handler's streams and
  their group's retry streams, fairly and never more than asked in total (a Lua script
  for small batches, one plain XREADGROUP per key for big ones). On a Redis Cluster a
  script or a read may touch one slot only: the keys are read per slot (a stream and
  its retry stream share one), and a blocking read waits on every slot at once. The same round trip
  runs the mover of due delayed entries, at most every ``_MOVE_EVERY`` while messages
  flow. The entries are now in the group's pending list under this consumer's name.
- While the handler runs, ``extend`` renews their idle time (``XCLAIM ... JUSTID`` of
  what this consumer still owns), and ``heartbeat`` says the consumer is alive.
- ``settle`` applies every outcome of a batch in one pipeline: one multi-id ``XACK``
  per key for acks and drops, a script each for a retry (copy into the retry stream or
  the delayed set, then ack) and a dead letter (copy into ``{stream}:dead``, then ack).
- If this consumer dies, another one's ``reclaim`` takes its entries over once its
  heartbeat lapses (or, alive but stuck, once they are idle past ``claim_idle_ms``),
  with exact delivery counts; one delivered before comes alone (a suspect).
- If it restarts under the same name, its first fetches hand back what it held, a
  suspect at a time; after a failed fetch, what that fetch may have taken.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from redis import exceptions as rx

from pulses import Ack, DeadLetter, Drop, Envelope, Outcome, Retry, SettleError
from pulses.broker import Reclaimed, decode_fields, redelivery_fields
from pulses_redis._connection import BLOCK_MARGIN, Connection
from pulses_redis._dead import record_fields
from pulses_redis._errors import is_nogroup
from pulses_redis._keys import RELEASED_CONSUMER, StreamKeys
from pulses_redis._packed import pack, unpack
from pulses_redis._scripts import (
    ACK,
    BEAT,
    CLAIM_OWN,
    DEAD_LETTER,
    DELETE_CONSUMER,
    FORGET,
    MOVE_DUE,
    READ,
    RECLAIM,
    RECOVER,
    RETRY,
    Arg,
    command,
    run_pipeline,
    run_script,
)

__all__ = ["RedisConsumer"]

logger = logging.getLogger("pulses.redis")

_MOVE_EVERY = 0.1
"""Seconds between two runs of the delayed-entry mover piggy-backed on fetch."""
_MOVE_LIMIT = 1000
_RELEASED_IDLE_MS = 10**12
"""Only released entries are this idle: release sets their delivery time to 1970."""
_NEVER = 10**15
"""A grace (ms) that no lapsed heartbeat exceeds."""
_ENTRY_ID = re.compile(r"\d{1,20}-\d{1,20}")
_CHUNK = 1000
"""Ids per script call: Lua's unpack() has a stack limit of a few thousand values."""
_SHARED_READ_MIN = 64
"""From this many slots on, a fetch reads each key for its share with plain XREADGROUPs."""
FORGET_DEAD_MS = 60_000
"""A consumer whose heartbeat lapsed this long ago and that holds nothing is removed."""
_FORGET_EVERY = 10.0
"""Seconds between two looks for such consumers, piggy-backed on reclaim."""


class _Read:
    """One key the consumer reads: a stream, or its group's retry stream."""

    __slots__ = ("cursor", "full", "key", "keys", "retry", "stream")

    def __init__(self, keys: StreamKeys, retry: bool) -> None:
        self.keys = keys
        self.stream = keys.stream
        self.key = keys.retry if retry else keys.stream
        self.retry = retry
        self.cursor: str | None = "-"
        """Where restart recovery of own pending entries goes on; None when done."""
        self.full = True
        """Whether its last read filled its share: then it probably has more."""


class RedisConsumer:
    """A consumer of ``streams`` in one group; see :class:`pulses.broker.Consumer` for the contract.

    Fetch order: entries left over from an earlier fetch (only when a blocking read
    returned more than asked), then this consumer's own pending entries from a previous
    life (once), then new entries of the streams and of the group's retry streams.
    """

    def __init__(
        self, conn: Connection, group: str, name: str, streams: Sequence[str], handler: str
    ) -> None:
        self._conn = conn
        self._group = group
        self._name = name
        self._handler = handler
        self._streams = tuple(streams)
        self._keys = [StreamKeys(stream, group) for stream in streams]
        # Streams first, then retry streams: with few slots, the streams come first.
        self._reads = [_Read(k, False) for k in self._keys] + [_Read(k, True) for k in self._keys]
        self._by_key = {r.key.encode(): r for r in self._reads}
        self._by_name = {r.key: r for r in self._reads}
        self._key_types = {r.key: "stream" for r in self._reads}
        # Ids this consumer has handed out and not yet seen settled or released, per key:
        # its reclaim and recovery must not take those back from itself.
        self._held: dict[str, set[str]] = {r.key: set() for r in self._reads}
        self._stash: deque[Envelope] = deque()
        self._recovering = True
        self._restarted = True
        """Until the first recovery is through, what this name holds is a previous
        life's: each recovered entry counts one more delivery (a suspect)."""
        self._next_forget = 0.0
        self._rotation = 0
        self._next_move = 0.0
        self._wake_at = math.inf
        self._closed = False
        self._blocking: dict[int, asyncio.Task[Any]] = {}
        """A blocking read per cluster slot, kept across fetches until it returns: the
        entries a read took are pending under this consumer, so it is never cancelled
        while the consumer lives."""
        timeout = conn.socket_timeout
        # A blocking read must end before the socket timeout, or it reads as a stall.
        self._max_block_ms = (
            2**31 if timeout is None else max(100, int((timeout - BLOCK_MARGIN) * 1000))
        )

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return (
            f"RedisConsumer(group={self._group!r}, name={self._name!r}, "
            f"streams={self._streams!r}, broker={self._conn.url!r})"
        )

    def _check(self, what: str) -> None:
        self._conn.check(what)
        if self._closed:
            from pulses import BrokerClosed

            raise BrokerClosed(
                f"{what}: the consumer {self._name!r} of group {self._group!r} "
                f"on {', '.join(map(repr, self._streams))} is closed"
            )

    def _scope(self, action: str) -> Any:
        return self._conn.errors(
            action, stream=self._streams, group=self._group, keys=self._key_types
        )

    # -- groups ---------------------------------------------------------------------

    async def ensure(self) -> None:
        self._check("ensure")
        async with self._scope("creating the consumer group"):
            await self._create_groups()

    async def _create_groups(self) -> None:
        commands = [("XGROUP", "CREATE", r.key, self._group, "0", "MKSTREAM") for r in self._reads]
        for result in await run_pipeline(self._conn.client, commands):
            if isinstance(result, Exception) and "BUSYGROUP" not in str(result):
                raise result

    async def _healing(self, action: str, call: Any, *args: Any) -> Any:
        """Run ``call``; when the group vanished, create it again from the start and retry."""
        async with self._scope(action):
            try:
                return await call(*args)
            except rx.ResponseError as exc:
                if not is_nogroup(exc):
                    raise
                logger.warning(
                    "consumer group %r vanished from %s; creating it again from "
                    "the start of the stream",
                    self._group,
                    ", ".join(self._streams),
                )
            await self._create_groups()
            return await call(*args)

    # -- fetch ----------------------------------------------------------------------

    async def fetch(self, max_count: int, block_ms: int) -> Sequence[Envelope]:
        self._check("fetch")
        if max_count <= 0:
            return []
        try:
            if self._blocking:
                async with self._scope("fetching"):
                    self._stash.extend(self._collect())
            if self._stash:
                return [self._stash.popleft() for _ in range(min(max_count, len(self._stash)))]
            result: list[Envelope] = await self._healing(
                "fetching", self._fetch, max_count, block_ms
            )
        except Exception:
            # The reply may have been lost after the server took entries for us: they
            # sit in our pending list, where no neighbour takes them while we are alive.
            # Read that list again before anything new.
            self._recover_again()
            raise
        return result

    def _recover_again(self) -> None:
        self._recovering = True
        for read in self._reads:
            read.cursor = "-"

    async def _fetch(self, max_count: int, block_ms: int) -> list[Envelope]:
        if self._recovering:
            recovered = await self._recover(max_count)
            if recovered or self._recovering:
                return recovered
        now = time.monotonic()
        # The mover of due delayed entries rides along with a read at most every
        # _MOVE_EVERY while messages flow, and before every read that finds nothing.
        move_due = now >= self._next_move or now >= self._wake_at
        if move_due and (released := await self._released(max_count)):
            return released
        reads = self._rotated()
        envelopes = await self._read(reads, max_count, move_due)
        if not envelopes and not move_due:
            envelopes = await self._released(max_count) or await self._read(reads, max_count, True)
        if envelopes or block_ms <= 0:
            return envelopes
        block = min(block_ms, self._max_block_ms)
        if self._wake_at < math.inf:
            block = min(block, int((self._wake_at - time.monotonic()) * 1000))
        if block <= 0:
            return []
        count = max(1, max_count // len(reads))
        slots = _by_slot(reads, self._conn.slot)
        if len(slots) == 1 and not self._blocking:
            reply = await self._block_read(reads, count, block)
            envelopes = self._envelopes(reply) if reply else []
        else:
            for slot, part in slots.items():
                if slot not in self._blocking:
                    self._blocking[slot] = asyncio.create_task(self._block_read(part, count, block))
            await asyncio.wait(
                list(self._blocking.values()),
                timeout=block / 1000,
                return_when=asyncio.FIRST_COMPLETED,
            )
            envelopes = self._collect()
        if len(envelopes) > max_count:
            # COUNT is per stream: with fewer slots than streams, several streams filling
            # at once return more than asked. Keep the rest for the next fetch (they are
            # extended and released like the handed-out ones meanwhile).
            self._stash.extend(envelopes[max_count:])
            del envelopes[max_count:]
        return envelopes

    async def _block_read(self, reads: Sequence[_Read], count: int, block: int) -> Any:
        return await command(
            self._conn.client,
            "XREADGROUP", "GROUP", self._group, self._name, "COUNT", count, "BLOCK", block,
            "STREAMS", *[r.key for r in reads], *[">"] * len(reads),
        )  # fmt: skip

    def _collect(self) -> list[Envelope]:
        """What the finished blocking reads took; the first error after keeping the rest
        (and after marking the pending list for a look: a failed read may have taken
        entries)."""
        envelopes: list[Envelope] = []
        error: BaseException | None = None
        for slot, task in list(self._blocking.items()):
            if not task.done():
                continue
            del self._blocking[slot]
            if task.cancelled():
                continue
            if (exc := task.exception()) is not None:
                error = error or exc
            elif reply := task.result():
                envelopes += self._envelopes(reply)
        if error is not None:
            self._stash.extend(envelopes)
            self._recover_again()
            raise error
        return envelopes

    async def _released(self, max_count: int) -> list[Envelope]:
        """What a stopping consumer released, taken along with the mover's runs: the
        promise is "at once", and the next reclaim may be half a claim_idle away."""
        # Only released entries are this idle; dead consumers are the reclaimer's.
        reclaimed = await self._reclaim(_RELEASED_IDLE_MS, max_count, _NEVER, self._reads)
        return list(reclaimed.envelopes)

    async def _read(self, reads: list[_Read], max_count: int, move: bool) -> list[Envelope]:
        """One round trip: the mover when asked, then a non-blocking fair read."""
        commands: list[tuple[Arg, ...]] = []
        now = time.monotonic()
        if move:
            self._next_move = now + _MOVE_EVERY
            commands = [
                MOVE_DUE.call([k.delayed, k.stream, k.retry_delayed, k.retry], [_MOVE_LIMIT])
                for k in self._keys
            ]
        moves = len(commands)
        # A big batch: one plain XREADGROUP per key for its share, pipelined (the script
        # costs the server twice as much per entry). A small one: the script, which fills
        # every slot it can, whatever the keys hold. Always the script on a cluster:
        # redis-py asks the server (COMMAND GETKEYS, a round trip) where the keys of
        # every XREADGROUP are, and it knows those of a script from its arguments.
        shared = not self._conn.cluster and max_count >= max(_SHARED_READ_MIN, 2 * len(reads))
        shares = _shares(reads, max_count) if shared else {}
        group, name = self._group, self._name
        if shares:
            commands += [
                ("XREADGROUP", "GROUP", group, name, "COUNT", share, "STREAMS", read.key, ">")
                for read, share in shares.items()
            ]
        else:
            # Per slot on a cluster (one call on one server): a fair part of max_count
            # each, the slot that comes first in this fetch's rotation first.
            parts = list(_by_slot(reads, self._conn.slot).values())
            each, extra = divmod(max_count, len(parts))
            for i, part in enumerate(parts):
                if count := each + int(i < extra):
                    commands.append(READ.call([r.key for r in part], [group, name, count]))
        results = await run_pipeline(self._conn.client, commands)
        reply: list[Any] = []
        for result in results[moves:]:
            if result and not isinstance(result, Exception):
                reply += result
        for read in shares:
            read.full = False
        for key, entries in reply:
            read = self._by_key[key]
            if read in shares:
                read.full = len(entries) >= shares[read]
        envelopes = self._envelopes(reply)
        errors = [result for result in results if isinstance(result, Exception)]
        if errors:
            # What the reads took is pending under this consumer now: the next fetch
            # hands it out, or a failing mover would strand every batch in the PEL.
            self._stash.extend(envelopes)
            raise errors[0]
        if moves:
            self._note_due(now, results[:moves])
        return envelopes

    def _note_due(self, now: float, waits_ms: Sequence[int]) -> None:
        """Remember when the next delayed entry is due (the mover says, -1 for none)."""
        waits = [wait for wait in waits_ms if wait >= 0]
        self._wake_at = now + min(waits) / 1000 if waits else math.inf

    def _rotated(self) -> list[_Read]:
        reads = self._reads
        self._rotation = (self._rotation + 1) % len(reads)
        return reads[self._rotation :] + reads[: self._rotation]

    def _envelopes(
        self, reply: Sequence[Any], counts: Sequence[int] | None = None
    ) -> list[Envelope]:
        """Envelopes of an XREADGROUP-shaped reply; ``counts`` are the group's delivery
        counts when not 1 (then the reply holds one key)."""
        out: list[Envelope] = []
        by_key, held = self._by_key, self._held
        for key, entries in reply:
            read = by_key[key]
            stream, source = read.stream, read.key
            ids = held[source]
            for i, (entry_id, raw) in enumerate(entries):
                if raw is None:  # deleted while pending; only a PEL read returns these
                    continue
                raw = unpack(raw)
                payload, headers, prior, enqueued = decode_fields(raw)
                eid = entry_id.decode()
                ids.add(eid)
                # A group delivery count above 1: an earlier delivery never settled.
                count = counts[i] if counts else 1
                out.append(
                    Envelope(
                        eid,
                        stream,
                        payload,
                        headers,
                        prior + count,
                        enqueued,
                        raw,
                        source,
                        suspect=count > 1,
                    )
                )
        return out

    async def _recover(self, max_count: int) -> list[Envelope]:
        """Own pending entries this consumer does not hold: a previous life's after a
        restart (a suspect at a time), or a failed fetch's."""
        client, out = self._conn.client, list[Envelope]()
        increment = int(self._restarted)
        for read in self._reads:
            while read.cursor is not None and len(out) < max_count:
                want = max_count - len(out)
                entries, counts, vanished, done, last, stopped = await run_script(
                    client,
                    RECOVER,
                    [read.key],
                    [
                        self._group,
                        self._name,
                        read.cursor,
                        want,
                        increment,
                        int(not out),
                        *self._held[read.key],
                    ],
                )
                out += self._envelopes([(read.key.encode(), entries)], counts)
                if vanished:
                    logger.warning(
                        "consumer %r of group %r: %d own pending messages of %r had "
                        "been deleted or trimmed; cleaned up",
                        self._name,
                        self._group,
                        len(vanished),
                        read.stream,
                    )
                if done:
                    read.cursor = None
                elif last:
                    read.cursor = "(" + last.decode()
                if stopped:  # at a suspect, which comes alone: this fetch is complete
                    return out
        self._recovering = any(r.cursor is not None for r in self._reads)
        if not self._recovering:
            self._restarted = False
        return out

    # -- settle -------------------------------------------------------------------

    async def settle(self, items: Sequence[tuple[Envelope, Outcome]]) -> None:
        self._check("settle")
        if not items:
            return
        commands: list[tuple[Arg, ...]] = []
        owners: list[list[tuple[Envelope, Outcome]]] = []
        plain: dict[tuple[str, str], list[tuple[Envelope, Outcome]]] = {}
        group = self._group
        # An item that cannot be an entry of ours fails alone, not its whole XACK.
        rejected: list[tuple[Envelope, Outcome]] = []
        held, by_name = self._held, self._by_name
        for item in items:
            env, outcome = item
            source, entry_id = env.source, env.id
            ids = held.get(source)
            # An id we handed out is an entry id; only others need the pattern.
            if ids is None or (entry_id not in ids and not _ENTRY_ID.fullmatch(entry_id)):
                rejected.append(item)
                continue
            kind = type(outcome)
            if kind is Ack or kind is Drop:  # the hot path: one XACK per key and counter
                key = (source, "acked" if kind is Ack else "dropped")
                bucket = plain.get(key)
                if bucket is None:
                    plain[key] = bucket = []
                bucket.append(item)
                continue
            read = by_name[source]
            match outcome:
                case Retry(after_ms=after_ms):
                    commands.append(
                        RETRY.call(
                            [env.source, read.keys.retry, read.keys.retry_delayed],
                            [
                                group,
                                env.id,
                                int(read.retry),
                                after_ms,
                                os.urandom(8).hex(),
                                *_retry_fields(env),
                            ],
                        )
                    )
                    owners.append([item])
                    if after_ms:
                        self._wake_at = min(self._wake_at, time.monotonic() + after_ms / 1000)
                case DeadLetter(reason=reason):
                    commands.append(
                        DEAD_LETTER.call(
                            [env.source, read.keys.dead, read.keys.counts],
                            [
                                group,
                                env.id,
                                int(read.retry),
                                *record_fields(env, reason, self._handler, group),
                            ],
                        )
                    )
                    owners.append([item])
        for (source, counter), settled in plain.items():
            read = self._by_name[source]
            for start in range(0, len(settled), _CHUNK):
                chunk = settled[start : start + _CHUNK]
                commands.append(
                    ACK.call(
                        [source, read.keys.counts],
                        [group, counter, int(read.retry), *[env.id for env, _ in chunk]],
                    )
                )
                owners.append(chunk)
        async with self._scope("settling"):
            results = await run_pipeline(self._conn.client, commands)
        failed = rejected.copy()
        errors = [
            f"message {env.id!r} of {env.stream!r} is not an entry this consumer fetched"
            for env, _ in rejected[:1]
        ]
        for owned, result in zip(owners, results, strict=True):
            if isinstance(result, Exception):
                failed += owned
                errors.append(self._conn.errors.scrub(str(result)))
            else:
                for env, _ in owned:
                    held[env.source].discard(env.id)
        if failed:
            raise SettleError(
                f"settling {len(failed)} of {len(items)} messages of group {group!r} on "
                f"{', '.join(map(repr, self._streams))} failed: {errors[0]}",
                failed,
            )

    # -- leases -------------------------------------------------------------------

    async def extend(self, envelopes: Sequence[Envelope]) -> None:
        self._check("extend")
        if self._blocking:
            # A read that returned while no fetch came (the handlers are busy) holds
            # entries that are pending under this consumer: renew them with the stash.
            async with self._scope("extending leases"):
                self._stash.extend(self._collect())
        by_source: dict[str, list[str]] = {}
        for env in [*envelopes, *self._stash]:
            by_source.setdefault(env.source, []).append(env.id)
        # JUSTID: renews the idle time without counting a delivery; of the entries this
        # consumer still owns only (a neighbour may have reclaimed some meanwhile).
        commands = [
            CLAIM_OWN.call(
                [source], [self._group, self._name, self._name, "", *ids[start : start + _CHUNK]]
            )
            for source, ids in by_source.items()
            for start in range(0, len(ids), _CHUNK)
        ]
        async with self._scope("extending leases"):
            for result in await run_pipeline(self._conn.client, commands):
                if isinstance(result, Exception) and not is_nogroup(result):
                    raise result

    async def release(self, envelopes: Sequence[Envelope]) -> None:
        self._check("release")
        await self._release([*envelopes, *self._stash])
        self._stash.clear()

    async def _release(self, envelopes: Sequence[Envelope]) -> None:
        # Released entries go to a pseudo-consumer, idle since 1970 and with their count
        # lowered by one: any consumer's next reclaim takes them at once, and its +1 for
        # the new delivery restores the count the released envelope had.
        batches: dict[tuple[str, int], list[str]] = {}
        for env in envelopes:
            count = env.deliveries - decode_fields(env.raw)[2]
            batches.setdefault((env.source, max(0, count - 1)), []).append(env.id)
        commands = [
            CLAIM_OWN.call(
                [source],
                [self._group, self._name, RELEASED_CONSUMER, count, *ids[start : start + _CHUNK]],
            )
            for (source, count), ids in batches.items()
            for start in range(0, len(ids), _CHUNK)
        ]
        async with self._scope("releasing messages"):
            for result in await run_pipeline(self._conn.client, commands):
                if isinstance(result, Exception) and not is_nogroup(result):
                    raise result
        for env in envelopes:
            self._held[env.source].discard(env.id)

    async def heartbeat(self, ttl_ms: int) -> None:
        self._check("heartbeat")
        commands = [BEAT.call([keys.heartbeats], [self._name, ttl_ms]) for keys in self._keys]
        async with self._scope("sending a heartbeat"):
            for result in await run_pipeline(self._conn.client, commands):
                if isinstance(result, Exception):
                    raise result

    async def reclaim(self, min_idle_ms: int, max_count: int, *, grace_ms: int = 0) -> Reclaimed:
        self._check("reclaim")
        result: Reclaimed = await self._healing(
            "reclaiming", self._reclaim, min_idle_ms, max_count, grace_ms
        )
        if time.monotonic() >= self._next_forget:
            self._next_forget = time.monotonic() + _FORGET_EVERY
            commands = [
                FORGET.call([k.stream, k.retry, k.heartbeats], [self._group, FORGET_DEAD_MS])
                for k in self._keys
            ]
            async with self._scope("removing dead consumers"):
                await run_pipeline(self._conn.client, commands)
        return result

    async def _reclaim(
        self, min_idle_ms: int, max_count: int, grace_ms: int, reads: list[_Read] | None = None
    ) -> Reclaimed:
        got: list[Envelope] = []
        vanished: list[str] = []
        for read in reads or self._rotated():
            if len(got) >= max_count or (got and got[-1].suspect):
                break
            claimed, counts, gone = await run_script(
                self._conn.client,
                RECLAIM,
                [read.key, read.keys.heartbeats],
                [
                    self._group,
                    self._name,
                    min_idle_ms,
                    max_count - len(got),
                    grace_ms,
                    int(not got),  # a suspect comes alone
                ],
            )
            got += self._envelopes([(read.key.encode(), claimed)], counts)
            vanished += [entry_id.decode() for entry_id in gone]
        return Reclaimed(got, vanished)

    # -- close --------------------------------------------------------------------

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._conn.closed:
            return
        try:
            blocking = list(self._blocking.values())
            for task in blocking:
                task.cancel()
            await asyncio.gather(*blocking, return_exceptions=True)
            try:
                self._stash.extend(self._collect())
            finally:
                self._blocking.clear()
            if self._stash:
                await self._release(list(self._stash))
                self._stash.clear()
            commands = [
                DELETE_CONSUMER.call([k.stream, k.retry, k.heartbeats], [self._group, self._name])
                for k in self._keys
            ]
            async with self._scope("closing the consumer"):
                await run_pipeline(self._conn.client, commands)
        except Exception as exc:  # closing is best effort; what we own stays pending
            logger.debug("closing consumer %r of group %r: %r", self._name, self._group, exc)


def _by_slot(reads: Sequence[_Read], slot: Callable[[str], int]) -> dict[int, list[_Read]]:
    """The reads grouped by cluster slot, in order of first appearance (one group on one
    server, where every key is in slot 0)."""
    groups: dict[int, list[_Read]] = {}
    for read in reads:
        groups.setdefault(slot(read.key), []).append(read)
    return groups


def _shares(reads: Sequence[_Read], max_count: int) -> dict[_Read, int]:
    """How many entries to ask of each key, ``max_count`` (at least one per key) in all.

    Keys whose last read filled its share split the slots evenly; the others (a drained
    stream, an empty retry stream) get one each, which is enough to see them wake up:
    a key that fills its one slot gets an even share on the next read.
    """
    full = [read for read in reads if read.full] or list(reads)
    each, extra = divmod(max_count - (len(reads) - len(full)), len(full))
    shares = dict.fromkeys(reads, 1)
    for i, read in enumerate(full):
        shares[read] = each + int(i < extra)
    return shares


def _retry_fields(env: Envelope) -> list[bytes]:
    """The raw fields again, with this delivery's count and the first enqueue time."""
    return pack(redelivery_fields(env.raw, env.deliveries, env.enqueued_ms, env.message_id))
