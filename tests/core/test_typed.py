"""Typed payloads: codecs built once per type, decode errors that say where, and a
handler's payload type checked against its stream's where the class is defined."""

from __future__ import annotations

import asyncio
import copy
import pickle
from dataclasses import dataclass
from typing import Any, Generic, TypedDict, TypeVar

import msgspec
import pydantic
import pytest

from pulses import (
    Ack,
    App,
    Broker,
    ConfigurationError,
    Context,
    Envelope,
    Handler,
    Outcome,
    PayloadError,
    Stream,
    run_until_drained,
)
from pulses._typed import decoder_for, encoder_for
from pulses.broker import decode_fields, encode_fields, message_id_of, redelivery_fields
from pulses_memory import MemoryBroker

P = TypeVar("P")


class Point(msgspec.Struct):
    x: int
    y: int = 0


@dataclass
class Refund:
    order: int


class Audit(TypedDict):
    who: str


class Signup(pydantic.BaseModel):
    email: str
    age: int


class Opaque:
    """Neither a struct, a dataclass, nor anything else msgspec knows."""


VALUES: list[tuple[Any, Any]] = [
    (Point, Point(x=1, y=2)),
    (Refund, Refund(order=7)),
    (Audit, {"who": "ops"}),
    (str, "grüße"),
    (bytes, b"\x00\xff"),
    (Signup, Signup(email="a@example.com", age=3)),
]


@pytest.mark.parametrize("codec", ["json", "msgpack"])
@pytest.mark.parametrize(("tp", "value"), VALUES, ids=lambda v: getattr(v, "__name__", ""))
def test_every_supported_type_round_trips_through_both_codecs(
    tp: Any, value: Any, codec: str
) -> None:
    assert decoder_for(tp, codec)(encoder_for(tp, codec)(value)) == value


def test_a_decoder_is_built_once_per_type_and_codec() -> None:
    assert decoder_for(Point, "json") is decoder_for(Point, "json")
    assert decoder_for(Point, "json") is not decoder_for(Point, "msgpack")


def test_a_payload_that_does_not_fit_says_which_field_what_was_expected_and_what_came() -> None:
    with pytest.raises(PayloadError, match=r"Expected `int`, got `str` - at `\$.x`"):
        decoder_for(Point, "json")(b'{"x": "one"}')
    with pytest.raises(PayloadError, match="Object missing required field `order`"):
        decoder_for(Refund, "json")(b"{}")
    with pytest.raises(PayloadError, match="Expected UTF-8 text"):
        decoder_for(str, "json")(b"\xff")
    with pytest.raises(PayloadError, match="age"):
        decoder_for(Signup, "json")(b'{"email": "a", "age": "x"}')
    with pytest.raises(PayloadError, match="JSON is malformed"):
        decoder_for(Point, "json")(b"not json")


def test_a_type_or_codec_that_cannot_be_decoded_is_refused_where_the_stream_is_declared() -> None:
    with pytest.raises(ConfigurationError, match="cannot decode payloads of type"):
        Stream("s", Opaque)
    with pytest.raises(ConfigurationError, match="unknown codec 'yaml'"):
        Stream("s", Point, codec="yaml")  # type: ignore[arg-type]  # the misuse under test


def test_a_stream_is_its_name_and_records_its_codec_only_when_not_json() -> None:
    points = Stream("points", Point, codec="msgpack")
    assert points == "points"
    assert points.name == "points"
    assert type(points.name) is str
    assert repr(points) == "Stream('points', Point, codec='msgpack')"
    assert encode_fields(b"p", codec="json") == [b"payload", b"p"]
    assert encode_fields(b"p", codec="msgpack") == [b"payload", b"p", b"pulses:codec", b"msgpack"]


def test_a_stream_survives_copy_and_pickle_as_a_stream() -> None:
    points = Stream("points", Point, codec="msgpack")
    for again in (copy.deepcopy(points), pickle.loads(pickle.dumps(points))):
        assert (again, again.payload_type, again.codec) == ("points", Point, "msgpack")
        assert isinstance(again, Stream)


