"""Run a command; fail if it changed the git working tree.

``python tests/tree_unchanged.py -- python -m nox``: the command's own failure comes
first (its exit code); then, if any file that git does not ignore was created, deleted
or changed, this lists them and exits 1. Tests, sessions and the benchmark write only to
temporary or git-ignored places; docs/faults.md changes only by
``python tests/faults/summarize.py --write``. Works in a dirty tree too: what was
already changed is compared by content.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path


def _git(*args: str) -> bytes:
    return subprocess.run(["git", *args], capture_output=True, check=True).stdout


def snapshot() -> dict[str, str]:
    """Every path git reports as not clean, with its status and a hash of its content."""
    top = Path(_git("rev-parse", "--show-toplevel").decode().strip())
    entries = iter(_git("status", "--porcelain=v1", "-z", "--untracked-files=all").split(b"\0"))
    state: dict[str, str] = {}
    for entry in entries:
        if not entry:
            continue
        code, path = entry[:2].decode(), entry[3:].decode(errors="surrogateescape")
        if "R" in code or "C" in code:
            next(entries)  # a rename or copy is followed by its source path
        file = top / path
        content = hashlib.sha256(file.read_bytes()).hexdigest() if file.is_file() else "-"
        state[path] = f"{code} {content}"
    return state


def main(argv: list[str]) -> int:
    command = argv[1:] if argv[:1] == ["--"] else argv
    if not command:
        print("usage: python tests/tree_unchanged.py -- COMMAND [ARG ...]", file=sys.stderr)
        return 2
    before = snapshot()
    code = subprocess.call(command)
    if code:
        return code
    after = snapshot()
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    if changed:
        print(f"{' '.join(command)} changed files that git tracks or would:", file=sys.stderr)
        for path in changed:
            print(f"  {path}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
