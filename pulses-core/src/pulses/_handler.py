"""Handler classes and the context they run in."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, TypeVar

from pulses._broker import Broker
from pulses._cancel import CancellationToken
from pulses._envelope import Envelope
from pulses._outcome import Outcome

__all__ = ["Context", "Handler"]

B = TypeVar("B", bound=Broker[Any])
B_co = TypeVar("B_co", bound=Broker[Any], covariant=True)
B_contra = TypeVar("B_contra", bound=Broker[Any], contravariant=True)


class Handler(ABC, Generic[B_contra]):
    """Base class of a message handler: which streams, how concurrent, what to do.

    >>> class SendEmail(Handler[Broker[Any]]):
    ...     STREAMS = ("emails",)
    ...     WORKERS = 4
    ...     async def handle(self, ctx: Context[Broker[Any]], msg: Envelope) -> Outcome:
    ...         return Ack()

    ``App.register`` checks every setting at once and names each one that is wrong.
    """

    STREAMS: ClassVar[tuple[str, ...]]
    """The streams this handler consumes; one App has one handler per stream."""
    WORKERS: ClassVar[int] = 1
    """How many ``handle()`` calls run at once."""
    MAX_IN_FLIGHT: ClassVar[int | None] = None
    """Messages fetched but not yet settled, at most. ``None``: a window that follows the
    handler's pace, from 2 * WORKERS up to 1000 holding about 50 ms of work, so a fast
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

    @property
    def name(self) -> str:
        """The handler's name in logs, counters and dead letters: its class name."""
        return type(self).__name__

    @abstractmethod
    async def handle(self, ctx: Context[B_contra], msg: Envelope) -> Outcome:
        """Handle one message and say what happened to it."""


class Context(Generic[B_co]):
    """What a handler gets besides the message; one per handler for the app's whole run."""

    __slots__ = ("_broker", "_handler", "_logger", "_token")

    def __init__(
        self,
        broker: B_co,
        token: CancellationToken,
        handler: Handler[Any],
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        self._broker = broker
        self._token = token
        self._handler = handler
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
    def logger(self) -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
        return self._logger

    async def publish(
        self,
        stream: str,
        payload: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        delay_ms: int = 0,
    ) -> str:
        """Publish through the app's broker; see ``Broker.publish``."""
        return await self._broker.publish(stream, payload, headers=headers, delay_ms=delay_ms)
