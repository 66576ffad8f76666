#!/usr/bin/env python3
"""Ingest throughput and freshness: Kafka -> indexer -> embedder -> store,
against the embedder's own throughput for the same content, in one run.

    .venv/bin/python bench/ingest_throughput.py [--texts 3000] [--images 300]
        [--freshness-seconds 30] [--json PATH] [--smoke]

Starts its own tritonserver (every model `mmsearch serve --target all` needs
for SERVING), a Tansu broker and `mmsearch serve --target all` on free
loopback ports (mmsearch.dev.harness.running_stack), with a fresh store in a
temp dir, a unique topic and consumer group, the embedding cache off
(MMSEARCH_EMBED_CACHE_MB=0, so every item reaches the model) and WARNING logs;
stops them by pid at the end. --smoke runs every phase at the smallest sizes
(to check the script, not to measure). Phases:

1. warm-up: a few text and image events through the indexer (group joined,
   models warm, collection created);
2. embedder, text: every text of the ingest set through `Embedder.Embed`,
   --text-batch per request, --text-concurrency requests in flight;
3. ingest, text: publish the same number of distinct text events, timed from
   the first publish until IndexerAdmin.GetStatus shows every partition's
   committed offset at or past what was produced (lag 0);
4. freshness: text events at a steady rate of half the measured text ingest
   throughput for --freshness-seconds, event_time = publish time. Per event:
   the first GetStatus poll (every --fresh-interval-ms) whose committed
   offset passed the event's offset, minus its event_time (commit follows the
   durable store write, so this is an upper bound with the poll interval as
   resolution). Also from the indexer's `mmsearch_indexer_freshness_seconds`
   histogram (its bucket edges limit resolution; 2 s is an edge, so the share
   of events at or under 2 s is exact);
5. embedder, images: Embed (--image-batch JPEGs per request) and OCR
   (`ExtractText`, which the indexer also runs for every image) on the same
   640x480 JPEGs (bundled photos, random crops and brightness, distinct bytes);
6. ingest, images: as 3.

A phase in which nothing is committed for --stall-seconds is reported as
stalled (with the indexer's last pause reason) instead of waiting forever; the
images run last so that a stall cannot hold up the other phases.
--service-env MMSEARCH_X=V changes a service setting for experiments (e.g.
the Triton deadline), and the output lists what was changed.

Every phase also records a light profile from the service's and Triton's
Prometheus metrics (time in Embed / ExtractText / store writes per batch,
Triton round trips and compute) and the CPU seconds of each process, so the
limit is visible, and how much CPU other processes on the machine took.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from kafka import KafkaProducer
from PIL import Image, ImageEnhance

from mmsearch.clients.connect import DEV_TOKEN, auth_metadata
from mmsearch.dev.harness import ALL_MODELS, Stack, running_stack
from mmsearch.dev.metrics_scrape import (
    Samples,
    buckets,
    cpu_snapshot,
    histogram_quantile,
    scrape,
    subtract,
    total,
)
from mmsearch.kit.config import Settings
from mmsearch.kit.signing import DEV_PRODUCER, DEV_PRODUCER_SECRET, signed_headers
from mmsearch.producer import media_event, text_event
from mmsearch.v1 import (
    common_pb2,
    embedder_pb2,
    embedder_pb2_grpc,
    events_pb2,
    indexer_pb2,
    indexer_pb2_grpc,
)

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / ".cache" / "samples" / "images"
# Every model `--target all` needs to report SERVING (embedder spaces, OCR, reranker).
TRITON_MODELS = ALL_MODELS
TENANT = "bench"
IMAGE_SIZE = (640, 480)
WORDS = (  # noqa: SIM905 - a readable vocabulary
    "the a red blue green small large old new bright dark quiet cat dog bird horse car train boat "
    "house bridge river mountain city forest beach garden night morning winter summer photo music "
    "song story runs sleeps drives flows shines plays waits grows falls near under over beside "
    "with across quietly quickly slowly today again"
).split()


# --- workloads -----------------------------------------------------------
def make_texts(n: int, seed: int) -> list[str]:
    """n distinct sentences of 8-20 words (seeded)."""
    rng = random.Random(seed)
    texts: list[str] = []
    seen: set[str] = set()
    while len(texts) < n:
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20)))
        if text not in seen:
            seen.add(text)
            texts.append(text)
    return texts


def make_images(n: int, seed: int) -> list[bytes]:
    """n distinct 640x480 JPEGs: bundled photos, random crop (70-100 % per side),
    brightness 0.85-1.15, quality 85-92."""
    rng = random.Random(seed)
    photos = [Image.open(p).convert("RGB") for p in sorted(SAMPLES.iterdir())]
    if not photos:
        raise SystemExit(f"no photos in {SAMPLES}: run `make samples`")
    out: list[bytes] = []
    seen: set[str] = set()
    while len(out) < n:
        photo = photos[len(out) % len(photos)]
        w, h = photo.size
        cw, ch = int(w * rng.uniform(0.7, 1.0)), int(h * rng.uniform(0.7, 1.0))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        image = photo.crop((x, y, x + cw, y + ch)).resize(IMAGE_SIZE, Image.Resampling.BICUBIC)
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.85, 1.15))
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=rng.randint(85, 92))
        digest = hashlib.sha256(buf.getvalue()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            out.append(buf.getvalue())
    return out


def text_events(prefix: str, texts: Sequence[str]) -> list[events_pb2.ContentEvent]:
    return [text_event(TENANT, f"{prefix}-{i}", t, source="bench") for i, t in enumerate(texts)]


def image_events(prefix: str, images: Sequence[bytes]) -> list[events_pb2.ContentEvent]:
    return [
        media_event(TENANT, f"{prefix}-{i}", data, common_pb2.MODALITY_IMAGE, mime_type="image/jpeg")
        for i, data in enumerate(images)
    ]


# --- phases: metrics and CPU around a measured step ----------------------
@dataclass
class Phase:
    name: str
    wall_s: float = 0.0
    service: Samples = field(default_factory=dict)
    triton: Samples = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    loadavg: tuple[float, float, float] = (0.0, 0.0, 0.0)


@contextlib.contextmanager
def phase(stack: Stack, name: str, phases: list[Phase]) -> Iterator[Phase]:
    record = Phase(name)
    service0, triton0 = scrape(stack.metrics_url), scrape(stack.triton_metrics_url)
    cpu0, t0 = cpu_snapshot(stack.pids), time.perf_counter()
    yield record
    record.wall_s = time.perf_counter() - t0
    cpu1 = cpu_snapshot(stack.pids)
    record.service = subtract(scrape(stack.metrics_url), service0)
    record.triton = subtract(scrape(stack.triton_metrics_url), triton0)
    record.cpu_s = {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1}
    ours = sum(v for k, v in record.cpu_s.items() if k != "machine")
    record.cpu_s["other"] = max(0.0, record.cpu_s["machine"] - ours)
    record.loadavg = os.getloadavg()
    phases.append(record)


def profile(p: Phase) -> dict[str, Any]:
    """Where a phase's time went, from the service's and Triton's metrics."""
    s, wall = p.service, max(p.wall_s, 1e-9)
    rpc = "grpc_server_handling_seconds"
    out: dict[str, Any] = {"wall_s": round(p.wall_s, 3), "loadavg_1m": round(p.loadavg[0], 2)}
    batches = total(s, "mmsearch_indexer_batch_records_count")
    if batches:
        out["indexer_batches"] = int(batches)
        out["records_per_batch"] = round(total(s, "mmsearch_indexer_batch_records_sum") / batches, 1)
    retries = total(s, "mmsearch_indexer_batch_retries_total")
    if retries:
        out["batch_retries"] = int(retries)
    for outcome in ("indexed", "duplicate", "dlq"):
        count = total(s, "mmsearch_indexer_events_total", outcome=outcome)
        if count:
            out[f"events_{outcome}"] = int(count)
    stages: dict[str, dict[str, float]] = {}
    for label, name, labels in (
        ("Embed RPC", f"{rpc}", {"grpc_method": "Embed"}),
        ("ExtractText RPC", f"{rpc}", {"grpc_method": "ExtractText"}),
        ("store write", "mmsearch_indexer_store_write_seconds", {}),
        ("GetStatus RPC (bench polling)", f"{rpc}", {"grpc_method": "GetStatus"}),
    ):
        count = total(s, f"{name}_count", **labels)
        if count:
            seconds = total(s, f"{name}_sum", **labels)
            stages[label] = {
                "calls": int(count),
                "total_s": round(seconds, 3),
                "mean_ms": round(1000 * seconds / count, 1),
                "share_of_wall": round(seconds / wall, 3),
            }
    out["stages"] = stages
    for modality in ("text", "image"):
        count = total(s, "mmsearch_embedder_preprocess_seconds_count", modality=modality)
        if count:
            seconds = total(s, "mmsearch_embedder_preprocess_seconds_sum", modality=modality)
            out.setdefault("embedder_preprocess", {})[modality] = {
                "calls": int(count),
                "total_s": round(seconds, 3),
                "mean_ms": round(1000 * seconds / count, 1),
            }
    models: dict[str, dict[str, float]] = {}
    for model in TRITON_MODELS:
        count = total(s, "mmsearch_embedder_triton_seconds_count", model=model)
        execs = total(p.triton, "nv_inference_exec_count_total", model=model)
        if not count and not execs:
            continue
        inferences = total(p.triton, "nv_inference_count_total", model=model)
        compute_us = sum(
            total(p.triton, f"nv_inference_compute_{part}_duration_us_total", model=model)
            for part in ("input", "infer", "output")
        )
        queue_us = total(p.triton, "nv_inference_queue_duration_us_total", model=model)
        requests = total(p.triton, "nv_inference_request_success_total", model=model)
        models[model] = {
            "embedder_requests": int(count),
            "embedder_round_trip_mean_ms": round(
                1000 * total(s, "mmsearch_embedder_triton_seconds_sum", model=model) / max(count, 1), 1
            ),
            "triton_executions": int(execs),
            "inferences": int(inferences),
            "compute_ms_per_inference": round(compute_us / 1000 / max(inferences, 1), 2),
            "mean_batch": round(inferences / max(execs, 1), 1),
            "triton_compute_s": round(compute_us / 1e6, 3),
            "triton_compute_share_of_wall": round(compute_us / 1e6 / wall, 3),
            "triton_queue_mean_ms": round(queue_us / 1000 / max(requests, 1), 1),
        }
    out["triton_models"] = models
    out["cpu_s"] = {k: round(v, 2) for k, v in p.cpu_s.items()}
    out["cpu_utilization_of_machine"] = round(p.cpu_s.get("machine", 0.0) / wall / (os.cpu_count() or 1), 3)
    return out


