"""The pytest plugin of Pulses, registered through the ``pytest11`` entry point ``pulses``.

Fixtures for handler tests:

- ``memory_broker``: a fresh ``MemoryBroker`` with data of its own (``pip install
  pulses-memory``), on a clock that stands still until ``drain`` moves it;
- ``drain``: ``stats = await drain(app)`` runs ``app`` until its work is done, then
  stops it and returns its counters (see ``Drain``).

And for broker authors, the option ``--pulses-url URL``: the broker that ``pytest
--pyargs pulses.testing.kit`` runs the conformance suite against.

A coroutine test that uses either fixture runs in an event loop of its own, so it needs
neither pytest-asyncio nor anyio; where one of them runs a test already (``asyncio_mode
= "auto"``, an ``asyncio`` or ``anyio`` mark), that one runs it. This module is imported
by every pytest run where pulses-core is installed: it imports nothing more until a test
asks for one of its fixtures.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING

import pytest

from pulses.testing._draining import Drain

if TYPE_CHECKING:
    from pulses_memory import MemoryBroker

__all__ = ["drain", "memory_broker", "pytest_addoption", "pytest_pyfunc_call"]

_FIXTURES = frozenset({"memory_broker", "drain"})


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("pulses").addoption(
        "--pulses-url",
        dest="pulses_url",
        metavar="URL",
        help="the broker that 'pytest --pyargs pulses.testing.kit' runs the conformance "
        "suite against (its plugin installed)",
    )


@pytest.fixture
def memory_broker() -> MemoryBroker:
    """A ``MemoryBroker`` with data of its own, on a ``ManualClock``."""
    try:
        from pulses_memory import ManualClock, MemoryBroker
    except ImportError:
        pytest.fail(
            "the memory_broker fixture needs the memory broker: pip install pulses-memory",
            pytrace=False,
        )
    return MemoryBroker(clock=ManualClock())


@pytest.fixture
def drain() -> Drain:
    """``stats = await drain(app)``: run ``app`` until its work is done; see ``Drain``."""
    return Drain()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run a coroutine test that uses our fixtures when no other plugin runs it."""
    test = pyfuncitem.obj
    # pytest-asyncio replaces the coroutine function of a test it runs with a plain one;
    # anyio runs the tests that have its backend fixture.
    if (
        not inspect.iscoroutinefunction(test)
        or not _FIXTURES.intersection(pyfuncitem.fixturenames)
        or "anyio_backend" in pyfuncitem.fixturenames
    ):
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in inspect.signature(test).parameters}
    asyncio.run(test(**arguments))
    return True
