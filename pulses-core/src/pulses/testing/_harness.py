"""What the conformance suite needs from a broker beyond the Broker protocol itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from pulses._broker import Broker

__all__ = ["BrokerHarness"]


class BrokerHarness(Protocol):
    """Implemented once per broker (memory, Redis, fakeredis, a third party's) so that
    ``pulses.testing.conformance.BrokerConformance`` can run every case against it.

    The suite names its streams and groups uniquely per test (uuids), so a harness may
    share one server between tests. It closes every broker it gets from ``connect``,
    then the test's harness fixture calls ``aclose``.

    What the suite assumes of the broker, beyond ``CONFORMANCE.md``:

    - ``fetch(n, block_ms=0)`` returns at once with what is available now;
    - a delayed publish or retry that is due is fetchable by the next fetch, with no
      background task to wait for;
    - every time in the suite is short (hundreds of milliseconds), and time passes only
      through ``advance``: a broker on real time sleeps there, one on a manual clock
      moves the clock.
    """

    name: str
    """Shown in test ids and messages, e.g. ``"memory"`` or ``"redis-7.0"``."""

    secret: str | None
    """A password the broker was connected with; it must never appear in an error, a
    URL or a repr. None when the broker has none."""

    async def connect(self) -> Broker[Any]:
        """A new broker handle; every handle of one test sees the same data."""
        ...

    async def advance(self, ms: int) -> None:
        """Let ``ms`` milliseconds pass in the broker's clock (move it, or sleep).

        A harness with a manual clock first lets the tasks that are ready run (so a
        fetch started just before blocks from the old time), then moves the clock.
        """
        ...

    async def add_foreign(
        self, broker: Broker[Any], stream: str, fields: Sequence[tuple[bytes, bytes]]
    ) -> str:
        """Append an entry with exactly these raw fields, as a foreign producer would."""
        ...

    async def delete_entry(self, broker: Broker[Any], stream: str, entry_id: str) -> None:
        """Delete one stored entry behind the broker's back (XDEL), pending or not."""
        ...

    async def aclose(self) -> None:
        """Release whatever the harness holds (servers, connections)."""
        ...
