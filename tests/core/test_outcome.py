import dataclasses
import math

import pytest

from pulses import Ack, DeadLetter, Drop, Retry


def test_outcomes_are_frozen_values() -> None:
    assert Retry(5) == Retry(after_ms=5)
    assert Ack() == Ack()
    with pytest.raises(dataclasses.FrozenInstanceError):
        Retry(5).after_ms = 6  # type: ignore[misc]  # the point of the test


@pytest.mark.parametrize("bad", [-1, math.nan, math.inf, 1.5, True, False, "10", None])
def test_retry_rejects_a_delay_that_is_not_a_non_negative_int(bad: object) -> None:
    with pytest.raises((TypeError, ValueError), match=r"Retry\.after_ms"):
        Retry(after_ms=bad)  # type: ignore[arg-type]  # deliberately wrong


@pytest.mark.parametrize("kind", [Drop, DeadLetter])
def test_reasons_must_be_text(kind: type[Drop] | type[DeadLetter]) -> None:
    assert kind("why").reason == "why"
    with pytest.raises(TypeError, match=rf"{kind.__name__}\.reason"):
        kind(42)  # type: ignore[arg-type]  # deliberately wrong
