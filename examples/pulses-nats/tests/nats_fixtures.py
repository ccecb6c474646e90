"""A pytest plugin for these tests (``pytest_plugins = ["nats_fixtures"]``; no conftest.py,
whose name the repository's tests/ has taken): one throwaway NATS server per session, and
the suite's cases this broker cannot pass as written expected to fail, each with its
error and reason (see test_nats_conformance)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from nats_server import NatsServer, running_nats_server


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    yield from running_nats_server()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        assumed = getattr(item.cls, "SUITE_ASSUMES", {}).get(item.originalname)
        if assumed:
            raises, reason = assumed
            item.add_marker(pytest.mark.xfail(strict=True, raises=raises, reason=reason))
