"""CI cannot pass with a test skipped: tests/conftest.py fails a skip in CI unless it is
listed with its reason, and the TLS test fails, rather than skips, when it cannot run
under PULSES_REQUIRE_REDIS=1."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

SKIPPING = """
import pytest

def test_runs() -> None:
    pass

def test_needs_a_frobnicator() -> None:
    pytest.skip("no frobnicator on this machine")

@pytest.mark.skipif(True, reason="only on Tuesdays")
def test_on_tuesdays() -> None:
    pass
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A small suite run with this directory's conftest.py."""
    pytester.makeconftest((TESTS / "conftest.py").read_text())
    pytester.makepyfile(test_skips=SKIPPING)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    )
    return pytester


def test_outside_ci_a_skip_is_a_skip(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    suite.runpytest_subprocess().assert_outcomes(passed=1, skipped=2)


def test_in_ci_a_skip_fails_the_run_with_its_reason(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest_subprocess()
    # A skip in the test body fails the test; a skip mark (at setup) errors it.
    result.assert_outcomes(passed=1, failed=1, errors=1)
    result.stdout.fnmatch_lines(["*no frobnicator on this machine*", "*ALLOWED_SKIPS*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_in_ci_a_skip_listed_with_its_reason_is_allowed(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    conftest = suite.path / "conftest.py"
    conftest.write_text(
        conftest.read_text()
        + '\nALLOWED_SKIPS["test_skips.py::test_needs_*"] = "no frobnicator"\n'
        # Listed, but skipping for another reason than the one given: still a failure.
        + 'ALLOWED_SKIPS["test_skips.py::test_on_tuesdays"] = "only on Mondays"\n'
    )
    suite.runpytest_subprocess().assert_outcomes(passed=1, skipped=1, errors=1)


def test_in_ci_a_skipped_module_fails_the_run(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    suite.makepyfile(test_module='import pytest\npytest.skip("later", allow_module_level=True)\n')
    result = suite.runpytest_subprocess("test_module.py")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*later*", "*ALLOWED_SKIPS*"])


@pytest.mark.parametrize(("require", "outcome"), [("1", "errors"), ("", "skipped")])
def test_the_tls_test_without_openssl_fails_when_redis_is_required(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    require: str,
    outcome: str,
) -> None:
    redis_server = shutil.which("redis-server")
    assert redis_server is not None, "the fixture would fail first: no redis-server"
    bin_dir = tmp_path / "bin"  # a PATH with redis-server but no openssl
    bin_dir.mkdir()
    (bin_dir / "redis-server").symlink_to(redis_server)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("PULSES_REQUIRE_REDIS", require)
    monkeypatch.delenv("CI", raising=False)  # the outcome asked of the test itself
    result = pytester.runpytest_subprocess(
        str(TESTS / "redis" / "test_redis_tls.py"),
        f"--rootdir={TESTS.parent}",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(**{outcome: 2})
