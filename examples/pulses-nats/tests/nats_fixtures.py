"""A pytest plugin for these tests (``pytest_plugins = ["nats_fixtures"]``; no conftest.py,
whose name the repository's tests/ has taken): one throwaway NATS server per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from nats_server import NatsServer, running_nats_server


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    yield from running_nats_server()
