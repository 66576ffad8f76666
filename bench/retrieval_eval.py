#!/usr/bin/env python3
"""Retrieval quality through the real Searcher API: dense vs hybrid (BM25 + dense, RRF) vs
hybrid + rerank, on small offline sets with real relevance (issue #5).

    .venv/bin/python bench/retrieval_eval.py --json .run/retrieval_eval.json

One command: starts its own tritonserver (all five models), a Tansu broker and
`mmsearch serve --target all` on free loopback ports with a fresh store directory
(mmsearch.dev.harness.running_stack);
publishes the sets as ContentEvents through Kafka (mmsearch.producer.ContentProducer);
waits until IndexerAdmin.GetStatus shows lag 0 and the expected item counts; runs every
query with top_k=10 through Searcher.Search (dev token); prints markdown tables (and
--json PATH); stops what it started, by pid.

Tasks (all seeded):

- text -> image, Fashion-MNIST (Debian `dataset-fashion-mnist`, bench/fetch_fashion_mnist.py):
  --per-class images per class from the t10k split (default 50 x 10 classes = 500), 28x28
  grayscale upscaled (bicubic) to --image-side px and sent as PNG, published with tag = class and
  a NEUTRAL title ("image 01234": no class word, so titles cannot leak the label into BM25 or the
  reranker). Queries: each class in CAPTION_TEMPLATES (3 wordings x 10 classes = 30 queries),
  searched over images only. Relevant: every indexed image of that class (binary).
- image -> image, same index: --image-queries-per-class held-out t10k images per class (not
  indexed) as queries, images only. Relevant: same class.
- text -> text, WordNet 3.0 gloss retrieval (bench/fetch_wordnet.py, task built as in
  bench/reranker_eval.py): queries are WordNet usage examples, documents are dictionary entries
  "lemma, lemma: definition" with their hard negatives (every other sense of the same lemmas),
  filled with random entries up to --wordnet-docs; published as text items (empty title, so the
  indexed text is exactly the entry). One relevant entry per query.
- audio: only 10 bundled clips exist, too few for a retrieval eval. SANITY CHECK only: the first
  half of each clip is indexed in aisfx@1, the second half is the query; relevant = the same clip.

Configurations: dense (vector only); hybrid with RRF k=60 (server default) and k=--alt-rrf-k;
hybrid (k=60) + rerank of the top --rerank-top-n (30); dense + rerank (to separate the stages).
The rerank budget is raised to --rerank-budget-ms per request so that quality, not the latency
budget, is measured; a degraded response is counted and reported.

Metrics at K=10 with binary relevance, averaged over queries:
- nDCG@10 = DCG / ideal DCG, gains 1/log2(rank+1), ideal = min(10, |relevant|) hits on top;
- MRR@10 = 1 / rank of the first relevant hit (0 if none in the top 10);
- R@K = |relevant in top K| / min(K, |relevant|) (capped recall, as BEIR's R_cap@K). With one
  relevant document (text -> text, audio) it is ordinary Recall@K; with 50 relevant images it is
  Precision@K (ordinary recall would be at most 10/50). Plain recall@10 and hit@10 are in --json.
Delta columns: paired bootstrap (2000 rounds) 95% interval of the per-query nDCG@10 difference
against the stage the configuration adds to (hybrid vs dense, +rerank vs the same without).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import soundfile
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(1, str(ROOT))
from fetch_fashion_mnist import CLASSES  # noqa: E402
from fetch_fashion_mnist import PACKAGE as FM_PACKAGE  # noqa: E402
from fetch_fashion_mnist import SHA256 as FM_SHA256  # noqa: E402
from fetch_fashion_mnist import VERSION as FM_VERSION  # noqa: E402
from fetch_fashion_mnist import load as load_fashion_mnist  # noqa: E402
from fetch_wordnet import PACKAGE as WN_PACKAGE  # noqa: E402
from fetch_wordnet import VERSION as WN_VERSION  # noqa: E402
from fetch_wordnet import fetch as fetch_wordnet  # noqa: E402
from reranker_eval import build_task, parse_wordnet  # noqa: E402

from mmsearch.clients.connect import DEV_TOKEN, auth_metadata  # noqa: E402
from mmsearch.dev.harness import ALL_MODELS, running_stack  # noqa: E402
from mmsearch.kit.media import AudioLimits, decode_audio  # noqa: E402
from mmsearch.producer import ContentProducer, media_event, text_event  # noqa: E402
from mmsearch.v1 import (  # noqa: E402
    common_pb2,
    events_pb2,
    indexer_pb2,
    indexer_pb2_grpc,
    searcher_pb2,
    searcher_pb2_grpc,
)

TENANT = "dev"  # the development token's tenant
TRITON_MODELS = ALL_MODELS
SAMPLES_AUDIO = ROOT / ".cache" / "samples" / "audio"
PUBLISHED = datetime(2026, 1, 1, tzinfo=UTC)
K = 10
# Fashion-MNIST label -> a noun phrase a person would type (label names as the dataset's README
# gives them: "T-shirt/top", "Trouser", ...; "Pullover" is spelled out as a sweater, "Bag" and
# "Ankle boot" kept as they are).
CLASS_PHRASES = (
    "a t-shirt",
    "a pair of trousers",
    "a pullover sweater",
    "a dress",
    "a coat",
    "a sandal",
    "a shirt",
    "a sneaker",
    "a bag",
    "an ankle boot",
)
# Three wordings per class: the CLIP-style caption, a caption describing what the pictures
# really are (tiny grayscale product shots), and the bare noun phrase.
CAPTION_TEMPLATES = ("a photo of {}", "a black and white product photo of {}", "{}")
IMAGE = common_pb2.MODALITY_IMAGE
TEXT = common_pb2.MODALITY_TEXT
AUDIO = common_pb2.MODALITY_AUDIO


# ---------------------------------------------------------------- data sets


@dataclass
class Query:
    qid: str
    content: common_pb2.Content
    relevant: set[str]
    label: str  # for the report: caption, class or example


@dataclass
class Task:
    name: str
    space: str
    modalities: list[common_pb2.Modality.ValueType]
    queries: list[Query]
    text_queries: bool  # hybrid and rerank need a text query
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def png(pixels: np.ndarray, side: int) -> bytes:
    image = Image.fromarray(pixels)
    if side != pixels.shape[0]:
        image = image.resize((side, side), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()


def fashion_mnist(
    per_class: int, queries_per_class: int, side: int, seed: int
) -> tuple[list[events_pb2.ContentEvent], Task, Task]:
    images, labels = load_fashion_mnist("t10k")
    rng = np.random.default_rng(seed)
    events, indexed_by_class = [], {c: set[str]() for c in range(len(CLASSES))}
    held_out: list[tuple[int, int]] = []
    for c in range(len(CLASSES)):
        pick = rng.permutation(np.flatnonzero(labels == c))[: per_class + queries_per_class]
        for index in pick[:per_class]:
            item = f"fmnist:{int(index):05d}"
            indexed_by_class[c].add(item)
            events.append(
                media_event(
                    TENANT, item, png(images[index], side), IMAGE, mime_type="image/png",
                    title=f"image {int(index):05d}", tags=[CLASSES[c]], source="fashion-mnist",
                    version=1, event_time=PUBLISHED,
                )
            )  # fmt: skip
        held_out += [(int(i), c) for i in pick[per_class:]]
    text_queries = [
        Query(
            f"t2i:{c}:{t}",
            common_pb2.Content(text=template.format(CLASS_PHRASES[c])),
            indexed_by_class[c],
            template.format(CLASS_PHRASES[c]),
        )
        for t, template in enumerate(CAPTION_TEMPLATES)
        for c in range(len(CLASSES))
    ]
    image_queries = [
        Query(
            f"i2i:{index:05d}",
            common_pb2.Content(image=common_pb2.Media(data=png(images[index], side), mime_type="image/png")),
            indexed_by_class[c],
            CLASSES[c],
        )
        for index, c in held_out
    ]
    wording = {q.qid: CAPTION_TEMPLATES[int(q.qid.rsplit(":", 1)[1])].format("…") for q in text_queries}
    text_class = {q.qid: CLASSES[int(q.qid.split(":")[1])] for q in text_queries}
    image_class = {q.qid: q.label for q in image_queries}
    t2i = Task(
        "text -> image (Fashion-MNIST)", "default", [IMAGE], text_queries, True,
        extra={"groups": {"wording": wording, "class": text_class}},
    )  # fmt: skip
    i2i = Task(
        "image -> image (Fashion-MNIST)", "default", [IMAGE], image_queries, False,
        extra={"groups": {"class": image_class}},
    )  # fmt: skip
    return events, t2i, i2i


def wordnet(n_docs: int, n_queries: int, seed: int) -> tuple[list[events_pb2.ContentEvent], Task]:
    queries, docs = build_task(parse_wordnet(fetch_wordnet()), n_queries, n_docs, seed)
    ids = [f"wn:{d.key}" for d in docs]
    events = [
        text_event(TENANT, item, d.entry, tags=["wordnet"], source="wordnet", version=1, event_time=PUBLISHED)
        for item, d in zip(ids, docs, strict=True)
    ]
    task_queries = [
        Query(f"t2t:{i}", common_pb2.Content(text=example), {ids[relevant]}, example)
        for i, (example, relevant) in enumerate(queries)
    ]
    return events, Task("text -> text (WordNet glosses)", "default", [TEXT], task_queries, True)


def audio_halves() -> tuple[list[events_pb2.ContentEvent], Task]:
    limits = AudioLimits(max_bytes=1 << 26, max_seconds=30.0, sample_rate=44100)
    events, queries = [], []

    def wav(samples: np.ndarray) -> bytes:
        out = io.BytesIO()
        soundfile.write(out, samples, limits.sample_rate, format="WAV", subtype="PCM_16")
        return out.getvalue()

    durations = {}
    for n, path in enumerate(sorted(SAMPLES_AUDIO.glob("*"))):
        samples = decode_audio(path.read_bytes(), "", limits, path.name).samples
        half = len(samples) // 2
        durations[path.stem] = round(len(samples) / limits.sample_rate, 2)
        item = f"clip:{n:02d}"
        events.append(
            media_event(
                TENANT, item, wav(samples[:half]), AUDIO, mime_type="audio/wav", title=f"clip {n:02d}",
                tags=["animal"], source="ovos", version=1, event_time=PUBLISHED,
            )
        )  # fmt: skip
        queries.append(
            Query(
                f"a2a:{path.stem}",
                common_pb2.Content(audio=common_pb2.Media(data=wav(samples[half:]), mime_type="audio/wav")),
                {item},
                path.stem,
            )
        )
    task = Task(
        "audio -> audio (SANITY CHECK: clip halves)",
        "audio",
        [AUDIO],
        queries,
        False,
        note="10 clips only: second half of a clip must find its first half; not a retrieval benchmark",
        extra={"clip_seconds": durations},
    )
    return events, task


# ---------------------------------------------------------------- metrics


def query_metrics(ranked: list[str], relevant: set[str]) -> dict[str, float]:
    top = ranked[:K]
    gains = [1.0 if item in relevant else 0.0 for item in top]
    dcg = sum(g / np.log2(i + 2) for i, g in enumerate(gains))
    ideal = sum(1.0 / np.log2(i + 2) for i in range(min(K, len(relevant))))
    first = next((i + 1 for i, g in enumerate(gains) if g), None)
    return {
        "ndcg@10": float(dcg / ideal) if ideal else 0.0,
        "mrr@10": 1.0 / first if first else 0.0,
        "r@1": sum(gains[:1]) / min(1, len(relevant)),
        "r@10": sum(gains) / min(K, len(relevant)),
        "recall@10": sum(gains) / len(relevant),
        "hit@10": 1.0 if first else 0.0,
    }


def paired_bootstrap(a: np.ndarray, b: np.ndarray, seed: int, rounds: int = 2000) -> dict[str, float]:
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


# ---------------------------------------------------------------- the stack


# Batches of 500 OCR calls on a shared 2-core machine must not hit the 10 s default Triton
# timeout (the indexer would pause and retry); none of these changes a result.
SERVICE_SETTINGS = {
    "MMSEARCH_LOG_LEVEL": "WARNING",
    "MMSEARCH_TRITON_TIMEOUT_S": "60",
    "MMSEARCH_INDEXER_BATCH_SIZE": "64",
    "MMSEARCH_RERANK_TIMEOUT_S": "60",
    "MMSEARCH_SEARCH_RECALL_SAMPLE_RATE": "0",
}


def publish(bootstrap: str, events: list[events_pb2.ContentEvent]) -> None:
    with ContentProducer(bootstrap) as producer:
        for event in events:
            producer.publish(event)


def wait_indexed(
    channel: grpc.Channel, expected: dict[str, int], timeout_s: float
) -> indexer_pb2.GetStatusResponse:
    stub = indexer_pb2_grpc.IndexerAdminStub(channel)
    deadline = time.monotonic() + timeout_s
    last = 0.0
    while True:
        status: indexer_pb2.GetStatusResponse = stub.GetStatus(
            indexer_pb2.GetStatusRequest(), metadata=auth_metadata(DEV_TOKEN), timeout=30
        )
        lag = sum(p.lag for p in status.partitions)
        counts = {s.space: s.item_count for s in status.spaces}
        dead = sum(status.dead_letters_by_reason.values())
        done = all(counts.get(space, 0) + dead >= n for space, n in expected.items())
        if status.partitions and lag == 0 and done:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"indexer did not catch up in {timeout_s:.0f}s (lag {lag}): {status}")
        if time.monotonic() - last > 10:
            paused = f", paused: {status.pause_reason}" if status.paused else ""
            print(f"  indexing: lag {lag}, items {counts}, dead letters {dead}{paused}", flush=True)
            last = time.monotonic()
        time.sleep(1)


# ---------------------------------------------------------------- searching


@dataclass(frozen=True)
class Config:
    name: str
    stage: str  # what the configuration adds
    baseline: str | None  # the configuration it adds the stage to
    rrf_k: int | None = None
    rerank: bool = False


def configs(alt_k: int) -> list[Config]:
    return [
        Config("dense", "vector only", None),
        Config("hybrid k=60", "+ BM25, RRF k=60", "dense", rrf_k=60),
        Config(f"hybrid k={alt_k}", f"+ BM25, RRF k={alt_k}", "dense", rrf_k=alt_k),
        Config("hybrid k=60 + rerank", "+ rerank top-N", "hybrid k=60", rrf_k=60, rerank=True),
        Config("dense + rerank", "+ rerank top-N (no BM25)", "dense", rerank=True),
    ]


def run_config(
    search: Callable[[searcher_pb2.SearchRequest], searcher_pb2.SearchResponse],
    task: Task,
    config: Config,
    top_n: int,
    budget_ms: int,
) -> dict[str, Any]:
    per_query, latencies, degraded_reasons, degraded = [], [], [], 0
    for query in task.queries:
        request = searcher_pb2.SearchRequest(
            space=common_pb2.SpaceRef(name=task.space),
            query=query.content,
            modalities=task.modalities,
            top_k=K,
        )
        if config.rrf_k is not None:
            request.hybrid.CopyFrom(searcher_pb2.HybridOptions(enabled=True, rrf_k=config.rrf_k))
        if config.rerank:
            request.rerank.CopyFrom(
                searcher_pb2.RerankOptions(enabled=True, top_n=top_n, budget_ms=budget_ms)
            )
        t0 = time.perf_counter()
        response = search(request)
        latencies.append((time.perf_counter() - t0) * 1000)
        ranked = [h.item_id for h in response.hits]
        row = query_metrics(ranked, query.relevant)
        row |= {
            "qid": query.qid,
            "top10": ranked,
            "bm25_hits_in_top10": sum(h.scores.HasField("bm25") for h in response.hits),
            "bm25_matched": [h.item_id for h in response.hits if h.scores.HasField("bm25")],
            "reranked_in_top10": sum(h.scores.HasField("rerank") for h in response.hits),
        }
        if response.degraded:
            degraded += 1
            degraded_reasons.extend(response.degraded_reasons)
        per_query.append(row)
    keys = ("r@1", "r@10", "mrr@10", "ndcg@10", "recall@10", "hit@10")
    return {
        "config": config.name,
        "stage": config.stage,
        "mean": {k: round(float(np.mean([r[k] for r in per_query])), 4) for k in keys},
        "degraded": degraded,
        "degraded_reasons": sorted(set(degraded_reasons))[:5],
        "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "bm25_hits_in_top10": round(float(np.mean([r["bm25_hits_in_top10"] for r in per_query])), 2),
        "reranked_in_top10": round(float(np.mean([r["reranked_in_top10"] for r in per_query])), 2),
        "per_query": per_query,
    }


def evaluate_task(
    stub: searcher_pb2_grpc.SearcherStub, task: Task, args: argparse.Namespace
) -> dict[str, Any]:
    metadata = auth_metadata(DEV_TOKEN)

    def search(request: searcher_pb2.SearchRequest) -> searcher_pb2.SearchResponse:
        response: searcher_pb2.SearchResponse = stub.Search(request, metadata=metadata, timeout=120)
        return response

    results: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for config in configs(args.alt_rrf_k):
        if config.rrf_k is not None and not task.text_queries:
            results[config.name] = {
                "config": config.name,
                "stage": config.stage,
                "not_applicable": "hybrid needs query text; an image/audio query has none",
            }
            continue
        results[config.name] = run_config(search, task, config, args.rerank_top_n, args.rerank_budget_ms)
    for config in configs(args.alt_rrf_k):
        result = results[config.name]
        base = results.get(config.baseline or "")
        if "per_query" in result and base is not None and "per_query" in base:
            a = np.asarray([r["ndcg@10"] for r in base["per_query"]])
            b = np.asarray([r["ndcg@10"] for r in result["per_query"]])
            result["vs_baseline"] = {"baseline": config.baseline, **paired_bootstrap(a, b, args.seed)}
    return {
        "task": task.name,
        "space": task.space,
        "queries": len(task.queries),
        "relevant_per_query": round(float(np.mean([len(q.relevant) for q in task.queries])), 1),
        "note": task.note,
        "extra": task.extra,
        "seconds": round(time.perf_counter() - t0, 1),
        "results": results,
    }


def image_texts(stub: searcher_pb2_grpc.SearcherStub, expected: int) -> dict[str, Any]:
    """Page through every indexed image: which carry any text (OCR) besides the neutral title."""
    request = searcher_pb2.SearchRequest(
        query=common_pb2.Content(text="a photo"), modalities=[IMAGE], top_k=100
    )
    texts: dict[str, str] = {}
    while True:
        response = stub.Search(request, metadata=auth_metadata(DEV_TOKEN), timeout=60)
        for hit in response.hits:
            texts[hit.item_id] = hit.preview.snippet
        if not response.next_page_token or len(texts) >= expected:
            break
        request.page_token = response.next_page_token
    with_text = {k: v for k, v in texts.items() if v.strip()}
    common = Counter(" ".join(v.split()).lower() for v in with_text.values()).most_common(8)
    return {
        "images_seen": len(texts),
        "images_with_ocr_text": len(with_text),
        "most_common_ocr_text": [[text, n] for text, n in common],
        "ocr_text": dict(sorted(with_text.items())),
    }


def run_on_stack(
    work: Path,
    *,
    events: list[events_pb2.ContentEvent],
    expected: dict[str, int],
    tasks: list[Task],
    n_images: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Start the stack, ingest through Kafka, wait for the indexer, run every task, stop the stack."""
    ok = False
    options = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    print(f"starting tritonserver ({len(TRITON_MODELS)} models), broker, mmsearch serve ...", flush=True)
    try:
        with (
            running_stack(work, models=TRITON_MODELS, env_overrides=SERVICE_SETTINGS) as stack,
            grpc.insecure_channel(stack.addr, options=options) as channel,
        ):
            t0 = time.perf_counter()
            publish(stack.bootstrap, events)
            print(f"published {len(events)} events to {stack.bootstrap}; waiting for the indexer", flush=True)
            status = wait_indexed(channel, expected, timeout_s=900)
            run: dict[str, Any] = {
                "ingest_seconds": round(time.perf_counter() - t0, 1),
                "load_after_ingest": [round(x, 2) for x in os.getloadavg()],
                "indexed": {s.space: s.item_count for s in status.spaces},
                "dead_letters": dict(status.dead_letters_by_reason),
            }
            print(
                f"indexed in {run['ingest_seconds']} s: {run['indexed']}, dead letters {run['dead_letters']}",
                flush=True,
            )
            stub = searcher_pb2_grpc.SearcherStub(channel)
            run["image_text"] = image_texts(stub, n_images)
            run["tasks"] = []
            for task in tasks:
                print(f"evaluating {task.name} ({len(task.queries)} queries) ...", flush=True)
                run["tasks"].append(evaluate_task(stub, task, args))
        ok = True
    finally:
        if ok and not args.keep_workdir:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory (logs, store): {work}")
    return run


