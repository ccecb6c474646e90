"""An App on the Redis broker, end to end: every outcome, run until drained."""

from __future__ import annotations

import pytest

from pulses import Ack, App, Context, DeadLetter, Envelope, Handler, Outcome, Retry
from pulses.testing import run_until_drained
from pulses_redis import RedisBroker

pytestmark = pytest.mark.redis


async def test_an_app_on_redis_settles_every_outcome_and_drains(
    broker: RedisBroker, name: str
) -> None:
    stream = f"{name}:jobs"

    class Jobs(Handler[RedisBroker]):
        STREAMS = (stream,)
        WORKERS = 3
        RETRY_BACKOFF_MS = 20
        RETRY_BACKOFF_MAX_MS = 50

        async def handle(self, ctx: Context[RedisBroker], msg: Envelope) -> Outcome:
            if msg.payload == b"flaky" and msg.deliveries < 3:
                return Retry(after_ms=30)
            if msg.payload == b"poison":
                raise ValueError("cannot parse")
            if msg.payload == b"reject":
                return DeadLetter("rejected")
            return Ack()

    await broker.publish_many(stream, [b"ok"] * 20 + [b"flaky", b"poison", b"reject"])
    app = App(broker, broker.subscription("g"), block_ms=100).register(Jobs())
    stats = await run_until_drained(app, timeout=10)
    assert stats.total.acked == 21
    assert stats.total.dead_lettered == 2
    [group] = (await broker.stats(stream)).groups
    assert (group.acked, group.dead_lettered, group.pending, group.lag) == (21, 2, 0, 0)
    reasons = sorted(d.reason.split(":")[0] for d in await broker.dead_letters(stream))
    assert reasons == ["ValueError", "rejected"]
