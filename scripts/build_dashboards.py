#!/usr/bin/env python3
"""Grafana dashboards as code: writes deploy/helm/mmsearch/files/dashboards/*.json (shipped as
ConfigMaps by the chart). Run after changing a panel; tests/chart checks the files match this
script, that every query parses (promtool) and that each returns data from the live stack.

    python scripts/build_dashboards.py [--check]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "deploy" / "helm" / "mmsearch" / "files" / "dashboards"
NS = 'namespace=~"$namespace"'
SEARCH = f'{NS}, grpc_service="mmsearch.v1.Searcher", grpc_method="Search"'

Panel = tuple[str, str, str, str]  # title, unit, legend, PromQL
MMSEARCH_RPCS = 'grpc_service=~"mmsearch\\\\.v1\\\\..*"'


def quantile(q: float, histogram: str, selector: str = "") -> str:
    """The q-quantile of a histogram over 5 m, all series of the namespace together."""
    where = f"{NS}, {selector}" if selector else NS
    return f"histogram_quantile({q}, sum by (le) (rate({histogram}_bucket{{{where}}}[5m])))"


DASHBOARDS: dict[str, tuple[str, list[Panel]]] = {
    "mmsearch-red": (
        "mmsearch: services (RED)",
        [
            (
                "Requests per second",
                "reqps",
                "{{job}} {{grpc_method}}",
                f"sum by (job, grpc_method) (rate(grpc_server_handled_total{{{NS}, {MMSEARCH_RPCS}}}[5m]))",
            ),
            (
                "Server-side error ratio",
                "percentunit",
                "{{job}} {{grpc_method}}",
                f"mmsearch:grpc_errors:ratio_rate5m{{{NS}}}",
            ),
            ("p95 latency", "s", "{{job}} {{grpc_method}}", f"mmsearch:grpc_latency_seconds:p95_5m{{{NS}}}"),
            (
                "RPCs in flight",
                "short",
                "{{job}} {{grpc_service}}",
                f"sum by (job, grpc_service) (grpc_server_in_flight{{{NS}}})",
            ),
            (
                "Dependencies up (readiness)",
                "short",
                "{{job}} {{grpc_service}}",
                f"min by (job, grpc_service) (mmsearch_dependency_up{{{NS}}})",
            ),
            (
                "Triton queue time per request",
                "µs",
                "{{model}}",
                f"mmsearch:triton_queue_us_per_request:rate2m{{{NS}}}",
            ),
            ("Requests in flight to Triton", "short", "{{job}}", f"mmsearch:triton_in_flight:sum{{{NS}}}"),
        ],
    ),
    "mmsearch-search": (
        "mmsearch: search stages",
        [
            ("p95 per stage", "s", "{{stage}}", f"mmsearch:search_stage_seconds:p95_5m{{{NS}}}"),
            (
                "p50 total",
                "s",
                "p50",
                quantile(0.5, "mmsearch_searcher_stage_seconds", 'stage="total"'),
            ),
            (
                "Candidates per query (p50)",
                "short",
                "p50",
                quantile(0.5, "mmsearch_searcher_candidates"),
            ),
            (
                "Degraded answers per second",
                "reqps",
                "{{stage}}",
                f"sum by (stage) (rate(mmsearch_searcher_degraded_total{{{NS}}}[5m]))",
            ),
            (
                "Searches per second",
                "reqps",
                "{{grpc_code}}",
                f"sum by (grpc_code) (rate(grpc_server_handled_total{{{SEARCH}}}[5m]))",
            ),
        ],
    ),
    "mmsearch-ingest": (
        "mmsearch: ingest pipeline and freshness",
        [
            ("Consumer lag", "short", "{{topic}}", f"mmsearch:indexer_consumer_lag:sum{{{NS}}}"),
            ("Events per second by outcome", "ops", "{{outcome}}", f"mmsearch:indexer_events:rate5m{{{NS}}}"),
            (
                "Freshness p95 (event time to searchable)",
                "s",
                "p95",
                f"mmsearch:indexer_freshness_seconds:p95_5m{{{NS}}}",
            ),
            (
                "Dead letters per reason (1 h)",
                "short",
                "{{reason}}",
                f'sum by (reason) (increase(mmsearch_indexer_events_total{{{NS}, outcome="dlq"}}[1h]))',
            ),
            ("Indexer paused", "short", "{{pod}}", f"max by (pod) (mmsearch_indexer_paused{{{NS}}})"),
            (
                "Store write p95",
                "s",
                "p95",
                quantile(0.95, "mmsearch_indexer_store_write_seconds"),
            ),
            (
                "Records per batch (p50)",
                "short",
                "p50",
                quantile(0.5, "mmsearch_indexer_batch_records"),
            ),
        ],
    ),
    "mmsearch-slo": (
        "mmsearch: SLOs and error budget burn",
        [
            (
                "Search availability: error ratio (1 h, 6 h, 3 d)",
                "percentunit",
                "{{__name__}}",
                f'{{__name__=~"mmsearch:slo_search_errors:ratio_rate(1h|6h|3d)", {NS}}}',
            ),
            (
                "Search latency: share over 0.5 s (1 h, 6 h, 3 d)",
                "percentunit",
                "{{__name__}}",
                f'{{__name__=~"mmsearch:slo_search_slow:ratio_rate(1h|6h|3d)", {NS}}}',
            ),
            (
                "Ingest freshness: share over 30 s (1 h, 6 h, 3 d)",
                "percentunit",
                "{{__name__}}",
                f'{{__name__=~"mmsearch:slo_ingest_stale:ratio_rate(1h|6h|3d)", {NS}}}',
            ),
            (
                "Availability burn rate (1 h)",
                "short",
                "burn",
                f"mmsearch:slo_search_errors:ratio_rate1h{{{NS}}} / 0.001",
            ),
            (
                "Latency burn rate (1 h)",
                "short",
                "burn",
                f"mmsearch:slo_search_slow:ratio_rate1h{{{NS}}} / 0.01",
            ),
            (
                "Freshness burn rate (1 h)",
                "short",
                "burn",
                f"mmsearch:slo_ingest_stale:ratio_rate1h{{{NS}}} / 0.01",
            ),
        ],
    ),
}


def dashboard(uid: str, title: str, panels: list[Panel]) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["mmsearch"],
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus"},
                {
                    "name": "namespace",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": "label_values(grpc_server_handled_total, namespace)",
                    "includeAll": True,
                    "multi": True,
                },
            ]
        },
        "panels": [
            {
                "id": index + 1,
                "type": "timeseries",
                "title": panel_title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [{"refId": "A", "expr": expr, "legendFormat": legend}],
            }
            for index, (panel_title, unit, legend, expr) in enumerate(panels)
        ],
    }


def render() -> dict[str, str]:
    return {
        f"{uid}.json": json.dumps(dashboard(uid, title, panels), indent=2, ensure_ascii=False) + "\n"
        for uid, (title, panels) in DASHBOARDS.items()
    }


def main() -> int:
    files = render()
    if "--check" in sys.argv[1:]:
        stale = [
            name
            for name, text in files.items()
            if not (OUT / name).exists() or (OUT / name).read_text() != text
        ]
        if stale:
            print(f"dashboards out of date (run scripts/build_dashboards.py): {stale}", file=sys.stderr)
            return 1
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (OUT / name).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
