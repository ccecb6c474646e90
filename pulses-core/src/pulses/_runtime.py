"""The per-handler loop: fetch, dispatch, settle, extend, reclaim, and a clean shutdown.

Per handler: one fetch loop, ``WORKERS`` fixed worker tasks fed from a local deque, one
settle batcher, one lease keeper (which also enforces TIMEOUT), one heartbeat and one
reclaim loop. Nothing on the per-message path creates a task, takes a lock or logs.

The life of a message:

1. ``fetch_loop`` asks the broker for up to half the free window (``MAX_IN_FLIGHT``
   minus what is in flight), so one batch is read while the previous one is handled.
   ``admit`` puts each message in ``inflight`` (what the bound counts and the lease
   keeper extends) and on the ``queue``; one delivered more often than MAX_DELIVERIES
   goes straight to the dead letters without running.
2. A worker pops it and awaits ``handle``. The result is checked to be an Outcome; an
   exception, a timeout or anything else goes through the RetryPolicy instead.
3. The worker appends ``(message, outcome)`` to ``to_settle``; ``settle_loop`` hands
   everything gathered so far to the broker in one call and, once applied, ``record``
   removes the messages from ``inflight``, which frees their slots for the next fetch.
4. Meanwhile ``lease_loop`` renews the leases of everything in flight, so neighbours
   never take a live worker's messages, and cancels calls that ran past TIMEOUT;
   ``heartbeat_loop`` tells the broker this consumer is alive.
5. ``reclaim_loop`` takes over messages of consumers that died (heartbeat lapsed) or
   hung (idle past ``claim_idle_ms``). Such a message was delivered before and never
   settled: a *suspect*, which may kill its process. A suspect runs alone in the whole
   app (see ``_Isolation``), so a poison raises only its own delivery count.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from pulses._broker import Capabilities, Consumer, Reclaimed
from pulses._cancel import CancellationToken
from pulses._clock import Clock, MonotonicClock, wake
from pulses._envelope import Envelope
from pulses._errors import HandlerTimeout, SettleError
from pulses._handler import Context, Handler
from pulses._middleware import Middleware, chain_handle, chain_settle
from pulses._outcome import Ack, DeadLetter, Drop, Outcome, Retry
from pulses._policy import RetryPolicy, jittered_backoff
from pulses._stats import HandlerStats
from pulses._typed import CODECS, Decode, PayloadError, decoder_for

__all__ = ["Isolation", "RuntimeConfig", "run_handler"]

logger = logging.getLogger("pulses.runtime")

_OUTCOMES = frozenset({Ack, Retry, Drop, DeadLetter})

DEFAULT_MAX_IN_FLIGHT = 1000
"""The bound when a handler sets no MAX_IN_FLIGHT: fetches of up to 500, which is where
a no-op handler reaches the raw loop's speed (docs/performance.md has the figures)."""
PREFETCH_HORIZON = 0.05
"""Seconds of work, at the handler's measured rate, that a default window holds."""
_RATE_EVERY = 0.1
REMIND_EVERY = 30.0
"""Seconds between two reminders that the broker still fails."""
_CANCEL_WAIT = 1.0
_KEEPER_GRACE = 5.0
"""Seconds a lease keeper or heartbeat may take to finish its broker call at shutdown."""
_COUNTER = {Ack: "acked", Retry: "retried", Drop: "dropped", DeadLetter: "dead_lettered"}


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """Timings shared by every handler of an app; all in milliseconds but the shutdown."""

    block_ms: int
    claim_idle_ms: int
    lease_interval_ms: int
    reclaim_interval_ms: int
    liveness_ms: int
    shutdown_timeout: float
    """Seconds, in real time: the shutdown's waits do not follow ``clock``."""
    clock: Clock = field(default_factory=MonotonicClock)
    """What paces leases, heartbeats, reclaims, TIMEOUT and the retries of broker calls."""


