"""The HNSW build of a Qdrant Edge shard, in a child process.

qdrant-edge-py 0.9.0 keeps the GIL for the whole of `EdgeShard.optimize()` (~90 s at 100k x 384 on
two cores): run in the serving process it freezes searches, ingest and health checks. So
`QdrantEdgeStore` copies the collection's shard (writes held for the copy only), runs this module
over the copy as a separate process, and swaps the built copy in once it exits 0
(mmsearch/stores/qdrant_edge.py, `QdrantEdgeStore.optimize`). The live shard is never touched by a build.

    python -m mmsearch.stores.edge_build SHARD_DIR [--nice N]

On success it prints one JSON line (points, indexed vectors, segments, seconds) and exits 0. Any
failure exits non-zero; the caller then discards the copy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import qdrant_edge as qe


def build(shard_dir: str) -> dict[str, float]:
    started = time.perf_counter()
    shard = qe.EdgeShard.load(shard_dir)
    try:
        shard.optimize()
        shard.flush()
        info = shard.info()
    finally:
        shard.close()
    return {
        "points": info.points_count,
        "indexed_vectors": info.indexed_vectors_count,
        "segments": info.segments_count,
        "seconds": round(time.perf_counter() - started, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the HNSW index of a copied Qdrant Edge shard.")
    parser.add_argument("shard_dir")
    parser.add_argument("--nice", type=int, default=0, help="lower this process's CPU priority by N")
    args = parser.parse_args(argv)
    if args.nice > 0:
        # Searches in the serving process come first on a small machine; the build takes what is left.
        os.nice(args.nice)
    print(json.dumps(build(args.shard_dir)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
