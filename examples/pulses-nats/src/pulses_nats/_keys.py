"""Idempotency keys with a window per publish, on JetStream's per-stream deduplication.

JetStream drops a message whose ``Nats-Msg-Id`` it saw within the stream's duplicate
window, atomically, and answers with the first one's sequence; but that window is one
per stream. So a key's window lives in a record of its own (``PULSES_KEYS``, one message
per key, subject ``pulses.k.<stream tag>.<hash of the key>``): ``{"id": ..., "until": ms}``.

A keyed publish reads the record. Within its window, the publish is dropped and the
record's id returned. Otherwise the message goes out with ``Nats-Msg-Id`` = the key and
the record's sequence (its *generation*): publishers racing on one key read the same
record, send the same message id, and JetStream keeps one message and tells every one
of them its sequence. Then the record is written again. Records expire with the stream's
``max_age``, which is therefore the longest window a publish may ask for.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from pulses_nats._layout import Names
from pulses_nats._wire import NO_MESSAGE_FOUND, ApiError, Wire

__all__ = ["KEYS_STREAM", "LONGEST_WINDOW_MS", "Keys"]

KEYS_STREAM = "PULSES_KEYS"
LONGEST_WINDOW_MS = 7 * 24 * 3_600_000
"""How long a key's record is kept, so the longest ``key_window_ms`` a publish may use."""


class Keys:
    def __init__(self, wire: Wire) -> None:
        self._wire = wire
        self._ready = False

    async def ensure(self) -> None:
        if self._ready:
            return
        config = {
            "name": KEYS_STREAM,
            "subjects": ["pulses.k.>"],
            "max_msgs_per_subject": 1,
            "max_age": LONGEST_WINDOW_MS * 1_000_000,
            "storage": "file",
            "description": "Pulses idempotency keys: the message id each key got, and until when",
        }
        await self._wire.api(f"STREAM.CREATE.{KEYS_STREAM}", config, "create the Pulses keys")
        self._ready = True

    async def claim(
        self, names: Names, keys: Sequence[str | None], now_ms: int, what: str
    ) -> list[tuple[str | None, str | None]]:
        """Per key: the message id it already got within its window (the publish is then
        dropped), and else the ``Nats-Msg-Id`` to publish with (None without a key)."""
        await self.ensure()
        records = await asyncio.gather(
            *(self._record(names, key, what) for key in keys if key is not None)
        )
        found = iter(records)
        out: list[tuple[str | None, str | None]] = []
        for key in keys:
            if key is None:
                out.append((None, None))
                continue
            generation, record = next(found)
            until, first = record.get("until"), record.get("id")
            if isinstance(until, int) and until > now_ms and isinstance(first, str):
                out.append((first, None))
            else:
                out.append((None, f"{key}@{generation}"))
        return out

    async def remember(
        self, names: Names, given: Sequence[tuple[str, str]], until_ms: int, what: str
    ) -> None:
        """Record, per key, the message id it got and until when the key holds."""
        await self._wire.publish_acked(
            [
                (_subject(names, key), json.dumps({"id": entry, "until": until_ms}).encode(), None)
                for key, entry in given
            ],
            what,
        )

    async def _record(self, names: Names, key: str, what: str) -> tuple[int, dict[str, Any]]:
        """The record's sequence (0 when there is none) and its fields."""
        try:
            answer = await self._wire.api(
                f"STREAM.MSG.GET.{KEYS_STREAM}", {"last_by_subj": _subject(names, key)}, what
            )
        except ApiError as exc:
            if exc.code == NO_MESSAGE_FOUND:
                return 0, {}
            raise
        message = answer["message"]
        try:
            fields = json.loads(base64.b64decode(message.get("data") or ""))
        except ValueError:
            fields = {}
        return int(message["seq"]), fields if isinstance(fields, dict) else {}


def _subject(names: Names, key: str) -> str:
    return f"pulses.k.{names.tag}.{hashlib.sha256(key.encode()).hexdigest()[:32]}"
