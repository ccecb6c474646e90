"""Retention: the worker trims the streams it consumes, leaving a history.

Trimming follows the rule of ``pulses trim``: only entries that every consumer group
has acknowledged may go (nothing pending, nothing unread, no group at all: nothing), and
of those the newest ``keep`` entries, or those younger than ``keep_ms``, stay. It runs
in its own task, every ``interval_ms``, never on the path of a message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, final

from pulses._broker import Broker, StreamAdmin
from pulses._cancel import CancellationToken
from pulses._clock import Clock, wake
from pulses._errors import ConfigurationError, Unsupported

__all__ = [
    "DEFAULT_RETENTION",
    "Retention",
    "check_history",
    "keep_trimmed",
    "start_keeper",
    "stop_keeper",
]

logger = logging.getLogger("pulses.retention")

_STOP_GRACE = 5.0
"""Seconds a trim under way at shutdown may take to finish; it stops between streams."""


def check_history(keep: object, keep_ms: object) -> None:
    """Reject a bad history for ``StreamAdmin.trim``, naming the argument; shared by
    brokers so that every broker refuses the same things."""
    for name, value in (("keep", keep), ("keep_ms", keep_ms)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"{name} must be an int or None, got {value!r}")
        if isinstance(value, int) and value < 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    if keep is not None and keep_ms is not None:
        raise ValueError(
            f"give keep (a count, got {keep!r}) or keep_ms (an age, got {keep_ms!r}), not both"
        )


@final
@dataclass(frozen=True, slots=True)
class Retention:
    """How much acknowledged history a worker leaves in each stream it consumes.

    ``Retention(keep=1000)``: the newest 1000 entries stay; ``Retention(keep_ms=
    86_400_000)``: entries younger than a day stay; ``Retention()``: nothing that every
    group has acknowledged stays. Entries some group has not acknowledged always stay.
    Each stream is trimmed when the app starts, then every ``interval_ms``.

    :ivar keep: How many of the newest entries stay; None: no count.
    :ivar keep_ms: How old, in milliseconds, an entry may be and stay; None: no age.
        Give one of ``keep`` and ``keep_ms``, or neither.
    :ivar interval_ms: Milliseconds between two trims of a stream by one app.
    """

    keep: int | None = None
    keep_ms: int | None = None
    interval_ms: int = 10_000

    def __post_init__(self) -> None:
        try:
            check_history(self.keep, self.keep_ms)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"Retention: {exc}") from None
        every: object = self.interval_ms
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigurationError(f"Retention.interval_ms must be an int >= 1, got {every!r}")

    def __str__(self) -> str:
        if self.keep is not None:
            return f"keep the newest {self.keep} entries"
        if self.keep_ms is not None:
            return f"keep {self.keep_ms} ms of entries"
        return "keep no acknowledged entry"


DEFAULT_RETENTION = Retention(keep=1000)
"""What ``App`` trims to unless told otherwise. A count, not an age: memory stays
bounded (1000 times the entry size per stream) however fast messages come, while an age
lets a busy stream hold a day of traffic. A new group created later from the start of
the stream replays at most these 1000 old entries, plus whatever another group has not
acknowledged yet."""


def start_keeper(
    broker: Broker[Any],
    streams: Sequence[str],
    retention: Retention | None,
    clock: Clock,
    token: CancellationToken,
) -> asyncio.Task[None] | None:
    """The task that keeps ``streams`` trimmed, or None: retention off, or a broker that
    cannot trim (no admin facet)."""
    if retention is None:
        return None
    if not (broker.capabilities.admin and isinstance(broker, StreamAdmin)):
        logger.info("retention: the broker cannot trim streams (it has no admin facet)")
        return None
    return asyncio.create_task(keep_trimmed(broker, streams, retention, clock, token))


async def stop_keeper(keeper: asyncio.Task[None] | None) -> None:
    """Wait for a trim under way to end (its token has fired), then cancel the keeper."""
    if keeper is None:
        return
    await asyncio.wait([keeper], timeout=_STOP_GRACE)
    if keeper.done():
        if not keeper.cancelled() and (exc := keeper.exception()) is not None:
            logger.error("retention: the keeper failed", exc_info=exc)
        return
    keeper.cancel()
    # A cancel that lands inside a redis-py call can be swallowed there (redis-py#2028):
    # a keeper still running a second later is left behind rather than hanging the stop.
    await asyncio.wait([keeper], timeout=1.0)
    if not keeper.done():
        logger.error("retention: the trim under way did not stop when cancelled; left behind")


async def keep_trimmed(
    admin: StreamAdmin,
    streams: Sequence[str],
    retention: Retention,
    clock: Clock,
    token: CancellationToken,
) -> None:
    """Trim ``streams`` now and every ``retention.interval_ms`` until ``token`` fires.

    Several workers doing this on one stream is harmless: each trim recomputes what the
    groups still need, atomically with removing what they do not.
    """
    todo = list(streams)
    failing: set[str] = set()
    logger.info(
        "retention on %s: %s, trimmed every %gs",
        ", ".join(todo),
        retention,
        retention.interval_ms / 1000,
    )
    while todo:
        for stream in list(todo):
            if token.cancelled:
                return
            try:
                removed = await admin.trim(stream, keep=retention.keep, keep_ms=retention.keep_ms)
            except Unsupported as exc:
                logger.warning("retention: stream %s is not trimmed: %s", stream, exc)
                todo.remove(stream)
                continue
            except Exception as exc:
                if stream not in failing:
                    logger.warning(
                        "retention: trimming stream %s failed, trying again every %gs: %s: %s",
                        stream,
                        retention.interval_ms / 1000,
                        type(exc).__name__,
                        exc,
                    )
                failing.add(stream)
                continue
            if stream in failing:
                failing.discard(stream)
                logger.info("retention: trimming stream %s works again", stream)
            if removed:
                logger.debug("retention: removed %d entries of stream %s", removed, stream)
        await _pause(clock, token, retention.interval_ms)


async def _pause(clock: Clock, token: CancellationToken, ms: int) -> None:
    loop = asyncio.get_running_loop()
    woken = loop.create_future()
    waiter = loop.create_task(token.wait())
    waiter.add_done_callback(lambda _: wake(woken))
    try:
        await clock.sleep_until(clock.now_ms() + ms, woken)
    finally:
        waiter.cancel()
