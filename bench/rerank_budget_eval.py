#!/usr/bin/env python3
"""Rerank within budget on real-length documents (issue #10, item 7).

    .venv/bin/python bench/rerank_budget_eval.py --json .run/rerank_budget_eval.json

Data: the Python 3.11 documentation sources (Debian `python3.11-doc`, sha256-pinned, fetched by
bench/fetch_pydoc.py). Every section of every page (reStructuredText, markup stripped) whose body
has 30-500 words after its first sentence is a document: title = "<page title>: <section title>",
text = the body WITHOUT its first sentence. The query is that first sentence (6-40 words): a
known-item task whose one relevant document is the rest of its section. --docs documents are
sampled (seeded), --queries of them give the queries.

One command: starts tritonserver (all models), a Tansu broker and `mmsearch serve --target all`
(mmsearch.dev.harness.running_stack) with a fresh store, publishes the documents as ContentEvents
through Kafka, waits until the indexer caught up (passages embedded AND their reranker token
vectors stored: Reranker.EncodeDocuments), then runs every query through Searcher.Search:

- dense; hybrid (RRF k=60); dense + rerank and hybrid + rerank at the server's DEFAULTS
  (rerank.top_n 0 -> MMSEARCH_RERANK_DEFAULT_TOP_N, budget_ms 0 -> MMSEARCH_RERANK_BUDGET_MS);
  hybrid + rerank with --top-ns (other top N, same budget).
- degraded rate and the searcher's timings.rerank_ms (p50/p99) per configuration;
- MRR@10 / nDCG@10 with paired-bootstrap 95% CIs vs dense and vs hybrid;
- the old path: for --fly-queries queries, the same top-50 passages sent to Reranker.Rerank
  WITHOUT stored vectors (encoded on the fly, 60 s deadline): its latency, and how far the stored
  (quantized) scores are from it (max |score difference|, top-10 order agreement);
- storage: stored bytes per passage (int8 as served; float16 computed from the token counts).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(1, str(ROOT))
from fetch_pydoc import PACKAGE, VERSION  # noqa: E402
from fetch_pydoc import fetch as fetch_pydoc  # noqa: E402
from retrieval_eval import paired_bootstrap, publish, query_metrics, wait_indexed  # noqa: E402

from mmsearch.clients.connect import DEV_TOKEN, auth_metadata  # noqa: E402
from mmsearch.dev.harness import ALL_MODELS, running_stack  # noqa: E402
from mmsearch.kit import token_vectors as token_codec  # noqa: E402
from mmsearch.producer import text_event  # noqa: E402
from mmsearch.v1 import common_pb2, reranker_pb2, reranker_pb2_grpc, searcher_pb2, searcher_pb2_grpc  # noqa: E402

SETTINGS = {
    "MMSEARCH_LOG_LEVEL": "WARNING",
    "MMSEARCH_TRITON_TIMEOUT_S": "60",
    "MMSEARCH_INDEXER_BATCH_SIZE": "64",
    "MMSEARCH_RERANK_TIMEOUT_S": "60",
    "MMSEARCH_SEARCH_RECALL_SAMPLE_RATE": "0",
}
UNDERLINE = re.compile(r"^([=\-~^\"'*#+`])\1{2,}\s*$")
ROLE = re.compile(r":[\w:.+-]+:`~?!?([^`<]*?)(?:\s*<[^>]*>)?`")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`\"(])")


# ---------------------------------------------------------------- data


def clean(lines: list[str]) -> str:
    """Prose of an RST body: directives, code blocks and tables dropped, roles unwrapped."""
    out: list[str] = []
    skip_indent: int | None = None
    for raw in lines:
        line = raw.rstrip()
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if not line.strip() or indent > skip_indent:
                continue
            skip_indent = None
        stripped = line.strip()
        if stripped.startswith(".."):
            skip_indent = indent  # a directive or comment with its indented block
            continue
        if stripped.startswith(("+-", "|", "===", ">>>", "...")):
            continue
        if stripped.endswith("::"):
            out.append(stripped[:-1] if stripped != "::" else "")
            skip_indent = indent
            continue
        out.append(stripped)
    text = " ".join(out)
    text = ROLE.sub(r"\1", text)
    text = re.sub(r"``([^`]*)``", r"\1", text)
    text = re.sub(r"`([^`<]*?)(?:\s*<[^>]*>)?`_{0,2}", r"\1", text)
    text = re.sub(r"\*\*?([^*]+)\*\*?", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def sections(path: Path) -> list[tuple[str, str]]:
    """(section title, cleaned body) of one .rst.txt file, in order."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    heads = [
        i
        for i in range(1, len(lines))
        if UNDERLINE.match(lines[i])
        and lines[i - 1].strip()
        and len(lines[i].strip()) >= len(lines[i - 1].strip())
        and not UNDERLINE.match(lines[i - 1])
    ]
    out = []
    for k, i in enumerate(heads):
        end = heads[k + 1] - 1 if k + 1 < len(heads) else len(lines)
        body = [ln for ln in lines[i + 1 : end] if not UNDERLINE.match(ln)]
        out.append((clean([lines[i - 1]]), clean(body)))
    return out


