#!/usr/bin/env python3
"""The text encoder served, and searches while bulk embedding saturates it
(issue #10), in one run on one stack (mmsearch.dev.harness.running_stack:
Tansu, tritonserver with every model, `mmsearch serve --target all`, embedding
cache off):

1. in-process: the deployed model.py `execute` on the same paragraphs, batches
   of 64 (bench/text_encoder.py --in-process-only, in .venv-triton), before the
   stack starts;
2. served: paragraphs through the Embedder gRPC API, one per Embed call at
   concurrency 64, and batched (8 callers x 64 paragraphs per call);
3. RSS of the text model's Python-backend process after warm-up and after all
   the load below (a long realistic ingest);
4. search latency: text searches at concurrency 4 idle, then while bulk Embed
   load runs (callers x 64 paragraphs per call, `x-mmsearch-priority: bulk`),
   then the same load without the header (both interactive: no priorities).

Data: bench/fetch_pydocs.py. `--burn N` runs N busy-loop processes throughout
(a busy machine); they are started and stopped by pid here.

    .venv/bin/python bench/text_serving.py --json out.json [--burn 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_pydocs import paragraphs

from mmsearch.clients.priority import PRIORITY_HEADER
from mmsearch.dev.harness import ALL_MODELS, Stack, running_stack
from mmsearch.dev.metrics_scrape import descendants
from mmsearch.producer import ContentProducer, text_event
from mmsearch.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc, searcher_pb2, searcher_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "mmsearch-dev-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
BULK = (*AUTH, (PRIORITY_HEADER, "bulk"))
TEXT_MODEL = "minilm_l6_text"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000) if values else float("nan")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def text_stub(stack: Stack) -> int:
    """The Python-backend stub process serving the text model."""
    for pid in descendants(stack.pids["triton"]):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "triton_python_backend_stub" in cmdline and f"{TEXT_MODEL}/1/model.py" in cmdline:
            return pid
    raise RuntimeError("no stub process for the text model")


async def drive(call: Callable[[int], Awaitable[int]], concurrency: int, seconds: float) -> dict[str, float]:
    """`concurrency` workers calling back to back for `seconds`: items/s, calls/s, p50/p99, errors."""
    latencies: list[float] = []
    items = 0
    errors = 0
    counter = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal items, errors, counter
        while time.perf_counter() < stop:
            counter += 1
            t0 = time.perf_counter()
            try:
                done = await call(counter)  # not `items += await ...`: that reads items before awaiting
                items += done
                latencies.append(time.perf_counter() - t0)
            except grpc.aio.AioRpcError:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "items_per_s": round(items / elapsed, 1),
        "calls_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(pct(latencies, 50), 1),
        "p99_ms": round(pct(latencies, 99), 1),
        "errors": errors,
        "error_rate": round(errors / max(1, errors + len(latencies)), 4),
    }


def in_process(texts: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            str(ROOT / ".venv-triton" / "bin" / "python"),
            str(ROOT / "bench" / "text_encoder.py"),
            *("--in-process-only", "--texts", str(texts), "--quality-texts", "0"),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


async def served(stack: Stack, texts: list[str], args: argparse.Namespace, report: dict[str, Any]) -> None:
    async with grpc.aio.insecure_channel(stack.addr) as channel:
        embed: Any = embedder_pb2_grpc.EmbedderStub(channel)
        search: Any = searcher_pb2_grpc.SearcherStub(channel)

        def embed_call(batch: int, metadata: Any) -> Callable[[int], Awaitable[int]]:
            async def call(i: int) -> int:
                start = (i * batch) % (len(texts) - batch)
                items = [common_pb2.Content(text=t) for t in texts[start : start + batch]]
                request = embedder_pb2.EmbedRequest(items=items)
                await embed.Embed(request, metadata=metadata, timeout=60)
                return batch

            return call

        async def search_call(i: int) -> int:
            words = texts[i % len(texts)].split()
            request = searcher_pb2.SearchRequest(query=common_pb2.Content(text=" ".join(words[:8])), top_k=10)
            await search.Search(request, metadata=AUTH, timeout=args.search_timeout_s)
            return 1

        # Warm-up: some load, and the largest shape the model takes (64 of the longest texts).
        await drive(embed_call(64, AUTH), 2, 3)
        longest = sorted(texts, key=len)[-64:]
        await embed.Embed(
            embedder_pb2.EmbedRequest(items=[common_pb2.Content(text=t) for t in longest]),
            metadata=AUTH,
            timeout=120,
        )
        pid = text_stub(stack)
        report["rss_mb_after_warmup"] = round(rss_mb(pid), 1)
        report["served_c64_one_per_call"] = await drive(embed_call(1, AUTH), 64, args.seconds)
        report["served_batched_8x64"] = await drive(embed_call(64, AUTH), 8, args.seconds)
        report["search_idle_c4"] = await drive(search_call, 4, args.seconds)
        for name, metadata in (("bulk_header", BULK), ("no_priority", AUTH)):
            load = asyncio.create_task(drive(embed_call(64, metadata), args.bulk_callers, args.seconds + 2))
            await asyncio.sleep(1.0)
            report[f"search_c4_during_bulk_{name}"] = await drive(search_call, 4, args.seconds)
            report[f"bulk_load_{name}"] = await load
        report["rss_mb_after_load"] = round(rss_mb(pid), 1)


def index(stack: Stack, texts: list[str]) -> None:
    """Put the paragraphs into the store through Kafka and the indexer (bulk)."""
    with ContentProducer(stack.bootstrap) as producer:
        for i, text in enumerate(texts):
            producer.publish(text_event("dev", f"p{i}", text))
        producer.flush()


async def wait_indexed(stack: Stack, timeout_s: float) -> None:
    async with grpc.aio.insecure_channel(stack.addr) as channel:
        search: Any = searcher_pb2_grpc.SearcherStub(channel)
        stop = time.monotonic() + timeout_s
        while time.monotonic() < stop:
            with_hits = await search.Search(
                searcher_pb2.SearchRequest(query=common_pb2.Content(text="python"), top_k=10),
                metadata=AUTH,
                timeout=30,
            )
            if len(with_hits.hits) >= 10:
                return
            await asyncio.sleep(1)
    raise RuntimeError("the store got no documents in time")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=1024)
    parser.add_argument("--index", type=int, default=300, help="paragraphs indexed before searching")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--bulk-callers", type=int, default=8)
    parser.add_argument("--search-timeout-s", type=float, default=2.0)
    parser.add_argument("--burn", type=int, default=0, help="busy-loop processes running throughout")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    texts = paragraphs(args.texts, seed=1)
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.burn)]
    report: dict[str, Any] = {"texts": len(texts), "burners": args.burn, "seconds": args.seconds}
    try:
        report["in_process"] = in_process(len(texts))
        with (
            tempfile.TemporaryDirectory(prefix="text-serving-") as work,
            running_stack(
                Path(work), models=ALL_MODELS, env_overrides={"MMSEARCH_EMBED_CACHE_MB": "0"}
            ) as stack,
        ):
            index(stack, texts[: args.index])
            asyncio.run(wait_indexed(stack, 300))
            asyncio.run(served(stack, texts, args, report))
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    base = report["in_process"]["texts_per_s"]
    for key in ("served_c64_one_per_call", "served_batched_8x64"):
        report[f"{key}_over_in_process"] = round(report[key]["items_per_s"] / base, 3)
    idle = report["search_idle_c4"]["p99_ms"]
    for name in ("bulk_header", "no_priority"):
        report[f"search_p99_during_bulk_{name}_over_idle"] = round(
            report[f"search_c4_during_bulk_{name}"]["p99_ms"] / idle, 2
        )
    report["rss_after_over_warmup"] = round(report["rss_mb_after_load"] / report["rss_mb_after_warmup"], 2)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
