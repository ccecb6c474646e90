"""Checked by mypy --strict (nox -s typecheck), never collected by pytest: typed messages."""

from dataclasses import dataclass
from typing import Any, TypedDict, assert_type

import msgspec

from pulses import Ack, App, Broker, Context, Envelope, Handler, Outcome, Stream
from pulses_memory import MemoryBroker, MemorySubscription
from pulses_redis import RedisBroker


class Signup(msgspec.Struct):
    email: str
    plan: str = "free"


@dataclass
class Refund:
    order: int


class Audit(TypedDict):
    who: str


signups = Stream("signups", Signup)
refunds = Stream("refunds", Refund, codec="msgpack")
audits = Stream("audits", Audit)
notes = Stream("notes", str)
assert_type(signups, Stream[Signup])
assert_type(audits.payload_type, type[Audit])


class OnSignup(Handler[MemoryBroker, Signup]):
    STREAM = signups

    async def handle(self, ctx: Context[MemoryBroker], msg: Envelope[Signup]) -> Outcome:
        assert_type(msg.body, Signup)
        assert_type(msg.payload, bytes)
        assert_type(msg.message_id, str)
        await refunds.publish(ctx.broker, Refund(order=1), key=msg.message_id)
        return Ack()


class OnNote(Handler[Broker[Any], str]):
    STREAMS = ("notes", "more-notes")

    async def handle(self, ctx: Context[Broker[Any]], msg: Envelope[str]) -> Outcome:
        assert_type(msg.body, str)
        return Ack()


class OnBytes(Handler[RedisBroker]):
    """Without a payload type a handler is a bytes handler, as before."""

    STREAMS = ("raw",)

    async def handle(self, ctx: Context[RedisBroker], msg: Envelope) -> Outcome:
        assert_type(msg.body, bytes)
        return Ack()


async def produce(memory: MemoryBroker, redis: RedisBroker) -> None:
    assert_type(await signups.publish(memory, Signup(email="a@example.com")), str)
    ids = await signups.publish_many(redis, [Signup(email="b@example.com")], keys=["b"])
    assert_type(ids, list[str])
    await audits.publish(memory, {"who": "ops"})
    await notes.publish(redis, "hello", delay_ms=100)


def wire(memory: MemoryBroker) -> App[MemoryBroker]:
    """Typed and bytes handlers register side by side."""
    return App(memory, MemorySubscription(group="g")).register(OnSignup(), OnNote())
