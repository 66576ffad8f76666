"""Shared helpers for the chart checks: where the tools are (installed by `make chart-tools`),
and the chart rendered with the default, production and every-feature values."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "mmsearch"
BIN = ROOT / ".cache" / "chart-tools" / "bin"
CHART_VENV = ROOT / ".venv-chart"
RULES = CHART / "files" / "rules" / "mmsearch.rules.yaml"
NAMESPACE = "search"

# Every optional part on, so each template is rendered and checked.
EVERYTHING = [
    "--set=monitoring.serviceMonitor.enabled=true",
    "--set=monitoring.prometheusRule.enabled=true",
    "--set=monitoring.dashboards.enabled=true",
    "--set=kafka.strimziTopics.enabled=true",
    "--set=config.otlpEndpoint=http://otel.observability:4317",
    *(
        f"--set={c}.autoscaling.enabled=true"
        for c in ("embedder", "indexer", "searcher", "reranker", "triton")
    ),
]
VALUE_SETS: dict[str, list[str]] = {
    "default": [],
    "production": ["-f", str(CHART / "values-production.yaml")],
    "everything": EVERYTHING,
}


def tool(name: str) -> Path:
    """A chart tool; `make chart-tools` installs them (make test depends on it)."""
    path = BIN / name
    if name in ("kubernetes-validate", "checkov"):
        path = CHART_VENV / "bin" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make chart-tools` (make test and make chart-test do)")
    return path


def run(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False
    )


def render(values: list[str]) -> list[dict[str, Any]]:
    result = run(tool("helm"), "template", "mm", CHART, "--namespace", NAMESPACE, *values)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


_cache: dict[str, list[dict[str, Any]]] = {}


def rendered(name: str) -> list[dict[str, Any]]:
    if name not in _cache:
        _cache[name] = render(VALUE_SETS[name])
    return _cache[name]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]
