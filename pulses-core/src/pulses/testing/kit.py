"""The conformance suite against a broker URL, with no code to write::

    pytest --pyargs pulses.testing.kit --pulses-url "acme://user:pw@localhost:7777"

The broker is found by its scheme (its plugin installed) and connected with
``pulses.connect``; time passes by sleeping, and the URL's password must appear in no
error, URL or repr. The cases that write or delete entries behind the broker's back
skip, saying so: for them, subclass ``BrokerConformance`` with a harness of your own.
Needs pytest and pytest-asyncio; runs in pytest-asyncio's strict and auto modes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import pytest_asyncio

from pulses import Broker, connect
from pulses.testing._conformance import BrokerConformance
from pulses.testing._harness import BrokerHarness

__all__ = ["TestBroker", "UrlHarness"]


class UrlHarness(BrokerHarness):
    """A harness that knows only a broker URL: every ``connect`` is ``pulses.connect``."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.url = url
        self.name = parts.scheme
        self.secret = unquote(parts.password) if parts.password else None

    async def connect(self) -> Broker[Any]:
        return await connect(self.url)


class TestBroker(BrokerConformance):
    """Every case, on the broker that ``--pulses-url`` names."""

    @pytest_asyncio.fixture
    async def harness(self, request: pytest.FixtureRequest) -> AsyncIterator[UrlHarness]:
        url = request.config.getoption("pulses_url", None)
        if not url:
            pytest.skip("no broker to test: pass --pulses-url URL")
        harness = UrlHarness(url)
        yield harness
        await harness.aclose()