# ---------------------------------------------------------------- report


def fmt_delta(result: dict[str, Any]) -> str:
    vs = result.get("vs_baseline")
    if not vs:
        return ""
    low, high = vs["ci95"]
    return f"{vs['delta']:+.3f} [{low:+.3f}, {high:+.3f}] vs {vs['baseline']} ({vs['wins']}↑ {vs['losses']}↓)"


def breakdown(task: dict[str, Any], groups: dict[str, dict[str, str]]) -> str:
    """nDCG@10 per query group (e.g. per caption wording, per class) for every configuration."""
    ran = [r for r in task["results"].values() if "per_query" in r]
    lines = [f"| nDCG@10 by group | {' | '.join(r['config'] for r in ran)} |", "|---" * (len(ran) + 1) + "|"]
    for kind, of_query in groups.items():
        for group in dict.fromkeys(of_query.values()):
            cells = [
                float(np.mean([q["ndcg@10"] for q in r["per_query"] if of_query[q["qid"]] == group]))
                for r in ran
            ]
            lines.append(f"| {kind}: {group} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    return "\n".join(lines) + "\n"


def report(result: dict[str, Any]) -> None:
    meta = result["meta"]
    print(
        f"\n## Retrieval quality through Searcher.Search ({meta['date']}, {meta['machine']})\n\n"
        f"top_k=10, rerank top_n={meta['rerank_top_n']}, RRF k=60 and k={meta['alt_rrf_k']}; "
        f"load average {meta['load_before']} before, {meta['load_after_ingest']} after ingest, "
        f"{meta['load_after']} at the end (the machine is shared); ingest {meta['ingest_seconds']} s, "
        f"total {meta['total_seconds']} s.\n"
    )
    for task in result["tasks"]:
        print(
            f"### {task['task']}\n\n{task['queries']} queries, "
            f"{task['relevant_per_query']} relevant per query, "
            f"space {task['space']}; {task['seconds']} s."
            + (f" {task['note']}." if task["note"] else "")
            + "\n"
        )
        print("| configuration | R@1 | R@10 | MRR@10 | nDCG@10 | ΔnDCG@10 [95% CI] | p50 ms | note |")
        print("|---|---|---|---|---|---|---|---|")
        for r in task["results"].values():
            if "not_applicable" in r:
                print(f"| {r['config']} | - | - | - | - | | | n/a: {r['not_applicable']} |")
                continue
            m = r["mean"]
            notes = []
            if r["config"].startswith("hybrid"):
                notes.append(f"BM25-matched hits in top 10: {r['bm25_hits_in_top10']}")
            if "rerank" in r["config"]:
                notes.append(f"reranker-scored hits in top 10: {r['reranked_in_top10']}")
            if r["degraded"]:
                notes.append(f"degraded {r['degraded']}x: {'; '.join(r['degraded_reasons'])}")
            print(
                f"| {r['config']} | {m['r@1']:.3f} | {m['r@10']:.3f} | {m['mrr@10']:.3f} "
                f"| {m['ndcg@10']:.3f} "
                f"| {fmt_delta(r)} | {r['p50_ms']:.0f} | {'; '.join(notes)} |"
            )
        print()
        groups = task["extra"].get("groups")
        if groups:
            print(breakdown(task, groups))
    ocr = result.get("image_text")
    if ocr:
        print(
            f"Image items' text (what BM25 and the reranker see besides the neutral title): "
            f"{ocr['images_with_ocr_text']} of {ocr['images_seen']} images have OCR text; "
            "most common (lowercased): "
            + ", ".join(f"{json.dumps(t, ensure_ascii=False)} x{n}" for t, n in ocr["most_common_ocr_text"])
            + "\n"
        )


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-class", type=int, default=50, help="indexed Fashion-MNIST images per class")
    parser.add_argument(
        "--image-queries-per-class", type=int, default=10, help="held-out query images per class"
    )
    parser.add_argument("--image-side", type=int, default=112, help="28x28 images are upscaled to this side")
    parser.add_argument("--wordnet-docs", type=int, default=2000)
    parser.add_argument("--wordnet-queries", type=int, default=200)
    parser.add_argument("--alt-rrf-k", type=int, default=10, help="the second RRF k (besides 60)")
    parser.add_argument("--rerank-top-n", type=int, default=30)
    parser.add_argument("--rerank-budget-ms", type=int, default=30000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--skip-audio", action="store_true")
    parser.add_argument("--keep-workdir", action="store_true", help="keep logs and store after the run")
    parser.add_argument("--json", type=Path, help="write the results (with per-query rows) here")
    args = parser.parse_args()
    started = time.perf_counter()
    random.seed(args.seed)
    load_before = [round(x, 2) for x in os.getloadavg()]

    image_events, t2i, i2i = fashion_mnist(
        args.per_class, args.image_queries_per_class, args.image_side, args.seed
    )
    text_events, t2t = wordnet(args.wordnet_docs, args.wordnet_queries, args.seed)
    events = image_events + text_events
    tasks = [t2i, i2i, t2t]
    expected = {"minilm@1": len(events)}
    if not args.skip_audio:
        audio_events, a2a = audio_halves()
        events += audio_events
        tasks.append(a2a)
        expected["aisfx@1"] = len(audio_events)
    print(
        f"data: {len(image_events)} Fashion-MNIST images, {len(text_events)} WordNet entries, "
        f"{len(events) - len(image_events) - len(text_events)} audio halves; "
        f"queries: {', '.join(f'{t.name}: {len(t.queries)}' for t in tasks)}",
        flush=True,
    )

    work = Path(tempfile.mkdtemp(prefix="mmsearch-retrieval-"))
    run = run_on_stack(
        work, events=events, expected=expected, tasks=tasks, n_images=len(image_events), args=args
    )
    result = {
        "meta": {
            "date": f"{datetime.now(UTC):%Y-%m-%d}",
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "load_before": load_before,
            "load_after_ingest": run["load_after_ingest"],
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "ingest_seconds": run["ingest_seconds"],
            "total_seconds": round(time.perf_counter() - started, 1),
            "indexed": run["indexed"],
            "dead_letters": run["dead_letters"],
            "rerank_top_n": args.rerank_top_n,
            "rerank_budget_ms": args.rerank_budget_ms,
            "alt_rrf_k": args.alt_rrf_k,
            "args": {k: str(v) for k, v in vars(args).items()},
            "datasets": {
                "fashion_mnist": f"Debian {FM_PACKAGE}={FM_VERSION} sha256 {FM_SHA256} (t10k; MIT)",
                "wordnet": f"Debian {WN_PACKAGE}={WN_VERSION} (WordNet 3.0 license)",
                "audio": str(SAMPLES_AUDIO),
                "captions": [t.format(p) for t in CAPTION_TEMPLATES for p in CLASS_PHRASES],
            },
        },
        "image_text": run["image_text"],
        "tasks": run["tasks"],
    }
    report(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
