"""The message as a handler sees it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Generic, cast

from typing_extensions import TypeVar

from pulses._codec import CODEC, field_value, message_id_of

__all__ = ["Envelope"]

T = TypeVar("T", default=bytes)


class Envelope(Generic[T]):
    """One delivery of one message: read-only, created by the broker.

    ``message_id`` is the message's identity for life (kept over retries, reclaims and
    replays); ``id`` is the broker's id of this one entry. ``body`` is the payload decoded
    to the handler's declared type (``Handler[B, T]``); for a ``bytes`` handler, the payload.

    ``deliveries`` is 1 on the first delivery and counts every redelivery, retry and
    reclaim. ``fields`` are the entry's field/value pairs as stored, so an entry
    written by a foreign producer is still delivered whole.

    ``source`` is where the entry lives in the broker (the stream itself, or a
    broker-private key such as a group's retry stream); brokers settle by it.

    ``suspect`` marks a delivery whose previous delivery was never settled: its handler
    may have killed its process. The runtime runs a suspect alone, so a message that
    kills its process raises only its own delivery count.

    A broker whose ids are ``<unix ms>-<seq>`` passes ``enqueued_ms=None`` for an entry
    that does not say when it was first published: the time is then read from the id
    when asked for, not for every message of a batch.
    """

    # Read-only properties over private slots: one of these is built per message on the
    # hot path, and slot assignment is three times cheaper than a frozen dataclass.
    __slots__ = (
        "_body",
        "_deliveries",
        "_enqueued_ms",
        "_fields",
        "_headers",
        "_id",
        "_payload",
        "_source",
        "_stream",
        "_suspect",
    )
    _body: T

    def __init__(
        self,
        id: str,
        stream: str,
        payload: bytes,
        headers: Mapping[str, str],
        deliveries: int,
        enqueued_ms: int | None,
        raw: Sequence[bytes] = (),
        source: str | None = None,
        suspect: bool = False,
    ) -> None:
        self._id = id
        self._stream = stream
        self._payload = payload
        self._headers = headers
        self._deliveries = deliveries
        self._enqueued_ms = enqueued_ms
        self._fields = raw
        self._source = stream if source is None else source
        self._suspect = suspect

    @property
    def id(self) -> str:
        """The broker's id of this entry, e.g. ``"1732960000000-0"`` on Redis."""
        return self._id

    @property
    def stream(self) -> str:
        """The stream the message was published to."""
        return self._stream

    @property
    def payload(self) -> bytes:
        return self._payload

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers

    @property
    def body(self) -> T:
        """The payload decoded to the handler's declared type, once, before ``handle``."""
        try:
            return self._body
        except AttributeError:  # never decoded: a bytes handler, whose body is the payload
            return cast(T, self._payload)

    @property
    def message_id(self) -> str:
        """The message's id for life: the broker id of its first entry (for a delayed
        publish, its ticket), the same over every retry, reclaim and replay."""
        return message_id_of(self._fields, self._id)

    @property
    def codec(self) -> str:
        """How the payload is encoded, as recorded in the message: ``"json"`` unless
        the producer's stream said otherwise (``"msgpack"``)."""
        raw = self._fields
        if len(raw) > 2 and (value := field_value(raw, CODEC)) is not None:
            return value.decode(errors="replace")
        return "json"

    @property
    def deliveries(self) -> int:
        """1 on the first delivery; every redelivery, retry and reclaim adds one."""
        return self._deliveries

    @property
    def enqueued_ms(self) -> int:
        """When the message was first published, in Unix milliseconds."""
        if self._enqueued_ms is None:
            self._enqueued_ms = int(self._id.partition("-")[0])
        return self._enqueued_ms

    @property
    def enqueued_at(self) -> datetime:
        return datetime.fromtimestamp(self.enqueued_ms / 1000, tz=UTC)

    @property
    def fields(self) -> list[tuple[bytes, bytes]]:
        """The raw field/value pairs of the stored entry, in order, duplicates and all."""
        raw = self._fields
        return list(zip(raw[::2], raw[1::2], strict=True))

    @property
    def raw(self) -> Sequence[bytes]:
        """The stored entry as a flat ``[field, value, field, value, ...]`` sequence."""
        return self._fields

    @property
    def source(self) -> str:
        return self._source

    @property
    def suspect(self) -> bool:
        """An earlier delivery of this message was never settled (recovered after a
        restart, or taken over from a dead or hung consumer)."""
        return self._suspect

    def __repr__(self) -> str:
        return (
            f"Envelope(id={self._id!r}, message_id={self.message_id!r}, stream={self._stream!r}, "
            f"payload=<{len(self._payload)} bytes>, headers={dict(self._headers)!r}, "
            f"deliveries={self._deliveries}{', suspect' if self._suspect else ''})"
        )
