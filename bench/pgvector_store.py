"""PostgreSQL + pgvector store: recall@10 and latency under tag filters, and search latency while
an HNSW index builds CONCURRENTLY (docs/benchmarks.md, issue #11 item 4).

    .venv/bin/python bench/pgvector_store.py recall --points 20000
    .venv/bin/python bench/pgvector_store.py build --points 20000

Starts its own PostgreSQL (mmsearch/dev/postgres.py) and stops it. Data: unit vectors, 384-d, 200
Gaussian clusters; tags on 30%, 1% and 0.1% of the items; 50 queries near stored vectors.
`recall` writes into a collection whose HNSW index exists from the first point (index_threshold=0)
and compares with the store's own exact search; `build` loads without the index, builds it, then
times searches idle and while a second index builds concurrently.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import psycopg

from mmsearch.dev.postgres import start_postgres
from mmsearch.stores.base import Collection, ItemRecord, Query
from mmsearch.stores.pgvector_store import PgVectorStore
from mmsearch.v1 import common_pb2

DIM = 384
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def data(n: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((200, DIM)).astype(np.float32)
    x = centers[rng.integers(0, 200, n)] + 0.35 * rng.standard_normal((n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[rng.integers(0, n, 50)] + 0.02 * rng.standard_normal((50, DIM)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x, q


def tags(i: int) -> tuple[str, ...]:
    return tuple(t for t, on in (("t30", i % 10 < 3), ("t1", i % 100 == 0), ("t01", i % 1000 == 0)) if on)


def record(i: int, vector: npt.NDArray[np.float32]) -> ItemRecord:
    return ItemRecord("acme", f"i{i}", "text", vector, 1, T0, "h", text=f"doc {i}", tags=tags(i))


def tag(value: str) -> common_pb2.Filter:
    return common_pb2.Filter(
        condition=common_pb2.FieldCondition(field="tags", eq=common_pb2.Value(string_value=value))
    )


def ms(values: list[float], pct: float) -> str:
    return f"{np.percentile(values, pct) * 1e3:.2f} ms"


async def recall(n: int) -> None:
    server = start_postgres()
    try:
        store = await PgVectorStore.connect(server.dsn, index_threshold=0)
        await store.ensure_collection(Collection("bench_1", "bench@1", DIM, "cosine", {}))
        x, queries = data(n)
        start = time.time()
        for s in range(0, n, 500):
            await store.write("bench_1", [record(i, x[i]) for i in range(s, min(n, s + 500))])
        print(f"ingest {n} into a live HNSW index: {time.time() - start:.1f} s", flush=True)
        for label, flt in (("none", None), ("30%", tag("t30")), ("1%", tag("t1")), ("0.1%", tag("t01"))):
            found, lat = [], []
            for qv in queries:
                a = time.perf_counter()
                hits = await store.search("bench_1", Query("acme", limit=10, vector=qv, filter=flt))
                lat.append(time.perf_counter() - a)
                exact = await store.search(
                    "bench_1", Query("acme", limit=10, vector=qv, filter=flt, exact=True)
                )
                want = {h.record.item_id for h in exact}
                found.append(len(want & {h.record.item_id for h in hits}) / max(1, len(want)))
            print(f"{label}: recall@10 {np.mean(found):.4f} p50 {ms(lat, 50)} p99 {ms(lat, 99)}", flush=True)
        await store.close()
    finally:
        server.stop()


async def timed(
    store: PgVectorStore, queries: npt.NDArray[np.float32], until: asyncio.Task[object] | None
) -> list[float]:
    out: list[float] = []
    while True:
        for qv in queries:
            a = time.perf_counter()
            await store.search("bench_1", Query("acme", limit=10, vector=qv))
            out.append(time.perf_counter() - a)
        if until is None or until.done():
            return out


async def build(n: int) -> None:
    server = start_postgres()
    try:
        store = await PgVectorStore.connect(server.dsn, index_threshold=0)
        await store.ensure_collection(Collection("bench_1", "bench@1", DIM, "cosine", {}))
        x, queries = data(n)
        await store.drop_vector_index("bench_1")
        start = time.time()
        for s in range(0, n, 1000):
            await store.write("bench_1", [record(i, x[i]) for i in range(s, min(n, s + 1000))])
        print(f"ingest {n} without the index: {time.time() - start:.1f} s", flush=True)
        start = time.time()
        await store.build_vector_index("bench_1")
        print(f"index build: {time.time() - start:.1f} s", flush=True)
        idle = await timed(store, queries, None)
        print(f"idle: p50 {ms(idle, 50)} p99 {ms(idle, 99)}", flush=True)
        async with await psycopg.AsyncConnection.connect(server.dsn, autocommit=True) as conn:
            statement = (
                "CREATE INDEX CONCURRENTLY bench_rebuild ON mmsearch_c1_points "
                "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 100)"
            )
            task: asyncio.Task[object] = asyncio.create_task(conn.execute(statement))
            during = await timed(store, queries, task)
            await task
        print(
            f"during a concurrent build ({len(during)} searches): p50 {ms(during, 50)} p99 {ms(during, 99)}"
        )
        await store.close()
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=("recall", "build"))
    parser.add_argument("--points", type=int, default=20_000)
    args = parser.parse_args()
    asyncio.run(recall(args.points) if args.what == "recall" else build(args.points))


if __name__ == "__main__":
    main()
