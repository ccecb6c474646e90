"""Misuse that mypy --strict must reject: each line marked ``# E: code`` is an error."""

import re
import textwrap
from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[2]

MISUSE = textwrap.dedent(
    """
    import msgspec

    from pulses import Ack, App, Context, Envelope, Handler, Outcome, Retry, Stream
    from pulses_memory import MemoryBroker, MemorySubscription
    from pulses_redis import RedisBroker, RedisSubscription


    class Signup(msgspec.Struct):
        email: str


    class Refund(msgspec.Struct):
        order: int


    signups = Stream("signups", Signup)
    refunds = Stream("refunds", Refund)


    class OnSignup(Handler[MemoryBroker, Signup]):
        STREAM = refunds  # E: assignment

        async def handle(self, ctx: Context[MemoryBroker], msg: Envelope[Signup]) -> Outcome:
            return Ack()


    class ReadsTheWrongType(Handler[MemoryBroker, Signup]):
        STREAM = signups

        async def handle(
            self, ctx: Context[MemoryBroker], msg: Envelope[Refund]  # E: override
        ) -> Outcome:
            return Ack()


    class ReturnsText(Handler[MemoryBroker]):
        STREAMS = ("a",)

        async def handle(self, ctx: Context[MemoryBroker], msg: Envelope) -> str:  # E: override
            return "done"


    class OnRedis(Handler[RedisBroker]):
        STREAMS = ("r",)

        async def handle(self, ctx: Context[RedisBroker], msg: Envelope) -> Outcome:
            return Ack()


    async def wiring(memory: MemoryBroker, redis: RedisBroker) -> None:
        App(redis, MemorySubscription(group="g"))  # E: misc
        App(memory, MemorySubscription(group="g")).register(OnRedis())  # E: arg-type
        Retry(after_ms="soon")  # E: arg-type
        await memory.publish("a", "text")  # E: arg-type
        await signups.publish(memory, Refund(order=1))  # E: arg-type
        await signups.publish_many(memory, [Signup(email="a"), "b"])  # E: list-item
    """
)


def test_mypy_rejects_each_misuse_and_nothing_else(tmp_path: Path) -> None:
    sample = tmp_path / "misuse.py"
    sample.write_text(MISUSE)
    stdout, _, _ = api.run(
        [
            "--strict",
            "--no-incremental",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / "cache"),
            str(sample),
        ]
    )
    found = {
        (int(m["line"]), m["code"])
        for m in re.finditer(r"misuse\.py:(?P<line>\d+): error: .*\[(?P<code>[\w-]+)\]", stdout)
    }
    expected = {
        (number, m["code"])
        for number, line in enumerate(MISUSE.splitlines(), start=1)
        if (m := re.search(r"# E: (?P<code>[\w-]+)", line))
    }
    assert found == expected, stdout
