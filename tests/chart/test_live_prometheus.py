"""Live check of the chart's observability: a real Prometheus (Debian's 2.42) scrapes the
running local stack (real Triton, broker and `mmsearch serve --target all`) with the chart's
rules loaded, while the test indexes real documents, dead-letters a forged event and searches.
Then every recording rule, every alert expression, every dashboard panel and every autoscaler
query is evaluated against it.

The local stack runs every target in one process, scraped once as job "mmsearch-all"; queries
that name a per-target job (mmsearch-searcher, ...) are evaluated with that job replaced by
mmsearch-all, and everything is labelled namespace="search" as a ServiceMonitor would."""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml  # type: ignore[import-untyped]
from kafka import KafkaProducer

from mmsearch.dev.harness import Stack, running_stack
from mmsearch.dev.processes import free_port, stop_group
from mmsearch.producer import ContentProducer, text_event
from mmsearch.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc, searcher_pb2, searcher_pb2_grpc
from tests.chart.conftest import CHART, NAMESPACE, RULES, of_kind, rendered, tool
from tests.conftest import DEV_TOKEN

pytestmark = pytest.mark.integration
AUTH = (("authorization", f"Bearer {DEV_TOKEN}"),)
JOBS = re.compile(r'job="mmsearch-(embedder|indexer|searcher|reranker)"')
# Panels whose query is empty on a healthy stack, and why.
DOCUMENTED_EMPTY = {
    "Degraded answers per second": "no search is answered without a stage while the reranker is up: "
    "the labelled counter has no series until the first degraded answer",
}

# Real passages (this project's docs), of the length the indexer sees in production.
DOCUMENTS = {
    "architecture": (
        "mmsearch provides multimodal embedding and cross-modal search as gRPC services in front of "
        "NVIDIA Triton Inference Server. It is one Python codebase with four services: an embedder, an "
        "indexer that reads Kafka content events, a searcher and a reranker. They run either as separate "
        "deployments or all in one process, the way Grafana Loki runs one binary per target."
    ),
    "ingest": (
        "Content events published to Kafka are embedded on a real tritonserver and indexed into the "
        "embedded Qdrant Edge store or Weaviate. At-least-once delivery gives an exactly-once effect: "
        "upserts are keyed by tenant and item id and guarded by version and event time, so replays "
        "change nothing, and offsets are committed only after the store write is durable."
    ),
    "dlq": (
        "Bad events, undecodable or over the limits or signed by an unknown producer, go to the dead letter "
        "topic with a reason code and the original bytes, and the partition keeps moving. When Triton or "
        "the store is down the indexer pauses and retries with backoff, commits nothing and loses nothing."
    ),
    "search": (
        "The searcher answers queries by text, image, audio or raw vector with typed metadata filters, "
        "hybrid BM25 and vector rankings fused by reciprocal rank fusion, and an optional rerank of the top "
        "candidates within a time budget; every hit carries its space and its score at each stage."
    ),
}
QUERIES = [
    "how are bad events handled",
    "exactly once ingest from kafka",
    "one binary per target",
    "rerank budget",
]


def _prometheus_config(stack: Stack, port_dir: Path) -> Path:
    service = urllib.parse.urlparse(stack.metrics_url).netloc
    triton = urllib.parse.urlparse(stack.triton_metrics_url).netloc
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [{"targets": [target], "labels": {"namespace": NAMESPACE, "pod": job}}],
            }
            for job, target in (("mmsearch-all", service), ("mmsearch-triton", triton))
        ],
    }
    path = port_dir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


class Prometheus:
    def __init__(self, work: Path, config: Path) -> None:
        self.port = free_port()
        self.log = work / "prometheus.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    str(tool("prometheus")),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={work / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--enable-feature=exemplar-storage",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError(f"prometheus did not start: {self.log.read_text()[-2000:]}")

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def exemplars(self, expr: str) -> list[dict[str, Any]]:
        now = time.time()
        query = urllib.parse.urlencode({"query": expr, "start": now - 600, "end": now})
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.port}/api/v1/query_exemplars?{query}", timeout=10
        ) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]
        return result

    def stop(self) -> None:
        stop_group(self.process.pid, timeout_s=10)
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    work = tmp_path_factory.mktemp("live")
    with running_stack(work / "stack") as stack:
        prometheus = Prometheus(work, _prometheus_config(stack, work))
        try:
            # Every target scraped before the traffic: a counter's first sample must be its 0, or
            # increase() and rate() cannot see the traffic (a busy machine delays the first scrape).
            deadline = time.monotonic() + 60
            while not (up := prometheus.query("up")) or any(float(s["value"][1]) != 1 for s in up):
                assert time.monotonic() < deadline, f"targets not up: {up}"
                time.sleep(0.5)
            time.sleep(2)
            _traffic(stack)
            # Enough scrapes after the traffic for every 5 m rate to see two samples of it.
            time.sleep(6)
            yield prometheus
        finally:
            prometheus.stop()


