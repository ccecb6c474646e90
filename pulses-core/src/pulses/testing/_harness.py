"""What the conformance suite needs from a broker beyond the Broker protocol itself."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from pulses._broker import Broker
from pulses._errors import Unsupported

__all__ = ["BrokerHarness"]


class BrokerHarness(ABC):
    """Implemented once per broker (memory, Redis, fakeredis, a third party's) so that
    ``pulses.testing.conformance.BrokerConformance`` can run every case against it.

    Only ``connect`` must be written. The rest have defaults for a broker on real time
    with nothing to clean up: ``advance`` sleeps, ``aclose`` does nothing, ``secret`` is
    None, and ``add_foreign`` and ``delete_entry`` are not available, so the cases that
    need them skip, naming the method. A harness on a Redis-like store that can write any
    flat field list also sets ``any_fields = True``::

        class AcmeHarness(BrokerHarness):
            name = "acme"

            def __init__(self, url: str) -> None:
                self.url = url

            async def connect(self) -> Broker[Any]:
                return await AcmeBroker.connect(self.url)

    The suite names its streams and groups uniquely per test (uuids), so a harness may
    share one server between tests. It closes every broker it gets from ``connect``,
    then the test's harness fixture calls ``aclose``.

    What the suite assumes of the broker, beyond its documented contract:

    - ``fetch(n, block_ms=0)`` returns at once with what is available now;
    - a delayed publish or retry that is due is fetchable by the next fetch, with no
      background task to wait for;
    - every time in the suite is short (hundreds of milliseconds), and time passes only
      through ``advance``: a broker on real time sleeps there, one on a manual clock
      moves the clock. A broker that declares ``Capabilities.lease_ms`` is connected
      with a short lease (a second or less), which the suite waits out.

    :ivar name: Shown in test ids and messages, e.g. ``"memory"`` or ``"redis-7.0"``.
    :ivar secret: A password the broker was connected with; the suite checks that it
        never appears in an error, a URL or a repr. None (the default) when the broker
        has none.
    :ivar any_fields: ``add_foreign`` can write any flat field list: repeated names,
        names and values that are not UTF-8 (a Redis stream entry can). False (the
        default) for a broker whose foreign messages are, say, a body and a header map:
        the suite then writes only entries that start with a ``payload`` field (the
        body, maybe empty), whose other fields have unique UTF-8 names and values.
    """

    name: str = "broker"
    secret: str | None = None
    any_fields: bool = False

    @abstractmethod
    async def connect(self) -> Broker[Any]:
        """A new broker handle; every handle of one test sees the same data."""

    async def advance(self, ms: int) -> None:
        """Let ``ms`` milliseconds pass in the broker's clock (move it, or sleep).

        A harness with a manual clock first lets the tasks that are ready run (so a
        fetch started just before blocks from the old time), then moves the clock.
        """
        await asyncio.sleep(ms / 1000)

    async def add_foreign(
        self, broker: Broker[Any], stream: str, fields: Sequence[tuple[bytes, bytes]]
    ) -> str:
        """Append an entry with exactly these raw fields, as a foreign producer would, and
        return its id. Not available by default: the foreign-entry cases skip."""
        raise Unsupported(f"{type(self).__name__} does not implement BrokerHarness.add_foreign")

    async def delete_entry(self, broker: Broker[Any], stream: str, entry_id: str) -> None:
        """Delete one stored entry behind the broker's back (XDEL), pending or not. Not
        available by default: the vanished-entry case skips."""
        raise Unsupported(f"{type(self).__name__} does not implement BrokerHarness.delete_entry")

    async def aclose(self) -> None:  # noqa: B027 - optional: holding nothing, it closes nothing
        """Release whatever the harness holds (servers, connections)."""