def test_a_handler_whose_stream_carries_another_type_is_refused_at_its_definition() -> None:
    with pytest.raises(ConfigurationError, match=r"STREAM carries .*Refund.* declares .*Point"):

        class Wrong(Handler[Broker[Any], Point]):
            STREAM = Stream("refunds", Refund)  # type: ignore[arg-type]  # the misuse under test

            async def handle(self, ctx: Context[Broker[Any]], msg: Envelope[Point]) -> Outcome:
                return Ack()

    with pytest.raises(ConfigurationError, match="sets both STREAM and STREAMS"):

        class Both(Handler[Broker[Any], Point]):
            STREAM = Stream("points", Point)
            STREAMS = ("points",)

            async def handle(self, ctx: Context[Broker[Any]], msg: Envelope[Point]) -> Outcome:
                return Ack()


def test_the_payload_type_is_read_from_the_class_and_defaults_to_bytes() -> None:
    class Typed(Handler[Broker[Any], Point]):
        STREAM = Stream("points", Point)

        async def handle(self, ctx: Context[Broker[Any]], msg: Envelope[Point]) -> Outcome:
            return Ack()

    class Plain(Handler[Broker[Any]]):
        STREAMS = ("raw",)

        async def handle(self, ctx: Context[Broker[Any]], msg: Envelope) -> Outcome:
            return Ack()

    class Inherited(Typed):
        pass

    class Base(Handler[Broker[Any], P], Generic[P]):
        STREAMS = ("generic",)

        async def handle(self, ctx: Context[Broker[Any]], msg: Envelope[P]) -> Outcome:
            return Ack()

    class Filled(Base[Refund]):
        pass

    assert Typed.PAYLOAD_TYPE is Point
    assert Plain.PAYLOAD_TYPE is bytes
    assert Inherited.PAYLOAD_TYPE is Point
    assert Base.PAYLOAD_TYPE is bytes
    assert Filled.PAYLOAD_TYPE is Refund
    assert Typed.STREAMS == ("points",)


def test_the_message_id_is_the_first_entry_id_until_a_later_entry_carries_it() -> None:
    first = encode_fields(b"p", {"h": "v"})
    assert message_id_of(first, "1-0") == "1-0"
    retry = redelivery_fields(first, 1, 5, "1-0")
    assert message_id_of(retry, "2-0") == "1-0"
    again = redelivery_fields(retry, 2, 5, message_id_of(retry, "2-0"))
    assert again.count(b"pulses:id") == 1
    assert message_id_of(again, "3-0") == "1-0"
    assert decode_fields(again)[:3] == (b"p", {"h": "v"}, 2)


def test_idempotency_keys_that_are_not_text_or_do_not_match_the_payloads_are_refused() -> None:
    async def go() -> None:
        broker = MemoryBroker()
        with pytest.raises(TypeError, match="non-empty str, got 5"):
            await broker.publish("s", b"x", key=5)  # type: ignore[arg-type]  # under test
        with pytest.raises(ValueError, match=r"one key \(or None\) per payload: 1 payloads"):
            await broker.publish_many("s", [b"x"], keys="ab")
        with pytest.raises(ValueError, match="key_window_ms must be a positive int"):
            await broker.publish("s", b"x", key="k", key_window_ms=0)
        with pytest.raises(ValueError, match="codec for stream 's' must be"):
            await broker.publish("s", b"x", codec="yaml")

    asyncio.run(go())


async def test_a_bytes_handler_gets_its_payload_as_its_body_untouched() -> None:
    broker = MemoryBroker()
    bodies: list[bytes] = []

    class Raw(Handler[MemoryBroker]):
        STREAMS = ("raw",)

        async def handle(self, ctx: Context[MemoryBroker], msg: Envelope) -> Outcome:
            bodies.append(msg.body)
            return Ack()

    await broker.publish("raw", b"\xff{")
    app = App(broker, broker.subscription("g")).register(Raw())
    stats = (await run_until_drained(app)).total
    assert (bodies, stats.undecodable) == ([b"\xff{"], 0)
