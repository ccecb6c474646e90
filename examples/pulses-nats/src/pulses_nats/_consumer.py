"""One handler's consumer in a group: durable pull consumers, one per stream (and one
per stream's replay queue), read through one private inbox."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, assert_never

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from pulses import (
    Ack,
    BrokerClosed,
    BrokerError,
    DeadLetter,
    Drop,
    Envelope,
    Outcome,
    Retry,
    SettleError,
    Unsupported,
)
from pulses.broker import Reclaimed, encode_fields
from pulses_nats._book import Book, Mark
from pulses_nats._layout import (
    CODEC_HEADER,
    DEAD_HEADER,
    HEADERS_HEADER,
    ID_HEADER,
    MAIN,
    REPLAY,
    AckSubject,
    Names,
    entry_id,
    parse_ack_subject,
    parse_entry_id,
)
from pulses_nats._wire import REPLY_TIMEOUT, Wire, mapped

if TYPE_CHECKING:
    from pulses_nats._broker import NatsBroker

__all__ = ["NatsConsumer", "decode_headers", "raw_fields", "str_map"]

logger = logging.getLogger("pulses_nats")

SETTLED_MEMORY = 10_000
"""Deliveries remembered as settled, so settling one again is a no-op that counts
nothing twice (the server acknowledges a repeated ack as if it were the first)."""
_MIN_WAIT_S = 0.005
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


@dataclass(eq=False, slots=True)
class _Source:
    """One durable pull consumer that a Pulses consumer reads."""

    names: Names
    kind: str
    inbox: str
    buffer: deque[Msg] = field(default_factory=deque)
    """Delivered to us and not handed out yet."""
    open: int = 0
    """How many messages the pull request in flight may still bring (one at a time)."""
    open_until: float = 0.0
    """When that request ends at the latest (its expiry plus the reply timeout)."""

    @property
    def js_stream(self) -> str:
        return self.names.js_stream(self.kind)


@dataclass(frozen=True, slots=True)
class _Delivery:
    """What a message's reply subject says: where it lives and how often it came."""

    source: _Source
    sequence: int
    delivered: int


