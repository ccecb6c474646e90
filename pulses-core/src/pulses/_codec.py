"""How a Pulses message is laid out as the field/value pairs of a stream entry.

Shared by every broker that stores entries as field lists (Redis, memory), so a
message looks the same everywhere and a foreign producer's entry decodes the same way.
Decoding never raises: whatever the entry holds, the message is delivered with its raw
fields, and only what Pulses wrote is interpreted.

A plain publish is the single field ``payload``, so that ``XADD s * payload hi`` from
redis-cli is a message like any other. Bookkeeping (headers, deliveries before this
entry, first enqueue time) goes in fields under the ``pulses:`` namespace, which no
foreign producer writes by accident: a foreign ``deliveries`` or ``headers`` field is
just a field, delivered in ``Envelope.fields`` and never read as ours.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

__all__ = ["DecodedFields", "decode_fields", "encode_fields", "redelivery_fields"]

PAYLOAD = b"payload"
HEADERS = b"pulses:headers"
DELIVERIES = b"pulses:deliveries"
ENQUEUED = b"pulses:enqueued"

DecodedFields = tuple[bytes, Mapping[str, str], int, int | None]
"""payload, headers, deliveries before this entry existed, first enqueue time (ms) or None."""

_NO_HEADERS: Mapping[str, str] = {}


def encode_fields(
    payload: bytes,
    headers: Mapping[str, str] | None = None,
    prior_deliveries: int = 0,
    enqueued_ms: int | None = None,
) -> list[bytes]:
    """Flat ``[field, value, ...]`` list for a new entry; optional fields only when set."""
    fields = [PAYLOAD, payload]
    if headers:
        fields += [HEADERS, json.dumps(dict(headers), separators=(",", ":")).encode()]
    if prior_deliveries:
        fields += [DELIVERIES, str(prior_deliveries).encode()]
    if enqueued_ms is not None:
        fields += [ENQUEUED, str(enqueued_ms).encode()]
    return fields


def redelivery_fields(
    raw: Sequence[bytes], prior_deliveries: int = 0, enqueued_ms: int | None = None
) -> list[bytes]:
    """The stored fields of an entry for its next life: a retry (with the deliveries so
    far and the first enqueue time) or a replay (with neither). Every other field, foreign
    ones included, is kept in order; earlier bookkeeping fields are replaced, not stacked.
    """
    fields: list[bytes] = []
    for i in range(0, len(raw) - 1, 2):
        if raw[i] not in (DELIVERIES, ENQUEUED):
            fields += raw[i : i + 2]
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