class _Outage:
    """Broker trouble seen by any loop of one handler.

    Logged as one WARNING when a loop starts failing, a reminder every REMIND_EVERY
    seconds while any still fails, and one WARNING when the first call works again: a
    stall or a Redis restart is two lines, not one per loop.

    While calls fail, every owner's lease renewals and heartbeats fail too: reclaim then
    spares what went idle, and the consumers that went silent, during the outage, until
    their owners have had time to renew, instead of stealing from live workers.
    """

    __slots__ = ("duration", "ended", "failing", "handler", "now", "reminded", "since")

    def __init__(self, handler: str, now: Callable[[], float]) -> None:
        self.handler = handler
        self.now = now
        self.failing: dict[str, int] = {}
        """What failed (fetch, settle, ...) and how often, while the outage lasts."""
        self.since: float | None = None
        self.reminded = 0.0
        self.duration = 0.0
        self.ended = -math.inf

    def failed(self, what: str, exc: BaseException, first: bool) -> None:
        """``first``: this loop had not been failing. A loop still failing from an
        outage that another loop saw end is a straggler, not a new outage."""
        now = self.now()
        self.failing[what] = self.failing.get(what, 0) + 1
        if self.since is None and first:
            self.since = self.reminded = now
            logger.warning(
                "handler %s: %s failed, retrying with backoff: %s: %s",
                self.handler,
                what,
                type(exc).__name__,
                exc,
            )
        elif self.failing and now - self.reminded >= REMIND_EVERY:
            # On the REMIND_EVERY grid from the start, not from the last reminder: the
            # backoff between attempts must not make the reminders drift apart.
            self.reminded = now - (now - self.reminded) % REMIND_EVERY
            since = "" if self.since is None else f" for {now - self.since:.0f}s"
            logger.warning(
                "handler %s: %s still failing%s (%d attempts), retrying: %s: %s",
                self.handler,
                ", ".join(self.failing),
                since,
                sum(self.failing.values()),
                type(exc).__name__,
                exc,
            )
        else:
            logger.debug("handler %s: %s failed again: %r", self.handler, what, exc)

    def recovered(self, what: str) -> None:
        """The first call that works again ends the outage."""
        self.failing.pop(what, None)
        if self.since is None:
            return
        now = self.now()
        self.duration, self.ended, self.since = now - self.since, now, None
        logger.warning(
            "handler %s: the broker works again after %.1fs (%s recovered)",
            self.handler,
            self.duration,
            what,
        )

    def spare_ms(self, margin_ms: int, window_ms: int) -> int:
        """How much longer than usual to wait before taking anything over: the outage
        and ``margin_ms`` (the owners' renewal interval), until ``window_ms`` after it."""
        now = self.now()
        if self.since is not None:
            return int((now - self.since) * 1000) + margin_ms
        if now - self.ended < window_ms / 1000:
            return int(self.duration * 1000) + margin_ms
        return 0


class _Streak:
    """Backoff for one loop whose broker calls fail: jittered and capped; its outage
    logs."""

    __slots__ = ("failures", "outage", "what")

    def __init__(self, what: str, outage: _Outage) -> None:
        self.what = what
        self.failures = 0
        self.outage = outage

    def failed(self, exc: BaseException) -> float:
        self.failures += 1
        self.outage.failed(self.what, exc, self.failures == 1)
        return jittered_backoff(self.failures + 1, 0.05, 5.0)

    def succeeded(self) -> None:
        if self.failures:
            self.failures = 0
            self.outage.recovered(self.what)


class _Worker:
    __slots__ = ("current", "started", "task", "timed_out")

    def __init__(self) -> None:
        self.current: Envelope | None = None
        self.started = 0.0
        self.timed_out = False
        self.task: asyncio.Task[None] | None = None


class Isolation:
    """Suspects run alone, app-wide.

    A suspect (a message whose earlier delivery never settled) may kill its process, and
    every message in flight when a process dies is delivered once more. So while a
    suspect is held, no handler of the app fetches or reclaims anything new; the suspect
    starts once everything else in flight has settled, and runs with nothing beside it.
    Its batch-mates gain at most one delivery (the death that made it a suspect) and
    are never dead-lettered on its account. Brokers hand out suspects one at a time.
    """

    __slots__ = ("held", "running", "runs")

    def __init__(self) -> None:
        self.runs: list[_HandlerRun] = []
        self.held = 0
        """Suspects admitted and not yet settled or released, over every handler."""
        self.running: Envelope | None = None
        """The suspect that runs now, until it is settled."""

    def may_start(self) -> bool:
        """Whether a held suspect may start: none runs, and nothing else is in flight."""
        return self.running is None and sum(len(r.inflight) for r in self.runs) == self.held

    def changed(self) -> None:
        """Wake every loop that waits on the gate: fetchers, reclaimers, and workers that
        hold a suspect."""
        for run in self.runs:
            run.wake_fetcher.set()
            run.wake_reclaimer.set()
            if run.suspects:
                run.work_ready.set()


