"""Search latency and QPS: mmsearch's gRPC Searcher vs Chroma's server, same machine, same data.

Issue #5's search benchmark. N clustered 384-d unit vectors (a mixture of gaussians on the sphere, as in
bench/store_recall.py), each with one tag out of ten (`t0`..`t9`, so a tag filter keeps ~10 %). Both
systems get the same vectors and the same queries (drawn from the same mixture); recall@10 is measured
against exact brute force in numpy (cosine), latency end to end at the client.

- mmsearch: the embedded store (QdrantEdgeStore, M=16, ef_construct=100, search ef 128 as the server
  opens it) is built directly into a temporary MMSEARCH_STORE_DIR (collection `minilm_1`, space
  `minilm@1`, tenant `dev`), optimized (HNSW build) and closed; then `mmsearch serve --target all`
  runs on free ports (no Kafka; Triton only when `--triton`, space resolution does not need it) and
  is queried through `Searcher.Search` with raw vectors (`Content.vector`, no embedding cost), token
  `mmsearch-dev-token`, top_k=10, with a grpc.aio client. The server's live-recall sampling
  (MMSEARCH_SEARCH_RECALL_SAMPLE_RATE, 1 % exact re-runs by default) is off.
- Chroma: PyPI `chromadb` (pinned below) in its own venv (.cache/bench-venvs/chroma, created on first
  use), `chroma run` on a free port, a cosine collection with HNSW max_neighbors=16,
  ef_construction=100; ef_search is swept and the smallest value whose recall@10 is within 0.01 of
  mmsearch's (or above it) is used, per scenario. Queried with chromadb.AsyncHttpClient.

Each scenario (unfiltered, tag filter) runs at concurrency 1 and 8 (asyncio workers sharing one
client). Both servers and the clients share the machine; run it on an otherwise idle one.

    .venv/bin/python bench/search_vs_chroma.py                      # N=100000
    .venv/bin/python bench/search_vs_chroma.py --n 20000 --json out.json
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
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
CHROMA_VERSION = "1.5.9"
CHROMA_VENV = ROOT / ".cache" / "bench-venvs" / "chroma"
TAGS = tuple(f"t{i}" for i in range(10))
FILTER_TAG = "t3"
TENANT = "dev"
SPACE = "minilm@1"
COLLECTION = "minilm_1"
TOKEN = "mmsearch-dev-token"
TOP_K = 10
HNSW_M = 16
EF_CONSTRUCT = 100
MMSEARCH_EF = 128  # QdrantEdgeStore's default search ef, what `mmsearch serve` opens the store with

Vectors = npt.NDArray[np.float32]


# -- data -------------------------------------------------------------------------------------------


def mixture(dim: int, clusters: int, seed: int) -> tuple[Vectors, Vectors]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    spread = rng.uniform(0.5, 1.2, clusters).astype(np.float32) / np.sqrt(dim)
    return centers, spread


def sample(mix: tuple[Vectors, Vectors], n: int, rng: np.random.Generator) -> Vectors:
    centers, spread = mix
    labels = rng.integers(0, len(centers), n)
    out = (
        centers[labels] + rng.standard_normal((n, centers.shape[1])).astype(np.float32) * spread[labels, None]
    )
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def exact_top_k(data: Vectors, queries: Vectors, mask: npt.NDArray[np.bool_] | None) -> npt.NDArray[np.int64]:
    """Indexes of the exact top-k by cosine (all vectors are unit length), optionally within `mask`."""
    out = np.empty((len(queries), TOP_K), dtype=np.int64)
    allowed = np.flatnonzero(mask) if mask is not None else np.arange(len(data))
    sub = data[allowed]
    for start in range(0, len(queries), 256):
        scores = queries[start : start + 256] @ sub.T
        part = np.argpartition(-scores, TOP_K, axis=1)[:, :TOP_K]
        order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
        out[start : start + 256] = allowed[np.take_along_axis(part, order, axis=1)]
    return out


def recall(truth: npt.NDArray[np.int64], got: Sequence[Sequence[int]]) -> float:
    return statistics.fmean(len(set(t.tolist()) & set(g)) / TOP_K for t, g in zip(truth, got, strict=True))


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def drive(
    call: Callable[[int], Awaitable[list[int]]], n_queries: int, requests: int, concurrency: int
) -> tuple[dict[str, float], list[list[int]]]:
    """`requests` calls (query i % n_queries) by `concurrency` workers; latency percentiles and QPS."""
    latencies: list[float] = []
    results: dict[int, list[int]] = {}
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < requests:
            i = next_index
            next_index += 1
            t0 = time.perf_counter()
            ids = await call(i % n_queries)
            latencies.append((time.perf_counter() - t0) * 1000)
            results.setdefault(i % n_queries, ids)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    stats = {
        "p50_ms": pct(latencies, 50),
        "p99_ms": pct(latencies, 99),
        "mean_ms": statistics.fmean(latencies),
        "qps": requests / wall,
        "requests": float(requests),
    }
    return stats, [results.get(i, []) for i in range(n_queries)]


# -- mmsearch ---------------------------------------------------------------------------------------


async def build_mmsearch_store(store_dir: Path, data: Vectors, tags: Sequence[str]) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from mmsearch.stores.base import Collection, ItemRecord
    from mmsearch.stores.qdrant_edge import QdrantEdgeStore

    store = QdrantEdgeStore(store_dir, hnsw_m=HNSW_M, hnsw_ef_construct=EF_CONSTRUCT, hnsw_ef=MMSEARCH_EF)
    now = datetime(2025, 1, 1, tzinfo=UTC)
    out: dict[str, Any] = {}
    try:
        await store.ensure_collection(Collection(COLLECTION, SPACE, data.shape[1], "cosine"))
        t0 = time.perf_counter()
        for start in range(0, len(data), 2000):
            batch = [
                ItemRecord(
                    tenant=TENANT,
                    item_id=f"i{i}",
                    modality="text",
                    vector=data[i],
                    version=0,
                    event_time=now,
                    content_sha256="",
                    text=f"item {i}",
                    tags=(tags[i],),
                )
                for i in range(start, min(start + 2000, len(data)))
            ]
            await store.write(COLLECTION, batch)
        out["ingest_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        await store.optimize(COLLECTION)
        out["index_s"] = time.perf_counter() - t0
        out["info"] = await store.info(COLLECTION)
    finally:
        await store.close()
    return out


async def bench_mmsearch(
    addr: str, queries: Vectors, truths: dict[str, npt.NDArray[np.int64]], args: argparse.Namespace
) -> dict[str, Any]:
    import grpc

    from mmsearch.v1 import common_pb2, searcher_pb2, searcher_pb2_grpc

    tag_filter = common_pb2.Filter(
        condition=common_pb2.FieldCondition(field="tags", eq=common_pb2.Value(string_value=FILTER_TAG))
    )
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    out: dict[str, Any] = {}
    options = [("grpc.max_receive_message_length", 16 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(addr, options=options) as channel:
        stub: Any = searcher_pb2_grpc.SearcherStub(channel)
        for scenario, flt in (("unfiltered", None), (f"tag={FILTER_TAG} (10%)", tag_filter)):
            requests = [
                searcher_pb2.SearchRequest(
                    space=common_pb2.SpaceRef(name=SPACE),
                    query=common_pb2.Content(vector=common_pb2.Vector(values=q.tolist())),
                    top_k=TOP_K,
                    filter=flt,
                )
                for q in queries
            ]

            async def call(i: int, requests: list[Any] = requests) -> list[int]:
                response = await stub.Search(requests[i], metadata=metadata, timeout=30)
                return [int(hit.item_id[1:]) for hit in response.hits]

            await drive(call, len(queries), min(args.warmup, len(queries)), 1)
            row: dict[str, Any] = {}
            for concurrency in args.concurrency:
                stats, got = await drive(call, len(queries), args.requests, concurrency)
                row[f"c{concurrency}"] = stats
                row["recall_at_10"] = recall(truths[scenario], got)
            out[scenario] = row
            print(f"mmsearch {scenario}: {row}", file=sys.stderr, flush=True)
    return out


# -- Chroma (runs in its own venv: `--chroma-worker DIR`) -------------------------------------------


def ensure_chroma_venv() -> Path:
    python = CHROMA_VENV / "bin" / "python"
    check = [str(python), "-c", "import chromadb; print(chromadb.__version__)"]
    if python.exists():
        found = subprocess.run(check, capture_output=True, text=True, check=False).stdout.strip()
        if found == CHROMA_VERSION:
            return python
    subprocess.run([sys.executable, "-m", "venv", str(CHROMA_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"chromadb=={CHROMA_VERSION}"], check=True)
    return python


async def chroma_worker(work: Path) -> None:
    import chromadb

    spec = json.loads((work / "spec.json").read_text())
    data = np.load(work / "data.npy")
    queries = np.load(work / "queries.npy")
    tags = spec["tags"]
    truths = {name: np.load(work / f"truth_{i}.npy") for i, name in enumerate(spec["scenarios"])}
    client = await chromadb.AsyncHttpClient(host="127.0.0.1", port=spec["port"])
    out: dict[str, Any] = {"chromadb": chromadb.__version__, "scenarios": {}}
    collection = await client.create_collection(
        "bench",
        configuration={"hnsw": {"space": "cosine", "max_neighbors": HNSW_M, "ef_construction": EF_CONSTRUCT}},
        embedding_function=None,
    )
    batch = min(5000, await client.get_max_batch_size())
    t0 = time.perf_counter()
    for start in range(0, len(data), batch):
        end = min(start + batch, len(data))
        await collection.add(
            ids=[str(i) for i in range(start, end)],
            embeddings=data[start:end],
            metadatas=[{"tag": tags[i]} for i in range(start, end)],
        )
    out["ingest_s"] = time.perf_counter() - t0
    out["count"] = await collection.count()
    print(f"chroma ingest {out['count']}: {out['ingest_s']:.1f} s", file=sys.stderr, flush=True)

    for scenario, target in spec["scenarios"].items():
        where = {"tag": FILTER_TAG} if scenario != "unfiltered" else None

        async def call(i: int, where: Any = where) -> list[int]:
            result = await collection.query(
                query_embeddings=queries[i : i + 1],
                n_results=TOP_K,
                where=where,
                include=["metadatas", "distances"],
            )
            return [int(x) for x in result["ids"][0]]

        sweep: dict[int, float] = {}
        chosen = spec["efs"][-1]
        for ef in spec["efs"]:
            await collection.modify(configuration={"hnsw": {"ef_search": ef}})
            _, got = await drive(call, len(queries), len(queries), 4)
            sweep[ef] = recall(truths[scenario], got)
            print(f"chroma {scenario} ef={ef}: recall {sweep[ef]:.4f}", file=sys.stderr, flush=True)
            if sweep[ef] >= target - 0.01:
                chosen = ef
                break
        await collection.modify(configuration={"hnsw": {"ef_search": chosen}})
        await drive(call, len(queries), min(spec["warmup"], len(queries)), 1)
        row: dict[str, Any] = {"ef_search": chosen, "ef_sweep": sweep}
        for concurrency in spec["concurrency"]:
            stats, got = await drive(call, len(queries), spec["requests"], concurrency)
            row[f"c{concurrency}"] = stats
            row["recall_at_10"] = recall(truths[scenario], got)
        out["scenarios"][scenario] = row
        print(f"chroma {scenario}: {row}", file=sys.stderr, flush=True)
    (work / "result.json").write_text(json.dumps(out, indent=2))


def bench_chroma(  # noqa: PLR0917 (one call site; the data and its derived arrays)
    data: Vectors,
    tags: Sequence[str],
    queries: Vectors,
    truths: dict[str, npt.NDArray[np.int64]],
    targets: dict[str, float],
    args: argparse.Namespace,
    work: Path,
) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from mmsearch.dev.processes import free_port, port_open, spawn, stop_pid, wait_until

    python = ensure_chroma_venv()
    np.save(work / "data.npy", data)
    np.save(work / "queries.npy", queries)
    for i, name in enumerate(targets):
        np.save(work / f"truth_{i}.npy", truths[name])
    port = free_port()
    spec = {
        "port": port,
        "tags": list(tags),
        "scenarios": targets,
        "efs": args.chroma_efs,
        "concurrency": args.concurrency,
        "requests": args.requests,
        "warmup": args.warmup,
    }
    (work / "spec.json").write_text(json.dumps(spec))
    log_path = work / "chroma.log"
    chroma = CHROMA_VENV / "bin" / "chroma"
    argv = [str(chroma), "run", "--path", str(work / "db"), "--host", "127.0.0.1", "--port", str(port)]
    env = dict(os.environ, ANONYMIZED_TELEMETRY="False")
    server = spawn(argv, env, log_path)
    try:
        wait_until(
            lambda: port_open("127.0.0.1", port),
            timeout_s=60,
            what="chroma",
            process=server,
            log_path=log_path,
        )
        subprocess.run(
            [str(python), str(Path(__file__).resolve()), "--chroma-worker", str(work)], check=True, env=env
        )
    finally:
        stop_pid(server.pid)
    result: dict[str, Any] = json.loads((work / "result.json").read_text())
    return result


# -- report -----------------------------------------------------------------------------------------


def table(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [
        f"search_vs_chroma: {result['date']} on {result['machine']} (load average before: "
        f"{result['loadavg_before']}, after: {result['loadavg_after']})",
        f"command: `{result['command']}`",
        f"N={cfg['n']:,} dim={cfg['dim']} clusters={cfg['clusters']} queries={cfg['queries']} "
        f"requests/cell={cfg['requests']} top_k={TOP_K}, filter tag={FILTER_TAG} (~10 %); HNSW M={HNSW_M} "
        f"ef_construct={EF_CONSTRUCT}; mmsearch ef={MMSEARCH_EF}; "
        f"chromadb {result['chroma'].get('chromadb')}",
        f"build: mmsearch ingest {result['mmsearch_build']['ingest_s']:.1f} s + HNSW optimize "
        f"{result['mmsearch_build']['index_s']:.1f} s; chroma ingest (HNSW built on add) "
        f"{result['chroma']['ingest_s']:.1f} s",
        "",
        "| system | scenario | search ef | recall@10 | conc | p50 ms | p99 ms | QPS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scenario, row in result["mmsearch"].items():
        chroma_row = result["chroma"]["scenarios"][scenario]
        for name, r, ef in (
            ("mmsearch (gRPC)", row, MMSEARCH_EF),
            ("Chroma (HTTP)", chroma_row, chroma_row["ef_search"]),
        ):
            for c in cfg["concurrency"]:
                s = r[f"c{c}"]
                lines.append(
                    f"| {name} | {scenario} | {ef} | {r['recall_at_10']:.3f} | {c} | {s['p50_ms']:.2f} | "
                    f"{s['p99_ms']:.2f} | {s['qps']:.0f} |"
                )
    lines.append("")
    for scenario, row in result["chroma"]["scenarios"].items():
        sweep = ", ".join(f"ef={k}: {v:.3f}" for k, v in row["ef_sweep"].items())
        lines.append(f"Chroma ef_search sweep ({scenario}): {sweep}")
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{cpu}, {os.cpu_count()} CPUs, {system}, Python {platform.python_version()}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    mix = mixture(args.dim, args.clusters, args.seed)
    data = sample(mix, args.n, rng)
    tags = [TAGS[i] for i in rng.integers(0, len(TAGS), args.n)]
    queries = sample(mix, args.queries, np.random.default_rng(args.seed + 1))
    mask = np.array([t == FILTER_TAG for t in tags])
    scenarios = ("unfiltered", f"tag={FILTER_TAG} (10%)")
    truths = {scenarios[0]: exact_top_k(data, queries, None), scenarios[1]: exact_top_k(data, queries, mask)}
    result: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "command": " ".join([".venv/bin/python", "bench/search_vs_chroma.py", *sys.argv[1:]]),
        "loadavg_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "config": {
            "n": args.n,
            "dim": args.dim,
            "clusters": args.clusters,
            "queries": args.queries,
            "requests": args.requests,
            "concurrency": args.concurrency,
            "filter_selectivity": float(mask.mean()),
            "seed": args.seed,
        },
    }
    work = Path(tempfile.mkdtemp(prefix="search-vs-chroma-"))
    try:
        store_dir = work / "store"
        result["mmsearch_build"] = asyncio.run(build_mmsearch_store(store_dir, data, tags))
        print(f"mmsearch store: {result['mmsearch_build']}", file=sys.stderr, flush=True)
        sys.path.insert(0, str(ROOT))
        from mmsearch.dev.harness import running_stack

        models = sorted(p.name for p in (ROOT / "model_repository").iterdir() if p.is_dir())
        with running_stack(
            work,  # the store was built in work/store, where the service opens it
            models=models if args.triton else (),
            with_broker=False,
            env_overrides={"MMSEARCH_SEARCH_RECALL_SAMPLE_RATE": "0"},
            # Overall health stays NOT_SERVING without Kafka (the indexer); the Searcher's own counts.
            health_service="mmsearch.v1.Searcher",
            startup_timeout_s=120,
        ) as stack:
            result["mmsearch"] = asyncio.run(bench_mmsearch(stack.addr, queries, truths, args))
        targets = {name: row["recall_at_10"] for name, row in result["mmsearch"].items()}
        chroma_dir = work / "chroma"
        chroma_dir.mkdir()
        result["chroma"] = bench_chroma(data, tags, queries, truths, targets, args, chroma_dir)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    result["loadavg_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--queries", type=int, default=500, help="distinct queries (recall is over these)")
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per cell")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    parser.add_argument(
        "--chroma-efs",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512],
        help="Chroma ef_search values tried in order; the first within 0.01 of mmsearch's recall is used",
    )
    parser.add_argument("--triton", action="store_true", help="also start Triton (not needed for vectors)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--json", help="also write the results to this path")
    parser.add_argument("--chroma-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.chroma_worker:
        asyncio.run(chroma_worker(Path(args.chroma_worker)))
        return
    result = run(args)
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