def build(source: Path, n_docs: int, n_queries: int, seed: int) -> tuple[list[dict[str, str]], list[int]]:
    docs: list[dict[str, str]] = []
    for path in sorted(source.rglob("*.rst.txt")):
        found = sections(path)
        if not found:
            continue
        page = found[0][0]
        for title, body in found:
            parts = SENTENCE_END.split(body, maxsplit=1)
            if len(parts) != 2:
                continue
            first, rest = parts
            if not 6 <= len(first.split()) <= 40 or not 30 <= len(rest.split()) <= 500:
                continue
            name = title if title == page else f"{page}: {title}"
            docs.append({"id": f"d{len(docs)}", "title": name, "text": rest, "query": first})
    rng = random.Random(seed)
    rng.shuffle(docs)
    # Distinct queries only (boilerplate first sentences repeat across pages).
    seen: set[str] = set()
    chosen = []
    for d in docs[:n_docs]:
        if d["query"] not in seen:
            seen.add(d["query"])
            chosen.append(d)
    for i, d in enumerate(chosen):
        d["id"] = f"doc-{i:05d}"
    return chosen, list(range(min(n_queries, len(chosen))))


# ---------------------------------------------------------------- searching


def run_queries(
    stub: searcher_pb2_grpc.SearcherStub,
    docs: list[dict[str, str]],
    queries: list[int],
    config: dict[str, Any],
) -> dict[str, Any]:
    per_query: list[dict[str, Any]] = []
    for q in queries:
        request = searcher_pb2.SearchRequest(query=common_pb2.Content(text=docs[q]["query"]), top_k=10)
        if config.get("hybrid"):
            request.hybrid.enabled = True
            request.hybrid.rrf_k = 60
        if config.get("rerank"):
            request.rerank.enabled = True
            request.rerank.top_n = config.get("top_n", 0)  # 0: the server's default
        response = stub.Search(request, metadata=auth_metadata(DEV_TOKEN), timeout=60)
        ranked = [h.item_id for h in response.hits]
        metrics = query_metrics(ranked, {docs[q]["id"]})
        metrics["degraded"] = float(response.degraded)
        metrics["reasons"] = list(response.degraded_reasons)
        metrics["rerank_ms"] = response.timings.rerank_ms
        metrics["total_ms"] = response.timings.total_ms
        per_query.append(metrics)
    result: dict[str, Any] = {"name": config["name"], "n": len(per_query)}
    for key in ("mrr@10", "ndcg@10", "r@1", "r@10"):
        result[key] = round(float(np.mean([m[key] for m in per_query])), 4)
    result["degraded_rate"] = round(float(np.mean([m["degraded"] for m in per_query])), 4)
    for key in ("rerank_ms", "total_ms"):
        values = np.asarray([m[key] for m in per_query])
        result[f"{key}_p50"] = round(float(np.percentile(values, 50)), 1)
        result[f"{key}_p99"] = round(float(np.percentile(values, 99)), 1)
    result["degraded_reasons"] = sorted({r for m in per_query for r in m["reasons"]})
    result["per_query_ndcg"] = [m["ndcg@10"] for m in per_query]
    result["per_query_mrr"] = [m["mrr@10"] for m in per_query]
    return result