class NatsConsumer:
    """A consumer of some streams in one group of a NATS broker; see ``pulses.broker.Consumer``.

    The server holds the leases: a fetched message that is neither settled nor extended
    within the ack wait is delivered again, to any consumer of the group, and arrives
    through ``fetch`` as a suspect. So there is nothing to ``reclaim`` and no heartbeat.
    """

    def __init__(
        self,
        broker: NatsBroker,
        wire: Wire,
        book: Book,
        group: str,
        group_tag: str,
        name: str,
        streams: Sequence[str],
        handler: str,
        ack_wait_ms: int,
    ) -> None:
        self._broker = broker
        self._wire = wire
        self._book = book
        self._group = group
        self._group_tag = group_tag
        self._name = name
        self._streams = tuple(streams)
        self._handler = handler
        self._ack_wait_ms = ack_wait_ms
        prefix = wire.nc.new_inbox()
        self._prefix = prefix
        self._pairs = [
            tuple(
                _Source(Names.of(stream), kind, f"{prefix}.{i}.{kind}") for kind in (REPLAY, MAIN)
            )
            for i, stream in enumerate(self._streams)
        ]
        self._by_inbox = {s.inbox: s for pair in self._pairs for s in pair}
        self._by_js = {s.js_stream: s for pair in self._pairs for s in pair}
        self._sub: Subscription | None = None
        self._changed = asyncio.Event()
        self._settled: OrderedDict[str, None] = OrderedDict()
        self._turn = 0
        self._ensured = False
        self._refused = False
        self._closed = False

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return (
            f"NatsConsumer({self._name!r}, group={self._group!r}, "
            f"streams={list(self._streams)!r}, broker={self._broker.url!r})"
        )

    def _what(self, operation: str) -> str:
        return f"{operation} in group {self._group!r} of streams {', '.join(self._streams)}"

    def _check_open(self, operation: str) -> None:
        if self._closed:
            raise BrokerClosed(f"cannot {self._what(operation)}: the consumer is closed")
        self._broker.check_open(self._what(operation))

    # -- group ------------------------------------------------------------------------

    async def ensure(self) -> None:
        self._check_open("create the group")
        what = self._what("create the group")
        for stream in self._streams:
            await self._broker.ensure_streams(Names.of(stream))
        for pair in self._pairs:
            for source in pair:
                await self._create_durable(source, what)
        if self._sub is None:
            with mapped(what):
                self._sub = await self._wire.nc.subscribe(f"{self._prefix}.*.*", cb=self._arrived)
        self._ensured = True

    async def _create_durable(self, source: _Source, what: str) -> None:
        names, durable = source.names, self._group_tag
        config = {
            "durable_name": durable,
            "description": self._group,
            "deliver_policy": "all",
            "ack_policy": "explicit",
            "ack_wait": self._ack_wait_ms * 1_000_000,
            "max_deliver": -1,
            "max_ack_pending": -1,
            "replay_policy": "instant",
            "filter_subject": (
                names.subject if source.kind == MAIN else names.replay_subject(durable)
            ),
        }
        await self._wire.api(
            f"CONSUMER.DURABLE.CREATE.{source.js_stream}.{durable}",
            {"stream_name": source.js_stream, "config": config},
            what,
        )

    # -- fetch ------------------------------------------------------------------------

    async def _arrived(self, msg: Msg) -> None:
        reply = msg.reply
        ack = parse_ack_subject(reply) if reply else None
        if ack is not None:
            source = self._by_js.get(ack.stream)
            if source is None or ack.consumer != self._group_tag:
                return
            source.buffer.append(msg)
            if source.open:
                source.open -= 1
        else:
            source = self._by_inbox.get(msg.subject)
            status = (msg.headers or _NO_HEADERS).get("Status")
            if source is None or status == "100":  # an idle heartbeat: nothing ended
                return
            source.open = 0  # 404 no messages, 408 expired, 409 refused: the pull is over
            if status == "409":
                self._refused = True
                logger.debug("%s: the server refused a pull: %s", self._what("fetch"), msg.headers)
        self._changed.set()

    async def fetch(self, max_count: int, block_ms: int) -> Sequence[Envelope]:
        self._check_open("fetch")
        if not self._ensured:
            raise BrokerError(f"cannot {self._what('fetch')}: call ensure() first")
        if self._refused:
            # The server refused a pull (409: its consumer deleted, say): make sure the
            # group is there again, like a Redis NOGROUP.
            self._refused = False
            await self.ensure()
        if max_count <= 0:
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block_ms / 1000
        # Every fetch starts at the next stream, so that none starves.
        turn = self._turn
        self._turn = (turn + 1) % len(self._pairs)
        got = self._take(max_count, turn)
        if len(got) < max_count:
            await self._pull_now(max_count - len(got), turn)
            got += self._take(max_count - len(got), turn)
        while not got:
            left = deadline - loop.time()
            if left < _MIN_WAIT_S:
                break
            self._changed.clear()  # before pulling: what arrives from now on wakes us
            # One message per source wakes us: whatever else comes is kept for the next
            # fetch, which is at most one message per source besides max_count.
            for source in self._sources():
                if not source.open:
                    await self._pull(source, 1, left)
            await self._wait(left)
            got = self._take(max_count, turn)
        try:
            return await self._envelopes(got)
        except BaseException:
            # Ours all the same: the next fetch hands them out, with unchanged counts.
            for msg in reversed(got):
                ack = parse_ack_subject(msg.reply)
                if ack is not None:
                    self._by_js[ack.stream].buffer.appendleft(msg)
            raise

    def _sources(self) -> list[_Source]:
        return [s for pair in self._pairs for s in pair]

    async def _pull(self, source: _Source, batch: int, expires_s: float | None) -> None:
        request: dict[str, object] = {"batch": batch}
        if expires_s is None:
            request["no_wait"] = True
            expires_s = 0.0
        else:
            request["expires"] = int(expires_s * 1e9)
        source.open = batch
        source.open_until = time.monotonic() + expires_s + REPLY_TIMEOUT
        durable = self._group_tag
        with mapped(self._what("fetch")):
            await self._wire.nc.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{source.js_stream}.{durable}",
                json.dumps(request).encode(),
                reply=source.inbox,
            )

    async def _pull_now(self, count: int, start: int) -> None:
        """Ask every idle source for what it has now, a fair share each (from stream
        ``start`` on), and wait until all have answered."""
        pairs = self._pairs
        asked: list[_Source] = []
        left = count
        for i in range(len(pairs)):
            share = -(-left // (len(pairs) - i))
            left -= share
            for source in pairs[(start + i) % len(pairs)]:
                if not source.open and share > 0:
                    await self._pull(source, share, None)
                    asked.append(source)
        while True:
            self._changed.clear()
            now = time.monotonic()
            if not any(s.open for s in asked):
                return
            late = [s for s in asked if s.open and s.open_until <= now]
            if late:
                # The stream or its consumer is gone (a pull to nothing gets no answer):
                # create them again for the next fetch, like a Redis NOGROUP.
                for source in late:
                    source.open = 0
                await self.ensure()
                raise BrokerError(
                    f"cannot {self._what('fetch')}: no answer from "
                    f"{', '.join(s.js_stream for s in late)}; created the group again"
                )
            await self._wait(min(s.open_until for s in asked if s.open) - now)

    async def _wait(self, seconds: float) -> None:
        """Until a message or a pull's end arrives (since the caller cleared the event)."""
        try:
            await asyncio.wait_for(self._changed.wait(), max(seconds, _MIN_WAIT_S))
        except TimeoutError:
            now = time.monotonic()
            for source in self._sources():
                if source.open and source.open_until <= now:
                    source.open = 0  # its end was lost (a reconnect): ask again next time

    def _take(self, count: int, start: int) -> list[Msg]:
        """Up to ``count`` buffered messages, one stream at a time in turn from stream
        ``start`` on; a stream's replays before its own messages."""
        pairs = self._pairs
        out: list[Msg] = []
        while len(out) < count:
            before = len(out)
            for i in range(len(pairs)):
                for source in pairs[(start + i) % len(pairs)]:
                    if source.buffer and len(out) < count:
                        out.append(source.buffer.popleft())
                        break
            if len(out) == before:
                break
        return out

    async def _envelopes(self, msgs: list[Msg]) -> list[Envelope]:
        envelopes = await self._convert(msgs, "fetch")
        suspects = [e for e in envelopes if e.suspect]
        if not suspects:
            return envelopes
        # A suspect comes alone: its batch-mates go back to the group, so that if it
        # kills this process they do not die with it.
        first = suspects[0]
        await self._hand_back([e for e in envelopes if e is not first], "hand back")
        return [first]

    async def _convert(self, msgs: list[Msg], operation: str) -> list[Envelope]:
        """Envelopes of delivered messages; the marks of those delivered before say how
        many deliveries count and whether the previous one was abandoned."""
        acks = [(m, parse_ack_subject(m.reply)) for m in msgs]
        again = [(m, a) for m, a in acks if a is not None and a.delivered > 1]
        marks: dict[str, Mark | None] = {}
        if again:  # first deliveries, the most of them, need no look-up
            found = await self._book.marks(
                [self._mark_subject(a.stream, a.sequence) for _, a in again], self._what(operation)
            )
            marks = {m.reply: mark for (m, _), mark in zip(again, found, strict=True)}
        return [self._envelope(m, a, marks.get(m.reply)) for m, a in acks if a is not None]

    def _envelope(self, msg: Msg, ack: AckSubject, mark: Mark | None) -> Envelope:
        source = self._by_js[ack.stream]
        delivered = ack.delivered
        headers = msg.headers or _NO_HEADERS
        released = 0 if mark is None else mark.released
        if delivered == 1:
            suspect = False
        elif mark is not None and mark.clean == delivered - 1:
            suspect = mark.suspect  # handed back on purpose, not abandoned
        else:
            suspect = True  # the previous delivery was never settled
        return Envelope(
            entry_id(source.kind, ack.sequence),
            source.names.stream,
            msg.data,
            decode_headers(headers.get(HEADERS_HEADER)),
            delivered - released,
            ack.timestamp_ns // 1_000_000,
            raw_fields(msg.data, headers),
            msg.reply,
            suspect,
        )

    # -- settle -----------------------------------------------------------------------

    def _delivery(self, envelope: Envelope) -> _Delivery | None:
        """Where one of our deliveries lives; None for an envelope that is not one."""
        ack = parse_ack_subject(envelope.source)
        if ack is None or ack.consumer != self._group_tag:
            return None
        source = self._by_js.get(ack.stream)
        if source is None or parse_entry_id(envelope.id) != (source.kind, ack.sequence):
            return None
        return _Delivery(source, ack.sequence, ack.delivered)

    async def settle(self, items: Sequence[tuple[Envelope, Outcome]]) -> None:
        self._check_open("settle")
        what = self._what("settle")
        bad: list[tuple[Envelope, Outcome]] = []
        todo: list[tuple[Envelope, Outcome, _Delivery]] = []
        for envelope, outcome in items:
            delivery = self._delivery(envelope)
            if delivery is None:
                bad.append((envelope, outcome))
            elif envelope.source not in self._settled:
                todo.append((envelope, outcome, delivery))
        failed: list[tuple[Envelope, Outcome]] = []
        dead: list[tuple[Envelope, DeadLetter, _Delivery]] = []
        retried: list[tuple[Envelope, Retry, _Delivery]] = []
        for envelope, outcome, delivery in todo:
            if isinstance(outcome, DeadLetter):
                dead.append((envelope, outcome, delivery))
            elif isinstance(outcome, Retry):
                retried.append((envelope, outcome, delivery))
        try:
            await self._dead_letter(dead)
        except BrokerError as exc:
            logger.debug("%s: dead letters failed: %s", what, exc)
            failed += [(e, o) for e, o, _ in dead]
        now = _now_ms()
        marks = [
            (
                self._mark_subject(d.source.js_stream, d.sequence),
                Mark(clean=d.delivered, released=d.delivered - e.deliveries, due=now + o.after_ms),
            )
            for e, o, d in retried
        ]
        try:
            await self._book.put_marks(marks, what)
        except BrokerError as exc:
            logger.debug("%s: retry marks failed: %s", what, exc)
            failed += [(e, o) for e, o, _ in retried]
        unsent = {id(e) for e, _ in failed}
        applied = [(e, o, d) for e, o, d in todo if id(e) not in unsent]
        try:
            await self._wire.confirmed([(e.source, _reply(o)) for e, o, _ in applied], what)
        except BrokerError as exc:
            raise SettleError(
                f"cannot {what}: {exc}", [*bad, *[(e, o) for e, o, _ in todo]]
            ) from exc
        for envelope, _, _ in applied:
            self._remember(envelope.source)
        await self._count_and_clean(applied, what)
        if failed or bad:
            raise SettleError(
                f"cannot {what}: {len(failed)} could not be settled, and {len(bad)} are no "
                f"deliveries of this group: {[e.id for e, _ in [*failed, *bad]][:10]}",
                [*failed, *bad],
            )

    def _mark_subject(self, js_stream: str, sequence: int) -> str:
        source = self._by_js[js_stream]
        return source.names.mark_subject(self._group_tag, source.kind, sequence)

    async def _dead_letter(self, dead: list[tuple[Envelope, DeadLetter, _Delivery]]) -> None:
        if not dead:
            return
        now = _now_ms()
        messages = []
        for envelope, outcome, delivery in dead:
            record = {
                "original_id": envelope.id,
                "message_id": envelope.message_id,
                "codec": envelope.codec,
                "stream": envelope.stream,
                "headers": dict(envelope.headers),
                "reason": outcome.reason,
                "deliveries": envelope.deliveries,
                "handler": self._handler,
                "group": self._group,
                "dead_at_ms": now,
            }
            names = delivery.source.names
            headers = {
                DEAD_HEADER: json.dumps(record),
                # Dead-lettering one delivery twice records it once.
                "Nats-Msg-Id": f"dead.{names.tag}.{self._group_tag}.{envelope.source}",
            }
            messages.append((names.dead_subject(self._group_tag), envelope.payload, headers))
        await self._wire.publish_acked(messages, self._what("dead-letter"))

    async def _count_and_clean(
        self, applied: list[tuple[Envelope, Outcome, _Delivery]], what: str
    ) -> None:
        """Counters and marks follow the settlement; if they fail, the message is still
        settled, so they are logged rather than reported as unsettled."""
        by_stream: dict[Names, dict[str, int]] = {}
        gone: list[str] = []
        for _, outcome, delivery in applied:
            names = delivery.source.names
            if isinstance(outcome, Drop):
                counts = by_stream.setdefault(names, {})
                counts["dropped"] = counts.get("dropped", 0) + 1
            elif isinstance(outcome, DeadLetter):
                counts = by_stream.setdefault(names, {})
                counts["dead_lettered"] = counts.get("dead_lettered", 0) + 1
            if delivery.delivered > 1 and not isinstance(outcome, Retry):
                gone.append(self._mark_subject(delivery.source.js_stream, delivery.sequence))
        try:
            for names, deltas in by_stream.items():
                await self._book.add(names.counts_subject(self._group_tag), what, **deltas)
            await self._book.remove(gone, what)
        except BrokerError as exc:
            logger.warning("%s: settled, but the bookkeeping failed: %s", what, exc)

    def _remember(self, source: str) -> None:
        settled = self._settled
        settled[source] = None
        if len(settled) > SETTLED_MEMORY:
            settled.popitem(last=False)

    # -- leases -----------------------------------------------------------------------

    async def extend(self, envelopes: Sequence[Envelope]) -> None:
        self._check_open("extend")
        what = self._what("extend")
        for envelope in envelopes:
            if self._delivery(envelope) is not None:
                await self._wire.send(envelope.source, b"+WPI", what)
        # What a fetch brought and has not handed out yet is ours too.
        for source in self._sources():
            for msg in source.buffer:
                await self._wire.send(msg.reply, b"+WPI", what)
        await self._wire.flush(what)

    async def release(self, envelopes: Sequence[Envelope]) -> None:
        self._check_open("release")
        await self._hand_back(envelopes, "release")

    async def _hand_back(self, envelopes: Sequence[Envelope], operation: str) -> None:
        """Give messages back to the group at once, their next delivery not counted."""
        what = self._what(operation)
        own = [(e, d) for e in envelopes if (d := self._delivery(e)) is not None]
        await self._book.put_marks(
            [
                (
                    self._mark_subject(d.source.js_stream, d.sequence),
                    Mark(
                        clean=d.delivered,
                        released=d.delivered - e.deliveries + 1,
                        suspect=e.suspect,
                    ),
                )
                for e, d in own
            ],
            what,
        )
        await self._wire.confirmed([(e.source, b"-NAK") for e, _ in own], what)

    async def heartbeat(self, ttl_ms: int) -> None:
        self._check_open("heartbeat")
        raise Unsupported(
            f"cannot {self._what('heartbeat')}: NATS keeps leases itself (the ack wait); "
            "this broker declares no liveness"
        )

    async def reclaim(self, min_idle_ms: int, max_count: int, *, grace_ms: int = 0) -> Reclaimed:
        self._check_open("reclaim")
        raise Unsupported(
            f"cannot {self._what('reclaim')}: NATS delivers an unsettled message again by "
            f"itself after the ack wait ({self._ack_wait_ms} ms), through fetch; "
            "this broker declares no reclaim"
        )

    # -- closing ----------------------------------------------------------------------

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._broker.forget(self)
        leftover = [msg for source in self._sources() for msg in source.buffer]
        for source in self._sources():
            source.buffer.clear()
        try:
            if leftover and not self._broker.closed:
                # Delivered to us but never handed out: back to the group, uncounted.
                await self._hand_back(await self._convert(leftover, "close"), "close")
        finally:
            if self._sub is not None:
                sub, self._sub = self._sub, None
                with mapped(self._what("close")):
                    await sub.unsubscribe()

    def abandon(self) -> None:
        """The broker closed under us: the connection is gone, nothing can be sent."""
        self._closed = True
        self._sub = None


def _reply(outcome: Outcome) -> bytes:
    match outcome:
        case Ack() | Drop():
            return b"+ACK"
        case Retry(after_ms=after_ms):
            return (
                b"-NAK " + json.dumps({"delay": after_ms * 1_000_000}).encode()
                if after_ms
                else b"-NAK"
            )
        case DeadLetter():
            return b"+TERM"
        case _:
            assert_never(outcome)


def raw_fields(data: bytes, headers: Mapping[str, str]) -> list[bytes]:
    """The message as a flat field list: the payload, then its NATS headers, our codec and
    message id as core's fields (where ``Envelope.codec`` and ``message_id`` read them)."""
    if not headers:
        return [b"payload", data]
    codec, message_id = headers.get(CODEC_HEADER), headers.get(ID_HEADER)
    raw = encode_fields(data, codec=codec, message_id=message_id)
    for key, value in headers.items():
        if key not in (CODEC_HEADER, ID_HEADER):
            raw += [key.encode(), value.encode()]
    return raw


def decode_headers(value: str | None) -> Mapping[str, str]:
    """Pulses headers from their NATS header; anything unreadable is no headers."""
    if not value:
        return _NO_HEADERS
    try:
        return str_map(json.loads(value))
    except ValueError:
        return _NO_HEADERS


def str_map(value: object) -> Mapping[str, str]:
    """``value`` if it is a dict of str to str, else no headers."""
    if isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return value
    return _NO_HEADERS


def _now_ms() -> int:
    return int(time.time() * 1000)
