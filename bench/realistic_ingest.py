#!/usr/bin/env python3
"""Real workloads (issue #10): ingest, search under ingest, memory, images and the
search defaults, measured on real documents with the service at its DEFAULT settings.

    .venv/bin/python bench/realistic_ingest.py [--docs N] [--queries 300] [--images 300]
        [--search-seconds 30] [--skip-images] [--skip-loaded] [--json PATH] [--smoke]

Data (bench/realistic_corpus.py): the Python 3.11 documentation from the Debian package
`python3.11-doc` (sha256-pinned, not installed) split at section headings into ~5,100
documents of 30-500 words, cached as JSONL under .cache/datasets/realistic/; held-out
first sentences of ~320 sections are the queries. Images: the bundled sample photos, the
figures of the same package and Fashion-MNIST (Debian `dataset-fashion-mnist`) upscaled.

Every stack comes from mmsearch.dev.harness.running_stack with NO MMSEARCH_* setting
besides ports and paths (embedding cache on, INFO logs, default batch sizes and budgets)
and is stopped by process group at the end. Per condition (idle; then "loaded": one
Python busy-loop process per core, started and stopped by this script, running during
both measurements) a fresh stack:

1. warm-up: 16 documents through Kafka; RSS of each model process (Triton's
   Python-backend stubs, children of tritonserver) after it;
2. embedder alone: every document's passages (the indexer's own split,
   mmsearch.kit.passages) through `Embedder.Embed`, --embed-batch per call,
   --embed-concurrency in flight, as tenant-b (its own cache entries: the indexer's
   calls cannot hit them, nor these the indexer's) -> documents/s;
3. ingest: every document published with mmsearch.producer.ContentProducer, timed from
   the first publish until GetStatus shows every partition committed past the last
   offset; batches retried, Embed calls and splits, dead letters by reason, items in the
   store vs published; RSS again. Ratio ingest / embedder (goal >= 0.8).

Then, on the idle stack only:

4. search latency: default text searches (the held-out queries, top_k 10, 5 s deadline)
   at concurrency 4 for --search-seconds, idle, then again while a second ingest
   (a slice of the documents re-published as version 2 with an appended line, so the
   cache cannot answer) keeps the indexer busy: p50/p99/QPS/timeouts, p99 ratio (goal <= 3);
5. search defaults: dense vs hybrid RRF k in {10, 30, 60} x candidates_per_ranking in
   {0, 50, 100} on the held-out queries: R@10 (relevant section in the top 10) and
   MRR@10 with paired bootstrap 95% CIs (run before step 4's second ingest);
6. images (unless --skip-images): Embed-only rate of the images, then their ingest with
   OCR on the enrichment stage (the default): vector-searchable rate (goal >= 0.8x
   Embed-only), and OCR freshness (`mmsearch_indexer_ocr_freshness_seconds`, and the
   time until every image's OCR text was stored).

--smoke runs everything at toy sizes in a couple of minutes (numbers meaningless).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fetch_fashion_mnist import PACKAGE as FM_PACKAGE
from fetch_fashion_mnist import VERSION as FM_VERSION
from fetch_fashion_mnist import load as load_fashion_mnist
from ingest_throughput import Status, machine, wait_caught_up
from realistic_corpus import HTML, Doc, fetch_html, load_corpus
from realistic_corpus import PACKAGE as DOC_PACKAGE
from realistic_corpus import VERSION as DOC_VERSION

from mmsearch.clients.connect import DEV_TOKEN, auth_metadata
from mmsearch.dev.harness import Stack, running_stack
from mmsearch.dev.metrics_scrape import (
    Samples,
    buckets,
    descendants,
    histogram_quantile,
    scrape,
    subtract,
    total,
)
from mmsearch.dev.processes import stop_group
from mmsearch.kit.passages import split_text
from mmsearch.producer import ContentProducer, media_event, text_event
from mmsearch.v1 import (
    common_pb2,
    embedder_pb2,
    embedder_pb2_grpc,
    events_pb2,
    searcher_pb2,
    searcher_pb2_grpc,
)

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / ".cache" / "samples" / "images"
TENANT = "dev"  # the development token's tenant: the searches see what the indexer wrote
OTHER_TOKEN = "mmsearch-dev-token-tenant-b"  # the embedder-alone calls: a cache of their own
K = 10
MODEL_NAMES = (
    "minilm_l6_text",
    "efficientnet_lite0_conse",
    "aisfx_audio",
    "ppocr_text",
    "minilm_maxsim_rerank",
)
GRPC_OPTIONS = [("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20)]


# --- background load ---------------------------------------------------------------------
@contextlib.contextmanager
def busy_cores(enabled: bool) -> Iterator[list[int]]:
    """One Python busy loop per core (own process group each), stopped on exit."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if enabled:
            for _ in range(os.cpu_count() or 1):
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-c", "while True:\n    pass"],
                        start_new_session=True,
                        stdin=subprocess.DEVNULL,
                    )
                )
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            stop_group(p.pid, timeout_s=5)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)


