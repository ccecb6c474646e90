"""The broker kit as an author gets it: the one-file kit of docs/brokers.md, run as printed
in a pytest of its own, in pytest-asyncio's default (strict) mode."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

_GUIDE = Path(__file__).parents[2] / "docs" / "brokers.md"
_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _kit() -> str:
    [kit] = [b for b in _BLOCK.findall(_GUIDE.read_text()) if "The broker kit in one file" in b]
    return kit


@pytest.mark.slow
def test_the_guides_kit_passes_every_case_in_strict_mode(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_kit=_kit())
    # Warnings are errors here too; pytest-asyncio warns about one option left unset.
    result = pytester.runpytest_subprocess(
        *("-p", "no:cacheprovider", "-o", "asyncio_mode=strict", "-W", "error", "-q"),
        *("-o", "asyncio_default_fixture_loop_scope=function"),
    )
    outcomes = result.parseoutcomes()
    assert result.ret == 0, result.stdout.str()
    assert (outcomes.get("errors", 0), outcomes.get("failed", 0)) == (0, 0), outcomes
    # Every case of the suite ran (the memory broker declares every capability), and the
    # kit's own test of its scheme.
    assert outcomes.get("skipped", 0) == 0, result.stdout.str()
    assert outcomes["passed"] >= 40, outcomes
