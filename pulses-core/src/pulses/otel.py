"""OpenTelemetry tracing for Pulses (``pip install 'pulses-core[otel]'``).

>>> app = App(broker, subscription, middleware=[tracing()])  # doctest: +SKIP

Spans follow the OpenTelemetry messaging conventions: ``send <stream>`` (PRODUCER) per
publish through a ``Stream`` or ``Context.publish``, ``process <stream>`` (CONSUMER) per
``handle`` call, ``settle <stream>`` (CLIENT) per batch of outcomes handed to the broker.
The W3C trace context (``traceparent``, ``tracestate``) travels in the message headers;
brokers keep headers over retries and dead-letter replays, so every delivery's process
span is a child of the one send span: a message's whole life is one trace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:  # pragma: no cover - exercised by a test that hides the package
    raise ImportError(
        f"pulses.otel needs OpenTelemetry, which is not installed ({exc}); "
        "install the extra: pip install 'pulses-core[otel]'"
    ) from exc

from pulses._envelope import Envelope
from pulses._handler import Context
from pulses._middleware import CallHandle, CallPublish, CallSettle, Middleware, Publishing
from pulses._outcome import Ack, DeadLetter, Drop, Outcome, Retry

__all__ = ["tracing"]

_OUTCOMES = {Ack: "ack", Retry: "retry", Drop: "drop", DeadLetter: "dead_letter"}
DELIVERY_COUNT = "messaging.pulses.message.delivery_count"
"""How many times the message was delivered, this delivery included (the conventions
name no system-neutral attribute for it)."""
OUTCOME = "messaging.pulses.outcome"
"""What the handler returned: ack, retry, drop or dead_letter."""
_MAX_LINKS = 128


def tracing(tracer_provider: trace.TracerProvider | None = None) -> Middleware:
    """The tracing middleware, on ``tracer_provider`` (the global one by default)."""
    return _Tracing(tracer_provider)


class _Tracing(Middleware):
    """Spans of sends, handle calls and settle batches.

    A span that the sampler is known to drop is not started at all (tracer calls cost
    microseconds a message): with a ``ParentBased`` sampler whose root sampler is
    ``ALWAYS_OFF``, a message without a trace context, or with an unsampled one, runs
    with no tracer call. Other samplers are asked for every span.
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None) -> None:
        self._provider = tracer_provider
        self._tracer: trace.Tracer | None = None
        self._propagator = TraceContextTextMapPropagator()
        self._root_drops = False
        self._unsampled_drops = False
        self._systems: dict[int, str] = {}

    def _start(self) -> trace.Tracer:
        """The tracer, and what the sampler is known to drop, on first use: the global
        provider may be set after the middleware is built."""
        provider = self._provider or trace.get_tracer_provider()
        sampler = getattr(provider, "sampler", None)
        # The SDK's samplers describe themselves; that is their only public account of
        # how they decide.
        described = sampler.get_description() if sampler is not None else ""
        self._root_drops = described == "AlwaysOffSampler" or described.startswith(
            "ParentBased{root:AlwaysOffSampler,"
        )
        self._unsampled_drops = described == "AlwaysOffSampler" or (
            described.startswith("ParentBased{")
            and "remoteParentNotSampled:AlwaysOffSampler" in described
            and "localParentNotSampled:AlwaysOffSampler" in described
        )
        self._tracer = trace.get_tracer("pulses", tracer_provider=provider)
        return self._tracer

    def _system(self, broker: object) -> str:
        """The broker's name as ``messaging.system``: its package without ``pulses_``
        (``redis``, ``memory``); the scheme would say ``unix`` for a Redis socket."""
        key = id(type(broker))
        system = self._systems.get(key)
        if system is None:
            package = type(broker).__module__.partition(".")[0]
            system = self._systems[key] = package.removeprefix("pulses_")
        return system

    def handle(
        self, ctx: Context[Any], msg: Envelope[Any], call_next: CallHandle
    ) -> Awaitable[Outcome]:
        if self._tracer is None:
            self._start()
        traceparent = msg.headers.get("traceparent")
        # Known to be dropped: straight on, not even a coroutine of our own.
        if traceparent is None:
            if self._root_drops:
                return call_next(ctx, msg)
        elif self._unsampled_drops and not _sampled(traceparent):
            return call_next(ctx, msg)
        return self._process(ctx, msg, call_next, traceparent is not None)

    async def _process(
        self, ctx: Context[Any], msg: Envelope[Any], call_next: CallHandle, child: bool
    ) -> Outcome:
        assert self._tracer is not None
        # Without a trace context, a root span: not a child of whatever span was current
        # where the app started.
        parent = self._propagator.extract(msg.headers) if child else otel_context.Context()
        stream = msg.stream
        attributes: dict[str, str | int] = {
            "messaging.system": self._system(ctx.broker),
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": stream,
            "messaging.consumer.group.name": ctx.group,
            "messaging.message.id": msg.message_id,
            DELIVERY_COUNT: msg.deliveries,
        }
        with self._tracer.start_as_current_span(
            f"process {stream}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                outcome = await call_next(ctx, msg)
            except asyncio.CancelledError:
                span.set_status(Status(StatusCode.ERROR, "cancelled: TIMEOUT or shutdown"))
                raise
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                raise
            name = _OUTCOMES.get(type(outcome))
            if name is None:
                span.set_status(
                    Status(StatusCode.ERROR, f"returned {type(outcome).__name__}, not an Outcome")
                )
            else:
                span.set_attribute(OUTCOME, name)
            return outcome

    async def settle(
        self,
        ctx: Context[Any],
        batch: Sequence[tuple[Envelope[Any], Outcome]],
        call_next: CallSettle,
    ) -> None:
        tracer = self._tracer or self._start()
        if self._root_drops:
            await call_next(batch)
            return
        streams = {env.stream for env, _ in batch}
        stream = next(iter(streams)) if len(streams) == 1 else None
        attributes: dict[str, str | int] = {
            "messaging.system": self._system(ctx.broker),
            "messaging.operation.type": "settle",
            "messaging.operation.name": "settle",
            "messaging.consumer.group.name": ctx.group,
            "messaging.batch.message_count": len(batch),
        }
        if stream is not None:
            attributes["messaging.destination.name"] = stream
        # Its own trace, linked to the messages' traces: one batch settles many traces.
        links = [
            Link(linked)
            for env, _ in batch[:_MAX_LINKS]
            if (linked := _span_context(env.headers)) is not None
        ]
        with tracer.start_as_current_span(
            f"settle {stream}" if stream is not None else "settle",
            context=otel_context.Context(),
            kind=SpanKind.CLIENT,
            attributes=attributes,
            links=links,
        ):
            await call_next(batch)

    async def publish(self, publishing: Publishing, call_next: CallPublish) -> list[str]:
        tracer = self._tracer or self._start()
        current = trace.get_current_span().get_span_context()
        if current.is_valid:
            if self._unsampled_drops and not current.trace_flags.sampled:
                return await call_next()
        elif self._root_drops:
            return await call_next()
        stream = publishing.stream
        attributes: dict[str, str | int] = {
            "messaging.system": self._system(publishing.broker),
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.name": stream,
        }
        if publishing.count != 1:
            attributes["messaging.batch.message_count"] = publishing.count
        with tracer.start_as_current_span(
            f"send {stream}", kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            self._propagator.inject(publishing.headers)
            ids = await call_next()
            if len(ids) == 1:
                span.set_attribute("messaging.message.id", ids[0])
            return ids


def _sampled(traceparent: str) -> bool:
    """Whether a ``traceparent`` says sampled; a malformed one is left to the propagator."""
    if len(traceparent) != 55:
        return True
    try:
        return bool(int(traceparent[53:], 16) & 1)
    except ValueError:
        return True


def _span_context(headers: Mapping[str, str]) -> SpanContext | None:
    """The remote span context of a ``traceparent`` header, without a propagator call."""
    traceparent = headers.get("traceparent")
    if traceparent is None or len(traceparent) != 55:
        return None
    try:
        context = SpanContext(
            int(traceparent[3:35], 16),
            int(traceparent[36:52], 16),
            is_remote=True,
            trace_flags=TraceFlags(int(traceparent[53:], 16)),
        )
    except ValueError:
        return None
    return context if context.is_valid else None
