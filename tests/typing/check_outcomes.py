"""Checked by mypy --strict (nox -s typecheck), never collected by pytest."""

from typing import assert_never, assert_type

from pulses import Ack, DeadLetter, Drop, Outcome, Retry


def describe(outcome: Outcome) -> str:
    match outcome:
        case Ack():
            return "ack"
        case Retry(after_ms=delay):
            assert_type(delay, int)
            return f"retry in {delay} ms"
        case Drop(reason=reason) | DeadLetter(reason=reason):
            assert_type(reason, str)
            return reason
        case _:
            assert_never(outcome)