def on_the_fly(
    channel: grpc.Channel, docs: list[dict[str, str]], queries: list[int], top_n: int
) -> dict[str, Any]:
    """The old path on the same candidates, and the stored path's distance from it."""
    searcher = searcher_pb2_grpc.SearcherStub(channel)
    reranker = reranker_pb2_grpc.RerankerStub(channel)
    by_id = {d["id"]: d for d in docs}
    fly_ms: list[float] = []
    stored_ms: list[float] = []
    max_diff: list[float] = []
    top10_same: list[float] = []
    for q in queries:
        request = searcher_pb2.SearchRequest(query=common_pb2.Content(text=docs[q]["query"]), top_k=top_n)
        request.rerank.enabled = True
        request.rerank.top_n = top_n
        response = searcher.Search(request, metadata=auth_metadata(DEV_TOKEN), timeout=60)
        if response.degraded:
            continue
        stored_ms.append(response.timings.rerank_ms)
        texts = []
        for hit in response.hits:
            text = by_id[hit.item_id]["text"]
            texts.append(text[hit.passage.start : hit.passage.end] if hit.passage.end else text)
        rerank = reranker_pb2.RerankRequest(
            query=request.query,
            candidates=[
                reranker_pb2.RerankCandidate(id=h.item_id, text=t)
                for h, t in zip(response.hits, texts, strict=True)
            ],
        )
        t0 = time.perf_counter()
        fly = reranker.Rerank(rerank, metadata=auth_metadata(DEV_TOKEN), timeout=120)
        fly_ms.append((time.perf_counter() - t0) * 1000)
        fly_scores = {r.id: r.score for r in fly.results}
        stored_scores = {h.item_id: h.scores.rerank for h in response.hits}
        max_diff.append(max(abs(fly_scores[i] - stored_scores[i]) for i in stored_scores))
        top10_same.append(float([r.id for r in fly.results][:10] == [h.item_id for h in response.hits][:10]))
    return {
        "queries": len(fly_ms),
        "on_the_fly_ms_p50": round(float(np.percentile(fly_ms, 50)), 1),
        "on_the_fly_ms_p99": round(float(np.percentile(fly_ms, 99)), 1),
        "stored_ms_p50": round(float(np.percentile(stored_ms, 50)), 1),
        "stored_ms_p99": round(float(np.percentile(stored_ms, 99)), 1),
        "max_abs_score_diff": round(float(max(max_diff)), 5),
        "mean_max_abs_score_diff": round(float(np.mean(max_diff)), 5),
        "top10_order_identical": round(float(np.mean(top10_same)), 3),
    }


def storage(channel: grpc.Channel, docs: list[dict[str, str]], sample: int) -> dict[str, Any]:
    """Bytes per passage as served (int8 by default) and as float16, on `sample` documents' text
    (the first ~200 tokens: one passage)."""
    stub = reranker_pb2_grpc.RerankerStub(channel)
    texts = [d["text"][:1200] for d in docs[:sample]]
    blobs: list[bytes] = []
    for start in range(0, len(texts), 32):
        response = stub.EncodeDocuments(
            reranker_pb2.EncodeDocumentsRequest(texts=texts[start : start + 32]),
            metadata=auth_metadata(DEV_TOKEN),
            timeout=120,
        )
        blobs += list(response.token_vectors)
    decoded = [token_codec.unpack(b) for b in blobs]
    counts = np.asarray([len(t.tokens) for t in decoded])
    fp16 = [len(token_codec.pack(t, "float16")) for t in decoded]
    return {
        "passages": len(blobs),
        "tokens_per_passage_mean": round(float(counts.mean()), 1),
        "int8_bytes_per_passage_mean": round(float(np.mean([len(b) for b in blobs])), 0),
        "float16_bytes_per_passage_mean": round(float(np.mean(fp16)), 0),
        "float32_bytes_per_passage_mean": round(float(np.mean(counts * 384 * 4 + 384 * 4)), 0),
    }


# ---------------------------------------------------------------- main


def fmt(result: list[float], base: list[float] | None, seed: int) -> str:
    if base is None:
        return ""
    ci = paired_bootstrap(np.asarray(base), np.asarray(result), seed)
    return f"{ci['delta']:+.3f} [{ci['ci95'][0]:+.3f}, {ci['ci95'][1]:+.3f}]"