# --- the embedder on its own ---------------------------------------------
async def embedder_rate(
    addr: str, requests: Sequence[Any], concurrency: int, method: str, items_per_request: Sequence[int]
) -> dict[str, Any]:
    """Send `requests` (Embed or ExtractText) with `concurrency` in flight; items/s overall."""
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(
        addr,
        options=[("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20)],
    ) as channel:
        stub = embedder_pb2_grpc.EmbedderStub(channel)
        call = getattr(stub, method)
        metadata = auth_metadata(DEV_TOKEN)
        await call(requests[0], metadata=metadata, timeout=300)  # warm-up, not timed
        queue = list(range(len(requests)))

        async def worker() -> None:
            while queue:
                request = requests[queue.pop(0)]
                t0 = time.perf_counter()
                await call(request, metadata=metadata, timeout=300)
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    items = sum(items_per_request)
    return {
        "method": method,
        "requests": len(requests),
        "items": items,
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "items_per_s": round(items / elapsed, 2),
        "request_p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1),
        "request_p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 1),
    }


def embed_requests(contents: Sequence[common_pb2.Content], batch: int) -> list[embedder_pb2.EmbedRequest]:
    return [
        embedder_pb2.EmbedRequest(space=common_pb2.SpaceRef(name="default"), items=contents[i : i + batch])
        for i in range(0, len(contents), batch)
    ]


# --- Kafka and the indexer's status --------------------------------------
class Publisher:
    """Publishes ContentEvents the way mmsearch.producer.ContentProducer does
    (protobuf, key tenant/item_id, acks=all, linger 20 ms) and keeps each
    record's future, for its partition and offset."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=20, retries=5, max_request_size=64 << 20
        )

    def send(self, event: events_pb2.ContentEvent) -> Any:
        value = event.SerializeToString()
        return self._producer.send(
            self.topic,
            key=f"{event.tenant}/{event.item_id}".encode(),
            value=value,
            headers=[
                ("content-type", b"application/x-protobuf"),
                *signed_headers(DEV_PRODUCER, DEV_PRODUCER_SECRET, value),
            ],
        )

    def flush(self) -> None:
        self._producer.flush(timeout=120)

    def close(self) -> None:
        self._producer.close(5)


class Status:
    def __init__(self, addr: str, topic: str) -> None:
        self._channel = grpc.insecure_channel(addr)
        self._stub = indexer_pb2_grpc.IndexerAdminStub(self._channel)
        self._topic = topic
        self._metadata = auth_metadata(DEV_TOKEN)

    def get(self) -> indexer_pb2.GetStatusResponse:
        response: indexer_pb2.GetStatusResponse = self._stub.GetStatus(
            indexer_pb2.GetStatusRequest(), metadata=self._metadata, timeout=10
        )
        return response

    def committed(self) -> tuple[dict[int, int], dict[int, int], indexer_pb2.GetStatusResponse]:
        """(committed offset, lag) per partition of the topic, and the whole status."""
        response = self.get()
        parts = [p for p in response.partitions if p.topic == self._topic]
        return {p.partition: p.committed_offset for p in parts}, {p.partition: p.lag for p in parts}, response

    def close(self) -> None:
        self._channel.close()


@dataclass
class Progress:
    done_at: float | None  # wall time when every partition was caught up; None if it stalled
    last_progress_at: float
    committed: int  # of the records between `starts` and `ends`
    pause_reason: str = ""


def offsets(metas: Sequence[Any]) -> tuple[dict[int, int], dict[int, int]]:
    """Per partition, the first offset produced and the offset after the last."""
    starts: dict[int, int] = {}
    ends: dict[int, int] = {}
    for meta in metas:
        starts[meta.partition] = min(starts.get(meta.partition, meta.offset), meta.offset)
        ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
    return starts, ends


def wait_caught_up(
    status: Status, starts: dict[int, int], ends: dict[int, int], interval_s: float, stall_s: float
) -> Progress:
    """Poll until every partition's committed offset reached `ends` with lag 0, or until
    nothing was committed for `stall_s` (the indexer retrying a batch that keeps failing)."""
    best, last, reason = -1, time.time(), ""
    while True:
        committed, lag, response = status.committed()
        now = time.time()
        reason = response.pause_reason or reason
        count = sum(max(0, min(committed.get(p, 0), end) - starts[p]) for p, end in ends.items())
        if all(committed.get(p, 0) >= end and lag.get(p, 0) == 0 for p, end in ends.items()):
            return Progress(now, now, count)
        if count > best:
            best, last = count, now
        elif now - last > stall_s:
            return Progress(None, last, count, reason or "no commit, never paused")
        time.sleep(interval_s)


def ingest(
    stack: Stack, events: Sequence[events_pb2.ContentEvent], interval_s: float, stall_s: float
) -> dict[str, Any]:
    """Publish all events as fast as possible; events/s from the first publish to all committed."""
    publisher, status = Publisher(stack.bootstrap, stack.topic), Status(stack.addr, stack.topic)
    dlq_before = dict(status.get().dead_letters_by_reason)
    try:
        start = time.time()
        futures = [publisher.send(event) for event in events]
        publisher.flush()
        published = time.time()
        starts, ends = offsets([f.get(timeout=120) for f in futures])
        progress = wait_caught_up(status, starts, ends, interval_s, stall_s)
        dlq = {
            k: int(v - dlq_before.get(k, 0))
            for k, v in status.get().dead_letters_by_reason.items()
            if v != dlq_before.get(k, 0)
        }
    finally:
        publisher.close()
        status.close()
    result: dict[str, Any] = {
        "events": len(events),
        "bytes": sum(e.ByteSize() for e in events),
        "publish_s": round(published - start, 3),
        "dead_letters": dlq,
        "status_poll_interval_ms": round(interval_s * 1000),
    }
    if progress.done_at is None:
        elapsed = max(progress.last_progress_at - start, 1e-9)
        result.update(
            stalled=True,
            committed=progress.committed,
            pause_reason=progress.pause_reason,
            seconds=round(elapsed, 3),
            events_per_s=round(progress.committed / elapsed, 2),
        )
    else:
        result.update(
            stalled=False,
            seconds=round(progress.done_at - start, 3),
            events_per_s=round(len(events) / (progress.done_at - start), 2),
        )
    return result


def freshness(
    stack: Stack, texts: Sequence[str], rate: float, seconds: float, *, interval_s: float, stall_s: float
) -> dict[str, Any]:
    """Publish at `rate` events/s for `seconds`, event_time = publish time; per event, time until
    its offset is committed (observed by polling GetStatus)."""
    publisher, status = Publisher(stack.bootstrap, stack.topic), Status(stack.addr, stack.topic)
    samples: list[tuple[float, dict[int, int]]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            committed, _, _ = status.committed()
            samples.append((time.time(), committed))
            stop.wait(interval_s)

    poller = threading.Thread(target=poll, name="status-poller", daemon=True)
    poller.start()
    count = max(1, int(rate * seconds))
    sent: list[tuple[float, Any]] = []
    try:
        start = time.monotonic()
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            now = datetime.now(UTC)
            event = text_event(TENANT, f"fresh-{i}", texts[i % len(texts)], source="bench", event_time=now)
            sent.append((now.timestamp(), publisher.send(event)))
        publish_s = time.monotonic() - start
        publisher.flush()
        metas = [(t, f.get(timeout=120)) for t, f in sent]
        starts, ends = offsets([meta for _, meta in metas])
        progress = wait_caught_up(status, starts, ends, interval_s, stall_s)
        time.sleep(interval_s * 2)  # one more sample past the end
    finally:
        stop.set()
        poller.join(timeout=15)
        publisher.close()
        status.close()
    lags, unseen = [], 0
    for event_time, meta in metas:
        seen = next((t for t, c in samples if c.get(meta.partition, 0) > meta.offset), None)
        if seen is None:  # never committed (stalled): count it as at least until the last poll
            unseen += 1
            seen = samples[-1][0]
        lags.append(max(0.0, seen - event_time))
    values = np.asarray(lags)
    return {
        "rate_per_s": round(rate, 2),
        "events": count,
        "publish_s": round(publish_s, 3),
        "never_committed": unseen,
        "stalled": progress.done_at is None,
        "pause_reason": progress.pause_reason,
        "poll_interval_ms": round(interval_s * 1000),
        "p50_s": round(float(np.percentile(values, 50)), 3),
        "p95_s": round(float(np.percentile(values, 95)), 3),
        "p99_s": round(float(np.percentile(values, 99)), 3),
        "max_s": round(float(values.max()), 3),
        "share_within_2s": round(float((values <= 2.0).mean()), 4),
    }


def histogram_freshness(p: Phase) -> dict[str, Any]:
    name = "mmsearch_indexer_freshness_seconds"
    cumulative = buckets(p.service, name)
    count = cumulative[-1][1] if cumulative else 0.0
    within = next((c for le, c in cumulative if le == 2.0), None)
    q50, q99 = histogram_quantile(0.5, cumulative), histogram_quantile(0.99, cumulative)
    return {
        "observations": int(count),
        "bucket_edges_s": [le for le, _ in cumulative if not math.isinf(le)],
        "p50_s_interpolated": None if q50 is None else round(q50, 3),
        "p99_s_interpolated": None if q99 is None else round(q99, 3),
        "share_within_2s": None if not count or within is None else round(within / count, 4),
    }


# --- reporting -----------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], check=False, cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "gpu": "none",
        "os": platform.platform(),
        "python": platform.python_version(),
        "commit": git("rev-parse", "--short", "HEAD") + (" (dirty)" if git("status", "--porcelain") else ""),
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def ingest_cell(x: dict[str, Any]) -> str:
    if not x.get("stalled"):
        return str(x["events_per_s"])
    return (
        f"**stalled**: {x['committed']} of {x['events']} committed, then none for the stall timeout "
        f"({x['pause_reason']}); {x['events_per_s']} until then"
    )


MODALITY_MODELS = {"text": ("minilm_l6_text",), "image": ("efficientnet_lite0_conse", "ppocr_text")}
ALONE_PHASES = {"minilm_l6_text": "embedder text", "efficientnet_lite0_conse": "embedder image"}
ALONE_PHASES["ppocr_text"] = "embedder OCR"


def per_item(result: dict[str, Any], modality: str) -> str:
    """Triton compute per item when the embedder runs alone vs during ingest (CPU contention shows here)."""
    cells = []
    for model in MODALITY_MODELS[modality]:
        alone = result["profile"][ALONE_PHASES[model]]["triton_models"].get(model, {})
        during = result["profile"][f"ingest {modality}"]["triton_models"].get(model, {})
        cells.append(
            f"{model.split('_')[0]} {alone.get('compute_ms_per_inference', '-')} -> "
            f"{during.get('compute_ms_per_inference', '-')}"
        )
    return "; ".join(cells)


def busy(result: dict[str, Any], modality: str) -> str:
    models = result["profile"][f"ingest {modality}"]["triton_models"]
    return "; ".join(
        f"{m.split('_')[0]} {models[m]['triton_compute_share_of_wall']:.0%}"
        for m in MODALITY_MODELS[modality]
        if m in models
    )


def markdown(result: dict[str, Any]) -> str:
    m, s, r = result["machine"], result["settings"], result["results"]
    lines = [
        f"## Ingest throughput and freshness ({m['date']})",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, no GPU, {m['os']}, "
        f"Python {m['python']}, commit `{m['commit']}`; load average at start {m['loadavg_at_start']}.",
        f"- Command: `{result['command']}`",
        f"- Stack: tritonserver (models {', '.join(TRITON_MODELS)}; one CPU instance each), Tansu broker "
        f"(in-memory, 4 partitions), `mmsearch serve --target all` (Qdrant Edge store in a temp dir, "
        f"embedding cache off, indexer batch ≤ {s['indexer_batch_size']} records).",
        f"- Embedder alone: text {s['text_batch']} per `Embed` x {s['text_concurrency']} in flight; "
        f"images {s['image_batch']} JPEGs {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} per request x "
        f"{s['image_concurrency']} in flight; OCR: `ExtractText`, {s['ocr_batch']} of the same images per "
        f"request x {s['ocr_concurrency']} in flight, {s['ocr_images']} images.",
        f"- Service settings changed from the defaults: {', '.join(s['service_env_overrides']) or 'none'}.",
        f"- Data: {s['texts']} distinct generated sentences (8-20 words); {s['images']} distinct JPEGs "
        "(bundled photos, random crops/brightness/quality).",
        "",
        "| | text | image |",
        "|---|---|---|",
        f"| embedder `Embed` items/s | {r['embed_text']['items_per_s']} "
        f"| {r['embed_image']['items_per_s']} |",
        f"| embedder `ExtractText` (OCR) images/s | | {r['ocr_image']['items_per_s']} |",
        f"| embedder Embed + OCR, serial, items/s | | {r['embed_plus_ocr_image_per_s']} |",
        f"| ingest events/s (first publish -> all committed) | {ingest_cell(r['ingest_text'])} "
        f"| {ingest_cell(r['ingest_image'])} |",
        f"| ingest seconds (publish part) | {r['ingest_text']['seconds']} ({r['ingest_text']['publish_s']}) "
        f"| {r['ingest_image']['seconds']} ({r['ingest_image']['publish_s']}) |",
        f"| **ingest / embedder (goal ≥ 0.8)** | **{r['ratio_text']}** | **{r['ratio_image']}** |",
        f"| ingest / (embed + OCR) | | {r['ratio_image_with_ocr']} |",
        f"| model compute ms/item, embedder alone -> during ingest | {per_item(result, 'text')} "
        f"| {per_item(result, 'image')} |",
        f"| model busy share of the ingest wall time | {busy(result, 'text')} | {busy(result, 'image')} |",
        f"| dead letters | {r['ingest_text']['dead_letters'] or 0} "
        f"| {r['ingest_image']['dead_letters'] or 0} |",
        "",
    ]
    f, h = r["freshness"], r["freshness_histogram"]
    lines += [
        f"Freshness: {f['events']} text events at {f['rate_per_s']}/s (half the text ingest rate) for "
        f"{s['freshness_seconds']} s, event_time = publish time.",
        "",
        "| freshness | p50 s | p95 s | p99 s | max s | share ≤ 2 s |",
        "|---|---|---|---|---|---|",
        f"| per event, commit seen by GetStatus every {f['poll_interval_ms']} ms (upper bound) "
        f"| {f['p50_s']} | {f['p95_s']} | {f['p99_s']} | {f['max_s']} | {f['share_within_2s']} |",
        f"| indexer histogram `mmsearch_indexer_freshness_seconds` (interpolated; edges "
        f"{', '.join(f'{e:g}' for e in h['bucket_edges_s'][:8])} ...) "
        f"| {h['p50_s_interpolated']} | | {h['p99_s_interpolated']} | | {h['share_within_2s']} |",
        "",
        "Goal p99 ≤ 2 s: " + ("met." if f["p99_s"] <= 2.0 and not f["stalled"] else "**missed**."),
        "",
        "Profile per phase (from /metrics; shares are of the phase's wall time; CPU seconds by process):",
        "",
        "| phase | wall s | batches (rec/batch) | Embed RPC s | ExtractText s | store write s "
        "| Triton compute s | CPU s triton / serve / broker / bench / other | load 1m |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, p in result["profile"].items():
        st = p["stages"]

        def stage(label: str, st: dict[str, Any] = st) -> str:
            x = st.get(label)
            return f"{x['total_s']} ({x['share_of_wall']:.0%})" if x else ""

        compute = sum(m["triton_compute_s"] for m in p["triton_models"].values())
        cpu = p["cpu_s"]
        retried = f", {p['batch_retries']} retried" if p.get("batch_retries") else ""
        lines.append(
            f"| {name} | {p['wall_s']} | {p.get('indexer_batches', '')} ({p.get('records_per_batch', '')})"
            f"{retried} "
            f"| {stage('Embed RPC')} | {stage('ExtractText RPC')} | {stage('store write')} "
            f"| {compute:.1f} | {cpu.get('triton', 0)} / {cpu.get('serve', 0)} / {cpu.get('broker', 0)} / "
            f"{cpu.get('bench', 0)} / {cpu.get('other', 0)} | {p['loadavg_1m']} |"
        )
    return "\n".join(lines)


# --- main ----------------------------------------------------------------
def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    texts = make_texts(args.texts + args.freshness_max_events, seed=11)
    ingest_texts, fresh_texts = texts[: args.texts], texts[args.texts :]
    images = make_images(args.images + 8, seed=13)
    ingest_images, warm_images = images[: args.images], images[args.images :]
    interval, stall = args.status_interval_ms / 1000, args.stall_seconds
    phases: list[Phase] = []
    results: dict[str, Any] = {}

    def embedder(stack: Stack, requests: list[Any], concurrency: int, method: str) -> dict[str, Any]:
        sizes = [len(r.items) if method == "Embed" else len(r.images) for r in requests]
        return asyncio.run(embedder_rate(stack.addr, requests, concurrency, method, sizes))

    settings = {
        "MMSEARCH_EMBED_CACHE_MB": "0",  # every item reaches the model
        "MMSEARCH_LOG_LEVEL": "WARNING",
        **dict(item.split("=", 1) for item in args.service_env),
    }
    with running_stack(
        work,
        models=TRITON_MODELS,
        env_overrides=settings,
        topic=f"content.bench.{uuid.uuid4().hex[:8]}",
        startup_timeout_s=args.startup_timeout,
    ) as stack:
        print(f"stack up: {stack.addr}, topic {stack.topic}; warming up", flush=True)
        warm = text_events("warm-text", make_texts(64, seed=99)) + image_events("warm-img", warm_images)
        with phase(stack, "warm-up ingest", phases):
            results["warmup"] = ingest(stack, warm, interval, stall)

        requests = embed_requests([common_pb2.Content(text=t) for t in ingest_texts], args.text_batch)
        with phase(stack, "embedder text", phases):
            results["embed_text"] = embedder(stack, requests, args.text_concurrency, "Embed")
        print(f"embedder text: {results['embed_text']['items_per_s']} items/s", flush=True)
        with phase(stack, "ingest text", phases):
            results["ingest_text"] = ingest(stack, text_events("text", ingest_texts), interval, stall)
        print(f"ingest text: {results['ingest_text']['events_per_s']} events/s", flush=True)

        # Freshness before the images, so that a stalled image batch cannot hold it up.
        rate = min(results["ingest_text"]["events_per_s"] / 2, len(fresh_texts) / args.freshness_seconds)
        with phase(stack, "freshness", phases) as fresh_phase:
            results["freshness"] = freshness(
                stack,
                fresh_texts,
                rate,
                args.freshness_seconds,
                interval_s=args.fresh_interval_ms / 1000,
                stall_s=stall,
            )
        results["freshness_histogram"] = histogram_freshness(fresh_phase)
        print(f"freshness p99: {results['freshness']['p99_s']} s", flush=True)

        media = [common_pb2.Media(data=d, mime_type="image/jpeg") for d in ingest_images]
        requests = embed_requests([common_pb2.Content(image=m) for m in media], args.image_batch)
        with phase(stack, "embedder image", phases):
            results["embed_image"] = embedder(stack, requests, args.image_concurrency, "Embed")
        ocr_media = media[: args.ocr_images]
        ocr_requests = [
            embedder_pb2.ExtractTextRequest(images=ocr_media[i : i + args.ocr_batch])
            for i in range(0, len(ocr_media), args.ocr_batch)
        ]
        with phase(stack, "embedder OCR", phases):
            results["ocr_image"] = embedder(stack, ocr_requests, args.ocr_concurrency, "ExtractText")
        print(
            f"embedder image: {results['embed_image']['items_per_s']} items/s, "
            f"OCR {results['ocr_image']['items_per_s']} images/s",
            flush=True,
        )
        with phase(stack, "ingest image", phases):
            results["ingest_image"] = ingest(stack, image_events("img", ingest_images), interval, stall)
        print(f"ingest image: {results['ingest_image']['events_per_s']} events/s", flush=True)
        results["settings_of_service"] = stack.settings

    e, o = results["embed_image"]["items_per_s"], results["ocr_image"]["items_per_s"]
    results["embed_plus_ocr_image_per_s"] = round(1 / (1 / e + 1 / o), 2)
    results["ratio_text"] = ratio(
        results["ingest_text"]["events_per_s"], results["embed_text"]["items_per_s"]
    )
    results["ratio_image"] = ratio(results["ingest_image"]["events_per_s"], e)
    results["ratio_image_with_ocr"] = ratio(
        results["ingest_image"]["events_per_s"], results["embed_plus_ocr_image_per_s"]
    )
    return {"results": results, "profile": {p.name: profile(p) for p in phases}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=3000, help="text events (and texts for the embedder)")
    parser.add_argument("--images", type=int, default=300, help="image events (and images for the embedder)")
    parser.add_argument("--freshness-seconds", type=float, default=30.0)
    parser.add_argument("--text-batch", type=int, default=64, help="texts per Embed request")
    parser.add_argument("--text-concurrency", type=int, default=4)
    parser.add_argument("--image-batch", type=int, default=16, help="images per Embed / ExtractText request")
    parser.add_argument("--image-concurrency", type=int, default=2)
    parser.add_argument("--ocr-images", type=int, default=42, help="images for the embedder's OCR rate")
    # OCR runs one image per Triton request on one ppocr instance; a deeper queue than about
    # 8 images waits past the embedder's Triton deadline (MMSEARCH_TRITON_TIMEOUT_S, 10 s) here.
    parser.add_argument("--ocr-batch", type=int, default=4, help="images per ExtractText request")
    parser.add_argument("--ocr-concurrency", type=int, default=2)
    parser.add_argument(
        "--stall-seconds",
        type=float,
        default=120.0,
        help="give up on a phase after this long without commits",
    )
    parser.add_argument("--status-interval-ms", type=int, default=100, help="GetStatus polling (ingest)")
    parser.add_argument("--fresh-interval-ms", type=int, default=50, help="GetStatus polling (freshness)")
    parser.add_argument("--freshness-max-events", type=int, default=6000)
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="MMSEARCH_X=VALUE",
        help="extra setting for `mmsearch serve` (repeatable), e.g. MMSEARCH_TRITON_TIMEOUT_S=300",
    )
    parser.add_argument("--json", type=Path, help="write the full result here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, store)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="smallest sizes, to check the script end to end (numbers meaningless)",
    )
    args = parser.parse_args()
    if args.smoke:
        args.texts, args.images, args.ocr_images = 64, 8, 4
        args.freshness_seconds, args.freshness_max_events, args.stall_seconds = 3.0, 200, 60.0

    info = machine()
    work = Path(tempfile.mkdtemp(prefix="mmsearch-ingest-bench-"))
    started = time.monotonic()
    try:
        measured = run(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "machine": info,
        "command": " ".join([".venv/bin/python bench/ingest_throughput.py", *sys.argv[1:]]),
        "settings": {
            "texts": args.texts,
            "images": args.images,
            "freshness_seconds": args.freshness_seconds,
            "text_batch": args.text_batch,
            "text_concurrency": args.text_concurrency,
            "image_batch": args.image_batch,
            "image_concurrency": args.image_concurrency,
            "ocr_images": args.ocr_images,
            "ocr_batch": args.ocr_batch,
            "ocr_concurrency": args.ocr_concurrency,
            "indexer_batch_size": Settings.model_fields["indexer_batch_size"].default,
            "triton_models": list(TRITON_MODELS),
            "service_env_overrides": args.service_env,
        },
        **measured,
        "total_seconds": round(time.monotonic() - started, 1),
        "work_dir": str(work) if args.keep else None,
    }
    print()
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
        print(f"\nJSON written to {args.json}")


if __name__ == "__main__":
    main()
