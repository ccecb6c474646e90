"""Middleware: code that runs around each ``handle`` call, each settle batch and each
publish, for metrics, tracing, error reporting or context variables.

A middleware overrides only the hooks it needs. The runtime builds each chain once per
handler when the app starts, from the hooks that are overridden; with none, it calls
``handle`` and the broker directly, so an app without middleware pays nothing.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from pulses._errors import ConfigurationError

if TYPE_CHECKING:
    from pulses._broker import Broker
    from pulses._envelope import Envelope
    from pulses._handler import Context
    from pulses._outcome import Outcome

__all__ = [
    "CallHandle",
    "CallPublish",
    "CallSettle",
    "Middleware",
    "Publishing",
    "chain_handle",
    "chain_settle",
    "observe_publishes",
    "publish_through",
]

CallHandle = Callable[["Context[Any]", "Envelope[Any]"], Awaitable["Outcome"]]
"""The rest of the chain around ``handle``: the next middleware, or ``handle`` itself."""
CallSettle = Callable[["Sequence[tuple[Envelope[Any], Outcome]]"], Awaitable[None]]
"""The rest of the chain around a settle batch: the next middleware, or the broker."""
CallPublish = Callable[[], Awaitable[list[str]]]
"""The rest of the chain around a publish; returns the new message ids."""


@dataclass(frozen=True, slots=True)
class Publishing:
    """One publish on its way to the broker, as a middleware's ``publish`` hook sees it."""

    broker: Broker[Any]
    stream: str
    count: int
    """How many messages: 1 for ``publish``, the batch's size for ``publish_many``."""
    headers: dict[str, str] = field(default_factory=dict)
    """The headers every message of this publish gets; a hook may add to them before
    it calls the rest of the chain."""


class Middleware:
    """Base class of a middleware: override the hooks you need, leave the rest.

    >>> class Timing(Middleware):
    ...     async def handle(self, ctx, msg, call_next):
    ...         started = time.perf_counter()
    ...         try:
    ...             return await call_next(ctx, msg)
    ...         finally:
    ...             observe(ctx.handler.name, time.perf_counter() - started)

    Register with ``App(broker, subscription, middleware=[Timing()])``; the first in the
    list is the outermost. An exception raised by a middleware (or by what it calls)
    counts as the handler's: the message goes through the handler's retry policy.
    """

    # The hooks are plain methods returning what ``call_next`` returns; an override is
    # usually an ``async def``. A plain one that returns ``call_next(...)`` unawaited on
    # its fast path spares a coroutine per message.

    def handle(
        self, ctx: Context[Any], msg: Envelope[Any], call_next: CallHandle
    ) -> Awaitable[Outcome]:
        """Around each ``handle`` call: return the outcome ``call_next`` returns (or
        another). Runs in the worker's task, so context variables set here are seen by
        ``handle``."""
        return call_next(ctx, msg)

    def settle(
        self,
        ctx: Context[Any],
        batch: Sequence[tuple[Envelope[Any], Outcome]],
        call_next: CallSettle,
    ) -> Awaitable[None]:
        """Around each batch of outcomes handed to the broker in one call. An exception
        counts as the broker's: the batch is settled again after a backoff."""
        return call_next(batch)

    def publish(self, publishing: Publishing, call_next: CallPublish) -> Awaitable[list[str]]:
        """Around each publish through a ``Stream`` or ``Context.publish`` on a broker the
        middleware observes (see ``observe_publishes``); may add headers first."""
        return call_next()


def _overrides(middleware: Middleware, hook: str) -> bool:
    return getattr(type(middleware), hook) is not getattr(Middleware, hook)


def chain_handle(handle: CallHandle, middleware: Sequence[Middleware]) -> CallHandle:
    """``handle`` inside every middleware that wraps it, the first outermost; ``handle``
    itself when none does."""
    for mw in reversed(middleware):
        if _overrides(mw, "handle"):
            handle = _handle_layer(mw, handle)
    return handle


def _handle_layer(middleware: Middleware, call_next: CallHandle) -> CallHandle:
    # A closure, not functools.partial: a keyword partial costs a dict merge per message.
    hook = middleware.handle

    def call(ctx: Context[Any], msg: Envelope[Any]) -> Awaitable[Outcome]:
        return hook(ctx, msg, call_next)

    return call


def chain_settle(
    settle: CallSettle, ctx: Context[Any], middleware: Sequence[Middleware]
) -> CallSettle:
    """The broker's ``settle`` inside every middleware that wraps it, the first outermost."""
    for mw in reversed(middleware):
        if _overrides(mw, "settle"):
            settle = partial(mw.settle, ctx, call_next=settle)
    return settle


_PUBLISHERS: weakref.WeakKeyDictionary[Any, tuple[Middleware, ...]] = weakref.WeakKeyDictionary()


def observe_publishes(broker: Broker[Any], *middleware: Middleware) -> None:
    """Run the ``publish`` hooks of ``middleware`` on every publish through a ``Stream``
    or ``Context.publish`` on ``broker`` (``broker.publish`` itself is the raw call and
    runs none). ``App(..., middleware=...)`` does this for its broker; a process that
    publishes without building an App calls it once. Adding one twice adds it once."""
    hooks = tuple(mw for mw in middleware if _overrides(mw, "publish"))
    if not hooks:
        return
    try:
        known = _PUBLISHERS.get(broker, ())
        _PUBLISHERS[broker] = known + tuple(mw for mw in hooks if mw not in known)
    except TypeError:
        raise ConfigurationError(
            f"cannot observe publishes on {broker!r}: a broker must be hashable and "
            "weakly referenceable"
        ) from None


async def publish_through(
    broker: Broker[Any],
    stream: str,
    headers: Mapping[str, str] | None,
    count: int,
    send: Callable[[Mapping[str, str] | None], Awaitable[list[str]]],
) -> list[str]:
    """``send(headers)`` inside the publish hooks observing ``broker``; at once when none."""
    # The emptiness test first: a WeakKeyDictionary lookup builds a weak reference.
    hooks = _PUBLISHERS.get(broker) if _PUBLISHERS else None
    if not hooks:
        return await send(headers)
    publishing = Publishing(broker, stream, count, dict(headers or {}))

    async def last() -> list[str]:
        return await send(publishing.headers or None)

    call: CallPublish = last
    for mw in reversed(hooks):
        call = partial(mw.publish, publishing, call)
    return await call()
