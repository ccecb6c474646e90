"""Write docs/faults.md's table from the JSON records under tests/faults/results/.

``python tests/faults/summarize.py [RESULTS_DIR] [OUTPUT]``; ``nox -s faults`` runs it.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
START = "<!-- table:start -->"
END = "<!-- table:end -->"
KEYS = [
    "lost",
    "duplicates",
    "dead_lettered",
    "takeover_s",
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


def main() -> None:
    results = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results"
    output = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "docs" / "faults.md"
    text = output.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    output.write_text(f"{head}{START}\n{table(results)}\n{END}{tail}")


if __name__ == "__main__":
    main()
