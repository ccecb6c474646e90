"""The broker conformance suite, for broker authors (needs pytest and pytest-asyncio:
``pip install "pulses-core[conformance]"``).

Subclass ``BrokerConformance`` with a ``harness`` fixture (a ``pytest_asyncio.fixture``
yielding a ``BrokerHarness``), or run it on an installed broker with no code:
``pytest --pyargs pulses.testing.kit --pulses-url URL``.

>>> from pulses.testing.conformance import BrokerConformance, BrokerHarness  # doctest: +SKIP
"""

from pulses._public import claim as _claim
from pulses.testing._conformance import BrokerConformance
from pulses.testing._harness import BrokerHarness

__all__ = ["BrokerConformance", "BrokerHarness"]

_claim(__name__, globals())
