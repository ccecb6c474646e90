"""The admin facet of the Redis broker: stats, dead letters, acknowledgement-aware trim."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from redis import exceptions as rx
from redis.asyncio.cluster import RedisCluster

from pulses import ConsumerInfo, DeadLetterRecord, GroupStats, StreamStats
from pulses.broker import TrimStats, check_history, redelivery_fields
from pulses_redis._connection import Connection
from pulses_redis._dead import message_id, original_fields, parse, replay_target
from pulses_redis._keys import StreamKeys, hash_tag_base
from pulses_redis._packed import pack
from pulses_redis._scripts import (
    PURGE,
    REPLAY,
    TRIM,
    Client,
    command,
    run_pipeline,
    run_script,
)

__all__ = ["AdminFacet"]

_PAGE = 1000
_TRIM_CHUNK = 10_000
"""Entries one call of a trim may remove: Redis's own bound for ``XTRIM ... ~``."""
_RETRY_KEY = re.compile(r".*:retry:(.+)", re.DOTALL)


class AdminFacet:
    """:class:`pulses.StreamAdmin` over the connection a RedisBroker holds."""

    _conn: Connection

    async def streams(self) -> list[str]:
        """Every stream that has a consumer group or dead letters, sorted (by SCAN)."""
        self._conn.check("streams")
        client = self._conn.client
        async with self._conn.errors("listing streams"):
            keys = await _stream_keys(client)
            infos = await run_pipeline(client, [("XINFO", "GROUPS", key) for key in keys])
        existing = set(keys)
        found: set[str] = set()
        for key, info in zip(keys, infos, strict=True):
            groups = set() if isinstance(info, Exception) else {_pairs(g)[b"name"] for g in info}
            retry = _RETRY_KEY.fullmatch(key)
            if retry and retry[1].encode() in groups:
                continue  # a group's retry stream: ours, not the user's
            if groups:
                found.add(key)
            elif key.endswith(":dead"):
                base = key.removesuffix(":dead")
                untagged = base[1:-1] if base.startswith("{") and base.endswith("}") else base
                # "{emails}:dead" belongs to "emails" unless "{emails}" is a stream itself;
                # a name with a "}" never gets companions of the form "{name}".
                tagged = base in existing or "}" in untagged or hash_tag_base(untagged) != base
                found.add(base if tagged else untagged)
        return sorted(found)

    async def stats(self, stream: str) -> StreamStats:
        """Every published message of each group is in exactly one bucket."""
        self._conn.check(f"reading stats of stream {stream!r}")
        keys = StreamKeys(stream)
        async with self._conn.errors(
            "reading stats",
            stream=stream,
            keys={stream: "stream", keys.delayed: "zset", keys.dead: "stream", keys.trims: "hash"},
        ):
            length, delayed, dead, infos, trims, now = await run_pipeline(
                self._conn.client,
                [
                    ("XLEN", stream),
                    ("ZCARD", keys.delayed),
                    ("XLEN", keys.dead),
                    ("XINFO", "GROUPS", stream),
                    ("HGETALL", keys.trims),
                    ("TIME",),
                ],
            )
            for result in (length, delayed, dead, trims, now):
                if isinstance(result, Exception):
                    raise result
            groups = [] if isinstance(infos, rx.ResponseError) and _no_key(infos) else infos
            if isinstance(groups, Exception):
                raise groups
            stats = [await self._group_stats(stream, _pairs(info)) for info in groups]
        return StreamStats(stream, length, delayed, dead, stats, _trim_stats(_pairs(trims), now))

    async def _group_stats(self, stream: str, info: dict[bytes, Any]) -> GroupStats:
        group = info[b"name"].decode()
        keys = StreamKeys(stream, group)
        counts, delayed, retry_infos, *rest = await run_pipeline(
            self._conn.client,
            [
                ("HGETALL", keys.counts),
                ("ZCARD", keys.retry_delayed),
                ("XINFO", "GROUPS", keys.retry),
                ("XPENDING", stream, group),
                ("XPENDING", keys.retry, group),
                ("XINFO", "CONSUMERS", stream, group),
                ("XINFO", "CONSUMERS", keys.retry, group),
                ("HGETALL", keys.heartbeats),
                ("TIME",),
            ],
        )
        *rest, beats, now = rest
        for result in (counts, delayed):
            if isinstance(result, Exception):
                raise result
        counters = {k.decode(): int(v) for k, v in _pairs(counts).items()}
        lag = await self._lag(stream, info)
        # A group that Pulses did not create (XGROUP CREATE by hand) has no retry stream.
        retry_groups = [g for found in _ok([retry_infos]) for g in found]
        retry_info = next((_pairs(g) for g in retry_groups if g[1] == info[b"name"]), None)
        if retry_info is not None:
            lag += await self._lag(keys.retry, retry_info)
        summaries = _ok(rest[:2])
        pending = sum(s[0] for s in summaries)
        oldest_ids = [s[1].decode() for s in summaries if s[0]]
        oldest = None
        if oldest_ids:
            first_ms = min(int(i.split("-")[0]) for i in oldest_ids)
            oldest = max(0, int(time.time() * 1000) - first_ms)
        consumers: dict[str, ConsumerInfo] = {}
        alive: dict[str, bool] = {}
        if not isinstance(beats, Exception) and not isinstance(now, Exception):
            now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
            alive = {k.decode(errors="replace"): int(v) >= now_ms for k, v in _pairs(beats).items()}
        for entries in _ok(rest[2:]):
            for entry in entries:
                c = _pairs(entry)
                name = c[b"name"].decode(errors="replace")
                seen = consumers.get(name)
                pending_c, idle = int(c[b"pending"]), int(c[b"idle"])
                if seen is not None:
                    pending_c += seen.pending
                    idle = min(idle, seen.idle_ms)
                consumers[name] = ConsumerInfo(name, pending_c, idle, alive.get(name))
        return GroupStats(
            group=group,
            acked=counters.get("acked", 0),
            dropped=counters.get("dropped", 0),
            dead_lettered=counters.get("dead_lettered", 0),
            pending=pending,
            lag=lag,
            delayed=delayed,
            oldest_pending_ms=oldest,
            consumers=tuple(consumers.values()),
        )

    async def _lag(self, key: str, info: dict[bytes, Any]) -> int:
        lag = info.get(b"lag")
        if isinstance(lag, int):
            return lag
        # Redis cannot tell the lag after deletions in the middle of the stream (or is
        # older than 7.0): count what lies after the group's last delivered id.
        count, start = 0, b"(" + info[b"last-delivered-id"]
        while True:
            page = await command(self._conn.client, "XRANGE", key, start, "+", "COUNT", _PAGE)
            count += len(page)
            if len(page) < _PAGE:
                return count
            start = b"(" + page[-1][0]

    async def dead_letters(self, stream: str, *, limit: int = 100) -> list[DeadLetterRecord]:
        """Oldest first."""
        self._conn.check(f"listing dead letters of stream {stream!r}")
        keys = StreamKeys(stream)
        async with self._conn.errors(
            "listing dead letters", stream=stream, keys={keys.dead: "stream"}
        ):
            entries = await command(
                self._conn.client, "XRANGE", keys.dead, "-", "+", "COUNT", limit
            )
        return [parse(stream, entry_id, fields) for entry_id, fields in entries]

    async def replay(self, stream: str, ids: Sequence[str] | None = None) -> list[str]:
        """Hand dead letters again, with deliveries reset, to the group that dead-lettered
        each, and remove them.

        A record goes to its group's retry stream, like a retry: the stream itself would
        hand it to every fan-out group once more. One without a group goes to the stream.
        """
        self._conn.check(f"replaying dead letters of stream {stream!r}")
        keys = StreamKeys(stream)
        client = self._conn.client
        new_ids: list[str] = []
        async with self._conn.errors(
            "replaying dead letters", stream=stream, keys={keys.dead: "stream", stream: "stream"}
        ):
            for entries in await self._dead_entries(keys.dead, ids):
                commands = [
                    REPLAY.call(
                        [keys.dead, replay_target(stream, fields)],
                        [
                            entry_id,
                            *pack(
                                redelivery_fields(
                                    original_fields(fields), 0, None, message_id(fields)
                                )
                            ),
                        ],
                    )
                    for entry_id, fields in entries
                ]
                for result in await run_pipeline(client, commands):
                    if isinstance(result, Exception):
                        raise result
                    if result:  # None: replayed already by someone else
                        new_ids.append(result.decode())
        return new_ids

    async def _dead_entries(self, dead: str, ids: Sequence[str] | None) -> list[list[Any]]:
        client = self._conn.client
        if ids is not None:
            found = await run_pipeline(client, [("XRANGE", dead, i, i) for i in ids])
            for result in found:
                if isinstance(result, Exception):
                    raise result
            return [[entry for entries in found for entry in entries]]
        pages, start = [], b"-"
        while True:
            page = await command(client, "XRANGE", dead, start, "+", "COUNT", _PAGE)
            pages.append(page)
            if len(page) < _PAGE:
                return pages
            start = b"(" + page[-1][0]

    async def purge(self, stream: str, ids: Sequence[str] | None = None) -> int:
        self._conn.check(f"purging dead letters of stream {stream!r}")
        keys = StreamKeys(stream)
        async with self._conn.errors(
            "purging dead letters", stream=stream, keys={keys.dead: "stream"}
        ):
            if ids is None:
                removed: int = await run_script(self._conn.client, PURGE, [keys.dead])
            elif ids:
                removed = await command(self._conn.client, "XDEL", keys.dead, *ids)
            else:
                removed = 0
        return removed

    async def trim(
        self,
        stream: str,
        *,
        dry_run: bool = False,
        keep: int | None = None,
        keep_ms: int | None = None,
    ) -> int:
        """Remove the oldest entries every group has acknowledged, but the newest ``keep``
        or those younger than ``keep_ms``; never a blind MAXLEN.

        Whole listpack nodes go first, ``_TRIM_CHUNK`` entries per call, so the server
        never stalls on a long trim and each call recomputes what the groups still
        need; one exact call then removes the rest. A group's retry stream needs no
        trim: its entries are deleted as they settle.
        """
        self._conn.check(f"trimming stream {stream!r}")
        check_history(keep, keep_ms)
        keys = StreamKeys(stream)
        history = ["" if keep is None else keep, "" if keep_ms is None else keep_ms]
        client = self._conn.client
        async with self._conn.errors(
            "trimming", stream=stream, keys={stream: "stream", keys.trims: "hash"}
        ):
            if dry_run:
                would: int = await run_script(
                    client, TRIM, [stream, keys.trims], [1, *history, 0, 0, 0]
                )
                return would
            removed = 0
            while True:
                chunk: int = await run_script(
                    client, TRIM, [stream, keys.trims], [0, *history, _TRIM_CHUNK, removed, 0]
                )
                if not chunk:
                    break
                removed += chunk
            rest: int = await run_script(
                client, TRIM, [stream, keys.trims], [0, *history, 0, removed, 1]
            )
        return removed + rest


