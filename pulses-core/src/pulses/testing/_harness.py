"""What the conformance suite needs from a broker beyond the Broker protocol itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from pulses._broker import Broker

__all__ = ["BrokerHarness"]


class BrokerHarness(Protocol):
    """Implemented once per broker (memory, Redis, fakeredis, a third party's).

    The suite names its streams and groups uniquely per test, so a harness may share
    one server between tests.
    """

    name: str

    async def connect(self) -> Broker[Any]:
        """A new broker handle; every handle of one test sees the same data."""
        ...

    async def advance(self, ms: int) -> None:
        """Let ``ms`` milliseconds pass in the broker's clock (move it, or sleep)."""
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
