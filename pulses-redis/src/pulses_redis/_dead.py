"""The layout of a dead-letter record in a ``{stream}:dead`` stream, written by the
consumer and read by the admin facet: six name/value pairs saying what happened, then
the original entry's raw fields as they were (packed when many)."""

from __future__ import annotations

from collections.abc import Sequence

from pulses import DeadLetterRecord, Envelope
from pulses.broker import decode_fields, message_id_of
from pulses_redis._keys import StreamKeys
from pulses_redis._packed import pack, unpack
from pulses_redis._scripts import Arg

__all__ = ["message_id", "original_fields", "parse", "record_fields", "replay_target"]

_META_FIELDS = 12
"""The leading fields: original_id, stream, reason, deliveries, handler, group."""


def record_fields(env: Envelope, reason: str, handler: str, group: str) -> list[Arg]:
    """The fields of the record that dead-letters ``env``."""
    return [
        b"original_id",
        env.id,
        b"stream",
        env.stream,
        b"reason",
        reason,
        b"deliveries",
        env.deliveries,
        b"handler",
        handler,
        b"group",
        group,
        *pack(env.raw),
    ]


def _meta(fields: Sequence[bytes]) -> dict[bytes, bytes]:
    head = fields[:_META_FIELDS]
    return dict(zip(head[::2], head[1::2], strict=True))


def original_fields(fields: Sequence[bytes]) -> Sequence[bytes]:
    """The dead-lettered entry's own fields, unpacked."""
    return unpack(fields[_META_FIELDS:])


def message_id(fields: Sequence[bytes]) -> str:
    """The dead-lettered message's id for life: what its entry says (a retry's, a replay's,
    a delayed publish's), or else the id of the entry, which was its first."""
    original_id = bytes(_meta(fields).get(b"original_id", b"")).decode(errors="replace")
    return message_id_of(original_fields(fields), original_id)


def replay_target(stream: str, fields: Sequence[bytes]) -> str:
    """The key a record is replayed into: its group's retry stream (the stream itself
    would hand it to every fan-out group once more), or the stream when it names none."""
    group = bytes(_meta(fields).get(b"group", b"")).decode(errors="replace")
    return StreamKeys(stream, group).retry if group else stream


def parse(stream: str, entry_id: bytes, fields: Sequence[bytes]) -> DeadLetterRecord:
    """The record stored at ``entry_id``."""
    meta = _meta(fields)
    payload, headers, _, _ = decode_fields(original_fields(fields))
    eid = entry_id.decode()

    def text(name: bytes) -> str:
        return bytes(meta.get(name, b"")).decode(errors="replace")

    deliveries = meta.get(b"deliveries", b"0")
    return DeadLetterRecord(
        id=eid,
        original_id=text(b"original_id"),
        stream=stream,
        payload=payload,
        headers=headers,
        reason=text(b"reason"),
        deliveries=int(deliveries) if deliveries.isdigit() else 0,
        handler=text(b"handler"),
        group=text(b"group"),
        dead_at_ms=int(eid.split("-")[0]),
        message_id=message_id(fields),
    )