def _traffic(stack: Stack) -> None:
    producer = ContentProducer(stack.bootstrap)
    for name, text in DOCUMENTS.items():
        producer.publish(text_event("dev", name, text, title=name, tags=["docs"], version=1))
    producer.flush()
    # A forged event (no signature): dead-lettered as UNAUTHORIZED.
    forged = KafkaProducer(bootstrap_servers=stack.bootstrap)
    forged.send(
        "content.v1", key=b"dev/forged", value=text_event("dev", "forged", "not signed").SerializeToString()
    )
    forged.flush()
    forged.close()
    channel = grpc.insecure_channel(stack.addr)
    searcher = searcher_pb2_grpc.SearcherStub(channel)
    deadline = time.monotonic() + 120
    while True:
        hits = searcher.Search(
            searcher_pb2.SearchRequest(query=common_pb2.Content(text=QUERIES[0]), top_k=4),
            metadata=AUTH,
            timeout=30,
        ).hits
        if len(hits) == len(DOCUMENTS):
            break
        assert time.monotonic() < deadline, f"only {len(hits)} documents indexed"
        time.sleep(0.5)
    for query in QUERIES * 3:
        request = searcher_pb2.SearchRequest(
            query=common_pb2.Content(text=query),
            top_k=3,
            hybrid=searcher_pb2.HybridOptions(enabled=True),
            rerank=searcher_pb2.RerankOptions(enabled=True, top_n=4),
        )
        searcher.Search(request, metadata=AUTH, timeout=30)
    # The forged event's partition may be read after the documents': wait for its dead letter.
    while not re.search(
        r'^mmsearch_indexer_events_total\{outcome="dlq",reason="REASON_UNAUTHORIZED"\} [1-9]',
        urllib.request.urlopen(stack.metrics_url, timeout=5).read().decode(),
        re.M,
    ):
        assert time.monotonic() < deadline, "the forged event was not dead-lettered"
        time.sleep(0.5)
    embedder = embedder_pb2_grpc.EmbedderStub(channel)
    embedder.Embed(
        embedder_pb2.EmbedRequest(items=[common_pb2.Content(text=t) for t in DOCUMENTS.values()]),
        metadata=AUTH,
        timeout=30,
    )
    channel.close()


def _local(expr: str) -> str:
    return JOBS.sub('job="mmsearch-all"', expr.replace("$namespace", NAMESPACE))


def _metric_names(expr: str) -> set[str]:
    return set(
        re.findall(r"\b(mmsearch[_:][A-Za-z0-9_:]*|grpc_server_[a-z_]+|nv_[a-z_]+|up)\b(?=\s*[{\[)])", expr)
    )


def _values(result: list[dict[str, Any]]) -> list[float]:
    return [float(sample["value"][1]) for sample in result]


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_every_recording_rule_has_data(live: Prometheus) -> None:
    empty = [
        r["record"]
        for r in _rules()
        if "record" in r and not live.query(f'{r["record"]}{{namespace="{NAMESPACE}"}}')
    ]
    assert not empty


def test_every_alert_expression_evaluates_on_data_and_none_fires_on_a_healthy_stack(live: Prometheus) -> None:
    for rule in (r for r in _rules() if "alert" in r):
        live.query(rule["expr"])  # evaluates (raises on a bad expression)
        for name in _metric_names(rule["expr"]):
            assert live.query(f'count({{__name__="{name}"}})'), f"{rule['alert']}: no series of {name}"
    firing = live.query('ALERTS{alertstate="firing"}')
    assert not firing, firing
    # The forged event was dead-lettered and is visible to the DLQ alert's expression.
    dlq = live.query('sum by (reason) (increase(mmsearch_indexer_events_total{outcome="dlq"}[15m]))')
    # Every reason's series exists from start-up at 0, so the first dead letter counts.
    assert {s["metric"]["reason"] for s in dlq if float(s["value"][1]) > 0} == {"REASON_UNAUTHORIZED"}
    assert len(dlq) > 5


def test_every_dashboard_panel_returns_data(live: Prometheus) -> None:
    empty = []
    panels = 0
    for path in sorted((CHART / "files" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            panels += 1
            for target in panel["targets"]:
                if not live.query(_local(target["expr"])) and panel["title"] not in DOCUMENTED_EMPTY:
                    empty.append(f"{path.stem}: {panel['title']}")
    assert panels >= 20 and not empty, empty


def test_autoscaler_queries_return_what_the_scalers_would_see(live: Prometheus) -> None:
    scaled = {
        d["metadata"]["name"].removeprefix("mm-mmsearch-"): d
        for d in of_kind(rendered("everything"), "ScaledObject")
    }
    seen: dict[str, float] = {}
    for name, doc in scaled.items():
        for trigger in doc["spec"]["triggers"]:
            if trigger["type"] != "prometheus":
                continue
            result = live.query(_local(trigger["metadata"]["query"]))
            (value,) = _values(result)
            assert math.isfinite(value) and value >= 0, (name, trigger["name"], value)
            seen[f"{name}/{trigger['name']}"] = value
    assert set(seen) == {
        "embedder/triton-in-flight",
        "reranker/triton-in-flight",
        "searcher/search-rate",
        "searcher/search-p95",
        "triton/triton-queue-time",
    }
    # Idle now: nothing in flight to Triton; searches were made and took time.
    assert seen["embedder/triton-in-flight"] == 0 and seen["reranker/triton-in-flight"] == 0
    assert seen["searcher/search-rate"] > 0 and seen["searcher/search-p95"] > 0
    # The indexer's scaler reads the lag from Kafka; the exported lag agrees: caught up.
    lag = live.query(f'mmsearch:indexer_consumer_lag:sum{{namespace="{NAMESPACE}", topic="content.v1"}}')
    assert _values(lag) == [0.0]


def test_latency_exemplars_link_to_traces(live: Prometheus) -> None:
    """The searches' latency buckets carry their trace ids (OpenMetrics exemplars)."""
    found = live.exemplars(
        'mmsearch_searcher_stage_seconds_bucket{stage="total"} or '
        'grpc_server_handling_seconds_bucket{grpc_method="Search"}'
    )
    trace_ids = {e["labels"]["trace_id"] for series in found for e in series["exemplars"]}
    assert trace_ids and all(re.fullmatch(r"[0-9a-f]{32}", t) for t in trace_ids), found
