"""How a Pulses message is laid out as the field/value pairs of a stream entry.

Shared by every broker that stores entries as field lists (Redis, memory), so a
message looks the same everywhere and a foreign producer's entry decodes the same way.
Decoding never raises: whatever the entry holds, the message is delivered with its raw
fields, and only what Pulses wrote is interpreted.

A plain publish is the single field ``payload``, so that ``XADD s * payload hi`` from
redis-cli is a message like any other. Bookkeeping (headers, deliveries before this
entry, first enqueue time, the message id, the payload's codec) goes in fields under the
``pulses:`` namespace, which no foreign producer writes by accident: a foreign
``deliveries`` or ``headers`` field is just a field, delivered in ``Envelope.fields`` and
never read as ours.

The message id is the id of the message's first entry, so a plain publish writes none:
only an entry that is not the first (a retry, a replay) or that has no broker id yet (a
delayed publish) carries ``pulses:id``. The codec is written only when it is not JSON,
the default for typed payloads, so a plain or JSON publish stays one field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

__all__ = [
    "DecodedFields",
    "decode_fields",
    "encode_fields",
    "field_value",
    "message_id_of",
    "redelivery_fields",
]

PAYLOAD = b"payload"
HEADERS = b"pulses:headers"
DELIVERIES = b"pulses:deliveries"
ENQUEUED = b"pulses:enqueued"
MESSAGE_ID = b"pulses:id"
CODEC = b"pulses:codec"

DecodedFields = tuple[bytes, Mapping[str, str], int, int | None]
"""payload, headers, deliveries before this entry existed, first enqueue time (ms) or None."""

_NO_HEADERS: Mapping[str, str] = {}


def encode_fields(
    payload: bytes,
    headers: Mapping[str, str] | None = None,
    prior_deliveries: int = 0,
    enqueued_ms: int | None = None,
    *,
    codec: str | None = None,
    message_id: str | None = None,
) -> list[bytes]:
    """Flat ``[field, value, ...]`` list for a new entry; optional fields only when set."""
    fields = [PAYLOAD, payload]
    if headers:
        fields += [HEADERS, json.dumps(dict(headers), separators=(",", ":")).encode()]
    if codec is not None and codec != "json":
        fields += [CODEC, codec.encode()]
    if message_id is not None:
        fields += [MESSAGE_ID, message_id.encode()]
    if prior_deliveries:
        fields += [DELIVERIES, str(prior_deliveries).encode()]
    if enqueued_ms is not None:
        fields += [ENQUEUED, str(enqueued_ms).encode()]
    return fields


def redelivery_fields(
    raw: Sequence[bytes],
    prior_deliveries: int = 0,
    enqueued_ms: int | None = None,
    message_id: str | None = None,
) -> list[bytes]:
    """The stored fields of an entry for its next life: a retry (with the deliveries so
    far and the first enqueue time) or a replay (with neither), both with the message id
    it keeps for life. Every other field, foreign ones included, is kept in order; earlier
    bookkeeping fields are replaced, not stacked.
    """
    replaced = (DELIVERIES, ENQUEUED, MESSAGE_ID) if message_id else (DELIVERIES, ENQUEUED)
    fields: list[bytes] = []
    for i in range(0, len(raw) - 1, 2):
        if raw[i] not in replaced:
            fields += raw[i : i + 2]
    if message_id:
        fields += [MESSAGE_ID, message_id.encode()]
    if prior_deliveries:
        fields += [DELIVERIES, str(prior_deliveries).encode()]
    if enqueued_ms is not None:
        fields += [ENQUEUED, str(enqueued_ms).encode()]
    return fields


def decode_fields(raw: Sequence[bytes]) -> DecodedFields:
    """Read the fields Pulses wrote out of a flat field list, ignoring anything else."""
    if len(raw) == 2 and raw[0] == PAYLOAD:  # the common case: a plain publish
        return raw[1], _NO_HEADERS, 0, None
    payload = b""
    headers = _NO_HEADERS
    prior = 0
    enqueued: int | None = None
    seen: set[bytes] = set()
    for i in range(0, len(raw) - 1, 2):
        name, value = raw[i], raw[i + 1]
        if name in seen:  # a foreign duplicate: the first one wins, the rest stay in raw
            continue
        seen.add(name)
        if name == PAYLOAD:
            payload = value
        elif name == HEADERS:
            headers = _decode_headers(value)
        elif name == DELIVERIES:
            prior = _decode_count(value)
        elif name == ENQUEUED:
            enqueued = _decode_count(value) or None
    return payload, headers, prior, enqueued


def field_value(raw: Sequence[bytes], name: bytes) -> bytes | None:
    """The first value of field ``name`` in a flat field list; None when it has none."""
    for i in range(0, len(raw) - 1, 2):
        if raw[i] == name:
            return raw[i + 1]
    return None


def message_id_of(raw: Sequence[bytes], entry_id: str) -> str:
    """The message id for life of the entry ``entry_id`` holding ``raw``: the one it
    carries (a retry's, a replay's, a delayed publish's), else its own id, its first."""
    if len(raw) > 2 and (value := field_value(raw, MESSAGE_ID)) is not None:
        return bytes(value).decode(errors="replace")
    return entry_id


def _decode_headers(value: bytes) -> Mapping[str, str]:
    try:
        decoded = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return _NO_HEADERS
    if isinstance(decoded, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in decoded.items()
    ):
        return decoded
    return _NO_HEADERS


def _decode_count(value: bytes) -> int:
    if value.isdigit() and len(value) < 19:
        return int(value)
    return 0
