"""tests/tree_unchanged.py: the check that a command (the test suite, in CI) leaves the
git working tree as it found it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("tree_unchanged.py")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / ".gitignore").write_text("results/\n")
    (tmp_path / "tracked.md").write_text("table\n")
    (tmp_path / "dirty.md").write_text("one\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "x")
    (tmp_path / "dirty.md").write_text("two\n")  # changed before the command runs
    return tmp_path


def _check(repo: Path, code: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(SCRIPT), "--", sys.executable, "-c", code]
    return subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=30)


def test_writing_only_ignored_files_passes(repo: Path) -> None:
    done = _check(repo, "import os; os.mkdir('results'); open('results/r.json', 'w').close()")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("code", "path"),
    [
        ("open('tracked.md', 'w').write('rewritten')", "tracked.md"),
        ("open('dirty.md', 'w').write('three')", "dirty.md"),
        ("open('new.md', 'w').close()", "new.md"),
        ("import os; os.remove('tracked.md')", "tracked.md"),
    ],
    ids=["tracked-rewritten", "dirty-changed-again", "untracked-created", "tracked-deleted"],
)
def test_changing_the_tree_fails_naming_the_file(repo: Path, code: str, path: str) -> None:
    done = _check(repo, code)
    assert done.returncode == 1
    assert f"  {path}\n" in done.stderr


def test_the_commands_own_failure_comes_first(repo: Path) -> None:
    assert _check(repo, "raise SystemExit(3)").returncode == 3
