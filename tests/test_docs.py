"""Every Python block of README.md and docs/*.md runs as printed.

The rules (docs/contributing.md says the same for writers):

- A block runs as its own script, ``python block.py``, in an empty directory: it must
  exit 0 within a minute.
- A block that defines ``test_`` functions is a test module: ``python -m pytest`` runs
  it there, with no configuration, and every test in it must pass.
- A block that names ``redis://127.0.0.1:6379/0`` runs against the test's own Redis: that
  URL is replaced by the fixture's.
- ``<!-- fragment -->`` on the line before a block: a piece of a larger program, not run.
- ``<!-- runs until Ctrl+C -->`` on the line before a block: a program that runs until
  interrupted; once it has printed a line it gets SIGINT, and must then exit 0.
- ``<!-- output -->`` on the line before a ```text block: what the Python block before
  it prints on stdout, exactly.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
REDIS = "redis://127.0.0.1:6379/0"
FRAGMENT = "<!-- fragment -->"
UNTIL_CTRL_C = "<!-- runs until Ctrl+C -->"
OUTPUT = "<!-- output -->"
SECONDS = 60

FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S
)


@dataclass
class Block:
    page: Path
    line: int
    code: str
    marker: str
    output: str | None = None
    """What it prints, when the page shows it in an ``<!-- output -->`` block."""

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def python_blocks(page: Path) -> list[Block]:
    """The page's ```python blocks, each with the marker on the line before it (or "")
    and the output shown after it."""
    text = page.read_text()
    blocks: list[Block] = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rpartition("\n")[2].strip()
        marker = before if before.startswith("<!--") else ""
        indent = match["indent"]
        body = "".join(line.removeprefix(indent) for line in match["body"].splitlines(True))
        line = text.count("\n", 0, match.start()) + 1
        language = match["info"].split()[:1]
        if language == ["python"]:
            blocks.append(Block(page, line, body, marker))
        elif marker == OUTPUT:
            assert language == ["text"], f"{page}:{line}: {OUTPUT} marks a ```text block"
            assert blocks, f"{page}:{line}: {OUTPUT} with no python block before it"
            blocks[-1].output = body
    return blocks


BLOCKS = [block for page in PAGES for block in python_blocks(page)]
RUNNABLE = [block for block in BLOCKS if block.marker != FRAGMENT]


def test_every_marker_is_one_this_test_knows() -> None:
    unknown = [
        f"{b.name}: {b.marker}" for b in BLOCKS if b.marker not in ("", FRAGMENT, UNTIL_CTRL_C)
    ]
    assert not unknown, "unknown markers before python blocks (see docs/contributing.md)"


def test_most_blocks_run() -> None:
    # A guard against the extractor silently finding nothing, or everything becoming
    # a fragment: most examples must run.
    assert len(RUNNABLE) >= 10
    assert len(RUNNABLE) > 2 * (len(BLOCKS) - len(RUNNABLE))


def test_the_cli_page_lists_every_exit_code() -> None:
    from pulses.cli import EXIT

    table = re.findall(r"^\| (\d+) \|", (ROOT / "docs" / "cli.md").read_text(), re.M)
    assert sorted(map(int, table)) == sorted(EXIT.values())


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.name for b in RUNNABLE])
def test_the_block_runs_as_printed(
    block: Block, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    code = block.code
    if REDIS in code:
        code = code.replace(REDIS, request.getfixturevalue("redis_url"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULSES_", "REDIS_URL"))}
    env.pop("PYTHONPATH", None)
    if re.search(r"^(async )?def test_", code, re.M):
        script = tmp_path / "test_block.py"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", script.name]
    else:
        script = tmp_path / "block.py"
        command = [sys.executable, script.name]
    script.write_text(code)
    if block.marker == UNTIL_CTRL_C:
        stdout, stderr, returncode = _run_until_ctrl_c(command, tmp_path, env)
    else:
        done = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=SECONDS
        )
        stdout, stderr, returncode = done.stdout, done.stderr, done.returncode
    assert returncode == 0, (
        f"{block.name} exited {returncode}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    )
    if block.output is not None:
        assert stdout == block.output, f"{block.name} prints something else than the page shows"


def _run_until_ctrl_c(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[str, str, int]:
    """Start the program, wait (with a deadline) for its first line, send SIGINT."""
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout=SECONDS):
                pytest.fail(f"printed nothing in {SECONDS}s: {' '.join(command)}")
        first = process.stdout.readline()
        if first:
            process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return first + stdout, stderr, process.returncode
