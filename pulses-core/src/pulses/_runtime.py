"""The per-handler loop: fetch, dispatch, settle, extend, reclaim, and a clean shutdown.

One fetch loop, ``WORKERS`` fixed worker tasks fed from a local deque, one settle
batcher, one lease keeper (which also enforces TIMEOUT) and one reclaim loop per handler.
Nothing on the per-message path creates a task, takes a lock or logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from pulses._broker import Capabilities, Consumer, Reclaimed
from pulses._cancel import CancellationToken
from pulses._envelope import Envelope
from pulses._errors import SettleError
from pulses._handler import Context, Handler
from pulses._outcome import Ack, DeadLetter, Drop, Outcome, Retry
from pulses._policy import RetryPolicy
from pulses._stats import HandlerStats

__all__ = ["RuntimeConfig", "run_handler"]

logger = logging.getLogger("pulses.runtime")

_OUTCOMES = frozenset({Ack, Retry, Drop, DeadLetter})

DEFAULT_MAX_IN_FLIGHT = 1000
"""The bound when a handler sets no MAX_IN_FLIGHT: fetches of up to 500, which is where
a no-op handler reaches the raw loop's speed (docs/performance.md has the figures)."""
PREFETCH_HORIZON = 0.05
"""Seconds of work, at the handler's measured rate, that a default window holds."""
_RATE_EVERY = 0.1
_COUNTER = {Ack: "acked", Retry: "retried", Drop: "dropped", DeadLetter: "dead_lettered"}


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """Timings shared by every handler of an app; all in milliseconds but the shutdown."""

    block_ms: int
    claim_idle_ms: int
    lease_interval_ms: int
    reclaim_interval_ms: int
    shutdown_timeout: float


class _Outage:
    """Broker trouble seen by any loop of one handler. While calls fail, the owners'
    lease renewals fail too: reclaim then spares what went idle during the outage, until
    the owners have had a claim_idle to renew, instead of stealing from live workers."""

    __slots__ = ("margin_ms", "since", "spare", "until", "window")

    def __init__(self, margin_ms: int, window_s: float) -> None:
        self.margin_ms = margin_ms
        self.window = window_s
        self.since: float | None = None
        self.spare = 0
        self.until = 0.0

    def failed(self) -> None:
        if self.since is None:
            self.since = time.monotonic()

    def recovered(self) -> None:
        if self.since is not None:
            now = time.monotonic()
            self.spare = int((now - self.since) * 1000) + self.margin_ms
            self.until, self.since = now + self.window, None

    def spare_ms(self) -> int:
        now = time.monotonic()
        if self.since is not None:
            return int((now - self.since) * 1000) + self.margin_ms
        return self.spare if now < self.until else 0


class _Streak:
    """Backoff for a loop whose broker calls fail: jittered, capped, logged once per streak."""

    __slots__ = ("failures", "outage", "what")

    def __init__(self, what: str, outage: _Outage | None = None) -> None:
        self.what = what
        self.failures = 0
        self.outage = outage

    def failed(self, exc: BaseException) -> float:
        self.failures += 1
        if self.outage is not None:
            self.outage.failed()
        if self.failures == 1:
            logger.warning(
                "%s failed, retrying with backoff: %s: %s", self.what, type(exc).__name__, exc
            )
        else:
            logger.debug("%s failed again (%d in a row): %r", self.what, self.failures, exc)
        return random.uniform(0, min(5.0, 0.05 * 2 ** min(self.failures, 10)))

    def succeeded(self) -> None:
        if self.failures:
            if self.outage is not None:
                self.outage.recovered()
            logger.warning("%s recovered after %d failed attempts", self.what, self.failures)
            self.failures = 0