def report(out: dict[str, Any], seed: int) -> None:
    configs = {c["name"]: c for c in out["configs"]}
    print(
        "\n| config | MRR@10 | nDCG@10 | R@1 | R@10 | degraded | rerank p50 ms | rerank p99 ms "
        "| ΔnDCG@10 vs dense [95% CI] | ΔnDCG@10 vs hybrid [95% CI] | ΔMRR@10 vs hybrid [95% CI] |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for c in out["configs"]:
        dense = configs["dense"] if c["name"] != "dense" else None
        hybrid = configs["hybrid k=60"] if c["name"] not in ("dense", "hybrid k=60") else None
        cells = [
            fmt(c["per_query_ndcg"], dense["per_query_ndcg"] if dense else None, seed),
            fmt(c["per_query_ndcg"], hybrid["per_query_ndcg"] if hybrid else None, seed),
            fmt(c["per_query_mrr"], hybrid["per_query_mrr"] if hybrid else None, seed),
        ]
        print(
            f"| {c['name']} | {c['mrr@10']:.3f} | {c['ndcg@10']:.3f} | {c['r@1']:.3f} | {c['r@10']:.3f} "
            f"| {c['degraded_rate']:.1%} | {c['rerank_ms_p50']} | {c['rerank_ms_p99']} | "
            + " | ".join(cells)
            + " |"
        )
    print("\non the fly vs stored:", json.dumps(out["on_the_fly"]))
    print("storage:", json.dumps(out["storage"]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=3000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--top-ns", default="20,100", help="extra hybrid + rerank top N values")
    parser.add_argument("--fly-queries", type=int, default=20)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep-workdir", action="store_true")
    args = parser.parse_args()

    docs, queries = build(fetch_pydoc(), args.docs, args.queries, args.seed)
    words = np.asarray([len(d["text"].split()) for d in docs])
    print(
        f"{len(docs)} documents ({PACKAGE}={VERSION}), words p50 {np.median(words):.0f} "
        f"min {words.min()} max {words.max()}; {len(queries)} queries",
        flush=True,
    )
    events = [text_event("dev", d["id"], d["text"], title=d["title"], event_time=None) for d in docs]
    work = Path(tempfile.mkdtemp(prefix="rerank-budget-"))
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True, cwd=ROOT
        ).stdout.strip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "data": f"{PACKAGE}={VERSION}",
        "docs": len(docs),
        "words_p50": float(np.median(words)),
        "queries": len(queries),
    }
    options = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    ok = False
    try:
        with (
            running_stack(work, models=ALL_MODELS, env_overrides=SETTINGS) as stack,
            grpc.insecure_channel(stack.addr, options=options) as channel,
        ):
            t0 = time.perf_counter()
            publish(stack.bootstrap, events)
            wait_indexed(channel, {"minilm@1": len(docs)}, timeout_s=3600)
            out["ingest_seconds"] = round(time.perf_counter() - t0, 1)
            print(f"indexed in {out['ingest_seconds']} s", flush=True)
            stub = searcher_pb2_grpc.SearcherStub(channel)
            configs: list[dict[str, Any]] = [
                {"name": "dense"},
                {"name": "hybrid k=60", "hybrid": True},
                {"name": "dense + rerank (defaults)", "rerank": True},
                {"name": "hybrid + rerank (defaults)", "hybrid": True, "rerank": True},
            ]
            configs += [
                {"name": f"hybrid + rerank top {n}", "hybrid": True, "rerank": True, "top_n": int(n)}
                for n in args.top_ns.split(",")
                if n
            ]
            out["load_before_queries"] = [round(x, 2) for x in os.getloadavg()]
            out["configs"] = []
            for config in configs:
                print(f"running {config['name']} ...", flush=True)
                out["configs"].append(run_queries(stub, docs, queries, config))
            out["on_the_fly"] = on_the_fly(channel, docs, queries[: args.fly_queries], 50)
            out["storage"] = storage(channel, docs, 200)
            out["load_after"] = [round(x, 2) for x in os.getloadavg()]
        ok = True
    finally:
        if ok and not args.keep_workdir:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory: {work}")
    report(out, args.seed)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
