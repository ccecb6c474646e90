"""App: handlers bound to one broker and one subscription, run until a token fires."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Sequence
from types import EllipsisType
from typing import Any, Generic, Self, TypeVar, cast

from pulses._broker import Broker, Subscription
from pulses._cancel import CancellationToken
from pulses._clock import Clock, MonotonicClock
from pulses._errors import ConfigurationError
from pulses._handler import Context, Handler
from pulses._middleware import Middleware, observe_publishes
from pulses._names import check_name
from pulses._retention import DEFAULT_RETENTION, Retention, start_keeper, stop_keeper
from pulses._runtime import Isolation, RuntimeConfig, _HandlerRun, run_handler
from pulses._stats import RunStats

__all__ = ["App"]

B = TypeVar("B", bound=Broker[Any])
B2 = TypeVar("B2", bound=Broker[Any])

logger = logging.getLogger("pulses")


class App(Generic[B]):
    """Handlers of one consumer group on one broker.

    >>> app = App(broker, RedisSubscription(group="mailer")).register(SendEmail())  # doctest: +SKIP
    >>> stats = await app.run(token)                                               # doctest: +SKIP

    Crash recovery: on a broker with ``liveness`` (Redis, memory) every consumer says it
    is alive every ``liveness_ms / 3``; the messages of one silent for ``liveness_ms``
    (its process died, or its event loop is blocked) are taken over by the others,
    which look every ``reclaim_interval_ms`` (default ``liveness_ms / 3``).
    ``claim_idle_ms`` is how long a message must sit idle in a consumer that is alive
    but stuck (or on a broker without liveness) before another consumer takes it over;
    live consumers extend their leases every ``claim_idle_ms / 3``, so a long job is
    never taken from a live worker.
    ``clock`` paces all of that and TIMEOUT (a ``pulses_memory.ManualClock`` shared
    with a memory broker lets tests move time instead of sleeping); the shutdown's
    waits are real time.
    ``block_ms`` is how long one fetch waits for new messages; a shutdown waits for
    the fetch under way (at most that long) so that what it brings is released, not
    stranded in the pending list.
    ``middleware`` runs around every ``handle`` call, settle batch and publish of the
    app, the first in the list outermost (``pulses.Middleware``).
    ``retention`` is the history left when the app trims each stream it consumes, at
    start and then every ``Retention.interval_ms``, of what every group acknowledged
    (``pulses.Retention``; by default the newest 1000 entries stay); None: no trimming.
    """

    def __init__(
        self,
        broker: B,
        subscription: Subscription[B],
        *,
        claim_idle_ms: int = 60_000,
        liveness_ms: int = 3_000,
        block_ms: int = 1_000,
        reclaim_interval_ms: int | None = None,
        shutdown_timeout: float = 25.0,
        clock: Clock | None = None,
        middleware: Sequence[Middleware] = (),
        retention: Retention | None = DEFAULT_RETENTION,
    ) -> None:
        errors = [
            *_positive_int("App", "claim_idle_ms", claim_idle_ms),
            *_positive_int("App", "liveness_ms", liveness_ms, 3),
            *_positive_int("App", "block_ms", block_ms),
        ]
        if reclaim_interval_ms is not None:
            errors += _positive_int("App", "reclaim_interval_ms", reclaim_interval_ms)
        errors += _seconds("App", "shutdown_timeout", shutdown_timeout, allow_zero=True)
        errors += [
            f"App.middleware: {mw!r} is not a pulses.Middleware instance (did you pass the class?)"
            for mw in middleware
            if not _is_middleware(mw)
        ]
        if not isinstance(cast("object", retention), Retention | None):
            errors.append(f"App.retention must be a pulses.Retention or None, got {retention!r}")
        if errors:
            raise ConfigurationError("invalid app settings:\n  " + "\n  ".join(errors))
        self._retention = retention
        self._middleware = tuple(middleware)
        observe_publishes(broker, *middleware)
        self._broker = broker
        self._subscription = subscription
        # Without liveness only idle times tell a dead consumer: look at half of that.
        lively = broker.capabilities.liveness
        default_interval = liveness_ms // 3 if lively else max(1, claim_idle_ms // 2)
        self._config = RuntimeConfig(
            block_ms=block_ms,
            claim_idle_ms=claim_idle_ms,
            lease_interval_ms=max(1, claim_idle_ms // 3),
            reclaim_interval_ms=reclaim_interval_ms or default_interval,
            liveness_ms=liveness_ms,
            shutdown_timeout=float(shutdown_timeout),
            clock=MonotonicClock() if clock is None else clock,
        )
        self._reclaim_interval_ms = reclaim_interval_ms
        self._handlers: list[Handler[B, Any]] = []
        self._running = False
        self._runs: Sequence[_HandlerRun] = ()
        """The handlers' runs of the current (or last) ``run``: what a metrics collector
        reads, live, when it is scraped."""

    @property
    def broker(self) -> B:
        return self._broker

    @property
    def subscription(self) -> Subscription[B]:
        return self._subscription

    @property
    def handlers(self) -> Sequence[Handler[B, Any]]:
        return tuple(self._handlers)

    def using(
        self,
        broker: B2,
        *,
        shutdown_timeout: float | None = None,
        claim_idle_ms: int | None = None,
        block_ms: int | None = None,
        middleware: Sequence[Middleware] = (),
        retention: Retention | EllipsisType | None = ...,
    ) -> App[B2]:
        """The same app (group, consumer name, handlers, settings) on another broker,
        with any setting given here replaced (``retention=None``: none), and
        ``middleware`` added inside the app's.

        What ``pulses worker --url`` does; handy in tests too:
        ``run_until_drained(app.using(MemoryBroker()))``.
        """
        config = self._config
        subscription = broker.subscription(
            self._subscription.group, consumer=self._subscription.consumer
        )
        app = App(
            broker,
            subscription,
            claim_idle_ms=config.claim_idle_ms if claim_idle_ms is None else claim_idle_ms,
            liveness_ms=config.liveness_ms,
            clock=config.clock,
            block_ms=config.block_ms if block_ms is None else block_ms,
            reclaim_interval_ms=self._reclaim_interval_ms,
            shutdown_timeout=(
                config.shutdown_timeout if shutdown_timeout is None else shutdown_timeout
            ),
            middleware=(*self._middleware, *middleware),
            retention=self._retention if retention is ... else retention,
        )
        # Handlers typed for this app's broker are moved to another: that is the point,
        # and a handler uses its context's broker only through the Broker protocol.
        return app.register(*cast("list[Handler[B2, Any]]", self._handlers))

    def register(self, *handlers: Handler[B, Any]) -> Self:
        """Add handlers after checking every setting of every one of them at once.

        Raises ``ConfigurationError`` listing each wrong field by handler and name.
        """
        errors: list[str] = []
        claimed = {stream: h.name for h in self._handlers for stream in h.STREAMS}
        names = {h.name for h in self._handlers}
        for handler in handlers:
            problems = _check_handler(handler, self._broker)
            errors += problems
            if problems and not _is_handler(handler):
                continue
            if handler.name in names:
                errors.append(f"{handler.name}: a handler of that name is already registered")
            names.add(handler.name)
            for stream in _streams(handler):
                if stream in claimed:
                    errors.append(
                        f"{handler.name}.STREAMS: stream {stream!r} is already consumed by "
                        f"{claimed[stream]}; one app has one handler per stream (for fan-out, "
                        "run another app with another consumer group)"
                    )
                else:
                    claimed[stream] = handler.name
        if errors:
            raise ConfigurationError("invalid handlers:\n  " + "\n  ".join(errors))
        self._handlers.extend(handlers)
        return self

    async def run(self, token: CancellationToken) -> RunStats:
        """Consume until ``token`` fires, then shut down gracefully; return counters.

        On shutdown: fetching stops, unstarted messages are released, handlers' tokens
        fire, running handlers get ``shutdown_timeout`` seconds, every settlement is
        flushed. What still runs then stays pending and is reclaimed elsewhere.
        """
        if not self._handlers:
            raise ConfigurationError("App.run: no handlers registered; call app.register(...)")
        if self._running:
            raise ConfigurationError("App.run: this app is already running")
        self._running = True
        try:
            return await self._run(token)
        finally:
            self._running = False

    async def _run(self, token: CancellationToken) -> RunStats:
        caps = self._broker.capabilities
        logger.info(
            "pulses starting on %s, %r: %s",
            self._broker.url,
            self._subscription,
            ", ".join(f"{h.name}[{', '.join(h.STREAMS)}]x{h.WORKERS}" for h in self._handlers),
        )
        runs = []
        isolation = Isolation()
        self._runs = isolation.runs  # filled as each handler's run starts
        for handler in self._handlers:
            consumer = self._broker.consumer(
                self._subscription, handler.STREAMS, handler=handler.name
            )
            handler_token = token.child()
            ctx: Context[B] = Context(
                self._broker, handler_token, handler, group=self._subscription.group
            )
            runs.append(
                run_handler(
                    handler,
                    consumer,
                    ctx,
                    handler_token,
                    caps,
                    self._config,
                    token,
                    isolation,
                    self._middleware,
                )
            )
        streams = [stream for h in self._handlers for stream in h.STREAMS]
        keeper = start_keeper(self._broker, streams, self._retention, self._config.clock, token)
        try:
            results = await asyncio.gather(*runs)
        finally:
            await stop_keeper(keeper)
        stats = RunStats({s.handler: s for s in results})
        total = stats.total
        logger.info(
            "pulses stopped: handled %d (acked %d, retried %d, dropped %d, dead-lettered %d, "
            "failed %d), released %d, abandoned %d, unsettled %d",
            total.handled,
            total.acked,
            total.retried,
            total.dropped,
            total.dead_lettered,
            total.failed,
            total.released,
            total.abandoned,
            total.unsettled,
        )
        return stats


def _streams(handler: Handler[Any]) -> tuple[str, ...]:
    streams = getattr(handler, "STREAMS", ())
    return streams if isinstance(streams, tuple) else ()


def _positive_int(owner: str, name: str, value: object, minimum: int = 1) -> list[str]:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        return [f"{owner}.{name} must be an int >= {minimum}, got {value!r}"]
    return []


def _seconds(owner: str, name: str, value: object, *, allow_zero: bool) -> list[str]:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        kind = "a finite number of seconds >= 0" if allow_zero else "a positive number of seconds"
        return [f"{owner}.{name} must be {kind}, got {value!r}"]
    return []


def _is_handler(value: object) -> bool:
    return isinstance(value, Handler)


def _is_middleware(value: object) -> bool:
    return isinstance(value, Middleware)


def _check_handler(handler: object, broker: Broker[Any]) -> list[str]:
    """Every problem with one handler's definition, each naming handler and field."""
    if not isinstance(handler, Handler):
        return [f"{handler!r} is not a Handler instance (did you pass the class?)"]
    name = handler.name
    errors: list[str] = []
    streams = getattr(handler, "STREAMS", None)
    if streams is None:
        errors.append(f"{name}.STREAMS is missing; set it to a tuple of stream names")
    elif isinstance(streams, str) or not isinstance(streams, tuple):
        errors.append(f"{name}.STREAMS must be a tuple of stream names, got {streams!r}")
    elif not streams:
        errors.append(f"{name}.STREAMS is empty; name at least one stream")
    else:
        for stream in streams:
            try:
                check_name("stream", stream, f"{name}.STREAMS")
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        if len(set(streams)) != len(streams):
            errors.append(f"{name}.STREAMS names a stream twice: {streams!r}")
    worker_errors = _positive_int(name, "WORKERS", handler.WORKERS)
    errors += worker_errors
    if handler.MAX_IN_FLIGHT is not None:
        minimum = 1 if worker_errors else handler.WORKERS
        found = _positive_int(name, "MAX_IN_FLIGHT", handler.MAX_IN_FLIGHT, minimum)
        errors += [f"{e} (it must be at least WORKERS)" for e in found]
    errors += _positive_int(name, "MAX_DELIVERIES", handler.MAX_DELIVERIES)
    backoff, cap = handler.RETRY_BACKOFF_MS, handler.RETRY_BACKOFF_MAX_MS
    backoff_errors = [
        *_positive_int(name, "RETRY_BACKOFF_MS", backoff, 0),
        *_positive_int(name, "RETRY_BACKOFF_MAX_MS", cap, 0),
    ]
    errors += backoff_errors
    if not backoff_errors and backoff > cap:
        errors.append(f"{name}.RETRY_BACKOFF_MS ({backoff}) is above RETRY_BACKOFF_MAX_MS ({cap})")
    if handler.TIMEOUT is not None:
        errors += _seconds(name, "TIMEOUT", handler.TIMEOUT, allow_zero=False)
    if not inspect.iscoroutinefunction(handler.handle):
        errors.append(f"{name}.handle must be an 'async def' method returning an Outcome")
    caps = broker.capabilities
    if not caps.dead_letters:
        errors.append(
            f"{name}: the broker ({broker.url}) cannot store dead letters, which "
            "messages that fail MAX_DELIVERIES times need"
        )
    if not caps.delayed_retry and handler.RETRY_BACKOFF_MAX_MS:
        errors.append(
            f"{name}.RETRY_BACKOFF_MAX_MS: the broker ({broker.url}) cannot delay "
            "retries; set RETRY_BACKOFF_MS = RETRY_BACKOFF_MAX_MS = 0"
        )
    return errors