class _Worker:
    __slots__ = ("current", "started", "task", "timed_out")

    def __init__(self) -> None:
        self.current: Envelope | None = None
        self.started = 0.0
        self.timed_out = False
        self.task: asyncio.Task[None] | None = None


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
    ) -> None:
        self.app_token = app_token
        self.handler = handler
        self.consumer = consumer
        self.ctx = ctx
        self.handler_token = handler_token
        self.caps = capabilities
        self.config = config
        self.policy = RetryPolicy(
            handler.MAX_DELIVERIES, handler.RETRY_BACKOFF_MS, handler.RETRY_BACKOFF_MAX_MS
        )
        floor = 2 * handler.WORKERS
        self.max_in_flight = handler.MAX_IN_FLIGHT or max(DEFAULT_MAX_IN_FLIGHT, floor)
        # MAX_IN_FLIGHT unset: a window between 2 * WORKERS and the default that follows
        # what the handler gets through (see adapt); set: exactly that bound.
        self.adaptive = handler.MAX_IN_FLIGHT is None
        self.floor = floor
        self.window = floor if self.adaptive else self.max_in_flight
        self.dry = False
        """A worker found the queue empty since the last fetch: prefetch more."""
        self.rate_at = 0.0
        self.rate_handled = 0
        self.timeout = handler.TIMEOUT
        self.stats = HandlerStats(handler=handler.name)
        self.queue: deque[Envelope] = deque()
        # Fetched and not yet settled: what the MAX_IN_FLIGHT bound counts and what the
        # lease keeper extends (queued messages too, or a slow handler's backlog would
        # turn idle in the pending list and be stolen by a neighbour).
        self.inflight: set[Envelope] = set()
        self.to_settle: list[tuple[Envelope, Outcome]] = []
        self.workers = [_Worker() for _ in range(handler.WORKERS)]
        self.has_work = asyncio.Event()
        self.has_settlements = asyncio.Event()
        self.has_space = asyncio.Event()
        self.reserved = 0
        """Slots a fetch under way may fill (it asked for that many)."""
        self.reclaim_due = False
        """A reclaim waits for free slots; the fetcher leaves them to it."""
        self.outage = _Outage(config.lease_interval_ms, config.claim_idle_ms / 1000)
        self.stopping = False
        self.settle_closed = False

    # -- admission ----------------------------------------------------------------

    def free_slots(self) -> int:
        return self.max_in_flight - len(self.inflight) - self.reserved

    def adapt(self, now: float) -> None:
        """Size the prefetch window without MAX_IN_FLIGHT: double it when the workers ran
        out of work (a no-op handler reaches the default within a few round trips), and
        shrink it to PREFETCH_HORIZON of work at the measured rate, so a process does not
        hoard slow jobs that its neighbours could be running."""
        if self.dry:
            self.dry = False
            self.window = min(self.max_in_flight, self.window * 2)
        elapsed = now - self.rate_at
        if elapsed >= _RATE_EVERY:
            handled = self.stats.handled
            target = int((handled - self.rate_handled) / elapsed * PREFETCH_HORIZON)
            self.window = max(self.floor, min(self.window, target))
            self.rate_at, self.rate_handled = now, handled

    def admit(self, envelopes: Sequence[Envelope]) -> None:
        inflight, queue, policy = self.inflight, self.queue, self.policy
        for env in envelopes:
            inflight.add(env)
            if policy.exhausted(env.deliveries):
                # Delivered more often than allowed and never settled: its runs died with
                # their process. Running it again could kill this one too.
                self.to_settle.append(
                    (
                        env,
                        DeadLetter(
                            f"delivered {env.deliveries} times without being settled "
                            f"(MAX_DELIVERIES={policy.max_deliveries}); the handler never finished"
                        ),
                    )
                )
                self.has_settlements.set()
            else:
                queue.append(env)
        if queue:
            self.has_work.set()

    async def fetch_loop(self) -> None:
        streak = _Streak(f"fetch for handler {self.handler.name}", self.outage)
        token, queue, clock = self.app_token, self.queue, time.monotonic
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
            if free <= 0 or self.reclaim_due or (free < most and queue):
                self.has_space.clear()
                await self.has_space.wait()
                continue
            want = min(free, most)
            self.reserved = want
            try:
                batch = await self.consumer.fetch(want, self.config.block_ms)
            except Exception as exc:
                await _pause(self.app_token, streak.failed(exc))
                continue
            finally:
                self.reserved = 0
                self.has_space.set()  # a reclaim waiting for these slots may take them
            streak.succeeded()
            if batch:
                self.stats.fetched += len(batch)
                self.admit(batch)
                # Let the woken workers start on it before the next fetch is built and
                # sent: at a low rate that is the publish-to-handle latency.
                await asyncio.sleep(0)

    async def reclaim_loop(self) -> None:
        streak = _Streak(f"reclaim for handler {self.handler.name}", self.outage)
        interval = self.config.reclaim_interval_ms / 1000
        token = self.app_token
        more = False
        while not token.cancelled:
            if not more:
                await _pause(token, interval)
            try:
                got = await self.reclaim_first()
            except Exception as exc:
                more = False
                await _pause(token, streak.failed(exc))
                continue
            if got is None:
                return
            reclaimed, asked = got
            # A full batch may leave more behind: keep going first while it does.
            more = len(reclaimed.envelopes) + len(reclaimed.vanished) >= asked
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
            if reclaimed.envelopes:
                self.stats.reclaimed += len(reclaimed.envelopes)
                self.admit(reclaimed.envelopes)

    async def reclaim_first(self) -> tuple[Reclaimed, int] | None:
        """Reclaim into the next free slots, ahead of the fetcher: under a backlog it
        fills every slot the moment one frees, and a dead consumer's messages would wait
        for the whole backlog. None when the app stops meanwhile."""
        self.reclaim_due = True
        try:
            while True:
                if self.app_token.cancelled:
                    return None
                free = self.free_slots()
                if free > 0:
                    break
                self.has_space.clear()
                await self.has_space.wait()
            min_idle = self.config.claim_idle_ms + self.outage.spare_ms()
            return await self.consumer.reclaim(min_idle, free), free
        finally:
            self.reclaim_due = False
            self.has_space.set()

    # -- workers ------------------------------------------------------------------

    async def work(self, worker: _Worker) -> None:
        queue, handle, ctx = self.queue, self.handler.handle, self.ctx
        to_settle, has_settlements, stats = self.to_settle, self.has_settlements, self.stats
        clock, timed = time.monotonic, self.timeout is not None
        while True:
            if not queue:
                if self.stopping:
                    return
                self.dry = True
                self.has_space.set()  # a fetcher waiting for the queue to run dry
                self.has_work.clear()
                await self.has_work.wait()
                continue
            env = queue.popleft()
            worker.current = env
            if timed:
                worker.started = clock()
            try:
                result: object = await handle(ctx, env)
            except asyncio.CancelledError:
                if not worker.timed_out:
                    raise  # a forced shutdown: the message stays pending, never acked
                result = _TimedOut
            except Exception as exc:
                result = exc
            if worker.timed_out:
                worker.timed_out = False
                task = asyncio.current_task()
                if task is not None and task.uncancel() > 0:
                    raise asyncio.CancelledError  # a shutdown cancel arrived meanwhile
            worker.current = None
            stats.handled += 1
            if type(result) in _OUTCOMES:
                outcome = cast(Outcome, result)
            else:
                outcome = self.failure(env, result)
            to_settle.append((env, outcome))
            has_settlements.set()

    def failure(self, env: Envelope, result: object) -> Outcome:
        self.stats.failed += 1
        name = self.handler.name
        if result is _TimedOut:
            self.stats.timed_out += 1
            reason = f"HandlerTimeout: {name} ran longer than TIMEOUT={self.timeout}s"
            logger.error(
                "handler %s timed out on message %s of %s (delivery %d)",
                name,
                env.id,
                env.stream,
                env.deliveries,
            )
        elif isinstance(result, BaseException):
            reason = f"{type(result).__name__}: {result}"
            logger.error(
                "handler %s raised on message %s of %s (delivery %d)",
                name,
                env.id,
                env.stream,
                env.deliveries,
                exc_info=result,
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
                env.id,
                env.stream,
            )
        return self.policy.on_failure(env.deliveries, reason)

    # -- settling -----------------------------------------------------------------

    async def settle_loop(self) -> None:
        streak = _Streak(f"settle for handler {self.handler.name}", self.outage)
        while True:
            if not self.to_settle:
                if self.settle_closed:
                    return
                self.has_settlements.clear()
                await self.has_settlements.wait()
                continue
            # Copy and clear in place: workers hold a reference to this very list.
            batch = self.to_settle[:]
            self.to_settle.clear()
            try:
                await self.consumer.settle(batch)
            except Exception as exc:
                # A SettleError says which items failed and that the rest were applied;
                # anything else may have applied none, and settling again is harmless.
                failed = exc.failed if isinstance(exc, SettleError) else batch
                not_applied = {id(env) for env, _ in failed}
                self.record([item for item in batch if id(item[0]) not in not_applied])
                self.to_settle[:0] = failed
                await asyncio.sleep(streak.failed(exc))
            else:
                streak.succeeded()
                self.record(batch)

    def record(self, settled: Sequence[tuple[Envelope, Outcome]]) -> None:
        stats, inflight = self.stats, self.inflight
        acked = 0
        for env, outcome in settled:
            inflight.discard(env)
            if type(outcome) is Ack:
                acked += 1
            else:
                counter = _COUNTER[type(outcome)]
                setattr(stats, counter, getattr(stats, counter) + 1)
        stats.acked += acked
        if settled:
            self.has_space.set()

    # -- leases and deadlines ----------------------------------------------------

    async def lease_loop(self) -> None:
        streak = _Streak(f"lease extension for handler {self.handler.name}", self.outage)
        lease_s = self.config.lease_interval_ms / 1000
        tick = min(lease_s, self.timeout / 4) if self.timeout else lease_s
        next_extend = time.monotonic() + lease_s
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if self.timeout:
                self.enforce_deadlines(now)
            if now < next_extend or not self.caps.extend or not self.inflight:
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
        leaser = asyncio.create_task(self.lease_loop())
        fetcher = asyncio.create_task(self.fetch_loop())
        reclaimer = asyncio.create_task(self.reclaim_loop()) if self.caps.reclaim else None
        try:
            await app_token.wait()
        finally:
            await self.shutdown(fetcher, reclaimer, tasks, settler, leaser)
        return self.stats

    async def ensure(self, app_token: CancellationToken) -> None:
        streak = _Streak(f"creating the consumer group for handler {self.handler.name}")
        while not app_token.cancelled:
            try:
                await self.consumer.ensure()
            except Exception as exc:
                await _pause(app_token, streak.failed(exc))
                continue
            streak.succeeded()
            return

    async def shutdown(
        self,
        fetcher: asyncio.Task[None],
        reclaimer: asyncio.Task[None] | None,
        workers: list[asyncio.Task[None]],
        settler: asyncio.Task[None],
        leaser: asyncio.Task[None],
    ) -> None:
        # Stop fetching and reclaiming. A fetch under way may already hold messages:
        # give it its block time to land them, so they are released rather than left
        # to go idle in the pending list.
        self.has_space.set()
        await _finish(fetcher, self.config.block_ms / 1000 + 0.1)
        if reclaimer is not None:
            await _finish(reclaimer, 0)
        await self.release_unstarted()
        self.handler_token.cancel()
        # Running handlers finish within the shutdown timeout; the rest stay pending.
        self.stopping = True
        self.has_work.set()
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
        self.has_settlements.set()
        await _finish(settler, max(self.config.shutdown_timeout, 1.0))
        self.stats.unsettled += len(self.to_settle)
        await _finish(leaser, 0)
        try:
            await self.consumer.aclose()
        except Exception as exc:
            logger.warning("closing the consumer of handler %s failed: %r", self.handler.name, exc)

    async def release_unstarted(self) -> None:
        unstarted = list(self.queue)
        self.queue.clear()
        if not unstarted:
            return
        self.inflight.difference_update(unstarted)
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


class _TimedOut:
    """Marks a handler call that the lease keeper cancelled for running past TIMEOUT."""


async def _finish(task: asyncio.Task[None], grace: float) -> None:
    """Let a task end by itself within ``grace`` seconds, then cancel it."""
    if grace > 0:
        await asyncio.wait([task], timeout=grace)
    if not task.done():
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _pause(token: CancellationToken, seconds: float) -> None:
    """Sleep, but wake at once when the token fires."""
    if token.cancelled:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(token.wait(), seconds)


async def run_handler(
    handler: Handler[Any],
    consumer: Consumer,
    ctx: Context[Any],
    handler_token: CancellationToken,
    capabilities: Capabilities,
    config: RuntimeConfig,
    app_token: CancellationToken,
) -> HandlerStats:
    """Run one handler until ``app_token`` fires, then shut it down; return its counters."""
    run = _HandlerRun(handler, consumer, ctx, handler_token, capabilities, config, app_token)
    return await run.run()
