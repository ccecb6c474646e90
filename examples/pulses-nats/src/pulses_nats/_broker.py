"""NatsBroker: Pulses on NATS JetStream (nats-py), with the admin facet."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import socket
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

import nats

from pulses import (
    BrokerClosed,
    BrokerError,
    ConfigurationError,
    DeadLetterRecord,
    GroupStats,
    InvalidURL,
    StreamStats,
    Unsupported,
    redact_url,
)
from pulses.broker import (
    DEFAULT_KEY_WINDOW_MS,
    Capabilities,
    Subscription,
    check_codec,
    check_history,
    check_keys,
    check_publish,
    check_streams,
    check_window,
)
from pulses_nats._book import Book
from pulses_nats._consumer import NatsConsumer, str_map
from pulses_nats._keys import LONGEST_WINDOW_MS, Keys
from pulses_nats._layout import (
    CODEC_HEADER,
    DEAD_HEADER,
    HEADERS_HEADER,
    ID_HEADER,
    MAIN,
    REPLAY,
    Names,
    entry_id,
    tag,
)
from pulses_nats._wire import (
    CONSUMER_NOT_FOUND,
    NO_MESSAGE_FOUND,
    STREAM_NOT_FOUND,
    ApiError,
    Wire,
    mapped,
)

__all__ = ["DEFAULT_ACK_WAIT_MS", "NatsBroker", "NatsSubscription", "parse_nats_url"]

logger = logging.getLogger("pulses_nats")

DEFAULT_ACK_WAIT_MS = 10_000
"""The lease of a fetched message: the server delivers it again when this passes without
a settlement or an extension, so a killed worker's messages run again within seconds.
Declared as ``Capabilities.lease_ms``: a third of it is how often the runtime extends
leases, and an event loop blocked longer than it loses its messages to others."""
_HEADER_ROOM = 512
"""Bytes kept free for the header line and our headers when checking a message's size."""
_STREAM_NAME_IN_USE = 10058
_DELETE_FAILED = 10057
_PAGE = 256


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class NatsSubscription(Subscription["NatsBroker"]):
    """Which group of a NATS broker to join. Every consumer of a group shares its durable
    JetStream consumer; the consumer name only tells processes apart in logs."""

    group: str
    consumer: str = field(default_factory=_default_consumer)


def parse_nats_url(url: str) -> tuple[str, int]:
    """The server URL to connect to and the ack wait, from
    ``nats://[user[:password]@]host[:port][?ack_wait_ms=N]``."""
    shown = redact_url(str(url))
    parts = urlsplit(str(url))
    problem = None
    query: dict[str, str] = {}
    if parts.scheme.lower() != "nats" or not parts.hostname:
        problem = "expected nats://[user[:password]@]host[:port][?ack_wait_ms=N]"
    elif parts.path not in ("", "/") or parts.fragment:
        problem = "a NATS URL has no path"
    else:
        try:
            query = dict(parse_qsl(parts.query, strict_parsing=bool(parts.query)))
            _ = parts.port
        except ValueError as exc:
            problem = str(exc)
        unknown = set(query) - {"ack_wait_ms"}
        if unknown:
            problem = f"unknown parameter {sorted(unknown)[0]!r} (known: ack_wait_ms)"
    ack_wait = query.get("ack_wait_ms", str(DEFAULT_ACK_WAIT_MS))
    if problem is None and (not ack_wait.isdigit() or int(ack_wait) < 100):
        problem = f"ack_wait_ms must be an int >= 100, got {ack_wait!r}"
    if problem is not None:
        raise InvalidURL(f"invalid NATS broker URL {shown!r}: {problem}")
    return parts._replace(path="", query="", fragment="").geturl(), int(ack_wait)


