"""The broker kit as an author gets it, each in a pytest of its own in pytest-asyncio's
default (strict) mode: the one-file kit of docs/brokers.md, run as printed, and the
one command that runs the suite against a URL."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

_GUIDE = Path(__file__).parents[2] / "docs" / "brokers.md"
_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _kit() -> str:
    blocks: list[str] = _BLOCK.findall(_GUIDE.read_text())
    [kit] = [b for b in blocks if "The broker kit in one file" in b]
    return kit


def _strict(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # Warnings are errors here too; pytest-asyncio warns about one option left unset.
    return pytester.runpytest_subprocess(
        *("-p", "no:cacheprovider", "-o", "asyncio_mode=strict", "-W", "error", "-rs"),
        *("-o", "asyncio_default_fixture_loop_scope=function", *args),
    )


@pytest.mark.slow
def test_the_guides_kit_passes_every_case_in_strict_mode(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_kit=_kit())
    result = _strict(pytester)
    outcomes = result.parseoutcomes()
    assert result.ret == 0, result.stdout.str()
    assert (outcomes.get("errors", 0), outcomes.get("failed", 0)) == (0, 0), outcomes
    # Every case ran (the memory broker declares every capability), and the kit's own
    # test of its scheme.
    assert outcomes.get("skipped", 0) == 0, result.stdout.str()
    assert outcomes["passed"] >= 40, outcomes


@pytest.mark.slow
def test_the_kit_runs_against_a_url_and_skips_only_what_needs_a_harness(
    pytester: pytest.Pytester,
) -> None:
    result = _strict(pytester, "--pyargs", "pulses.testing.kit", "--pulses-url", "memory://kit")
    outcomes = result.parseoutcomes()
    assert result.ret == 0, result.stdout.str()
    assert (outcomes.get("errors", 0), outcomes.get("failed", 0)) == (0, 0), outcomes
    assert outcomes["passed"] >= 38, outcomes
    # The two foreign-entry cases and the vanished-entry one, each saying why.
    result.stdout.fnmatch_lines(
        [
            "SKIPPED [[]1[]] *: UrlHarness does not implement BrokerHarness.delete_entry",
            "SKIPPED [[]2[]] *: UrlHarness does not implement BrokerHarness.add_foreign",
        ],
        consecutive=False,
    )
    assert outcomes["skipped"] == 3, outcomes


def test_the_kit_without_a_url_says_what_to_pass(pytester: pytest.Pytester) -> None:
    result = _strict(pytester, "--pyargs", "pulses.testing.kit", "-k", "bad_name")
    result.stdout.fnmatch_lines(["SKIPPED * no broker to test: pass --pulses-url URL"])
    assert result.parseoutcomes().get("passed", 0) == 0
