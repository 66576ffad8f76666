#!/usr/bin/env python3
"""Image ingest vs the embedder alone, and the model processes' memory (issue #10).

    .venv/bin/python bench/image_ingest.py [--images 1000] [--json PATH]

One stack from mmsearch.dev.harness.running_stack at its DEFAULT settings (OCR on the
enrichment stage), stopped by process group at the end:

1. warm-up: the first 32 images through Kafka; RSS of tritonserver, each model's
   Python-backend stub and `mmsearch serve`;
2. embedder alone: every image through `Embedder.Embed` (16 per call, 2 in flight, as
   tenant-b: its own cache entries) -> images/s;
3. ingest: every image published with ContentProducer, timed until every partition is
   committed past the last offset (the vector is searchable then; OCR text joins later on
   the enrichment stage): images/s, Embed calls and splits, dead letters by reason;
   ratio ingest / embedder alone (goal >= 0.8); RSS again (goal: every model process
   within 1.5x of its warm-up RSS).

CPU seconds of every process (tritonserver, each model's stub, `mmsearch serve`) are read
from /proc around both phases: on a shared machine the CPU spent per image is a steadier
comparison than wall time (both are reported).

Images (bench/realistic_ingest.make_images): the bundled sample photos, the figures of
Debian's python3.11-doc and Fashion-MNIST upscaled to 224 px. Run it on a quiet machine
for absolute numbers; the ratio is measured within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest_throughput import machine
from realistic_ingest import (
    MODEL_NAMES,
    TENANT,
    batched,
    embed_rate,
    make_images,
    model_rss,
    publish_and_wait,
)

from mmsearch.dev.harness import Stack, running_stack
from mmsearch.dev.metrics_scrape import descendants, scrape, total, tree_usage
from mmsearch.producer import media_event
from mmsearch.v1 import common_pb2

WARM_UP = 32


def cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU seconds so far of tritonserver (itself), each model's stub(s) and `mmsearch serve`."""
    pids = stack.pids
    named = {"mmsearch serve": pids["serve"]}
    for pid in descendants(pids["triton"]):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        named[next((m for m in MODEL_NAMES if f"/{m}/" in cmdline), f"pid {pid}")] = pid
    usage = {name: cpu for name, (cpu, _) in tree_usage(named).items()}
    usage["tritonserver"] = tree_usage({"t": pids["triton"]})["t"][0] - sum(
        v for k, v in usage.items() if k != "mmsearch serve"
    )
    return usage


def wait_for_ocr(stack: Stack, count: int, timeout_s: float) -> None:
    """Until the enrichment stage finished `count` tasks (text stored or dead-lettered), so
    the warm-up's OCR does not run during the measurements."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        samples = scrape(stack.metrics_url)
        done = total(samples, "mmsearch_indexer_ocr_freshness_seconds_count") + total(
            samples, "mmsearch_indexer_events_total", outcome="dlq"
        )
        if done >= count:
            return
        time.sleep(1.0)
    print(f"warning: the warm-up's OCR did not finish within {timeout_s} s", flush=True)


def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before.get(k, 0.0), 1) for k in after}


def run(images: list[tuple[bytes, str]], stall_s: float) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="mmsearch-image-ingest-") as work,
        running_stack(Path(work)) as stack,
    ):
        warm = [
            media_event(TENANT, f"warm-{i}", d, common_pb2.MODALITY_IMAGE, mime_type=m)
            for i, (d, m) in enumerate(images[:WARM_UP])
        ]
        publish_and_wait(stack, warm, stall_s).pop("_metrics")
        wait_for_ocr(stack, len(warm), stall_s)
        rss_warm = model_rss(stack)
        contents = [common_pb2.Content(image=common_pb2.Media(data=d, mime_type=m)) for d, m in images]
        cpu0 = cpu_seconds(stack)
        alone = asyncio.run(embed_rate(stack.addr, batched(contents, 16), 2, len(contents)))
        cpu1 = cpu_seconds(stack)
        print(f"embedder alone: {alone['units_per_s']} images/s", flush=True)
        events = [
            media_event(TENANT, f"img-{i}", d, common_pb2.MODALITY_IMAGE, mime_type=m)
            for i, (d, m) in enumerate(images)
        ]
        ingest = publish_and_wait(stack, events, stall_s)
        ingest.pop("_metrics")
        cpu2 = cpu_seconds(stack)
        rss_after = model_rss(stack)
    ratio = round(ingest["events_per_s"] / alone["units_per_s"], 3)
    growth = {
        name: round(rss_after[name] / rss_warm[name], 2)
        for name in rss_after
        if name in MODEL_NAMES and rss_warm.get(name)
    }
    cpu_alone, cpu_ingest = spent(cpu0, cpu1), spent(cpu1, cpu2)
    return {
        "cpu_s_embedder_alone": cpu_alone,
        "cpu_s_ingest": cpu_ingest,
        "cpu_ratio_alone_vs_ingest": round(sum(cpu_alone.values()) / max(sum(cpu_ingest.values()), 1e-9), 3),
        "embedder_alone": alone,
        "ingest": ingest,
        "ratio_ingest_vs_embedder": ratio,
        "rss_mb_warm": {k: round(v / 2**20) for k, v in rss_warm.items()},
        "rss_mb_after": {k: round(v / 2**20) for k, v in rss_after.items()},
        "model_rss_growth": growth,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--stall-seconds", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    images, kinds = make_images(args.images, args.seed)
    result = {
        "machine": machine(),
        "images": len(images),
        "image_kinds": kinds,
        **run(images, args.stall_seconds),
    }
    ing = result["ingest"]
    print(
        f"ingest {ing['events_per_s']} images/s in {ing['seconds']} s "
        f"(ratio {result['ratio_ingest_vs_embedder']}); Embed calls {ing['embed_calls']}, "
        f"splits {ing['embed_splits']}; dead letters {ing['dead_letters']}; "
        f"model RSS growth {result['model_rss_growth']}; CPU s alone {result['cpu_s_embedder_alone']}, "
        f"ingest {result['cpu_s_ingest']} (ratio {result['cpu_ratio_alone_vs_ingest']})",
        flush=True,
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
