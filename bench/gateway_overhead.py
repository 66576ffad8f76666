#!/usr/bin/env python3
"""What the HTTP/JSON gateway adds to a search: the same Search requests sent
directly over gRPC and through the gateway (POST /v1/search), interleaved in
blocks within one run against one `mmsearch serve --target all`, at concurrency
1 and 8; p50/p99 latency per path and the difference.

    .venv/bin/python bench/gateway_overhead.py [--requests 400] [--json out.json]

Corpus: the bundled sample photos and eight documents, published through Kafka
and indexed (real Triton, broker and store on free loopback ports, started by
mmsearch.dev.harness.running_stack and stopped after). Two queries: a text query
(the embedder is called; its cache answers repeats, equally for both paths) and
a raw 384-d vector query (no model: the gateway's share of the time is largest).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
from google.protobuf import json_format

from mmsearch.clients.connect import DEV_TOKEN, auth_metadata
from mmsearch.dev.harness import running_stack
from mmsearch.dev.processes import free_port
from mmsearch.producer import ContentProducer, media_event, text_event
from mmsearch.v1 import common_pb2, indexer_pb2, indexer_pb2_grpc, searcher_pb2, searcher_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / ".cache" / "samples"
MODELS = ("minilm_l6_text", "efficientnet_lite0_conse", "aisfx_audio", "ppocr_text", "minilm_maxsim_rerank")
QUERIES = (
    "a photo of a cat",
    "a cup of coffee",
    "a rocket launch at night",
    "an astronaut in a space suit",
    "a man with a camera",
    "old coins on a table",
    "a horse",
    "green grass",
    "payment reminder",
    "how to brew espresso",
)
DOCS = (
    "Cats sleep most of the day and love warm windows.",
    "Espresso is brewed by forcing hot water through finely ground coffee.",
    "The rocket lifted off from the launch pad at dawn.",
    "Payment reminder for invoice INV-2024-00731, due next week.",
    "Tomatoes grow best in full sun with regular watering.",
    "The museum shows a collection of ancient coins.",
    "Horses need space to run and fresh hay every day.",
    "The photographer set up a camera on a tripod in the park.",
)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


async def measure(
    call: Callable[[searcher_pb2.SearchRequest], Awaitable[None]],
    requests: list[searcher_pb2.SearchRequest],
    concurrency: int,
) -> list[float]:
    latencies: list[float] = []
    queue = list(requests)

    async def worker() -> None:
        while queue:
            request = queue.pop()
            start = time.perf_counter()
            await call(request)
            latencies.append((time.perf_counter() - start) * 1000)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def wait_indexed(channel: grpc.aio.Channel, produced: int) -> None:
    stub = indexer_pb2_grpc.IndexerAdminStub(channel)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = await stub.GetStatus(indexer_pb2.GetStatusRequest(), metadata=auth_metadata(DEV_TOKEN))
        if sum(p.committed_offset for p in status.partitions) >= produced and all(
            p.lag == 0 for p in status.partitions
        ):
            return
        await asyncio.sleep(0.5)
    raise SystemExit("the corpus was not indexed in 300 s")


async def run(addr: str, gateway: str, bootstrap: str, total: int, block: int) -> dict[str, Any]:
    events = [text_event("dev", f"doc-{i}", text, title=f"doc {i}") for i, text in enumerate(DOCS)]
    for path in sorted((SAMPLES / "images").iterdir()):
        events.append(media_event("dev", path.name, path.read_bytes(), common_pb2.MODALITY_IMAGE))
    with ContentProducer(bootstrap) as producer:
        for event in events:
            producer.publish(event)
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((64, 384)).astype(np.float32)
    scenarios = {
        "text query": [
            searcher_pb2.SearchRequest(query=common_pb2.Content(text=QUERIES[i % len(QUERIES)]), top_k=10)
            for i in range(total)
        ],
        "vector query": [
            searcher_pb2.SearchRequest(
                query=common_pb2.Content(vector=common_pb2.Vector(values=vectors[i % 64].tolist())), top_k=10
            )
            for i in range(total)
        ],
    }
    results: dict[str, Any] = {}
    async with (
        grpc.aio.insecure_channel(addr) as channel,
        httpx.AsyncClient(
            base_url=gateway,
            headers={"authorization": f"Bearer {DEV_TOKEN}"},
            timeout=30,
            limits=httpx.Limits(max_keepalive_connections=16),
        ) as http,
    ):
        await wait_indexed(channel, len(events))
        stub = searcher_pb2_grpc.SearcherStub(channel)

        async def direct(request: searcher_pb2.SearchRequest) -> None:
            await stub.Search(request, metadata=auth_metadata(DEV_TOKEN), timeout=30)

        # A client holds its JSON already: bodies are made before the clock starts.
        bodies = {id(r): json_format.MessageToJson(r, indent=None) for rs in scenarios.values() for r in rs}

        async def via_gateway(request: searcher_pb2.SearchRequest) -> None:
            body = bodies[id(request)]
            answer = await http.post("/v1/search", content=body, headers={"content-type": "application/json"})
            answer.raise_for_status()
            answer.json()  # a client parses the answer; part of the cost

        for name, requests in scenarios.items():
            for concurrency in (1, 8):
                # Warm-up: connections, the embedder's cache, the store's pages.
                await measure(direct, requests[:40], concurrency)
                await measure(via_gateway, requests[:40], concurrency)
                grpc_ms: list[float] = []
                http_ms: list[float] = []
                for start in range(0, total, block):  # interleaved blocks: the same conditions for both
                    chunk = requests[start : start + block]
                    grpc_ms += await measure(direct, chunk, concurrency)
                    http_ms += await measure(via_gateway, chunk, concurrency)
                row = {
                    "requests": len(grpc_ms),
                    "grpc_p50_ms": percentile(grpc_ms, 50),
                    "grpc_p99_ms": percentile(grpc_ms, 99),
                    "gateway_p50_ms": percentile(http_ms, 50),
                    "gateway_p99_ms": percentile(http_ms, 99),
                    "grpc_mean_ms": statistics.fmean(grpc_ms),
                    "gateway_mean_ms": statistics.fmean(http_ms),
                }
                row["overhead_p50_ms"] = row["gateway_p50_ms"] - row["grpc_p50_ms"]
                row["overhead_p99_ms"] = row["gateway_p99_ms"] - row["grpc_p99_ms"]
                results[f"{name}, concurrency {concurrency}"] = row
                print(name, concurrency, {k: round(v, 2) for k, v in row.items()}, flush=True)
    return results


def machine() -> dict[str, str]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=False
    )
    cpu = next(
        (
            ln.split(":")[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "date": datetime.now(UTC).isoformat(timespec="minutes"),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "commit": commit.stdout.strip(),
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="per path, scenario and concurrency")
    parser.add_argument("--block", type=int, default=50, help="requests per interleaved block")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as work:
        port = free_port()
        overrides = {"MMSEARCH_GATEWAY_PORT": str(port), "MMSEARCH_SEARCH_RECALL_SAMPLE_RATE": "0"}
        with running_stack(Path(work), models=MODELS, env_overrides=overrides) as stack:
            info = machine()
            results = asyncio.run(
                run(stack.addr, f"http://127.0.0.1:{port}", stack.bootstrap, args.requests, args.block)
            )
    report = {"machine": info, "results": results}
    print(
        "\n| scenario | requests | gRPC p50 | gRPC p99 | gateway p50 | gateway p99 "
        "| overhead p50 | overhead p99 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        cells = [r["grpc_p50_ms"], r["grpc_p99_ms"], r["gateway_p50_ms"], r["gateway_p99_ms"]]
        overhead = f"{r['overhead_p50_ms']:+.2f} | {r['overhead_p99_ms']:+.2f}"
        print(f"| {name} | {r['requests']} | " + " | ".join(f"{c:.2f}" for c in cells) + f" | {overhead} |")
    print(json.dumps(info))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