class NatsBroker:
    """A broker on a NATS server with JetStream (2.9 or later).

    ``await NatsBroker.connect("nats://127.0.0.1:4222")``, or ``pulses.connect`` with a
    ``nats://`` URL. ``?ack_wait_ms=N`` sets the lease of fetched messages (default
    10 000): a message neither settled nor extended for that long is delivered again, as
    a suspect. The broker declares it as ``Capabilities.lease_ms``, so the runtime renews
    leases every third of it and runs no reclaim loop.
    """

    def __init__(self, wire: Wire, url: str, ack_wait_ms: int) -> None:
        self._wire = wire
        self._book = Book(wire)
        self._keys = Keys(wire)
        self._url = redact_url(url)
        self._ack_wait_ms = ack_wait_ms
        self._known: set[str] = set()
        self._consumers: weakref.WeakSet[NatsConsumer] = weakref.WeakSet()
        self._closed = False
        self._capabilities = Capabilities(
            delayed_publish=False,  # NATS 2.9 has no per-message delay
            delayed_retry=True,
            dead_letters=True,
            reclaim=False,  # the server delivers again after the ack wait, through fetch
            lease_ms=ack_wait_ms,
            extend=True,
            release=True,
            admin=True,
            max_payload_bytes=wire.nc.max_payload - _HEADER_ROOM,
            liveness=False,
        )

    @classmethod
    async def connect(cls, url: str) -> NatsBroker:
        """Connect to the server the URL names; reconnects by itself for ever."""
        server, ack_wait_ms = parse_nats_url(url)
        shown = redact_url(url)

        async def quiet(exc: Exception) -> None:  # nats-py logs every reconnect error
            logger.debug("NATS %s: %r", shown, exc)

        with mapped(f"connect to {shown}"):
            nc = await nats.connect(
                servers=[server],
                max_reconnect_attempts=-1,
                error_cb=quiet,
                connect_timeout=5,
            )
        wire = Wire(nc)
        try:
            await wire.start()
            await wire.api("INFO", None, f"connect to {shown}")
        except ApiError as exc:
            await wire.aclose()
            raise BrokerError(
                f"the NATS server at {shown} has no JetStream (start it with -js): {exc}"
            ) from None
        except BaseException:
            await wire.aclose()
            raise
        return cls(wire, url, ack_wait_ms)

    @property
    def url(self) -> str:
        return self._url

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return f"NatsBroker({self._url!r}{state})"

    def check_open(self, what: str) -> None:
        if self._closed:
            raise BrokerClosed(f"cannot {what}: the broker {self._url} is closed")

    # -- streams ----------------------------------------------------------------------

    async def ensure_streams(self, names: Names, *, companions: bool = True) -> None:
        """Create the stream (and its replay and dead-letter streams) unless they exist."""
        if names.main in self._known and (not companions or names.dead in self._known):
            return
        what = f"create stream {names.stream!r}"
        configs = [{"name": names.main, "subjects": [names.subject], "description": names.stream}]
        if companions:
            configs += [
                {
                    "name": names.replay,
                    "subjects": [names.replay_subject("*")],
                    "retention": "workqueue",
                    "description": f"replayed dead letters of {names.stream}",
                },
                {
                    "name": names.dead,
                    "subjects": [names.dead_subject("*")],
                    "description": f"dead letters of {names.stream}",
                },
            ]
            await self._book.ensure()
        for config in configs:
            try:
                await self._wire.api(
                    f"STREAM.CREATE.{config['name']}", {"storage": "file", **config}, what
                )
            except ApiError as exc:
                if exc.code != _STREAM_NAME_IN_USE:  # there already, made by another version
                    raise
            self._known.add(str(config["name"]))

    # -- publishing -------------------------------------------------------------------

    async def publish(
        self,
        stream: str,
        payload: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        delay_ms: int = 0,
        key: str | None = None,
        key_window_ms: int = DEFAULT_KEY_WINDOW_MS,
        codec: str | None = None,
    ) -> str:
        """Append one message; see ``pulses.Broker.publish``. ``key_window_ms`` may be up
        to ``LONGEST_WINDOW_MS`` (a week)."""
        check_publish(stream, payload, headers, delay_ms)
        self._check_extras(stream, None if key is None else [key], 1, key_window_ms, codec)
        self.check_open(f"publish to stream {stream!r}")
        if delay_ms:
            raise Unsupported(
                f"cannot publish to stream {stream!r} with delay_ms={delay_ms}: NATS 2.9 "
                f"has no delayed publish ({self._url} declares no delayed_publish)"
            )
        [entry] = await self._publish(stream, [payload], headers, [key], key_window_ms, codec)
        return entry

    async def publish_many(
        self,
        stream: str,
        payloads: Sequence[bytes],
        *,
        headers: Mapping[str, str] | None = None,
        keys: Sequence[str | None] | None = None,
        key_window_ms: int = DEFAULT_KEY_WINDOW_MS,
        codec: str | None = None,
    ) -> list[str]:
        for payload in payloads:
            check_publish(stream, payload, headers, 0)
        self._check_extras(stream, keys, len(payloads), key_window_ms, codec)
        self.check_open(f"publish to stream {stream!r}")
        if not payloads:
            return []
        return await self._publish(
            stream,
            payloads,
            headers,
            [None] * len(payloads) if keys is None else keys,
            key_window_ms,
            codec,
        )

    def _check_extras(
        self, stream: str, keys: object, count: int, key_window_ms: object, codec: object
    ) -> None:
        check_keys(stream, keys, count)
        window = check_window(key_window_ms)
        check_codec(stream, codec)
        if window > LONGEST_WINDOW_MS:
            raise Unsupported(
                f"cannot publish to stream {stream!r} with key_window_ms={window}: keys are "
                f"kept at most {LONGEST_WINDOW_MS} ms (a week) by {self._url}"
            )

    async def _publish(
        self,
        stream: str,
        payloads: Sequence[bytes],
        headers: Mapping[str, str] | None,
        keys: Sequence[str | None],
        key_window_ms: int,
        codec: str | None,
    ) -> list[str]:
        names = Names.of(stream)
        what = f"publish to stream {stream!r}"
        ours: dict[str, str] = {}
        if headers:
            ours[HEADERS_HEADER] = json.dumps(dict(headers))
        if codec is not None and codec != "json":
            ours[CODEC_HEADER] = codec
        room = self._wire.nc.max_payload - _HEADER_ROOM - len(json.dumps(ours))
        for payload in payloads:
            if len(payload) > room:
                raise BrokerError(
                    f"cannot {what}: a payload of {len(payload)} bytes (and its headers) is "
                    f"more than the server's max_payload ({self._wire.nc.max_payload} bytes)"
                )
        await self.ensure_streams(names, companions=False)
        now = _now_ms()
        keyed = any(key is not None for key in keys)
        claims = (
            await self._keys.claim(names, keys, now, what)
            if keyed
            else [(None, None)] * len(payloads)
        )
        messages = [
            (names.subject, payload, {**ours, "Nats-Msg-Id": msg_id} if msg_id else ours or None)
            for payload, (first, msg_id) in zip(payloads, claims, strict=True)
            if first is None
        ]
        try:
            acks = await self._wire.publish_acked(messages, what)
        except ApiError as exc:
            if exc.code != STREAM_NOT_FOUND:
                raise
            # Deleted behind our back: create it again, and publish once more.
            self._known.discard(names.main)
            await self.ensure_streams(names, companions=False)
            acks = await self._wire.publish_acked(messages, what)
        published = iter(entry_id(MAIN, int(ack["seq"])) for ack in acks)
        ids = [first if first is not None else next(published) for first, _ in claims]
        if keyed:
            given = [
                (k, i)
                for k, i, (first, _) in zip(keys, ids, claims, strict=True)
                if k and not first
            ]
            await self._keys.remember(names, given, now + key_window_ms, what)
        return ids

    # -- consuming --------------------------------------------------------------------

    def subscription(self, group: str, *, consumer: str | None = None) -> NatsSubscription:
        if consumer is None:
            return NatsSubscription(group)
        return NatsSubscription(group, consumer)

    def consumer(
        self, subscription: NatsSubscription, streams: Sequence[str], *, handler: str
    ) -> NatsConsumer:
        if not isinstance(subscription, NatsSubscription):
            raise ConfigurationError(
                f"{self._url} needs a NatsSubscription, got {type(subscription).__name__}"
            )
        streams = check_streams(streams, f"streams of group {subscription.group!r}")
        group = subscription.group
        self.check_open(f"consume streams {', '.join(streams)} in group {group!r}")
        consumer = NatsConsumer(
            self,
            self._wire,
            self._book,
            group,
            tag(group),
            subscription.consumer,
            streams,
            handler,
            self._ack_wait_ms,
        )
        self._consumers.add(consumer)
        return consumer

    def forget(self, consumer: NatsConsumer) -> None:
        self._consumers.discard(consumer)

    # -- administration ---------------------------------------------------------------

    async def streams(self) -> list[str]:
        self.check_open("list streams")
        infos = await self._list("STREAM.LIST", "streams", "list streams")
        by_name = {info["config"]["name"]: info for info in infos}
        found = []
        for name, info in by_name.items():
            config = info["config"]
            stream = config.get("description", "")
            if not stream or Names.of(stream).main != name:
                continue
            dead = by_name.get(Names.of(stream).dead, {}).get("state", {}).get("messages", 0)
            if info["state"].get("consumer_count", 0) or dead:
                found.append(stream)
        return sorted(found)

    async def stats(self, stream: str) -> StreamStats:
        self.check_open(f"stats of stream {stream!r}")
        what = f"stats of stream {stream!r}"
        names = Names.of(stream)
        main = await self._info(f"STREAM.INFO.{names.main}", what)
        if main is None:
            return StreamStats(stream, 0, 0, await self._dead_count(names, what), ())
        state = main["state"]
        now = _now_ms()
        groups = [
            await self._group_stats(names, info, int(state.get("last_seq", 0)), now, what)
            for info in await self._list(f"CONSUMER.LIST.{names.main}", "consumers", what)
        ]
        return StreamStats(
            stream,
            int(state.get("messages", 0)),
            0,  # no delayed publishes on NATS 2.9
            await self._dead_count(names, what),
            tuple(sorted(groups, key=lambda g: g.group)),
        )

    async def _group_stats(
        self, names: Names, main: dict[str, Any], last_seq: int, now: int, what: str
    ) -> GroupStats:
        durable = main["name"]
        replay = await self._info(f"CONSUMER.INFO.{names.replay}.{durable}", what) or {}
        counts = await self._book.counts(names.counts_subject(durable), what)
        waiting = await self._book.waiting(names.marks_filter(durable), now, what)
        held = _int(main, "num_ack_pending") + _int(replay, "num_ack_pending")
        done = (
            last_seq
            - _int(main, "num_pending")
            - _int(main, "num_ack_pending")
            + counts.replayed
            - _int(replay, "num_pending")
            - _int(replay, "num_ack_pending")
        )
        oldest = [
            await self._oldest_pending(js_stream, info, what)
            for js_stream, info in ((names.main, main), (names.replay, replay))
            if _int(info, "num_ack_pending")
        ]
        known = [t for t in oldest if t is not None]
        return GroupStats(
            group=main.get("config", {}).get("description") or durable,
            acked=done - counts.dropped - counts.dead_lettered,
            dropped=counts.dropped,
            dead_lettered=counts.dead_lettered,
            pending=held - waiting,
            lag=_int(main, "num_pending") + _int(replay, "num_pending"),
            delayed=waiting,
            oldest_pending_ms=max(0, now - min(known)) if known else None,
            consumers=(),  # NATS does not know which process holds what
        )

    async def _oldest_pending(self, js_stream: str, info: dict[str, Any], what: str) -> int | None:
        """When the first message above the ack floor (the oldest held one) was published."""
        floor = int(info.get("ack_floor", {}).get("stream_seq", 0))
        subject = info.get("config", {}).get("filter_subject", "")
        found = await self._message(js_stream, {"seq": floor + 1, "next_by_subj": subject}, what)
        return None if found is None else _time_ms(found["time"])

    async def _dead_count(self, names: Names, what: str) -> int:
        dead = await self._info(f"STREAM.INFO.{names.dead}", what)
        return 0 if dead is None else int(dead["state"].get("messages", 0))

    async def dead_letters(self, stream: str, *, limit: int = 100) -> list[DeadLetterRecord]:
        self.check_open(f"list dead letters of stream {stream!r}")
        what = f"list dead letters of stream {stream!r}"
        return [record for record, _ in await self._dead(Names.of(stream), limit, what)]

    async def _dead(
        self, names: Names, limit: int | None, what: str
    ) -> list[tuple[DeadLetterRecord, dict[str, Any]]]:
        out: list[tuple[DeadLetterRecord, dict[str, Any]]] = []
        sequence = 1
        while limit is None or len(out) < limit:
            found = await self._message(
                names.dead, {"seq": sequence, "next_by_subj": names.dead_subject("*")}, what
            )
            if found is None:
                break
            out.append((_record(names, found), found))
            sequence = int(found["seq"]) + 1
        return out

    async def replay(self, stream: str, ids: Sequence[str] | None = None) -> list[str]:
        """Hand dead letters again, as new messages of the replay queue of the group that
        dead-lettered each (never to the stream's other groups), and remove them."""
        self.check_open(f"replay dead letters of stream {stream!r}")
        what = f"replay dead letters of stream {stream!r}"
        names = Names.of(stream)
        if ids is None:
            chosen = await self._dead(names, None, what)
        else:
            chosen = []
            for dead_id in ids:
                if not dead_id.isdigit():
                    continue
                found = await self._message(names.dead, {"seq": int(dead_id)}, what)
                if found is not None:
                    chosen.append((_record(names, found), found))
        await self.ensure_streams(names)
        new_ids = []
        for record, found in chosen:
            group_tag = tag(record.group)
            headers = {
                "Nats-Msg-Id": f"replay.{names.tag}.{record.id}",  # once, if retried
                ID_HEADER: record.message_id or record.original_id,
            }
            if record.headers:
                headers[HEADERS_HEADER] = json.dumps(dict(record.headers))
            codec = _dead_fields(found).get("codec")
            if isinstance(codec, str) and codec != "json":
                headers[CODEC_HEADER] = codec
            [ack] = await self._wire.publish_acked(
                [(names.replay_subject(group_tag), record.payload, headers)], what
            )
            if not ack.get("duplicate"):
                await self._book.add(names.counts_subject(group_tag), what, replayed=1)
            await self._delete(names.dead, int(found["seq"]), what)
            new_ids.append(entry_id(REPLAY, int(ack["seq"])))
        return new_ids

    async def purge(self, stream: str, ids: Sequence[str] | None = None) -> int:
        self.check_open(f"purge dead letters of stream {stream!r}")
        what = f"purge dead letters of stream {stream!r}"
        names = Names.of(stream)
        if ids is None:
            try:
                answer = await self._wire.api(f"STREAM.PURGE.{names.dead}", {}, what)
            except ApiError as exc:
                if exc.code == STREAM_NOT_FOUND:
                    return 0
                raise
            return int(answer.get("purged", 0))
        removed = 0
        for dead_id in ids:
            if dead_id.isdigit():
                removed += await self._delete(names.dead, int(dead_id), what)
        return removed

    async def trim(
        self,
        stream: str,
        *,
        dry_run: bool = False,
        keep: int | None = None,
        keep_ms: int | None = None,
    ) -> int:
        """Remove the messages below every group's ack floor (all acknowledged), but
        the newest ``keep`` sequence numbers; an age (``keep_ms``) is unsupported."""
        self.check_open(f"trim stream {stream!r}")
        check_history(keep, keep_ms)
        if keep_ms is not None:
            raise Unsupported("the NATS example broker trims by count (keep), not by age")
        what = f"trim stream {stream!r}"
        names = Names.of(stream)
        groups = await self._list(f"CONSUMER.LIST.{names.main}", "consumers", what)
        if not groups:  # nothing is known to be acknowledged without a group
            return 0
        floor = min(int(g.get("ack_floor", {}).get("stream_seq", 0)) for g in groups)
        info = await self._info(f"STREAM.INFO.{names.main}", what, {"deleted_details": True})
        if info is None:
            return 0
        first = int(info["state"].get("first_seq", 0))
        if keep is not None:
            floor = min(floor, int(info["state"].get("last_seq", 0)) - keep)
        if floor < first:
            return 0
        if dry_run:
            deleted = info["state"].get("deleted") or []
            return floor - first + 1 - sum(1 for seq in deleted if first <= seq <= floor)
        answer = await self._wire.api(f"STREAM.PURGE.{names.main}", {"seq": floor + 1}, what)
        return int(answer.get("purged", 0))

    async def _info(
        self, call: str, what: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        try:
            return await self._wire.api(call, body, what)
        except ApiError as exc:
            if exc.code in (STREAM_NOT_FOUND, CONSUMER_NOT_FOUND):
                return None
            raise

    async def _list(self, call: str, key: str, what: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            try:
                answer = await self._wire.api(call, {"offset": len(out)}, what)
            except ApiError as exc:
                if exc.code == STREAM_NOT_FOUND:
                    return out
                raise
            page = answer.get(key) or []
            out += page
            if not page or len(out) >= int(answer.get("total", 0)) or len(page) < _PAGE:
                return out

    async def _message(
        self, js_stream: str, query: dict[str, Any], what: str
    ) -> dict[str, Any] | None:
        try:
            answer = await self._wire.api(f"STREAM.MSG.GET.{js_stream}", query, what)
        except ApiError as exc:
            if exc.code in (NO_MESSAGE_FOUND, STREAM_NOT_FOUND):
                return None
            raise
        message: dict[str, Any] = answer["message"]
        return message

    async def _delete(self, js_stream: str, sequence: int, what: str) -> int:
        """Delete one message; 0 when it was not there (deleted before, or never)."""
        try:
            await self._wire.api(f"STREAM.MSG.DELETE.{js_stream}", {"seq": sequence}, what)
        except ApiError as exc:
            # A missing message is a generic failure here (10057, "stream store EOF" or
            # "no message found"): look before saying so.
            if exc.code == STREAM_NOT_FOUND or (
                exc.code == _DELETE_FAILED
                and await self._message(js_stream, {"seq": sequence}, what) is None
            ):
                return 0
            raise
        return 1

    # -- closing ----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the consumers (handing back what they fetched and never handed out), then
        the connection; closing twice is harmless."""
        if self._closed:
            return
        consumers = list(self._consumers)
        try:
            await asyncio.gather(*(c.aclose() for c in consumers), return_exceptions=True)
        finally:
            self._closed = True
            for consumer in consumers:
                consumer.abandon()
            await self._wire.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _int(info: dict[str, Any], name: str) -> int:
    return int(info.get(name, 0) or 0)


def _now_ms() -> int:
    return int(time.time() * 1000)


_FRACTION = re.compile(r"(\.\d{6})\d+")


def _time_ms(value: str) -> int:
    """Unix ms of the server's RFC 3339 times (nanoseconds, which Python does not read)."""
    return int(
        datetime.fromisoformat(_FRACTION.sub(r"\1", value).replace("Z", "+00:00")).timestamp()
        * 1000
    )


def _dead_fields(message: dict[str, Any]) -> dict[str, Any]:
    """The record a dead letter carries in its ``Pulses-Dead`` header."""
    try:
        fields = json.loads(_parse_headers(message.get("hdrs")).get(DEAD_HEADER, "{}"))
    except ValueError:
        return {}
    return fields if isinstance(fields, dict) else {}


def _record(names: Names, message: dict[str, Any]) -> DeadLetterRecord:
    fields = _dead_fields(message)
    deliveries = fields.get("deliveries")
    dead_at = fields.get("dead_at_ms")
    return DeadLetterRecord(
        id=str(message["seq"]),
        original_id=str(fields.get("original_id", "")),
        stream=names.stream,
        payload=base64.b64decode(message.get("data") or ""),
        headers=str_map(fields.get("headers")),
        reason=str(fields.get("reason", "")),
        deliveries=deliveries if isinstance(deliveries, int) else 0,
        handler=str(fields.get("handler", "")),
        group=str(fields.get("group", "")),
        dead_at_ms=dead_at if isinstance(dead_at, int) else _time_ms(message["time"]),
        message_id=str(fields.get("message_id", "")),
    )


def _parse_headers(encoded: object) -> dict[str, str]:
    """The header block of a stored message (``NATS/1.0`` then ``Name: value`` lines)."""
    if not encoded:
        return {}
    lines = base64.b64decode(str(encoded)).decode(errors="replace").split("\r\n")[1:]
    pairs = (line.partition(":") for line in lines if ":" in line)
    return {name.strip(): value.strip() for name, _, value in pairs}
