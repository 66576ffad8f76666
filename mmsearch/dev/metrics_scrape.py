"""Measuring a running stack from outside: Prometheus samples (scraped with
prometheus_client's own parser) and their arithmetic, and the CPU seconds and
RSS of process trees read from /proc. Used by the benchmarks and tests."""

from __future__ import annotations

import contextlib
import math
import os
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

# (sample name, sorted label pairs) -> value
Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


# --- Prometheus ----------------------------------------------------------
def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


def scrape(url: str, timeout_s: float = 5.0) -> Samples:
    """Every sample of a Prometheus text endpoint."""
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return parse(resp.read().decode())


def subtract(after: Samples, before: Samples) -> Samples:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    return sum(
        v for (n, ls), v in samples.items() if n == name and all((k, x) in ls for k, x in labels.items())
    )


def buckets(samples: Samples, name: str, **labels: str) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) of histogram `name`, summed over its other labels."""
    by_le: dict[float, float] = {}
    for (n, ls), v in samples.items():
        if n == f"{name}_bucket" and all((k, x) in ls for k, x in labels.items()):
            le = float(dict(ls)["le"])
            by_le[le] = by_le.get(le, 0.0) + v
    return sorted(by_le.items())


def histogram_quantile(q: float, cumulative: list[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile: linear within the bucket; the last finite
    edge if the quantile is in +Inf; None without observations."""
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    rank = q * cumulative[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in cumulative:
        if count >= rank:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = upper, count
    return lower


# --- processes -----------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _proc_table() -> dict[int, tuple[int, float, int]]:
    """pid -> (ppid, CPU seconds, RSS bytes) for every process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / _TICK
            table[int(entry.name)] = (int(fields[1]), cpu, int(fields[21]) * _PAGE)
    return table


def _tree(root: int, table: Mapping[int, tuple[int, float, int]]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        if pid in table:
            out.append(pid)
        stack.extend(children.get(pid, []))
    return out


def descendants(root: int) -> list[int]:
    """Every live descendant of `root` (not `root` itself)."""
    return [pid for pid in _tree(root, _proc_table()) if pid != root]


def tree_usage(pids: Mapping[str, int]) -> dict[str, tuple[float, int]]:
    """Per name: (CPU seconds, RSS bytes) of the process and all its descendants."""
    table = _proc_table()
    out = {}
    for name, root in pids.items():
        tree = _tree(root, table)
        out[name] = (sum(table[p][1] for p in tree), sum(table[p][2] for p in tree))
    return out


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent not idle since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / _TICK


def cpu_snapshot(pids: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds of each named process tree, of this process ("bench") and of the machine."""
    out = {name: cpu for name, (cpu, _) in tree_usage(pids).items()}
    own = os.times()
    out["bench"] = own.user + own.system
    out["machine"] = machine_busy_s()
    return out