class _HandlerRun:
    def __init__(
        self,
        handler: Handler[Any],
        consumer: Consumer,
        ctx: Context[Any],
        handler_token: CancellationToken,
        capabilities: Capabilities,
        config: RuntimeConfig,
        app_token: CancellationToken,
        isolation: Isolation,
        middleware: Sequence[Middleware] = (),
    ) -> None:
        self.app_token = app_token
        self.handler = handler
        self.consumer = consumer
        # Composed once: with no middleware these are handle and settle themselves.
        self.handle = chain_handle(handler.handle, middleware)
        self.settle = chain_settle(consumer.settle, ctx, middleware)
        self.ctx = ctx
        self.handler_token = handler_token
        self.caps = capabilities
        self.config = config
        self.isolation = isolation
        isolation.runs.append(self)
        self.policy = RetryPolicy(
            handler.MAX_DELIVERIES, handler.RETRY_BACKOFF_MS, handler.RETRY_BACKOFF_MAX_MS
        )
        floor = handler.WORKERS
        self.max_in_flight = handler.MAX_IN_FLIGHT or max(DEFAULT_MAX_IN_FLIGHT, floor)
        # MAX_IN_FLIGHT unset: a window between WORKERS and the default that follows what
        # the handler gets through (see adapt); set: exactly that bound. A slow handler
        # holds little beyond what runs: all that a killed process held is run again one
        # by one (suspects run alone), so what it held is what recovery costs.
        self.adaptive = handler.MAX_IN_FLIGHT is None
        self.floor = floor
        self.window = floor if self.adaptive else self.max_in_flight
        self.target = self.max_in_flight
        """The window the last measured rate asks for; doubling never goes past it."""
        self.dry = False
        """A worker found the queue empty since the last fetch: prefetch more."""
        self.rate_at = 0.0
        self.rate_handled = 0
        self.timeout = handler.TIMEOUT
        self.stats = HandlerStats(handler=handler.name)
        payload_type = handler.PAYLOAD_TYPE
        # Built once per handler, one per codec a message may say it uses; a bytes
        # handler has none and its messages go by untouched.
        self.decoders: dict[str, Decode] | None = (
            None
            if payload_type is bytes
            else {codec: decoder_for(payload_type, codec) for codec in CODECS}
        )
        self.queue: deque[Envelope] = deque()
        self.suspects: deque[Envelope] = deque()
        """Suspects admitted and not yet started; see Isolation."""
        self.held_suspects: set[Envelope] = set()
        """Suspects admitted and not yet settled, to give back to Isolation when they are."""
        # Fetched and not yet settled: what the MAX_IN_FLIGHT bound counts and what the
        # lease keeper extends (queued messages too, or a slow handler's backlog would
        # turn idle in the pending list and be stolen by a neighbour).
        self.inflight: set[Envelope] = set()
        self.to_settle: list[tuple[Envelope, Outcome]] = []
        self.workers = [_Worker() for _ in range(handler.WORKERS)]
        # One event per kind of waiter, named after what it waits for.
        self.work_ready = asyncio.Event()
        """Workers: the queue has messages (or a suspect may start, or shutdown began)."""
        self.settle_ready = asyncio.Event()
        """The settle loop: outcomes to apply (or the run is closing)."""
        self.wake_fetcher = asyncio.Event()
        """The fetch loop: slots were freed, the queue ran dry, a reclaim or a suspect
        finished, or the app stops."""
        self.wake_reclaimer = asyncio.Event()
        """The reclaim loop: slots were freed or a suspect finished."""
        self.reserved = 0
        """Slots a fetch under way may fill (it asked for that many)."""
        self.reclaim_due = False
        """A reclaim waits for free slots; the fetcher leaves them to it."""
        self.clock = config.clock
        self.outage = _Outage(handler.name, self.now)
        self.keepers_token = CancellationToken()
        """Fires when the lease keeper and the heartbeat must stop (everything settled)."""
        self.stopping = False
        self.settle_closed = False
        self.settle_given_up = False

    # -- admission ----------------------------------------------------------------

    def now(self) -> float:
        """The runtime's clock, in seconds."""
        return self.clock.now_ms() / 1000

    async def pause(self, token: CancellationToken, seconds: float) -> None:
        """Wait ``seconds`` on the runtime's clock, or until ``token`` fires."""
        if token.cancelled:
            return
        loop = asyncio.get_running_loop()
        woken = loop.create_future()
        waiter = loop.create_task(token.wait())
        waiter.add_done_callback(lambda _: wake(woken))
        try:
            await self.clock.sleep_until(self.clock.now_ms() + int(seconds * 1000), woken)
        finally:
            waiter.cancel()

    def free_slots(self) -> int:
        return self.max_in_flight - len(self.inflight) - self.reserved

    def slots_freed(self) -> None:
        self.wake_fetcher.set()
        self.wake_reclaimer.set()

    def adapt(self, now: float) -> None:
        """Size the prefetch window without MAX_IN_FLIGHT: double it when the workers ran
        out of work (a no-op handler reaches the default within a few round trips), and
        shrink it to PREFETCH_HORIZON of work at the measured rate, so a process does not
        hoard slow jobs that its neighbours could be running."""
        if self.dry:
            self.dry = False
            # Capped by the measured need: a slow handler's workers wait a round trip
            # for their next message rather than hoard. A fast one's target is far above
            # its window (about window * 50 ms / round trip), so it still ramps up.
            self.window = min(self.max_in_flight, self.window * 2, max(self.floor, self.target))
        elapsed = now - self.rate_at
        if elapsed >= _RATE_EVERY:
            handled = self.stats.handled
            self.target = int((handled - self.rate_handled) / elapsed * PREFETCH_HORIZON)
            self.window = max(self.floor, min(self.window, self.target))
            self.rate_at, self.rate_handled = now, handled

    def admit(self, envelopes: Sequence[Envelope]) -> None:
        if self.decoders is not None:
            envelopes = self.decode(envelopes)
        inflight, queue, policy = self.inflight, self.queue, self.policy
        for env in envelopes:
            inflight.add(env)
            if policy.exhausted(env.deliveries):
                # Delivered more often than allowed. A suspect's last run died with its
                # process, and running it again could kill this one too.
                limit = f"MAX_DELIVERIES={policy.max_deliveries}"
                reason = (
                    f"delivered {env.deliveries} times without being settled ({limit}); "
                    "the handler never finished: its process died or hung"
                    if env.suspect
                    else f"delivered {env.deliveries} times, more than {limit} allows "
                    "(the handler returned Retry on its last allowed delivery)"
                )
                self.to_settle.append((env, DeadLetter(reason)))
                self.settle_ready.set()
            elif env.suspect:
                self.suspects.append(env)
                self.held_suspects.add(env)
                self.isolation.held += 1
                self.stats.isolated += 1
                logger.info(
                    "handler %s: message %s of %s was delivered %d times and never settled; "
                    "running it alone",
                    self.handler.name,
                    env.message_id,
                    env.stream,
                    env.deliveries,
                )
                self.isolation.changed()
            else:
                queue.append(env)
        if queue:
            self.work_ready.set()

    def decode(self, envelopes: Sequence[Envelope]) -> list[Envelope]:
        """Decode each payload to the handler's type; what does not decode is
        dead-lettered at once with the decoder's reason, never run nor retried."""
        assert self.decoders is not None
        decodable = []
        for env in envelopes:
            decode = self.decoders.get(env.codec)
            try:
                if decode is None:
                    raise PayloadError(f"unknown codec {env.codec!r}")
                env._body = decode(env.payload)
            except PayloadError as exc:
                reason = f"PayloadError: {exc}"
                logger.error(
                    "handler %s: message %s of %s does not decode to %s: %s",
                    self.handler.name,
                    env.message_id,
                    env.stream,
                    getattr(self.handler.PAYLOAD_TYPE, "__name__", self.handler.PAYLOAD_TYPE),
                    exc,
                )
                self.stats.undecodable += 1
                self.inflight.add(env)
                self.to_settle.append((env, DeadLetter(reason)))
                self.settle_ready.set()
            else:
                decodable.append(env)
        return decodable

    async def fetch_loop(self) -> None:
        streak = _Streak("fetch", self.outage)
        token, queue, clock = self.app_token, self.queue, self.now
        isolation = self.isolation
        self.rate_at = clock()
        while not token.cancelled:
            if self.adaptive:
                self.adapt(clock())
            # At most half the window per fetch: one batch is read while the other is
            # handled and settled, so round trips overlap the work. And no dribble of a
            # slot or two while the workers still have a queue: a fetch waits for half
            # a window of free slots then, or for the queue to run dry.
            most = (self.window + 1) // 2
            free = min(self.free_slots(), self.window - len(self.inflight))
            if free <= 0 or self.reclaim_due or isolation.held or (free < most and queue):
                self.wake_fetcher.clear()
                await self.wake_fetcher.wait()
                continue
            want = min(free, most)
            self.reserved = want
            try:
                batch = await self.consumer.fetch(want, self.config.block_ms)
            except Exception as exc:
                await self.pause(self.app_token, streak.failed(exc))
                continue
            finally:
                self.reserved = 0
                self.wake_reclaimer.set()  # a reclaim waiting for these slots may take them
            streak.succeeded()
            if batch:
                self.stats.fetched += len(batch)
                self.admit(batch)
                # Let the woken workers start on it before the next fetch is built and
                # sent: at a low rate that is the publish-to-handle latency.
                await asyncio.sleep(0)

    async def reclaim_loop(self) -> None:
        streak = _Streak("reclaim", self.outage)
        interval = self.config.reclaim_interval_ms / 1000
        token = self.app_token
        more = False
        while not token.cancelled:
            if not more:
                await self.pause(token, interval)
            try:
                got = await self.reclaim_first()
            except Exception as exc:
                more = False
                await self.pause(token, streak.failed(exc))
                continue
            if got is None:
                return
            reclaimed, asked = got
            envelopes = reclaimed.envelopes
            # A full batch may leave more behind, and a suspect comes alone: keep going
            # at once while either is so.
            more = len(envelopes) + len(reclaimed.vanished) >= asked or any(
                env.suspect for env in envelopes
            )
            streak.succeeded()
            if reclaimed.vanished:
                self.stats.vanished += len(reclaimed.vanished)
                logger.warning(
                    "handler %s: %d pending messages had been deleted or trimmed from the "
                    "stream before they were handled: %s",
                    self.handler.name,
                    len(reclaimed.vanished),
                    ", ".join(reclaimed.vanished[:10]),
                )
            if envelopes:
                self.stats.reclaimed += len(envelopes)
                self.admit(envelopes)

    async def reclaim_first(self) -> tuple[Reclaimed, int] | None:
        """Reclaim into the next free slots, ahead of the fetcher: under a backlog it
        fills every slot the moment one frees, and a dead consumer's messages would wait
        for the whole backlog. Never while a suspect is held: a second one would be in
        flight beside it. None when the app stops meanwhile."""
        self.reclaim_due = True
        try:
            while True:
                if self.app_token.cancelled:
                    return None
                free = self.free_slots()
                if free > 0 and not self.isolation.held:
                    break
                self.wake_reclaimer.clear()
                await self.wake_reclaimer.wait()
            config = self.config
            min_idle = config.claim_idle_ms + self.outage.spare_ms(
                config.lease_interval_ms, config.claim_idle_ms
            )
            grace = self.outage.spare_ms(config.liveness_ms, config.liveness_ms)
            return await self.consumer.reclaim(min_idle, free, grace_ms=grace), free
        finally:
            self.reclaim_due = False
            self.wake_fetcher.set()

    # -- workers ------------------------------------------------------------------

    async def work(self, worker: _Worker) -> None:
        queue, handle, ctx = self.queue, self.handle, self.ctx
        to_settle, settle_ready, stats = self.to_settle, self.settle_ready, self.stats
        clock, timed = self.now, self.timeout is not None
        while True:
            if queue:
                env = queue.popleft()
            elif self.suspects and self.isolation.may_start():
                env = self.suspects.popleft()
                self.isolation.running = env
            else:
                if self.stopping:
                    return
                # Idle while a suspect runs alone says nothing of the window's size.
                self.dry = not self.isolation.held
                self.wake_fetcher.set()  # a fetcher waiting for the queue to run dry
                self.work_ready.clear()
                await self.work_ready.wait()
                continue
            worker.current = env
            if timed:
                worker.started = clock()
            try:
                result: object = await handle(ctx, env)
            except asyncio.CancelledError:
                if not worker.timed_out:
                    raise  # a forced shutdown: the message stays pending, never acked
                result = HandlerTimeout(
                    f"{self.handler.name} ran longer than TIMEOUT={self.timeout}s"
                )
            except Exception as exc:
                result = exc
            if worker.timed_out:
                worker.timed_out = False
                task = asyncio.current_task()
                if task is not None and task.uncancel() > 0:
                    raise asyncio.CancelledError  # a shutdown cancel arrived meanwhile
            worker.current = None
            stats.handled += 1
            # Outcome classes are @final, so an exact type test is a complete (and the
            # cheapest) isinstance check; anything else is a failure.
            if type(result) in _OUTCOMES:
                outcome = cast(Outcome, result)
            else:
                outcome = self.failure(env, result)
            to_settle.append((env, outcome))
            settle_ready.set()

    def failure(self, env: Envelope, result: object) -> Outcome:
        self.stats.failed += 1
        name = self.handler.name
        if isinstance(result, HandlerTimeout):
            self.stats.timed_out += 1
            reason = f"HandlerTimeout: {result}"
            logger.error(
                "handler %s timed out on message %s of %s (delivery %d)",
                name,
                env.message_id,
                env.stream,
                env.deliveries,
                extra=_about(name, env),
            )
        elif isinstance(result, BaseException):
            reason = f"{type(result).__name__}: {result}"
            logger.error(
                "handler %s raised on message %s of %s (delivery %d)",
                name,
                env.message_id,
                env.stream,
                env.deliveries,
                exc_info=result,
                extra=_about(name, env),
            )
        else:
            reason = (
                f"TypeError: {name}.handle returned {type(result).__name__}, "
                "not an Outcome (Ack, Retry, Drop or DeadLetter)"
            )
            logger.error(
                "handler %s returned %r for message %s of %s; expected an Outcome",
                name,
                result,
                env.message_id,
                env.stream,
                extra=_about(name, env),
            )
        return self.policy.on_failure(env.deliveries, reason)

    # -- settling -----------------------------------------------------------------

    async def settle_loop(self) -> None:
        streak = _Streak("settle", self.outage)
        while not self.settle_given_up:
            if not self.to_settle:
                if self.settle_closed:
                    return
                self.settle_ready.clear()
                await self.settle_ready.wait()
                continue
            # Copy and clear in place: workers hold a reference to this very list.
            batch = self.to_settle[:]
            self.to_settle.clear()
            try:
                await self.settle(batch)
            except Exception as exc:
                # A SettleError says which items failed and that the rest were applied;
                # anything else may have applied none, and settling again is harmless.
                failed = exc.failed if isinstance(exc, SettleError) else batch
                not_applied = {id(env) for env, _ in failed}
                self.record([item for item in batch if id(item[0]) not in not_applied])
                self.to_settle[:0] = failed
                await self.pause(self.keepers_token, streak.failed(exc))
            else:
                streak.succeeded()
                self.record(batch)

    def record(self, settled: Sequence[tuple[Envelope, Outcome]]) -> None:
        stats, inflight = self.stats, self.inflight
        acked = 0
        for env, outcome in settled:
            inflight.discard(env)
            # Ack is by far the most common outcome: count it in a local, the rest by name.
            if type(outcome) is Ack:
                acked += 1
            else:
                counter = _COUNTER[type(outcome)]
                setattr(stats, counter, getattr(stats, counter) + 1)
                if type(outcome) is DeadLetter:
                    self.dead_lettered(env, outcome)
        stats.acked += acked
        if self.held_suspects:
            self.settled_suspects([env for env, _ in settled if env in self.held_suspects])
        if settled:
            self.slots_freed()
            if self.isolation.held:  # a suspect anywhere in the app may start now
                self.isolation.changed()

    def dead_lettered(self, env: Envelope, outcome: DeadLetter) -> None:
        """One line per dead letter, logged once the broker has stored it: a line logged
        before could name a message that, its settle failing until shutdown, stays
        pending and is handled again."""
        name = self.handler.name
        logger.warning(
            "handler %s dead-lettered message %s of %s after %d deliveries: %s",
            name,
            env.message_id,
            env.stream,
            env.deliveries,
            outcome.reason or "(no reason given)",
            extra={**_about(name, env), "reason": outcome.reason},
        )

    def settled_suspects(self, envelopes: Sequence[Envelope]) -> None:
        """Give suspects that were settled or released back to Isolation."""
        if not envelopes:
            return
        self.held_suspects.difference_update(envelopes)
        isolation = self.isolation
        isolation.held -= len(envelopes)
        if isolation.running in envelopes:
            isolation.running = None
        isolation.changed()

    # -- leases and deadlines ----------------------------------------------------

    async def heartbeat_loop(self) -> None:
        """Say this consumer is alive, every third of ``liveness_ms``; warn when the
        event loop was blocked for so long that others may have counted it dead."""
        streak = _Streak("heartbeat", self.outage)
        ttl = self.config.liveness_ms
        every = ttl / 3000
        token = self.keepers_token
        while True:
            before = self.now()
            await self.pause(token, every)
            if token.cancelled:
                return
            late = self.now() - before - every
            if late * 1000 > ttl / 2:
                logger.warning(
                    "handler %s: the event loop was blocked for %.1fs; a consumer silent for "
                    "%.1fs counts as dead and its messages are taken over (a handler that "
                    "blocks should run its work in a thread: asyncio.to_thread)",
                    self.handler.name,
                    late,
                    ttl / 1000,
                )
            try:
                await self.consumer.heartbeat(ttl)
            except Exception as exc:
                await self.pause(token, min(every, streak.failed(exc)))
                continue
            streak.succeeded()

    async def lease_loop(self) -> None:
        streak = _Streak("lease extension", self.outage)
        # A server that redelivers by itself holds its own lease: renew within a third of it.
        lease_ms = self.caps.lease_ms
        lease_s = (max(1, lease_ms // 3) if lease_ms else self.config.lease_interval_ms) / 1000
        tick = min(lease_s, self.timeout / 4) if self.timeout else lease_s
        next_extend = self.now() + lease_s
        token = self.keepers_token
        while not token.cancelled:
            await self.pause(token, tick)
            now = self.now()
            if self.timeout:
                self.enforce_deadlines(now)
            if not self.inflight:
                streak.succeeded()  # nothing left to extend is nothing failing
                continue
            if now < next_extend or not self.caps.extend:
                continue
            try:
                await self.consumer.extend(list(self.inflight))
            except Exception as exc:
                next_extend = now + min(lease_s, streak.failed(exc))
                continue
            streak.succeeded()
            next_extend = now + lease_s

    def enforce_deadlines(self, now: float) -> None:
        assert self.timeout is not None
        deadline = now - self.timeout
        for worker in self.workers:
            if worker.current is not None and worker.started < deadline and not worker.timed_out:
                worker.timed_out = True
                if worker.task is not None:
                    worker.task.cancel()

    # -- the whole run ------------------------------------------------------------

    async def run(self) -> HandlerStats:
        app_token = self.app_token
        await self.ensure(app_token)
        if app_token.cancelled:
            await self.consumer.aclose()
            return self.stats
        tasks: list[asyncio.Task[None]] = []
        for worker in self.workers:
            worker.task = asyncio.create_task(self.work(worker))
            tasks.append(worker.task)
        settler = asyncio.create_task(self.settle_loop())
        keepers = [asyncio.create_task(self.lease_loop())]
        if self.caps.liveness:
            keepers.append(asyncio.create_task(self.heartbeat_loop()))
        fetcher = asyncio.create_task(self.fetch_loop())
        reclaimer = asyncio.create_task(self.reclaim_loop()) if self.caps.reclaim else None
        try:
            await app_token.wait()
        finally:
            await self.shutdown(fetcher, reclaimer, tasks, settler, keepers)
        return self.stats

    async def ensure(self, app_token: CancellationToken) -> None:
        """Create the group, and say this consumer is alive before it takes anything."""
        streak = _Streak("creating the consumer group", _Outage(self.handler.name, self.now))
        while not app_token.cancelled:
            try:
                await self.consumer.ensure()
                if self.caps.liveness:
                    await self.consumer.heartbeat(self.config.liveness_ms)
            except Exception as exc:
                await self.pause(app_token, streak.failed(exc))
                continue
            streak.succeeded()
            return

    async def shutdown(
        self,
        fetcher: asyncio.Task[None],
        reclaimer: asyncio.Task[None] | None,
        workers: list[asyncio.Task[None]],
        settler: asyncio.Task[None],
        keepers: list[asyncio.Task[None]],
    ) -> None:
        # Stop fetching and reclaiming. A fetch under way may already hold messages:
        # give it its block time to land them, so they are released rather than left
        # to go idle in the pending list.
        self.slots_freed()
        await _finish(fetcher, self.config.block_ms / 1000 + 0.1)
        if reclaimer is not None:
            await _finish(reclaimer, 0)
        await self.release_unstarted()
        self.handler_token.cancel()
        # Running handlers finish within the shutdown timeout; the rest stay pending.
        self.stopping = True
        self.work_ready.set()
        done, running = await asyncio.wait(workers, timeout=self.config.shutdown_timeout)
        if running:
            self.stats.abandoned += sum(1 for w in self.workers if w.current is not None)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                logger.error(
                    "worker of handler %s died", self.handler.name, exc_info=task.exception()
                )
        # Flush every settlement, giving a broker that is down a bounded time to return.
        self.settle_closed = True
        self.settle_ready.set()
        await _finish(settler, max(self.config.shutdown_timeout, 1.0))
        self.settle_given_up = True
        self.stats.unsettled += len(self.to_settle)
        # Leases and heartbeats go on until everything is settled: what is still
        # running must not be taken over before it is abandoned. They stop by a token,
        # not by a cancel: a cancel that lands inside a redis-py call can be swallowed
        # there (redis-py#2028), and the keeper would go on forever.
        self.keepers_token.cancel()
        for keeper in keepers:
            await _finish(keeper, _KEEPER_GRACE)
        try:
            await self.consumer.aclose()
        except Exception as exc:
            logger.warning("closing the consumer of handler %s failed: %r", self.handler.name, exc)

    async def release_unstarted(self) -> None:
        unstarted = [*self.queue, *self.suspects]
        self.queue.clear()
        self.suspects.clear()
        if not unstarted:
            return
        self.inflight.difference_update(unstarted)
        self.settled_suspects([env for env in unstarted if env in self.held_suspects])
        if not self.caps.release:
            self.stats.unsettled += len(unstarted)
            return
        try:
            await self.consumer.release(unstarted)
        except Exception as exc:
            # Still pending in our name: reclaimed once idle, or by our restart.
            logger.warning(
                "releasing %d unstarted messages of handler %s failed: %r",
                len(unstarted),
                self.handler.name,
                exc,
            )
            self.stats.unsettled += len(unstarted)
            return
        self.stats.released += len(unstarted)


def _about(handler: str, env: Envelope) -> dict[str, object]:
    """The fields of a log record about one message, for structured (JSON) logs."""
    return {
        "handler": handler,
        "stream": env.stream,
        "message_id": env.message_id,
        "deliveries": env.deliveries,
    }


async def _finish(task: asyncio.Task[None], grace: float) -> None:
    """Let a task end by itself within ``grace`` seconds, then cancel it.

    A cancel that lands inside a redis-py call can be swallowed there (redis-py#2028):
    a task that is not done a second after its cancel is left behind, with an error,
    rather than hanging the shutdown. Loops also stop by their own flags or tokens.
    """
    if grace > 0:
        await asyncio.wait([task], timeout=grace)
    if not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=_CANCEL_WAIT)
    if not task.done():
        logger.error("%s did not stop when cancelled; left behind", task.get_coro())
        return
    await asyncio.gather(task, return_exceptions=True)


async def run_handler(
    handler: Handler[Any],
    consumer: Consumer,
    ctx: Context[Any],
    handler_token: CancellationToken,
    capabilities: Capabilities,
    config: RuntimeConfig,
    app_token: CancellationToken,
    isolation: Isolation,
    middleware: Sequence[Middleware] = (),
) -> HandlerStats:
    """Run one handler until ``app_token`` fires, then shut it down; return its counters.

    ``isolation`` is shared by every handler of one app (suspects run alone app-wide).
    """
    run = _HandlerRun(
        handler,
        consumer,
        ctx,
        handler_token,
        capabilities,
        config,
        app_token,
        isolation,
        middleware,
    )
    return await run.run()
