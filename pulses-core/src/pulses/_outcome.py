"""What a handler says happened to a message: returned as a value, never raised."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias, final

__all__ = ["Ack", "DeadLetter", "Drop", "Outcome", "Retry"]


@final
@dataclass(frozen=True, slots=True)
class Ack:
    """The message was handled; it is never delivered to this group again."""


@final
@dataclass(frozen=True, slots=True)
class Retry:
    """Deliver the same payload and headers again, no sooner than ``after_ms`` from now.

    >>> Retry(after_ms=500)
    Retry(after_ms=500)
    """

    after_ms: int = 0

    def __post_init__(self) -> None:
        # bool is an int subclass and NaN compares false to everything: both would
        # slip through a plain "< 0" check, so the type is checked first.
        value = self.after_ms
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(
                f"Retry.after_ms must be a non-negative int of milliseconds, got {value!r}"
            )
        if value < 0:
            raise ValueError(f"Retry.after_ms must be a non-negative int, got {value}")


def _check_reason(kind: str, reason: object) -> None:
    if not isinstance(reason, str):
        raise TypeError(f"{kind}.reason must be a str, got {type(reason).__name__}")


@final
@dataclass(frozen=True, slots=True)
class Drop:
    """Discard the message on purpose; it is acknowledged and counted as dropped."""

    reason: str = ""

    def __post_init__(self) -> None:
        _check_reason("Drop", self.reason)


@final
@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Move the message to its stream's dead-letter list, with the reason, for later replay."""

    reason: str = ""

    def __post_init__(self) -> None:
        _check_reason("DeadLetter", self.reason)


Outcome: TypeAlias = Ack | Retry | Drop | DeadLetter
"""Every way a message can be settled; ``match`` over it with ``assert_never`` is exhaustive."""
