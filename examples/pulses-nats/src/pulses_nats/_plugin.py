"""Registers the ``nats`` URL scheme. Cheap to import: nats-py loads in the factory."""

from __future__ import annotations

from typing import Any

from pulses import Broker
from pulses.broker import Register, hookimpl


async def connect(url: str) -> Broker[Any]:
    """``nats://[user[:password]@]host[:port][?ack_wait_ms=N]``."""
    from pulses_nats._broker import NatsBroker  # nats-py loads here

    return await NatsBroker.connect(url)


@hookimpl
def register_brokers(register: Register) -> None:
    register("nats", connect)
