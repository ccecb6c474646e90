"""Typed payloads: a stream handle that producers and handlers share, and its codecs.

``Stream("signups", Signup)`` names a stream, the type of its payloads and how they are
encoded (JSON by default, msgpack on request). Producers publish values through it, a
handler declares ``STREAM = signups`` with ``Handler[B, Signup]``, and mypy checks both
ends against the one declaration. The handle is a ``str`` (the stream's name), so it
goes wherever a stream name goes.

Codecs are msgspec's: one encoder and one decoder per type, built once (a validator built
per message costs more than the message). pydantic models are supported when pydantic
is installed (``pulses-core[pydantic]``), through their own JSON validation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any, Generic, Literal, cast

import msgspec
import msgspec.inspect
from typing_extensions import TypeVar

from pulses._broker import Broker
from pulses._errors import ConfigurationError
from pulses._idempotency import DEFAULT_KEY_WINDOW_MS
from pulses._middleware import publish_through
from pulses._names import check_name

__all__ = ["CODECS", "Codec", "Decode", "PayloadError", "Stream", "decoder_for", "encoder_for"]

T = TypeVar("T", default=bytes)

Codec = Literal["json", "msgpack"]
"""How a stream's typed payloads are encoded; recorded in every message but JSON's."""
CODECS: tuple[Codec, ...] = ("json", "msgpack")


class PayloadError(ValueError):
    """A payload does not decode to the declared type; the message says where and why."""


Decode = Callable[[bytes], Any]
Encode = Callable[[Any], bytes]


def _is_pydantic(tp: object) -> bool:
    # Looked up by module, so pydantic is never imported for a user who does not use it.
    return isinstance(tp, type) and any(
        base.__module__.startswith("pydantic.") and base.__name__ == "BaseModel"
        for base in tp.__mro__
    )


@cache
def decoder_for(tp: Any, codec: str) -> Decode:
    """The decoder of payloads of type ``tp`` encoded by ``codec``; built once per pair.

    Raises ``PayloadError`` with the decoder's own message (the field, what it expected,
    what it got) when a payload does not fit.
    """
    if codec not in CODECS:
        raise ConfigurationError(f"unknown codec {codec!r}; use one of {', '.join(CODECS)}")
    if tp is bytes:
        return bytes
    if tp is str:
        return _decode_text
    if _is_pydantic(tp):
        return _pydantic_decoder(tp, codec)
    try:
        # A class msgspec does not know is a "custom type" it would refuse every payload
        # of: refuse it here, where the stream or handler is declared.
        if isinstance(msgspec.inspect.type_info(tp), msgspec.inspect.CustomType):
            raise TypeError("use a msgspec.Struct, a dataclass, a TypedDict or a pydantic model")
        decoder = (msgspec.json.Decoder if codec == "json" else msgspec.msgpack.Decoder)(tp)
    except TypeError as exc:
        raise ConfigurationError(f"cannot decode payloads of type {tp!r}: {exc}") from None
    decode = decoder.decode

    def run(payload: bytes) -> Any:
        try:
            return decode(payload)
        except msgspec.DecodeError as exc:  # ValidationError is one
            raise PayloadError(str(exc)) from None

    return run


@cache
def encoder_for(tp: Any, codec: str) -> Encode:
    """The encoder of values of type ``tp`` by ``codec``; built once per pair."""
    if codec not in CODECS:
        raise ConfigurationError(f"unknown codec {codec!r}; use one of {', '.join(CODECS)}")
    if tp is bytes:
        return bytes
    if tp is str:
        return str.encode
    if _is_pydantic(tp):
        if codec == "json":
            return lambda value: cast(bytes, value.__pydantic_serializer__.to_json(value))
        dump = msgspec.msgpack.Encoder().encode
        return lambda value: dump(value.model_dump(mode="json"))
    encoder = msgspec.json.Encoder() if codec == "json" else msgspec.msgpack.Encoder()
    return encoder.encode


def _decode_text(payload: bytes) -> str:
    try:
        return payload.decode()
    except UnicodeDecodeError as exc:
        raise PayloadError(f"Expected UTF-8 text, got {exc.reason} at byte {exc.start}") from None


def _pydantic_decoder(tp: Any, codec: str) -> Decode:
    from pydantic import ValidationError  # only for pydantic users

    validate_json = tp.model_validate_json
    validate = tp.model_validate
    unpack = msgspec.msgpack.Decoder().decode

    def run(payload: bytes) -> Any:
        try:
            if codec == "json":
                return validate_json(payload)
            return validate(unpack(payload))
        except ValidationError as exc:
            raise PayloadError(str(exc)) from None
        except msgspec.DecodeError as exc:
            raise PayloadError(str(exc)) from None

    return run


class Stream(str, Generic[T]):
    """A stream's name, the type of its payloads and their codec, for producers and
    handlers alike.

    >>> signups = Stream("signups", Signup)  # doctest: +SKIP
    >>> await signups.publish(broker, Signup(email="a@example.com"))  # doctest: +SKIP

    ``payload_type`` may be a ``msgspec.Struct``, a dataclass, a TypedDict, ``str``,
    ``bytes``, anything else msgspec decodes, or a pydantic model.
    """

    payload_type: type[T]
    codec: Codec
    _encode: Encode

    def __new__(cls, name: str, payload_type: type[T], *, codec: Codec = "json") -> Stream[T]:
        check_name("stream", name, "Stream")
        self = super().__new__(cls, name)
        self.payload_type = payload_type
        self.codec = codec
        # Built now: a type the codec cannot handle fails where the stream is declared.
        tp: Any = payload_type
        self._encode = encoder_for(tp, codec)
        decoder_for(tp, codec)
        return self

    @property
    def name(self) -> str:
        return str.__str__(self)

    async def publish(
        self,
        broker: Broker[Any],
        value: T,
        *,
        headers: Mapping[str, str] | None = None,
        delay_ms: int = 0,
        key: str | None = None,
        key_window_ms: int = DEFAULT_KEY_WINDOW_MS,
    ) -> str:
        """Publish ``value`` on any broker; return its message id. ``key``: a second
        message with the same key within ``key_window_ms`` is dropped (``Broker.publish``)."""
        payload = self._encode(value)

        async def send(headers: Mapping[str, str] | None) -> list[str]:
            return [
                await broker.publish(
                    self.name,
                    payload,
                    headers=headers,
                    delay_ms=delay_ms,
                    key=key,
                    key_window_ms=key_window_ms,
                    codec=self.codec,
                )
            ]

        return (await publish_through(broker, self.name, headers, 1, send))[0]

    async def publish_many(
        self,
        broker: Broker[Any],
        values: Sequence[T],
        *,
        headers: Mapping[str, str] | None = None,
        keys: Sequence[str | None] | None = None,
        key_window_ms: int = DEFAULT_KEY_WINDOW_MS,
    ) -> list[str]:
        """Publish many values in one round trip; return their message ids in order."""
        encode = self._encode
        payloads = [encode(value) for value in values]

        async def send(headers: Mapping[str, str] | None) -> list[str]:
            return await broker.publish_many(
                self.name,
                payloads,
                headers=headers,
                keys=keys,
                key_window_ms=key_window_ms,
                codec=self.codec,
            )

        return await publish_through(broker, self.name, headers, len(payloads), send)

    def __repr__(self) -> str:
        tp = getattr(self.payload_type, "__qualname__", repr(self.payload_type))
        return f"Stream({self.name!r}, {tp}, codec={self.codec!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # A str subclass is copied and pickled through str's reduction, which calls
        # Stream(name) alone; dataclasses.asdict deep-copies, and would fail.
        return (_rebuild, (self.name, self.payload_type, self.codec))


def _rebuild(name: str, payload_type: Any, codec: Codec) -> Stream[Any]:
    return Stream(name, payload_type, codec=codec)
