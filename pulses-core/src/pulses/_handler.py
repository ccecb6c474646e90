"""Handler classes and the context they run in."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, TypeVar, get_args, get_origin

from typing_extensions import TypeVar as DefaultTypeVar

from pulses._broker import Broker
from pulses._cancel import CancellationToken
from pulses._envelope import Envelope
from pulses._errors import ConfigurationError
from pulses._idempotency import DEFAULT_KEY_WINDOW_MS
from pulses._middleware import publish_through
from pulses._outcome import Outcome
from pulses._typed import Stream

__all__ = ["Context", "Handler"]

B = TypeVar("B", bound=Broker[Any])
B_co = TypeVar("B_co", bound=Broker[Any], covariant=True)
B_contra = TypeVar("B_contra", bound=Broker[Any], contravariant=True)
T = DefaultTypeVar("T", default=bytes)


class Handler(ABC, Generic[B_contra, T]):
    """Base class of a message handler: which streams, how concurrent, what to do.

    The second type parameter is the payload type (``bytes`` when left out):
    ``Handler[RedisBroker, Signup]`` gets ``msg.body`` decoded to a ``Signup``, once,
    before ``handle``; a payload that does not decode is dead-lettered at once. Set
    ``STREAM`` to a typed ``pulses.Stream`` and mypy checks that its type is the one the
    handler declares.

    >>> class SendEmail(Handler[Broker[Any]]):
    ...     STREAMS = ("emails",)
    ...     WORKERS = 4
    ...     async def handle(self, ctx: Context[Broker[Any]], msg: Envelope) -> Outcome:
    ...         return Ack()

    ``App.register`` checks every setting at once and names each one that is wrong.
    """

    STREAMS: ClassVar[tuple[str, ...]]
    """The streams this handler consumes; one App has one handler per stream."""
    # Not a ClassVar: a ClassVar cannot hold a type variable, and as a plain attribute
    # mypy checks a subclass's ``STREAM = ...`` against Stream[T] with T filled in.
    STREAM: Stream[T]
    """Instead of STREAMS: the one typed stream this handler consumes."""
    PAYLOAD_TYPE: ClassVar[Any] = bytes
    """The payload type declared by ``Handler[B, T]``, read from the class at definition."""
    WORKERS: ClassVar[int] = 1
    """How many ``handle()`` calls run at once."""
    MAX_IN_FLIGHT: ClassVar[int | None] = None
    """Messages fetched but not yet settled, at most. ``None``: a window that follows the
    handler's pace, from WORKERS up to 1000 holding about 50 ms of work, so a fast
    handler reads big batches and a slow one hoards nothing its neighbours could run."""
    MAX_DELIVERIES: ClassVar[int] = 5
    """After this many failed deliveries a message is dead-lettered: the fifth failure of
    a handler that raises, or a message whose handler killed its process five times."""
    RETRY_BACKOFF_MS: ClassVar[int] = 1_000
    """Cap of the first retry's jittered delay; it doubles per delivery."""
    RETRY_BACKOFF_MAX_MS: ClassVar[int] = 600_000
    """Upper bound of any retry delay."""
    TIMEOUT: ClassVar[float | None] = None
    """Seconds one ``handle()`` call may run before it is cancelled and counts as failed."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = _declared_payload_type(cls)
        if declared is not None:
            cls.PAYLOAD_TYPE = declared
        stream = cls.__dict__.get("STREAM")
        if stream is None:
            return
        if not isinstance(stream, Stream):
            raise ConfigurationError(
                f"{cls.__name__}.STREAM must be a pulses.Stream, got {stream!r}; "
                "name plain streams in STREAMS"
            )
        if "STREAMS" in cls.__dict__:
            raise ConfigurationError(f"{cls.__name__} sets both STREAM and STREAMS; set one")
        if stream.payload_type != cls.PAYLOAD_TYPE:
            raise ConfigurationError(
                f"{cls.__name__}.STREAM carries {stream.payload_type!r}, but the handler "
                f"declares {cls.PAYLOAD_TYPE!r}"
            )
        cls.STREAMS = (stream,)

    @property
    def name(self) -> str:
        """The handler's name in logs, counters and dead letters: its class name."""
        return type(self).__name__

    @abstractmethod
    async def handle(self, ctx: Context[B_contra], msg: Envelope[T]) -> Outcome:
        """Handle one message and say what happened to it."""


def _declared_payload_type(cls: type) -> Any:
    """The T of ``Handler[B, T]`` as ``cls``'s own bases fill it in, through generic
    subclasses too (``class Base(Handler[B, P])`` then ``class X(Base[R, Signup])``);
    None when they leave it unset. A T still open is remembered for the subclasses."""
    for base in cls.__dict__.get("__orig_bases__", ()):
        origin = get_origin(base)
        if not (isinstance(origin, type) and issubclass(origin, Handler)):
            continue
        param = T if origin is Handler else origin.__dict__.get("_PAYLOAD_PARAM")
        parameters = getattr(origin, "__parameters__", ())
        if param is None or param not in parameters:
            continue
        arg = get_args(base)[parameters.index(param)]
        if isinstance(arg, TypeVar):
            type.__setattr__(cls, "_PAYLOAD_PARAM", arg)
            return None
        return arg
    return None


class Context(Generic[B_co]):
    """What a handler gets besides the message; one per handler for the app's whole run."""

    __slots__ = ("_broker", "_group", "_handler", "_logger", "_token")

    def __init__(
        self,
        broker: B_co,
        token: CancellationToken,
        handler: Handler[Any],
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
        *,
        group: str = "",
    ) -> None:
        self._broker = broker
        self._token = token
        self._handler = handler
        self._group = group
        self._logger = logger or logging.getLogger(f"pulses.handler.{handler.name}")

    @property
    def broker(self) -> B_co:
        return self._broker

    @property
    def token(self) -> CancellationToken:
        """Fires when the app shuts down: long handlers should check it and return."""
        return self._token

    @property
    def handler(self) -> Handler[Any]:
        return self._handler

    @property
    def group(self) -> str:
        """The consumer group the handler consumes in."""
        return self._group

    @property
    def logger(self) -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
        return self._logger

    async def publish(
        self,
        stream: str,
        payload: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        delay_ms: int = 0,
        key: str | None = None,
        key_window_ms: int = DEFAULT_KEY_WINDOW_MS,
    ) -> str:
        """Publish through the app's broker; see ``Broker.publish``. Typed values go
        through their stream: ``await signups.publish(ctx.broker, value)``."""
        broker = self._broker

        async def send(headers: Mapping[str, str] | None) -> list[str]:
            return [
                await broker.publish(
                    stream,
                    payload,
                    headers=headers,
                    delay_ms=delay_ms,
                    key=key,
                    key_window_ms=key_window_ms,
                )
            ]

        return (await publish_through(broker, stream, headers, 1, send))[0]
