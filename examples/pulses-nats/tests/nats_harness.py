"""The conformance harness on a real NATS server."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from nats_server import PASSWORD, NatsServer
from pulses_nats import NatsBroker
from pulses_nats._layout import Names, parse_entry_id

from pulses import Broker
from pulses.testing import BrokerHarness

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class NatsHarness(BrokerHarness):
    """What the conformance suite needs beyond the Broker protocol, on a real server:
    time passes by sleeping (the default); entries are written and deleted through the
    JetStream API. A foreign message is a body and a header map, so ``any_fields`` stays
    False."""

    secret = PASSWORD

    def __init__(self, server: NatsServer, query: str = "") -> None:
        self.name = f"nats-{server.version}"
        self._url = server.url + query
        self._brokers: list[NatsBroker] = []

    async def connect(self) -> Broker[Any]:
        broker = await NatsBroker.connect(self._url)
        self._brokers.append(broker)
        return broker

    async def add_foreign(
        self, broker: Broker[Any], stream: str, fields: Sequence[tuple[bytes, bytes]]
    ) -> str:
        """A foreign NATS producer's message: a body and headers. The first ``payload``
        field is the body; every other field must be a header NATS can carry."""
        assert isinstance(broker, NatsBroker)
        body: bytes | None = None
        headers: dict[str, str] = {}
        for name, value in fields:
            if name == b"payload" and body is None:
                body = value
                continue
            try:
                key, text = name.decode(), value.decode()
            except UnicodeDecodeError:
                raise ValueError(
                    f"a NATS header cannot carry the field {name!r}: {value!r}"
                ) from None
            if not _HEADER_NAME.fullmatch(key) or "\n" in text or key in headers:
                raise ValueError(f"a NATS message cannot carry the field {name!r}: {value!r}")
            headers[key] = text
        names = Names.of(stream)
        await broker.ensure_streams(names, companions=False)
        nc = broker._wire.nc
        reply = await nc.request(names.subject, body or b"", headers=headers or None, timeout=5)
        return str(json.loads(reply.data)["seq"])

    async def delete_entry(self, broker: Broker[Any], stream: str, entry_id: str) -> None:
        assert isinstance(broker, NatsBroker)
        parsed = parse_entry_id(entry_id)
        assert parsed is not None, entry_id
        kind, sequence = parsed
        await broker._wire.api(
            f"STREAM.MSG.DELETE.{Names.of(stream).js_stream(kind)}", {"seq": sequence}, "delete"
        )

    async def aclose(self) -> None:
        for broker in self._brokers:
            await broker.aclose()
