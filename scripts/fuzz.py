"""`make fuzz`: the hostile-input suite at its long budget, then the coverage-guided
fuzzer (atheris) over the decoders and parsers; a report of inputs tried per target
and findings in .run/fuzz/report.md (and .jsonl), for docs/reliability-fuzz.md.

    python scripts/fuzz.py [--scale 20] [--seconds 120] [--targets event,filter,...] [--skip-pytest]

Exits non-zero when a property fails or the fuzzer finds an input that breaks a target
(saved under .run/fuzz/crashes/, replay with `python -m tests.fuzz.atheris_targets TARGET FILE`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("event", "filter", "page_token", "plan")
STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.M)
COVERAGE = re.compile(r"cov: (\d+) ft: (\d+)")


def run_pytest(out: Path, scale: float) -> int:
    env = {**os.environ, "MMSEARCH_FUZZ_SCALE": str(scale), "MMSEARCH_FUZZ_REPORT": str(out / "report.jsonl"),
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    argv = [sys.executable, "-m", "pytest", "tests/fuzz", "-q", "-o", "timeout=0", "-p", "no:cacheprovider"]
    return subprocess.run(argv, cwd=ROOT, env=env, check=False).returncode


def run_atheris(out: Path, target: str, seconds: int) -> dict[str, object]:
    corpus, crashes = out / "corpus" / target, out / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    module = [sys.executable, "-m", "tests.fuzz.atheris_targets"]
    subprocess.run([*module, "seed", target, str(corpus)], cwd=ROOT, env=env, check=True)
    before = set(crashes.iterdir())
    started = time.monotonic()
    done = subprocess.run(
        [*module, target, f"-max_total_time={seconds}", "-print_final_stats=1", "-rss_limit_mb=2048",
         f"-artifact_prefix={crashes}/{target}-", str(corpus)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    log = done.stdout + done.stderr
    (out / f"atheris-{target}.log").write_text(log)
    stats = {name: int(value) for name, value in STAT.findall(log)}
    coverage = COVERAGE.findall(log)
    found = sorted(str(p) for p in set(crashes.iterdir()) - before)
    return {
        "target": f"atheris {target}",
        "engine": "atheris",
        "tried": stats.get("number_of_executed_units", 0),
        "seconds": round(time.monotonic() - started, 1),
        "coverage_edges": int(coverage[-1][0]) if coverage else None,
        "corpus_files": len(list(corpus.iterdir())),
        "peak_rss_mb": stats.get("peak_rss_mb"),
        "exit_code": done.returncode,
        "findings": found,
    }


def write_report(out: Path) -> None:
    lines = [json.loads(line) for line in (out / "report.jsonl").read_text().splitlines() if line.strip()]
    rows = ["| Target | Engine | Inputs tried | Outcomes | Findings |", "|---|---|---:|---|---|"]
    for line in lines:
        outcomes = line.get("outcomes") or {
            k: line[k]
            for k in ("coverage_edges", "corpus_files", "seconds", "peak_rss_mb")
            if line.get(k) is not None
        }
        detail = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
        found = len(line.get("findings") or []) or "none"
        rows.append(f"| {line['target']} | {line['engine']} | {line['tried']:,} | {detail} | {found} |")
    (out / "report.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scale", type=float, default=20.0, help="hypothesis budget multiplier (make test: 1)"
    )
    parser.add_argument("--seconds", type=int, default=120, help="atheris time per target")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--skip-pytest", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / ".run" / "fuzz")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.jsonl").write_text("")
    failed = 0 if args.skip_pytest else run_pytest(args.out, args.scale)
    for target in args.targets.split(","):
        result = run_atheris(args.out, target, args.seconds)
        with open(args.out / "report.jsonl", "a", encoding="utf-8") as report:
            report.write(json.dumps(result, sort_keys=True) + "\n")
        if result["findings"] or result["exit_code"] != 0:
            failed = 1
            print(
                f"atheris {target}: finding(s) {result['findings']} (exit {result['exit_code']})",
                file=sys.stderr,
            )
    write_report(args.out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
