"""The table of fault figures, from the JSON records that the fault cases write.

``python tests/faults/summarize.py [RESULTS_DIR]`` prints it. ``--write`` puts it into
docs/faults.md between the table markers (``--write OTHER.md``: into that file), which
is the only way this table changes: a test run never writes tracked files. RESULTS_DIR
defaults to ``PULSES_FAULT_RESULTS``, else tests/faults/results/ (git-ignored), where the
cases write. To refresh the published figures::

    nox -s faults && python tests/faults/summarize.py --write
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DOCS = HERE.parents[1] / "docs" / "faults.md"
START = "<!-- table:start -->"
END = "<!-- table:end -->"
KEYS = [
    "lost",
    "duplicates",
    "dead_lettered",
    "takeover_s",
    "rerun_s",
    "deaths",
    "poison_runs",
    "good_max_deliveries",
    "good_handled_after_s",
    "poison_parked_after_s",
    "longest_pending_s",
    "lost_fetch_handled_after_s",
    "longest_wait_s",
    "warnings",
    "deliveries_seen",
    "keys_written",
    "in_flight_at_kills",
    "outages",
    "worker_cpu_while_down",
    "group_recreated_after_s",
    "retry_min_gap_s",
    "runs",
    "latency_baseline_p99_s",
    "latency_during_poison_p99_s",
    "released_by_a",
    "released_taken_after_sigterm_s",
    "exit_code",
    "stopped_after_second_signal_s",
    "long_runs",
    "owners_after_resume",
    "faults",
    "byte_exact",
    "error",
    "acl_error",
    "wrong_type_cpu",
    "acl_cpu",
    "canary_in_output",
    "canary_in_logs",
    "growth_mib",
    "max_pending",
    "rate_per_s",
]


def compact(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {compact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(compact(v) for v in value) + "]"
    return str(value).replace("|", "\\|")


def table(results: Path) -> str:
    by_case: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in sorted(results.glob("*.json")):
        record = json.loads(path.read_text())
        by_case[record["case"]].append(record)
    if not by_case:
        raise SystemExit(f"no fault records in {results} (run pytest tests/faults first)")
    rows = ["| case | seeds (passed) | figures (per seed) |", "|---|---|---|"]
    for case, records in sorted(by_case.items()):
        records.sort(key=lambda r: r["seed"])
        passed = sum(r["passed"] for r in records)
        figures = "<br>".join(
            f"seed {r['seed']}: "
            + "; ".join(f"{k}={compact(r['figures'][k])}" for k in KEYS if k in r["figures"])
            + f"; {r['figures'].get('seconds')} s"
            for r in records
        )
        rows.append(f"| {case} | {len(records)} ({passed}) | {figures} |")
    return "\n".join(rows)


def splice(text: str, new_table: str, where: Path) -> str:
    """``text`` with what lies between the table markers replaced by ``new_table``."""
    head, start, rest = text.partition(START)
    _, end, tail = rest.partition(END)
    if not (start and end):
        raise SystemExit(f"{where} has no {START} ... {END} markers to put the table between")
    return f"{head}{START}\n{new_table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Print the fault figures' table, or --write it into docs/faults.md."
    )
    default_results = Path(os.environ.get("PULSES_FAULT_RESULTS", HERE / "results"))
    parser.add_argument("results", nargs="?", type=Path, default=default_results)
    parser.add_argument(
        "--write",
        nargs="?",
        type=Path,
        const=DOCS,
        metavar="FILE",
        help="put the table into FILE (default: docs/faults.md) instead of printing it",
    )
    args = parser.parse_args(argv)
    new_table = table(args.results)
    if args.write is None:
        print(new_table)
        return
    args.write.write_text(splice(args.write.read_text(), new_table, args.write))


if __name__ == "__main__":
    main()
