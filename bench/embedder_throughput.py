#!/usr/bin/env python3
"""Embedder throughput per modality: the full served path (client -> embedder
gRPC -> Triton -> model) at concurrency 1, 8, 64, against the same model run
in-process (its own model.py `execute`, bench/raw_onnx.py) at batch sizes
1, 8, 64, in one run.

    .venv/bin/python bench/embedder_throughput.py [--modalities text image audio]
        [--seconds 10] [--markdown]

Each served request carries one item, so Triton's dynamic batcher forms
batches of about the concurrency; the raw baseline executes batches of that
size. Served image and audio requests carry encoded files (640x480 JPEG, 5 s
WAV) that the embedder decodes; the raw baseline gets the decoded tensors, so
decoding counts against the served path only. Starts its own tritonserver and
`mmsearch serve --target embedder` on free loopback ports
(mmsearch.dev.harness.running_stack) and stops them. A quick end-to-end check:
`--modalities text --seconds 1 --levels 1`.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import soundfile
from PIL import Image

from mmsearch.clients.connect import DEV_TOKEN, auth_metadata
from mmsearch.dev.harness import running_stack
from mmsearch.kit.media import AudioLimits, ImageLimits, classifier_pixels, decode_audio, decode_image
from mmsearch.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / ".cache" / "samples"
WORDS = (  # noqa: SIM905 - a readable vocabulary
    "the a red blue small large cat dog car house river mountain city night morning photo music "
    "song runs sleeps drives flows shines plays near under over beside with quietly quickly old new bright"
).split()
MODELS = {"text": "minilm_l6_text", "image": "efficientnet_lite0_conse", "audio": "aisfx_audio"}
SPACES = {"text": "", "image": "", "audio": "audio"}
# Everything the embedder's health needs, so it reports SERVING.
TRITON_MODELS = ("minilm_l6_text", "efficientnet_lite0_conse", "aisfx_audio", "ppocr_text")
AUDIO_SECONDS = 5.0
AUDIO_RATE = 44100


@dataclass
class Workload:
    """Served request contents and the raw baseline's preprocessed rows."""

    contents: list[common_pb2.Content]
    rows: dict[str, np.ndarray]


def text_workload(n: int = 2048, seed: int = 7) -> Workload:
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(8, 20)))) for _ in range(n)]
    rows = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
    return Workload([common_pb2.Content(text=t) for t in texts], {"TEXT": rows})


def image_workload() -> Workload:
    contents, pixels = [], []
    limits = ImageLimits(max_bytes=1 << 26, max_pixels=1 << 26)
    for path in sorted((SAMPLES / "images").iterdir()):
        out = io.BytesIO()
        Image.open(path).convert("RGB").resize((640, 480), Image.Resampling.BICUBIC).save(
            out, format="JPEG", quality=90
        )
        data = out.getvalue()
        contents.append(common_pb2.Content(image=common_pb2.Media(data=data, mime_type="image/jpeg")))
        pixels.append(classifier_pixels(decode_image(data, "image/jpeg", limits, "bench", min_side=224)))
    return Workload(contents, {"PIXELS": np.stack(pixels)})


def audio_workload() -> Workload:
    contents, rows = [], {}
    limits = AudioLimits(max_bytes=1 << 26, max_seconds=30.0, sample_rate=AUDIO_RATE)
    for i, path in enumerate(sorted((SAMPLES / "audio").iterdir())):
        clip = decode_audio(path.read_bytes(), "", limits, "bench").samples
        clip = np.resize(clip, int(AUDIO_SECONDS * AUDIO_RATE))  # loop or cut to 5 s
        out = io.BytesIO()
        soundfile.write(out, clip, AUDIO_RATE, format="WAV", subtype="PCM_16")
        data = out.getvalue()
        contents.append(common_pb2.Content(audio=common_pb2.Media(data=data, mime_type="audio/wav")))
        rows[f"WAVEFORM_{i}"] = decode_audio(data, "audio/wav", limits, "bench").samples
    return Workload(contents, rows)


