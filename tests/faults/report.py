"""The fault suite's results as the markdown table in docs/reliability.md:

.venv/bin/python -m tests.faults.report [.run/faults/results.jsonl]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HEADER = (
    "| Fault | Topology | Events | Lost | Duplicated | Cross-tenant hits | Dead letters | "
    "Probe errors during fault | Restart to SERVING | Ingest resumed after | Drained after |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def row(r: dict[str, Any]) -> str:
    errors = ", ".join(f"{k} {v}" for k, v in r.get("probe_errors_during_fault", {}).items()) or "0"
    calls = sum(r.get("probe_calls", {}).values())
    tenancy = r.get("tenancy", {})
    cross = f"{tenancy['cross_tenant_hits']} / {tenancy['queries']} queries" if tenancy else "n/a"
    restart = f"{r['restart_to_serving_s']} s" if "restart_to_serving_s" in r else "-"
    return (
        f"| {r['fault']} | {r['topology']} | {r['events']} ({r['checked']} items) | {r['lost']} | "
        f"{r['duplicated'] + r['resurrected'] + r['foreign']} | {cross} | {r['dead_letters']} | "
        f"{errors} (of {calls} calls) | {restart} | {r['progress_after_s']} s | {r['drained_after_s']} s |"
    )


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / ".run" / "faults" / "results.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    print(HEADER)
    for r in rows:
        print(row(r))
    loads = [r["load"] for r in rows]
    span = f"{rows[0]['at']} .. {rows[-1]['at']}"
    print(f"\n{len(rows)} runs, {span}, 1-min load average {min(loads):.1f}-{max(loads):.1f}")


if __name__ == "__main__":
    main()
