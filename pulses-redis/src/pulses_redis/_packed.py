"""Entries with too many fields for one Lua call, stored as one packed field.

Lua's ``unpack()`` takes at most about 8,000 values, and a script that fails halfway
keeps what it already wrote (Redis rolls nothing back). Scripts copy entries (retries,
dead letters, replays, the mover of delayed entries), so an entry with more than
:data:`PACK_ABOVE` field names and values is written there as the single field
:data:`PACKED`, whose value holds every field as ``<length>:<bytes>`` (the layout of a
delayed entry's sorted-set member). Whatever reads such an entry unpacks it first.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["PACKED", "PACK_ABOVE", "pack", "unpack"]

PACKED = b"pulses:packed"
PACK_ABOVE = 4000
"""Most field names and values a script passes to one command; half Lua's stack limit."""


def pack(fields: Sequence[bytes]) -> list[bytes]:
    """The fields as they are, or packed into one when there are too many for a script."""
    if len(fields) <= PACK_ABOVE:
        return list(fields)
    return [PACKED, b"".join(b"%d:%b" % (len(field), field) for field in fields)]


def unpack(raw: Sequence[bytes]) -> Sequence[bytes]:
    """The fields of a packed entry; any other entry (a malformed one too) as it is."""
    if len(raw) != 2 or raw[0] != PACKED:
        return raw
    blob = raw[1]
    fields: list[bytes] = []
    pos = 0
    while pos < len(blob):
        colon = blob.find(b":", pos)
        length = blob[pos:colon]
        if colon < 0 or not length.isdigit():
            return raw
        end = colon + 1 + int(length)
        if end > len(blob):
            return raw
        fields.append(blob[colon + 1 : end])
        pos = end
    return fields
