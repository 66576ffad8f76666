"""Quantization per collection in the embedded store (issue #11, item 2): the mode chosen in the
space definition reaches the engine, the HNSW search walks the quantized copy and rescores on the
originals (recall held against exact search), exact search ignores it, and it cannot change
silently on an existing collection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmsearch.stores.base import Collection, Quantization, Query
from mmsearch.stores.errors import StoreConflict
from mmsearch.stores.qdrant_edge import QdrantEdgeStore
from tests.contract.test_qdrant_edge_build import DIM, TENANT, clustered, ids, records

N = 2500


async def built(root: Path, mode: Quantization) -> QdrantEdgeStore:
    store = QdrantEdgeStore(root, full_scan_threshold_kb=16, indexing_threshold_kb=1)
    await store.ensure_collection(Collection("q_1", "q@1", DIM, quantization=mode))
    data = records(clustered(N, seed=11), "q")
    for start in range(0, N, 1000):
        await store.write("q_1", data[start : start + 1000])
    await store.optimize("q_1")
    return store


@pytest.mark.parametrize("mode", ["int8", "binary"])
async def test_a_quantized_collection_keeps_recall_through_rescoring(
    tmp_path: Path, mode: Quantization
) -> None:
    store = await built(tmp_path, mode)
    try:
        config = json.loads(next((tmp_path / "q_1").glob("shard*/edge_config.json")).read_text())
        assert {"int8": "scalar", "binary": "binary"}[mode] in config["quantization_config"]
        assert list((tmp_path / "q_1").glob("shard*/segments/*/vector_storage-dense/quantized.data"))
        recalls = []
        for q in clustered(30, seed=12):
            approx = ids(await store.search("q_1", Query(TENANT, limit=10, vector=q)))
            exact = ids(await store.search("q_1", Query(TENANT, limit=10, vector=q, exact=True)))
            recalls.append(len(set(approx) & set(exact)) / 10)
        assert sum(recalls) / len(recalls) >= 0.95, recalls
        # Scores are the original vectors' (rescored): the item's own vector scores 1.
        data = records(clustered(N, seed=11), "q")
        top = await store.search("q_1", Query(TENANT, limit=1, vector=data[100].vector))
        assert ids(top) == [data[100].item_id] and top[0].score == pytest.approx(1.0, abs=1e-4)
    finally:
        await store.close()


async def test_exact_search_ignores_quantization(tmp_path: Path) -> None:
    plain = await built(tmp_path / "plain", "none")
    binary = await built(tmp_path / "binary", "binary")
    try:
        for q in clustered(10, seed=13):
            want = await plain.search("q_1", Query(TENANT, limit=10, vector=q, exact=True))
            got = await binary.search("q_1", Query(TENANT, limit=10, vector=q, exact=True))
            assert ids(got) == ids(want)
            assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-5)
    finally:
        await plain.close()
        await binary.close()


async def test_quantization_is_fixed_at_creation(tmp_path: Path) -> None:
    store = QdrantEdgeStore(tmp_path)
    try:
        await store.ensure_collection(Collection("q_1", "q@1", DIM, quantization="int8"))
        await store.ensure_collection(Collection("q_1", "q@1", DIM, quantization="int8"))
        with pytest.raises(StoreConflict, match="quantization int8, not binary"):
            await store.ensure_collection(Collection("q_1", "q@1", DIM, quantization="binary"))
    finally:
        await store.close()
    again = QdrantEdgeStore(tmp_path)
    try:
        with pytest.raises(StoreConflict, match="quantization int8, not none"):
            await again.ensure_collection(Collection("q_1", "q@1", DIM))
    finally:
        await again.close()
