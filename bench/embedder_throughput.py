#!/usr/bin/env python3
"""Embedder throughput: the full served path (client -> embedder gRPC ->
Triton -> model) at concurrency 1, 8, 64, against the same model run
in-process with ONNX Runtime at batch sizes 1, 8, 64, in one run.

    .venv/bin/python bench/embedder_throughput.py [--seconds 10] [--markdown]

Each served request carries one text, so Triton's dynamic batcher forms
batches of about the concurrency; the raw baseline runs batches of that size.
Starts its own tritonserver and `mmsearch serve --target embedder` on free
loopback ports and stops them at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import grpc
import numpy as np

from mmsearch.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc
from services.client import DEV_TOKEN, auth_metadata
from services.localstack.mmsearch import start_mmsearch
from services.localstack.processes import free_port, stop_pid
from services.localstack.triton import TritonPorts, start_triton

ROOT = Path(__file__).resolve().parent.parent
WORDS = (  # noqa: SIM905 - a readable vocabulary
    "the a red blue small large cat dog car house river mountain city night morning photo music "
    "song runs sleeps drives flows shines plays near under over beside with quietly quickly old new bright"
).split()


def make_texts(n: int, seed: int = 7) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(8, 20)))) for _ in range(n)]


async def served_point(addr: str, texts: list[str], concurrency: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = embedder_pb2_grpc.EmbedderStub(channel)
        metadata = auth_metadata(DEV_TOKEN)
        stop_at = time.perf_counter() + seconds

        async def worker(offset: int) -> None:
            nonlocal errors
            i = offset
            while time.perf_counter() < stop_at:
                request = embedder_pb2.EmbedRequest(items=[common_pb2.Content(text=texts[i % len(texts)])])
                t0 = time.perf_counter()
                try:
                    await stub.Embed(request, metadata=metadata, timeout=30)
                    latencies.append(time.perf_counter() - t0)
                except grpc.aio.AioRpcError:
                    errors += 1
                i += concurrency

        # Warm-up, then the timed run.
        await stub.Embed(
            embedder_pb2.EmbedRequest(items=[common_pb2.Content(text="warm up")]), metadata=metadata
        )
        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        "items_per_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(latencies, 50) * 1000),
        "p99_ms": float(np.percentile(latencies, 99) * 1000),
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument(
        "--markdown", action="store_true", help="print a markdown table for docs/benchmarks.md"
    )
    args = parser.parse_args()

    texts = make_texts(2048)
    work = Path(tempfile.mkdtemp(prefix="mmsearch-bench-"))
    texts_file = work / "texts.json"
    texts_file.write_text(json.dumps(texts))
    triton_venv = ROOT / ".venv-triton"
    model_dir = ROOT / "model_repository" / "minilm_l6_text"

    raw = json.loads(
        subprocess.run(
            [
                str(triton_venv / "bin" / "python"),
                str(ROOT / "bench" / "raw_onnx.py"),
                "--model-dir",
                str(model_dir),
                "--texts",
                str(texts_file),
                "--seconds",
                str(args.seconds),
                "--batch-sizes",
                *map(str, args.levels),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )

    ports = TritonPorts(http=free_port(), grpc=free_port(), metrics=free_port())
    triton = start_triton(triton_venv, ROOT / "model_repository", ports, work / "triton.log")
    grpc_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")}
    env.update(
        MMSEARCH_GRPC_PORT=str(grpc_port),
        MMSEARCH_METRICS_PORT=str(free_port()),
        MMSEARCH_TRITON_URL=f"127.0.0.1:{ports.grpc}",
        MMSEARCH_LOG_LEVEL="WARNING",
    )
    addr = f"127.0.0.1:{grpc_port}"
    try:
        service = start_mmsearch("embedder", env, work / "serve.log", addr)
    except BaseException:
        stop_pid(triton.pid, timeout_s=20)
        raise
    try:
        served = [asyncio.run(served_point(addr, texts, c, args.seconds)) for c in args.levels]
    finally:
        stop_pid(service.pid, timeout_s=15)
        stop_pid(triton.pid, timeout_s=20)

    rows = []
    for s, r in zip(served, raw, strict=True):
        rows.append(
            f"| {s['concurrency']} | {s['items_per_s']:.0f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} "
            f"| {s['errors']} | {r['items_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
            f"| {s['items_per_s'] / r['items_per_s']:.2f} |"
        )
    header = (
        "| concurrency / batch | served items/s | served p50 ms | served p99 ms | errors "
        "| raw ORT items/s | raw p50 ms (per batch) | raw p99 ms (per batch) | served / raw |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(
        f"Embedder throughput (text, minilm_l6_text), {datetime.now(UTC):%Y-%m-%d}, {machine}, "
        f"{args.seconds:.0f} s per point"
    )
    print(header)
    print("\n".join(rows))
    if not args.markdown:
        print(json.dumps({"served": served, "raw": raw}, indent=2))


if __name__ == "__main__":
    main()
