"""The conformance suite that Pulses ships, on a real JetStream server.

The broker declares ``Capabilities.lease_ms`` (the consumers' ack wait), so the cases
that other brokers prove through ``reclaim`` wait for the server's own redelivery
instead; the ones about ``reclaim`` itself skip, naming the capability. The ack wait is
short here (LEASE_MS), so that the suite waits it out quickly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from nats_harness import NatsHarness
from nats_server import NatsServer

from pulses.testing.conformance import BrokerConformance

pytest_plugins = ["nats_fixtures"]

LEASE_MS = 1000
"""Long enough that a slow moment of a loaded machine does not redeliver what a case
still holds; short enough to wait out."""


class TestNatsBroker(BrokerConformance):
    @pytest_asyncio.fixture
    async def harness(self, nats_server: NatsServer) -> AsyncIterator[NatsHarness]:
        harness = NatsHarness(nats_server, f"?ack_wait_ms={LEASE_MS}")
        yield harness
        await harness.aclose()
