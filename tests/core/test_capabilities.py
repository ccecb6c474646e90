"""Capabilities.lease_ms: a positive int, and never beside reclaim."""

from __future__ import annotations

from typing import Any

import pytest

from pulses.broker import Capabilities


def test_a_lease_is_a_positive_int_of_a_broker_that_does_not_reclaim() -> None:
    assert Capabilities(lease_ms=30_000).lease_ms == 30_000
    assert Capabilities().lease_ms is None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lease_ms": 0}, ValueError, "lease_ms must be positive, got 0"),
        ({"lease_ms": -5}, ValueError, "lease_ms must be positive"),
        ({"lease_ms": 1.5}, TypeError, "lease_ms must be an int or None, got 1.5"),
        ({"lease_ms": True}, TypeError, "lease_ms must be an int or None"),
        ({"lease_ms": 1000, "reclaim": True}, ValueError, "declare reclaim=False"),
    ],
)
def test_a_bad_lease_is_refused_naming_the_field(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Capabilities(**kwargs)
