"""How hard the hostile-input suite tries, and what it tried.

`make test` runs each property at its short budget; `make fuzz` sets
MMSEARCH_FUZZ_SCALE (a multiplier of every budget) and MMSEARCH_FUZZ_REPORT (a
JSON-lines file that each target appends its count of inputs tried and its
findings to, for docs/reliability-fuzz.md)."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, settings

SCALE_ENV = "MMSEARCH_FUZZ_SCALE"
REPORT_ENV = "MMSEARCH_FUZZ_REPORT"


def scale() -> float:
    raw = os.environ.get(SCALE_ENV, "1")
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{SCALE_ENV} must be a number, got {raw!r}") from exc
    if value <= 0:
        raise ValueError(f"{SCALE_ENV} must be positive, got {raw!r}")
    return value


def budget(examples: int, *, deadline_ms: int | None = None) -> settings:
    """Hypothesis settings for `examples` inputs at the short budget, scaled (derandomized
    under CI by the profile tests/conftest.py loads)."""
    return settings(
        max_examples=max(1, int(examples * scale())),
        deadline=deadline_ms,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        database=None,
        print_blob=True,
    )


@dataclass
class Tally:
    """Inputs one target tried, by outcome (a status name, a dead-letter reason, ...)."""

    target: str
    tried: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, outcome: str) -> None:
        with self._lock:
            self.tried += 1
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def report(self, **extra: object) -> None:
        """Append this target's figures to the report file, when one is set."""
        path = os.environ.get(REPORT_ENV)
        if not path:
            return
        line = {"target": self.target, "engine": "hypothesis", "tried": self.tried, "outcomes": self.outcomes}
        line.update(extra)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(line, sort_keys=True) + "\n")