async def _stream_keys(client: Client) -> list[str]:
    """Every key that holds a stream, by SCAN; on a cluster, SCAN of every master."""
    # The masters are known once the client has asked the cluster (lazily, at first use).
    scanners = (
        (await client.initialize()).get_primaries()
        if isinstance(client, RedisCluster)
        else [client]
    )
    keys: list[str] = []
    for scanner in scanners:
        cursor: Any = 0
        while True:
            cursor, batch = await scanner.execute_command(
                "SCAN", cursor, "COUNT", _PAGE, "TYPE", "stream"
            )
            keys += [key.decode(errors="replace") for key in batch]
            if int(cursor) == 0:
                break
    return keys


def _trim_stats(record: dict[bytes, bytes], now: Sequence[bytes]) -> TrimStats | None:
    """The trim record of a stream (see ``StreamKeys.trims``), its age by Redis time."""
    if b"last_ms" not in record:
        return None
    now_ms = int(now[0]) * 1000 + int(now[1]) // 1000

    def number(field: bytes) -> int | None:
        value = record.get(field, b"")
        return int(value) if value else None

    return TrimStats(
        removed=number(b"removed") or 0,
        last_removed=number(b"last_removed") or 0,
        last_ago_ms=max(0, now_ms - int(record[b"last_ms"])),
        keep=number(b"keep"),
        keep_ms=number(b"keep_ms"),
    )


def _pairs(flat: Sequence[Any]) -> dict[bytes, Any]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _no_key(exc: BaseException) -> bool:
    return "no such key" in str(exc)


def _ok(results: Sequence[Any]) -> list[Any]:
    """Results of commands on keys that may not exist (a group's retry stream)."""
    ok = []
    for result in results:
        if isinstance(result, rx.ResponseError) and (_no_key(result) or "NOGROUP" in str(result)):
            continue
        if isinstance(result, Exception):
            raise result
        ok.append(result)
    return ok
