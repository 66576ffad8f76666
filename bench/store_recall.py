"""Recall and latency of the embedded store (QdrantEdgeStore), unfiltered and filtered.

Clustered data: a mixture of gaussians on the unit sphere (queries drawn from the same mixture), one
tenant, an int attribute `bucket` (uniform 0..99) and tags `t30` (30 % of items) / `t1` (1 %). For each
scenario the same queries run through the HNSW path and with exact=True; recall@10 is the overlap of
the two top-10s. Latency is end to end through the async adapter (thread hop, payload fetch included).

    .venv/bin/python bench/store_recall.py                  # N=100000, dim 384
    .venv/bin/python bench/store_recall.py --n 1000000 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mmsearch.stores.base import Collection, ItemRecord, Query
from mmsearch.stores.qdrant_edge import QdrantEdgeStore
from mmsearch.v1 import common_pb2

TENANT = "bench"
COLLECTION = "bench_1"


Mixture = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]


def mixture(dim: int, clusters: int, seed: int) -> Mixture:
    """Cluster centers on the unit sphere and a per-cluster spread (some tight, some diffuse)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    spread = rng.uniform(0.5, 1.2, clusters).astype(np.float32) / np.sqrt(dim)
    return centers, spread


def sample(mix: Mixture, n: int, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    centers, spread = mix
    labels = rng.integers(0, len(centers), n)
    out = (
        centers[labels] + rng.standard_normal((n, centers.shape[1])).astype(np.float32) * spread[labels, None]
    )
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def value(x: int | str) -> common_pb2.Value:
    return common_pb2.Value(int_value=x) if isinstance(x, int) else common_pb2.Value(string_value=x)


def eq(field: str, x: int | str) -> common_pb2.Filter:
    return common_pb2.Filter(condition=common_pb2.FieldCondition(field=field, eq=value(x)))


def below(field: str, x: int) -> common_pb2.Filter:
    return common_pb2.Filter(
        condition=common_pb2.FieldCondition(field=field, range=common_pb2.Range(lt=value(x)))
    )


SCENARIOS: dict[str, common_pb2.Filter | None] = {
    "unfiltered": None,
    "tag t30 (30%)": eq("tags", "t30"),
    "int bucket<30 (30%)": below("attributes.bucket", 30),
    "tag t1 (1%)": eq("tags", "t1"),
    "int bucket=7 (1%)": eq("attributes.bucket", 7),
}


def records(vectors: npt.NDArray[np.float32], start: int, rng: np.random.Generator) -> list[ItemRecord]:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    out = []
    for i, vector in enumerate(vectors, start=start):
        tags = tuple(t for t, p in (("t30", 0.30), ("t1", 0.01)) if rng.random() < p)
        out.append(
            ItemRecord(
                tenant=TENANT,
                item_id=f"i{i}",
                modality="text",
                vector=vector,
                version=0,
                event_time=now,
                content_sha256="",
                text=f"item {i}",
                tags=tags,
                attributes={"bucket": int(rng.integers(0, 100))},
            )
        )
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    mix = mixture(args.dim, args.clusters, args.seed)
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="store-recall-"))
    store = QdrantEdgeStore(root, hnsw_m=args.m, hnsw_ef_construct=args.ef_construct, hnsw_ef=args.ef)
    result: dict[str, Any] = {
        "n": args.n,
        "dim": args.dim,
        "queries": args.queries,
        "m": args.m,
        "ef_construct": args.ef_construct,
        "hnsw_ef": args.ef,
        "scenarios": {},
    }
    try:
        await store.ensure_collection(
            Collection(COLLECTION, "bench@1", args.dim, "cosine", {"bucket": "int"})
        )
        t0 = time.perf_counter()
        for start in range(0, args.n, args.batch):
            size = min(args.batch, args.n - start)
            vectors = sample(mix, size, rng)
            await store.write(COLLECTION, records(vectors, start, rng))
        result["ingest_s"] = time.perf_counter() - t0
        print(f"ingest {args.n} x {args.dim}: {result['ingest_s']:.1f} s", file=sys.stderr)
        t0 = time.perf_counter()
        await store.optimize(COLLECTION)
        result["optimize_s"] = time.perf_counter() - t0
        result["info"] = await store.info(COLLECTION)
        print(f"optimize (HNSW build): {result['optimize_s']:.1f} s {result['info']}", file=sys.stderr)

        queries = sample(mix, args.queries, np.random.default_rng(args.seed + 1))  # same mixture
        for name, flt in SCENARIOS.items():
            latencies, exact_latencies, recalls = [], [], []
            for q in queries:
                base = Query(TENANT, limit=10, vector=q, filter=flt)
                t0 = time.perf_counter()
                hits = await store.search(COLLECTION, base)
                latencies.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                truth = await store.search(
                    COLLECTION, Query(TENANT, limit=10, vector=q, filter=flt, exact=True)
                )
                exact_latencies.append((time.perf_counter() - t0) * 1000)
                want = {h.record.item_id for h in truth}
                got = {h.record.item_id for h in hits}
                recalls.append(len(want & got) / max(1, len(want)))
            row = {
                "recall_at_10": statistics.fmean(recalls),
                "recall_min": min(recalls),
                "p50_ms": pct(latencies, 50),
                "p99_ms": pct(latencies, 99),
                "exact_p50_ms": pct(exact_latencies, 50),
            }
            result["scenarios"][name] = row
            print(f"{name}: {row}", file=sys.stderr)
    finally:
        await store.close()
        if not args.root and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return result


def table(result: dict[str, Any]) -> str:
    lines = [
        f"N={result['n']:,} dim={result['dim']} queries={result['queries']} m={result['m']} "
        f"ef_construct={result['ef_construct']} hnsw_ef={result['hnsw_ef']}; "
        f"ingest {result['ingest_s']:.1f} s, HNSW build (optimize) {result['optimize_s']:.1f} s",
        "",
        "| scenario | recall@10 | min recall | p50 ms | p99 ms | exact p50 ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in result["scenarios"].items():
        lines.append(
            f"| {name} | {row['recall_at_10']:.3f} | {row['recall_min']:.2f} | {row['p50_ms']:.2f} | "
            f"{row['p99_ms']:.2f} | {row['exact_p50_ms']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construct", type=int, default=100)
    parser.add_argument("--ef", type=int, default=128, help="hnsw_ef at query time")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--root", help="store directory (default: a temporary one, removed afterwards)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store directory")
    parser.add_argument("--json", help="also write the results to this path")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
