"""The fault table: printed by default; docs/faults.md changes only on ``--write``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from faults.summarize import DOCS, END, START

SUMMARIZE = Path(__file__).with_name("summarize.py")


def _records(directory: Path) -> Path:
    directory.mkdir()
    for seed in (2, 1):
        figures = {"lost": 0, "takeover_s": [1.2], "seconds": 2.5}
        record = {"case": "sigkill-once", "seed": seed, "passed": True, "figures": figures}
        (directory / f"sigkill-once-seed{seed}.json").write_text(json.dumps(record))
    return directory


def _summarize(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(SUMMARIZE), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def test_summarize_prints_the_table_and_leaves_docs_faults_md_alone(tmp_path: Path) -> None:
    before = DOCS.read_bytes()
    done = _summarize(str(_records(tmp_path / "results")))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "| case | seeds (passed) | figures (per seed) |",
        "|---|---|---|",
        "| sigkill-once | 2 (2) | seed 1: lost=0; takeover_s=[1.2]; 2.5 s<br>"
        "seed 2: lost=0; takeover_s=[1.2]; 2.5 s |",
    ]
    assert DOCS.read_bytes() == before


def test_write_replaces_only_what_lies_between_the_markers(tmp_path: Path) -> None:
    page = tmp_path / "faults.md"
    page.write_text(f"# Faults\n\n{START}\n| old |\n{END}\n\nafter\n")
    done = _summarize(str(_records(tmp_path / "results")), "--write", str(page))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    text = page.read_text()
    assert text.startswith(f"# Faults\n\n{START}\n| case | seeds (passed) |")
    assert text.endswith(f"2.5 s |\n{END}\n\nafter\n")
    assert "| old |" not in text


@pytest.mark.parametrize(
    ("page_text", "records", "error"),
    [
        ("# no markers\n", True, "has no <!-- table:start --> ... <!-- table:end --> markers"),
        (f"{START}\n{END}\n", False, "no fault records in"),
    ],
    ids=["no-markers", "no-records"],
)
def test_write_refuses_what_it_cannot_do_and_changes_nothing(
    tmp_path: Path, page_text: str, records: bool, error: str
) -> None:
    page = tmp_path / "faults.md"
    page.write_text(page_text)
    results = _records(tmp_path / "results") if records else tmp_path
    done = _summarize(str(results), "--write", str(page))
    assert done.returncode == 1
    assert error in done.stderr
    assert page.read_text() == page_text
