"""Bookkeeping out of band, in the ``PULSES_BOOK`` stream: what the server's message
metadata cannot tell.

JetStream counts every delivery of a message (``num_delivered``) but not why the last
one ended. A *mark* says so for a message that was handed back on purpose:

- ``clean``: the delivery number that ended in our own ``nak`` (a retry or a release).
  A later delivery whose previous one is not ``clean`` follows a delivery nobody settled
  (its consumer died or hung past the ack wait): a suspect.
- ``released``: how many deliveries were releases, which count no delivery in Pulses.
- ``suspect``: a release hands a suspect back still a suspect.
- ``due``: until when a retry waits (Unix ms), for the ``delayed`` figure of the stats.

Only messages delivered more than once are looked up, so the first delivery of every
message costs nothing here. A mark is removed when its message is finally settled.
The stream keeps one message per subject, so a mark is overwritten, never stacked.

Counters (dropped, dead-lettered, replayed) are one JSON message per group, updated by
compare-and-set on the subject's last sequence.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import asdict, dataclass
from typing import Any

from pulses import BrokerError
from pulses_nats._layout import BOOK_STREAM, BOOK_SUBJECTS
from pulses_nats._wire import NO_MESSAGE_FOUND, WRONG_LAST_SEQUENCE, ApiError, Wire

__all__ = ["Book", "Counts", "Mark"]

_CAS_TRIES = 20


@dataclass(frozen=True, slots=True)
class Mark:
    clean: int
    released: int = 0
    suspect: bool = False
    due: int = 0


@dataclass(frozen=True, slots=True)
class Counts:
    dropped: int = 0
    dead_lettered: int = 0
    replayed: int = 0


class Book:
    def __init__(self, wire: Wire) -> None:
        self._wire = wire
        self._ready = False

    async def ensure(self) -> None:
        if self._ready:
            return
        config = {
            "name": BOOK_STREAM,
            "subjects": [BOOK_SUBJECTS],
            "max_msgs_per_subject": 1,
            "storage": "file",
            "description": "Pulses bookkeeping: marks of handed-back messages, group counters",
        }
        await self._wire.api(f"STREAM.CREATE.{BOOK_STREAM}", config, "create the Pulses book")
        self._ready = True

    async def marks(self, subjects: list[str], what: str) -> list[Mark | None]:
        found = await asyncio.gather(*(self._last(subject, what) for subject in subjects))
        return [None if f is None else _mark(f[1]) for f in found]

    async def put_marks(self, marks: list[tuple[str, Mark]], what: str) -> None:
        if marks:
            await self._wire.publish_acked(
                [(subject, json.dumps(asdict(mark)).encode(), None) for subject, mark in marks],
                what,
            )

    async def remove(self, subjects: list[str], what: str) -> None:
        await asyncio.gather(
            *(
                self._wire.api(f"STREAM.PURGE.{BOOK_STREAM}", {"filter": subject}, what)
                for subject in subjects
            )
        )

    async def waiting(self, subjects_filter: str, now_ms: int, what: str) -> int:
        """How many marks under the filter hold a retry that is not due yet."""
        info = await self._wire.api(
            f"STREAM.INFO.{BOOK_STREAM}", {"subjects_filter": subjects_filter}, what
        )
        subjects = list(info.get("state", {}).get("subjects") or {})
        marks = await self.marks(subjects, what)
        return sum(1 for mark in marks if mark is not None and mark.due > now_ms)

    async def counts(self, subject: str, what: str) -> Counts:
        found = await self._last(subject, what)
        return Counts() if found is None else _counts(found[1])

    async def add(self, subject: str, what: str, **deltas: int) -> None:
        """Add to counters, by compare-and-set: processes of one group race here."""
        for _ in range(_CAS_TRIES):
            found = await self._last(subject, what)
            last, current = (0, Counts()) if found is None else (found[0], _counts(found[1]))
            new = Counts(**{k: v + deltas.get(k, 0) for k, v in asdict(current).items()})
            headers = {"Nats-Expected-Last-Subject-Sequence": str(last)}
            try:
                await self._wire.publish_acked(
                    [(subject, json.dumps(asdict(new)).encode(), headers)], what
                )
            except ApiError as exc:
                if exc.code == WRONG_LAST_SEQUENCE:
                    continue
                raise
            return
        raise BrokerError(f"cannot {what}: counters kept changing under {_CAS_TRIES} tries")

    async def _last(self, subject: str, what: str) -> tuple[int, dict[str, Any]] | None:
        try:
            answer = await self._wire.api(
                f"STREAM.MSG.GET.{BOOK_STREAM}", {"last_by_subj": subject}, what
            )
        except ApiError as exc:
            if exc.code == NO_MESSAGE_FOUND:
                return None
            raise
        message = answer["message"]
        return int(message["seq"]), _json(message.get("data"))


def _json(data: object) -> dict[str, Any]:
    try:
        decoded = json.loads(base64.b64decode(str(data or "")))
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _int(fields: dict[str, Any], name: str) -> int:
    value = fields.get(name, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _mark(fields: dict[str, Any]) -> Mark:
    return Mark(
        clean=_int(fields, "clean"),
        released=_int(fields, "released"),
        suspect=fields.get("suspect") is True,
        due=_int(fields, "due"),
    )


def _counts(fields: dict[str, Any]) -> Counts:
    return Counts(*(_int(fields, name) for name in ("dropped", "dead_lettered", "replayed")))
