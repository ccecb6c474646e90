"""A worker module: ``cd examples && pulses worker tasks:app`` (``--url`` or
``PULSES_URL`` runs it on another broker)."""

from pulses import Ack, App, Context, Envelope, Handler, Outcome
from pulses_redis import RedisBroker

broker = RedisBroker.from_url("redis://127.0.0.1:6379/0")


class Greet(Handler[RedisBroker]):
    STREAMS = ("greetings",)

    async def handle(self, ctx: Context[RedisBroker], msg: Envelope) -> Outcome:
        ctx.logger.info("hello, %s", msg.payload.decode())
        return Ack()


app = App(broker, broker.subscription("greeters")).register(Greet())