# --- memory ------------------------------------------------------------------------------
def _rss(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def model_rss(stack: Stack) -> dict[str, int]:
    """RSS bytes of tritonserver, of each model's Python-backend stub(s) and of `mmsearch serve`."""
    pids = stack.pids
    out: dict[str, int] = {"tritonserver": _rss(pids["triton"]), "mmsearch serve": _rss(pids["serve"])}
    for pid in descendants(pids["triton"]):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            model = next((m for m in MODEL_NAMES if f"/{m}/" in cmdline), f"other pid {pid}")
            out[model] = out.get(model, 0) + _rss(pid)
    return out


# --- data --------------------------------------------------------------------------------
def make_images(n: int, seed: int) -> tuple[list[tuple[bytes, str]], dict[str, int]]:
    """Up to n images: the bundled photos (as shipped), the documentation's figures (PNG)
    and Fashion-MNIST t10k upscaled 28 -> 224 px (PNG) for the rest."""
    out: list[tuple[bytes, str]] = []
    kinds: Counter[str] = Counter()
    for path in sorted(SAMPLES.iterdir()):
        mime = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
        out.append((path.read_bytes(), mime))
        kinds["bundled photos"] += 1
    for path in sorted((fetch_html() / "_images").glob("*.png")):
        out.append((path.read_bytes(), "image/png"))
        kinds[f"{DOC_PACKAGE} figures"] += 1
    out = out[:n]
    kinds = Counter(list(kinds.elements())[:n])  # what was kept
    if len(out) < n:
        images, _ = load_fashion_mnist("t10k")
        rng = np.random.default_rng(seed)
        for index in rng.permutation(len(images))[: n - len(out)]:
            buf = io.BytesIO()
            Image.fromarray(images[index]).resize((224, 224), Image.Resampling.BICUBIC).save(
                buf, format="PNG"
            )
            out.append((buf.getvalue(), "image/png"))
            kinds["Fashion-MNIST 224px"] += 1
    return out, dict(kinds)


def doc_event(doc: Doc, *, version: int = 0, suffix: str = "") -> events_pb2.ContentEvent:
    return text_event(TENANT, doc.id, doc.text + suffix, title=doc.title, source=DOC_PACKAGE, version=version)


# --- Kafka -> committed ------------------------------------------------------------------
def publish_and_wait(
    stack: Stack, events: Sequence[events_pb2.ContentEvent], stall_s: float
) -> dict[str, Any]:
    """Publish with ContentProducer; wall time from the first publish until every partition's
    committed offset passed the last one written, with the indexer's counters around it."""
    status = Status(stack.addr, stack.topic)
    before = status.get()
    starts = {p.partition: p.committed_offset for p in before.partitions if p.topic == stack.topic}
    dlq0 = dict(before.dead_letters_by_reason)
    m0 = scrape(stack.metrics_url)
    try:
        t0 = time.time()
        with ContentProducer(stack.bootstrap, stack.topic) as producer:
            for event in events:
                producer.publish(event)
            last = producer.flush(timeout_s=300)
        published = time.time()
        ends = {p: off + 1 for p, off in last.items()}
        starts = {p: min(starts.get(p, 0), ends[p]) for p in ends}
        progress = wait_caught_up(status, starts, ends, 0.2, stall_s)
        after = status.get()
    finally:
        status.close()
    m = subtract(scrape(stack.metrics_url), m0)
    done = progress.done_at is not None
    end = progress.done_at if done else progress.last_progress_at
    seconds = max((end or time.time()) - t0, 1e-9)
    dlq = {k: int(v - dlq0.get(k, 0)) for k, v in after.dead_letters_by_reason.items() if v != dlq0.get(k, 0)}
    return {
        "events": len(events),
        "completed": done,
        "committed": len(events) if done else progress.committed,
        "pause_reason": progress.pause_reason,
        "seconds": round(seconds, 2),
        "publish_s": round(published - t0, 2),
        "events_per_s": round((len(events) if done else progress.committed) / seconds, 2),
        "batches": int(total(m, "mmsearch_indexer_batch_records_count")),
        "batch_retries": int(total(m, "mmsearch_indexer_batch_retries_total")),
        "embed_calls": int(total(m, "mmsearch_indexer_embed_calls_total")),
        "embed_splits": int(total(m, "mmsearch_indexer_embed_splits_total")),
        "events_by_outcome": {
            o: int(total(m, "mmsearch_indexer_events_total", outcome=o))
            for o in ("indexed", "duplicate", "dlq", "deleted")
            if total(m, "mmsearch_indexer_events_total", outcome=o)
        },
        "dead_letters": dlq,
        "store_items": {s.space: int(s.item_count) for s in after.spaces},
        "paused_at_end": after.paused,
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "_metrics": m,
    }


# --- the embedder on its own -------------------------------------------------------------
async def embed_rate(
    addr: str, requests: Sequence[embedder_pb2.EmbedRequest], concurrency: int, units: int
) -> dict[str, Any]:
    """Send every request with `concurrency` in flight; `units` (documents, images) per second."""
    metadata = auth_metadata(OTHER_TOKEN)
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    truncated = 0
    async with grpc.aio.insecure_channel(addr, options=GRPC_OPTIONS) as channel:
        stub = embedder_pb2_grpc.EmbedderStub(channel)
        queue = list(range(len(requests)))

        async def worker() -> None:
            nonlocal truncated
            while queue:
                request = requests[queue.pop(0)]
                for attempt in range(4):  # a call the model server timed out is counted and sent again
                    t0 = time.perf_counter()
                    try:
                        response = await stub.Embed(request, metadata=metadata, timeout=600)
                    except grpc.aio.AioRpcError as exc:
                        errors[exc.code().name] += 1
                        if attempt == 3:
                            raise
                        continue
                    latencies.append(time.perf_counter() - t0)
                    truncated += sum(1 for e in response.embeddings if e.truncated)
                    break

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    items = sum(len(r.items) for r in requests)
    return {
        "calls": len(requests),
        "items": items,
        "units": units,
        "seconds": round(elapsed, 2),
        "units_per_s": round(units / elapsed, 2),
        "items_per_s": round(items / elapsed, 2),
        "call_p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1),
        "call_p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 1),
        "truncated_items": truncated,
        "errors_resent": dict(errors),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def batched(contents: list[common_pb2.Content], size: int) -> list[embedder_pb2.EmbedRequest]:
    space = common_pb2.SpaceRef(name="default")
    return [
        embedder_pb2.EmbedRequest(space=space, items=contents[i : i + size])
        for i in range(0, len(contents), size)
    ]


def embed_docs(stack: Stack, docs: Sequence[Doc], batch: int, concurrency: int) -> dict[str, Any]:
    passages = [common_pb2.Content(text=p.text) for d in docs for p in split_text(d.text)]
    result = asyncio.run(embed_rate(stack.addr, batched(passages, batch), concurrency, len(docs)))
    result["passages_per_doc"] = round(len(passages) / max(len(docs), 1), 2)
    return result


# --- searching ---------------------------------------------------------------------------
async def search_load(addr: str, queries: Sequence[str], concurrency: int, seconds: float) -> dict[str, Any]:
    """Default text searches (top_k 10, 5 s deadline) from `concurrency` callers for `seconds`."""
    metadata = auth_metadata(DEV_TOKEN)
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(addr, options=GRPC_OPTIONS) as channel:
        stub = searcher_pb2_grpc.SearcherStub(channel)
        stop_at = time.perf_counter() + seconds

        async def worker(offset: int) -> None:
            i = offset
            while time.perf_counter() < stop_at:
                request = searcher_pb2.SearchRequest(
                    query=common_pb2.Content(text=queries[i % len(queries)]), top_k=K
                )
                t0 = time.perf_counter()
                try:
                    await stub.Search(request, metadata=metadata, timeout=5)
                    latencies.append(time.perf_counter() - t0)
                except grpc.aio.AioRpcError as exc:
                    errors[exc.code().name] += 1
                i += concurrency

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - start
    values = np.asarray(latencies) * 1000 if latencies else np.asarray([math.nan])
    return {
        "concurrency": concurrency,
        "seconds": round(elapsed, 1),
        "requests_ok": len(latencies),
        "qps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(values, 50)), 1),
        "p99_ms": round(float(np.percentile(values, 99)), 1),
        "max_ms": round(float(values.max()), 1),
        "timeouts": errors.get("DEADLINE_EXCEEDED", 0),
        "errors": dict(errors),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


@dataclass(frozen=True)
class Config:
    name: str
    rrf_k: int | None = None  # None: dense (no hybrid)
    candidates: int = 0


CONFIGS = [Config("dense")] + [
    Config(f"hybrid k={k} cand={c}", k, c) for k in (10, 30, 60) for c in (0, 50, 100)
]
DEFAULT_CONFIG = "hybrid k=60 cand=0"  # what a request with hybrid on gets from today's defaults


def section_of(item_id: str) -> str:
    return item_id.rsplit("/", 1)[0]


def bootstrap(a: np.ndarray, b: np.ndarray, seed: int, rounds: int = 4000) -> dict[str, Any]:
    diff = b - a
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(rounds, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "delta": round(float(diff.mean()), 4),
        "ci95": [round(float(low), 4), round(float(high), 4)],
        "wins": int((diff > 0).sum()),
        "losses": int((diff < 0).sum()),
    }


def evaluate(stack: Stack, queries: Sequence[Doc], seed: int) -> dict[str, Any]:
    """Each configuration over the held-out queries: R@10 and MRR@10 of the query's section."""
    channel = grpc.insecure_channel(stack.addr, options=GRPC_OPTIONS)
    stub = searcher_pb2_grpc.SearcherStub(channel)
    metadata = auth_metadata(DEV_TOKEN)

    def one(config: Config, doc: Doc) -> tuple[float, float, float]:
        request = searcher_pb2.SearchRequest(query=common_pb2.Content(text=doc.query), top_k=K)
        if config.rrf_k is not None:
            request.hybrid.CopyFrom(
                searcher_pb2.HybridOptions(
                    enabled=True, rrf_k=config.rrf_k, candidates_per_ranking=config.candidates
                )
            )
        t0 = time.perf_counter()
        response = stub.Search(request, metadata=metadata, timeout=60)
        ms = (time.perf_counter() - t0) * 1000
        target = section_of(doc.id)
        rank = next((i + 1 for i, h in enumerate(response.hits) if section_of(h.item_id) == target), None)
        return (1.0 if rank else 0.0), (1.0 / rank if rank else 0.0), ms

    out: dict[str, Any] = {"queries": len(queries), "configs": {}}
    per: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        with ThreadPoolExecutor(4) as pool:
            for config in CONFIGS:
                rows = list(pool.map(lambda d, c=config: one(c, d), queries))
                r10 = np.asarray([r[0] for r in rows])
                mrr = np.asarray([r[1] for r in rows])
                per[config.name] = (r10, mrr)
                out["configs"][config.name] = {
                    "r@10": round(float(r10.mean()), 4),
                    "mrr@10": round(float(mrr.mean()), 4),
                    "p50_ms": round(float(np.percentile([r[2] for r in rows], 50)), 1),
                }
    finally:
        channel.close()
    for name, (r10, mrr) in per.items():
        cell = out["configs"][name]
        for base in ("dense", DEFAULT_CONFIG):
            if name != base:
                cell[f"vs {base}"] = {
                    "r@10": bootstrap(per[base][0], r10, seed),
                    "mrr@10": bootstrap(per[base][1], mrr, seed),
                }
    return out


# --- images ------------------------------------------------------------------------------
def images_phase(
    stack: Stack, images: Sequence[tuple[bytes, str]], args: argparse.Namespace
) -> dict[str, Any]:
    contents = [common_pb2.Content(image=common_pb2.Media(data=d, mime_type=m)) for d, m in images]
    embed = asyncio.run(
        embed_rate(stack.addr, batched(contents, args.image_batch), args.image_concurrency, len(contents))
    )
    name = "mmsearch_indexer_ocr_freshness_seconds"
    before = scrape(stack.metrics_url)
    events = [
        media_event(TENANT, f"img-{i}", d, common_pb2.MODALITY_IMAGE, mime_type=m)
        for i, (d, m) in enumerate(images)
    ]
    t0 = time.time()
    ingest = publish_and_wait(stack, events, args.stall_seconds)
    # OCR runs after: wait until the enrichment stage stored a text for every image.
    last_count, last_change, ocr_done_s = -1.0, time.time(), None
    while True:
        delta = subtract(scrape(stack.metrics_url), before)
        count = total(delta, f"{name}_count")
        if count >= len(images):
            ocr_done_s = round(time.time() - t0, 2)
            break
        if count > last_count:
            last_count, last_change = count, time.time()
        elif time.time() - last_change > args.stall_seconds:
            break
        time.sleep(0.5)
    cumulative = buckets(delta, name)
    ingest.pop("_metrics", None)
    return {
        "images": len(images),
        "embed_only": embed,
        "ingest": ingest,
        "ratio_ingest_vs_embed_only": round(ingest["events_per_s"] / embed["units_per_s"], 3),
        "ocr_texts_stored": int(count),
        "ocr_all_stored_after_s": ocr_done_s,
        "ocr_freshness_p50_s": _round(histogram_quantile(0.5, cumulative)),
        "ocr_freshness_p99_s": _round(histogram_quantile(0.99, cumulative)),
        "ocr_rpc": {
            "calls": int(total(delta, "grpc_server_handling_seconds_count", grpc_method="ExtractText")),
            "seconds": round(total(delta, "grpc_server_handling_seconds_sum", grpc_method="ExtractText"), 1),
        },
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


# --- one condition -----------------------------------------------------------------------
def condition(
    name: str,
    work: Path,
    *,
    docs: list[Doc],
    queries: list[Doc],
    images: list[tuple[bytes, str]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    loaded = name == "loaded"
    out: dict[str, Any] = {"condition": name}
    overrides = dict(item.split("=", 1) for item in args.service_env)
    with running_stack(work / name, env_overrides=overrides, startup_timeout_s=args.startup_timeout) as stack:
        out["service_settings"] = sorted(stack.settings)
        print(f"[{name}] stack up ({stack.addr}); warm-up", flush=True)
        warm = [
            text_event(TENANT, f"warm-{i}", f"Warm-up document {i}. {d.text}", source="warm")
            for i, d in enumerate(docs[:16])
        ]
        out["warmup"] = {
            k: v for k, v in publish_and_wait(stack, warm, args.stall_seconds).items() if k != "_metrics"
        }
        out["rss_after_warmup"] = model_rss(stack)
        with busy_cores(loaded) as busy_pids:
            out["busy_loop_pids"] = busy_pids
            time.sleep(1.0 if loaded else 0.0)
            embed = embed_docs(stack, docs, args.embed_batch, args.embed_concurrency)
            out["embedder_alone"] = embed
            print(
                f"[{name}] embedder alone: {embed['units_per_s']} docs/s ({embed['items_per_s']} passages/s)",
                flush=True,
            )
            ingest = publish_and_wait(stack, [doc_event(d) for d in docs], args.stall_seconds)
        metrics: Samples = ingest.pop("_metrics")
        ingest["expected_store_items"] = len(docs) + len(warm)
        ingest["store_count_ok"] = sum(ingest["store_items"].values()) == ingest["expected_store_items"]
        ingest["embed_rpc_s"] = round(
            total(metrics, "grpc_server_handling_seconds_sum", grpc_method="Embed"), 1
        )
        ingest["store_write_s"] = round(total(metrics, "mmsearch_indexer_store_write_seconds_sum"), 1)
        out["ingest"] = ingest
        out["ratio_ingest_vs_embedder"] = round(ingest["events_per_s"] / embed["units_per_s"], 3)
        print(
            f"[{name}] ingest: {ingest['events_per_s']} docs/s, completed {ingest['completed']}, "
            f"ratio {out['ratio_ingest_vs_embedder']}",
            flush=True,
        )
        out["rss_after_ingest"] = model_rss(stack)
        if loaded:
            return out

        texts = [q.query for q in queries]
        out["search_idle"] = asyncio.run(search_load(stack.addr, texts, 4, args.search_seconds))
        print(f"[{name}] search idle p99 {out['search_idle']['p99_ms']} ms", flush=True)
        out["defaults"] = evaluate(stack, queries, args.seed)
        print(f"[{name}] defaults evaluated on {len(queries)} queries", flush=True)

        # A second ingest long enough to cover the search window at the measured rate.
        n = min(len(docs), max(50, int(ingest["events_per_s"] * (args.search_seconds + 20))))
        second = [doc_event(d, version=2, suffix="\n\nRevised for the second ingest.") for d in docs[:n]]
        holder: dict[str, Any] = {}
        thread = threading.Thread(
            target=lambda: holder.update(publish_and_wait(stack, second, args.stall_seconds)), daemon=True
        )
        thread.start()
        time.sleep(2.0)  # the indexer has work in hand
        busy = asyncio.run(search_load(stack.addr, texts, 4, args.search_seconds))
        busy["ingest_still_running_at_end"] = thread.is_alive()
        thread.join()
        holder.pop("_metrics", None)
        out["search_during_ingest"] = busy
        out["second_ingest"] = holder
        out["ratio_p99_busy_vs_idle"] = round(busy["p99_ms"] / out["search_idle"]["p99_ms"], 2)
        print(f"[{name}] search during ingest p99 {busy['p99_ms']} ms", flush=True)
        if images:
            out["images"] = images_phase(stack, images, args)
            print(f"[{name}] images: ratio {out['images']['ratio_ingest_vs_embed_only']}", flush=True)
            out["rss_after_images"] = model_rss(stack)
    return out


# --- report ------------------------------------------------------------------------------
def mb(x: int) -> str:
    return f"{x / 2**20:.0f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def markdown(result: dict[str, Any]) -> str:
    m, s, c = result["machine"], result["settings"], result["corpus"]
    idle = result["conditions"].get("idle")
    loaded = result["conditions"].get("loaded")
    any_condition = idle or loaded
    w = c["words"]
    lines = [
        f"## Real workloads: ingest, search under ingest, memory, images, defaults (issue #10, {m['date']})",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, no GPU, {m['os']}, Python "
        f"{m['python']}, commit `{m['commit']}`; load average at start {m['loadavg_at_start']}.",
        f"- Command: `{result['command']}` ({result['total_seconds']} s).",
        (
            "- Service at its defaults: no MMSEARCH_* setting besides ports and paths "
            f"({', '.join(any_condition['service_settings'])})."
            if not s.get("service_env_overrides")
            else f"- **Not the defaults**: {', '.join(s['service_env_overrides'])} (and ports, paths)."
        ),
        f"- Corpus: {c['source']}; {c['unit']}. {s['docs']} of {w['docs']} documents used; words per "
        f"document (whole corpus) p5 {w['p5']} / p50 {w['p50']} / p95 {w['p95']} / max {w['max']}, "
        f"mean {w['mean']}; histogram {w['histogram']}. {s['queries']} held-out queries.",
        "",
        "| ingest of the documents | idle | loaded (busy loop per core) |",
        "|---|---|---|",
    ]

    def row(label: str, f: Any) -> None:
        lines.append(f"| {label} | {f(idle) if idle else 'not run'} | {f(loaded) if loaded else 'not run'} |")

    row("completed / committed", lambda x: f"{x['ingest']['completed']} / {x['ingest']['committed']}")
    row("wall s (publish s)", lambda x: f"{x['ingest']['seconds']} ({x['ingest']['publish_s']})")
    row("ingest documents/s", lambda x: x["ingest"]["events_per_s"])
    row(
        "embedder alone documents/s (passages/s)",
        lambda x: f"{x['embedder_alone']['units_per_s']} ({x['embedder_alone']['items_per_s']})",
    )
    row("**ingest / embedder (goal ≥ 0.8)**", lambda x: f"**{x['ratio_ingest_vs_embedder']}**")
    row("batches / retried", lambda x: f"{x['ingest']['batches']} / {x['ingest']['batch_retries']}")
    row("Embed calls / splits", lambda x: f"{x['ingest']['embed_calls']} / {x['ingest']['embed_splits']}")
    row("dead letters", lambda x: x["ingest"]["dead_letters"] or 0)
    row(
        "store items / expected (docs + 16 warm-up)",
        lambda x: f"{sum(x['ingest']['store_items'].values())} / {x['ingest']['expected_store_items']}",
    )
    row("load average 1m at the end", lambda x: x["ingest"]["loadavg_1m"])
    lines.append("")
    if not idle:
        return "\n".join(lines)

    si, sb = idle["search_idle"], idle["search_during_ingest"]
    lines += [
        f"Search, default text query, top_k 10, concurrency 4, {s['search_seconds']} s each "
        f"(second ingest: {idle['second_ingest'].get('events')} documents re-published as version 2, "
        f"{idle['second_ingest'].get('events_per_s')} docs/s; still running at the end of the window: "
        f"{sb['ingest_still_running_at_end']}):",
        "",
        "| | p50 ms | p99 ms | max ms | QPS | timeouts (5 s) | other errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, x in (("idle (after ingest)", si), ("during ingest", sb)):
        other = {k: v for k, v in x["errors"].items() if k != "DEADLINE_EXCEEDED"}
        lines.append(
            f"| {label} | {x['p50_ms']} | {x['p99_ms']} | {x['max_ms']} | {x['qps']} | {x['timeouts']} "
            f"| {other or 0} |"
        )
    ratio = idle["ratio_p99_busy_vs_idle"]
    lines += ["", f"**p99 during / idle = {ratio} (goal ≤ 3: {verdict(ratio <= 3)}).**", ""]

    lines += [
        "Memory (RSS MB; growth = after everything / after warm-up):",
        "",
        "| process | after warm-up | after the documents | after the images | growth |",
        "|---|---|---|---|---|",
    ]
    growth_max = 0.0
    for proc, before in idle["rss_after_warmup"].items():
        docs_rss = idle["rss_after_ingest"].get(proc, 0)
        images_rss = idle.get("rss_after_images", {}).get(proc)
        growth = (images_rss or docs_rss) / before if before else math.nan
        if proc in MODEL_NAMES:
            growth_max = max(growth_max, growth)
        shown = mb(images_rss) if images_rss is not None else "-"
        lines.append(f"| {proc} | {mb(before)} | {mb(docs_rss)} | {shown} | {growth:.2f}x |")
    lines += [
        "",
        f"**Largest model-process growth {growth_max:.2f}x (goal ≤ 1.5: {verdict(growth_max <= 1.5)}).**",
        "",
    ]

    if "images" in idle:
        im = idle["images"]
        ratio_im = im["ratio_ingest_vs_embed_only"]
        lines += [
            f"Images ({im['images']}: {result['image_kinds']}), OCR on the enrichment stage (default):",
            "",
            f"- Embed-only: {im['embed_only']['units_per_s']} images/s; ingest (vector searchable, all "
            f"committed): {im['ingest']['events_per_s']} images/s; **ratio {ratio_im} (goal ≥ 0.8: "
            f"{verdict(ratio_im >= 0.8)})**; dead letters {im['ingest']['dead_letters'] or 0}.",
            f"- OCR text stored for {im['ocr_texts_stored']} of {im['images']} images, all of them "
            f"{im['ocr_all_stored_after_s']} s after the first publish; "
            f"`mmsearch_indexer_ocr_freshness_seconds` p50 {im['ocr_freshness_p50_s']} s, "
            f"p99 {im['ocr_freshness_p99_s']} s (interpolated in buckets); "
            f"ExtractText: {im['ocr_rpc']['calls']} calls, {im['ocr_rpc']['seconds']} s.",
            "",
        ]

    d = idle["defaults"]
    lines += [
        f"Search defaults on {d['queries']} held-out queries (relevant: the query's section; R@10 = the "
        "section in the top 10). Δ = paired bootstrap 95% CI:",
        "",
        f"| config | R@10 | MRR@10 | ΔR@10 vs dense | ΔMRR@10 vs dense | ΔMRR@10 vs {DEFAULT_CONFIG} "
        "| p50 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, x in d["configs"].items():

        def delta(key: str, metric: str, x: dict[str, Any] = x) -> str:
            v = x.get(key, {}).get(metric)
            return f"{v['delta']:+.3f} [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}]" if v else ""

        lines.append(
            f"| {name} | {x['r@10']} | {x['mrr@10']} | {delta('vs dense', 'r@10')} "
            f"| {delta('vs dense', 'mrr@10')} "
            f"| {delta(f'vs {DEFAULT_CONFIG}', 'mrr@10')} | {x['p50_ms']} |"
        )
    lines.append("")
    return "\n".join(lines)


def select_docs(corpus: list[Doc], n: int, seed: int) -> list[Doc]:
    """The corpus in a seeded order; a subset of n keeps the query documents (the evaluation
    needs them) and fills up with the others."""
    rng = random.Random(seed)
    order = list(corpus)
    rng.shuffle(order)
    if not n:
        return order
    docs = [d for d in order if d.query][:n]
    docs += [d for d in order if not d.query][: n - len(docs)]
    rng.shuffle(docs)
    return docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--docs",
        type=int,
        default=0,
        help="documents to ingest (0: the whole corpus; a subset keeps the queries' ones)",
    )
    parser.add_argument("--queries", type=int, default=300, help="held-out queries (at most the corpus's)")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--skip-images", action="store_true")
    parser.add_argument("--skip-loaded", action="store_true", help="only the idle condition")
    parser.add_argument(
        "--skip-idle", action="store_true", help="only the loaded condition (the whole-corpus acceptance run)"
    )
    parser.add_argument("--search-seconds", type=float, default=30.0)
    parser.add_argument(
        "--embed-batch", type=int, default=16, help="passages per Embed call (embedder alone)"
    )
    parser.add_argument("--embed-concurrency", type=int, default=2)
    parser.add_argument("--image-batch", type=int, default=16)
    parser.add_argument("--image-concurrency", type=int, default=2)
    parser.add_argument("--stall-seconds", type=float, default=180.0)
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="MMSEARCH_X=VALUE",
        help="change a service setting for an experiment (repeatable; the report says so)",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, stores)")
    parser.add_argument("--smoke", action="store_true", help="toy sizes, to check the script")
    args = parser.parse_args()
    if args.smoke:
        args.docs, args.queries, args.images, args.search_seconds = 120, 20, 12, 3.0
        args.stall_seconds = 90.0

    corpus, summary = load_corpus()
    docs = select_docs(corpus, args.docs, args.seed)
    queries = [d for d in docs if d.query][: args.queries]
    images, kinds = ([], {}) if args.skip_images else make_images(args.images, args.seed)
    print(f"{len(docs)} documents, {len(queries)} queries, {len(images)} images", flush=True)

    info = machine()
    work = Path(tempfile.mkdtemp(prefix="mmsearch-realistic-"))
    started = time.monotonic()
    conditions: dict[str, Any] = {}
    try:
        if not args.skip_idle:
            conditions["idle"] = condition("idle", work, docs=docs, queries=queries, images=images, args=args)
        if not args.skip_loaded:
            conditions["loaded"] = condition("loaded", work, docs=docs, queries=queries, images=[], args=args)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "machine": info,
        "command": " ".join(["PYTHONPATH=. .venv/bin/python bench/realistic_ingest.py", *sys.argv[1:]]),
        "corpus": summary,
        "image_kinds": kinds,
        "image_sources": f"{DOC_PACKAGE}={DOC_VERSION} {HTML}/_images; {FM_PACKAGE}={FM_VERSION}",
        "settings": {
            "docs": len(docs),
            "queries": len(queries),
            "images": len(images),
            "search_seconds": args.search_seconds,
            "embed_batch": args.embed_batch,
            "embed_concurrency": args.embed_concurrency,
            "service_env_overrides": args.service_env,
        },
        "conditions": conditions,
        "total_seconds": round(time.monotonic() - started, 1),
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    print()
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
        print(f"\nJSON written to {args.json}")


if __name__ == "__main__":
    main()
