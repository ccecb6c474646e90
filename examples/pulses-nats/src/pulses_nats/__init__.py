"""Pulses on NATS JetStream: a broker plugin for the ``nats://`` scheme, written from the
public plugin API only (an example of a third-party broker)."""

from pulses_nats._broker import DEFAULT_ACK_WAIT_MS, NatsBroker, NatsSubscription, parse_nats_url
from pulses_nats._consumer import NatsConsumer

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_ACK_WAIT_MS",
    "NatsBroker",
    "NatsConsumer",
    "NatsSubscription",
    "parse_nats_url",
]