async def served_point(
    addr: str, contents: list[common_pb2.Content], space: str, concurrency: int, seconds: float
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(
        addr, options=[("grpc.max_receive_message_length", 64 << 20)]
    ) as channel:
        stub = embedder_pb2_grpc.EmbedderStub(channel)
        metadata = auth_metadata(DEV_TOKEN)
        ref = common_pb2.SpaceRef(name=space)
        stop_at = time.perf_counter() + seconds
        # Items repeat across rounds: the run disables the embedder's cache
        # (MMSEARCH_EMBED_CACHE_MB=0) so that every request reaches the model.

        async def worker(offset: int) -> None:
            nonlocal errors
            i = offset
            while time.perf_counter() < stop_at:
                request = embedder_pb2.EmbedRequest(space=ref, items=[contents[i % len(contents)]])
                t0 = time.perf_counter()
                try:
                    await stub.Embed(request, metadata=metadata, timeout=60)
                    latencies.append(time.perf_counter() - t0)
                except grpc.aio.AioRpcError:
                    errors += 1
                i += concurrency

        # Warm-up, then the timed run.
        await stub.Embed(embedder_pb2.EmbedRequest(space=ref, items=contents[:1]), metadata=metadata)
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


def raw_points(
    modality: str, rows: dict[str, np.ndarray], levels: list[int], seconds: float, work: Path
) -> Any:
    rows_file = work / f"{modality}.npz"
    np.savez(rows_file, **rows)  # type: ignore[arg-type]
    command = [str(ROOT / ".venv-triton" / "bin" / "python"), str(ROOT / "bench" / "raw_onnx.py")]
    command += ["--model-dir", str(ROOT / "model_repository" / MODELS[modality]), "--rows", str(rows_file)]
    command += ["--seconds", str(seconds), "--batch-sizes", *map(str, levels)]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--modalities", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument(
        "--markdown", action="store_true", help="print markdown tables for docs/benchmarks.md"
    )
    args = parser.parse_args()

    builders = {"text": text_workload, "image": image_workload, "audio": audio_workload}
    workloads = {m: builders[m]() for m in args.modalities}
    work = Path(tempfile.mkdtemp(prefix="mmsearch-bench-"))
    raw = {m: raw_points(m, w.rows, args.levels, args.seconds, work) for m, w in workloads.items()}

    with running_stack(
        work,
        models=TRITON_MODELS,
        with_broker=False,
        target="embedder",
        env_overrides={"MMSEARCH_LOG_LEVEL": "WARNING", "MMSEARCH_EMBED_CACHE_MB": "0"},
        startup_timeout_s=120,
    ) as stack:
        served = {
            m: [
                asyncio.run(served_point(stack.addr, w.contents, SPACES[m], c, args.seconds))
                for c in args.levels
            ]
            for m, w in workloads.items()
        }

    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"Embedder throughput, {datetime.now(UTC):%Y-%m-%d}, {machine}, {args.seconds:.0f} s per point")
    for modality in workloads:
        print(f"\n{modality} ({MODELS[modality]})\n")
        print(
            "| concurrency / batch | served items/s | served p50 ms | served p99 ms | errors "
            "| raw items/s | raw p50 ms (per batch) | raw p99 ms (per batch) | served / raw |\n"
            "|---|---|---|---|---|---|---|---|---|"
        )
        for s, r in zip(served[modality], raw[modality], strict=True):
            print(
                f"| {s['concurrency']} | {s['items_per_s']:.1f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} "
                f"| {s['errors']} | {r['items_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
                f"| {s['items_per_s'] / r['items_per_s']:.2f} |"
            )
    if not args.markdown:
        print(json.dumps({"served": served, "raw": raw}, indent=2))


if __name__ == "__main__":
    main()
