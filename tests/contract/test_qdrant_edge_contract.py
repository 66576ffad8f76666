"""The VectorStore contract against the embedded Qdrant Edge store, plus what only it has:
the one-process directory lock, snapshot / restore and the explicit HNSW build."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mmsearch.stores import errors
from mmsearch.stores.base import Collection, Query, StoreUnavailable, VectorStore
from mmsearch.stores.errors import InvalidQuery, StoreConflict
from mmsearch.stores.provider import StoreProvider, StoreSettings
from mmsearch.stores.qdrant_edge import QdrantEdgeStore, StoreLocked
from tests.contract.store_contract import (
    ATTRIBUTES,
    DIM,
    TENANT,
    VectorStoreContract,
    eq,
    ids,
    make_doc,
    make_record,
)


class TestQdrantEdgeStore(VectorStoreContract):
    async def open_store(self, root: Path) -> VectorStore:
        return QdrantEdgeStore(root)


async def test_second_owner_of_a_directory_is_refused(tmp_path: Path) -> None:
    store = QdrantEdgeStore(tmp_path)
    try:
        with pytest.raises(StoreLocked, match="in use"):
            QdrantEdgeStore(tmp_path)
    finally:
        await store.close()
    QdrantEdgeStore(tmp_path)  # free again once closed


async def test_snapshot_restore_and_alias_switch(tmp_path: Path) -> None:
    store = QdrantEdgeStore(tmp_path / "store")
    try:
        await store.ensure_collection(Collection("docs_1", "docs@1", DIM, "cosine", ATTRIBUTES))
        rng = np.random.default_rng(5)
        records = [make_record(TENANT, f"s{i}", rng) for i in range(50)]
        await store.write("docs_1", records)
        snapshot = await store.snapshot("docs_1", tmp_path / "backup")
        await store.write("docs_1", [make_record(TENANT, "after-snapshot", rng)])

        await store.restore(snapshot, "docs_1_restored")
        await store.set_alias("docs", "docs_1_restored")
        assert await store.resolve("docs") == "docs_1_restored"
        assert await store.count("docs_1_restored") == 50
        assert await store.count("docs_1") == 51
        hits = await store.search("docs_1_restored", Query(TENANT, limit=1, vector=records[9].vector))
        assert hits[0].record == replace(records[9], vector=None)
    finally:
        await store.close()


async def test_filtered_search_after_hnsw_build(tmp_path: Path) -> None:
    """Past the plain segment: after optimize() the graph serves queries, filters still exact."""
    store = QdrantEdgeStore(tmp_path, full_scan_threshold_kb=16, indexing_threshold_kb=1)
    try:
        await store.ensure_collection(Collection("big_1", "big@1", DIM, "cosine", ATTRIBUTES))
        rng = np.random.default_rng(6)
        records = [make_record(TENANT, f"h{i:04d}", rng) for i in range(3000)]
        for start in range(0, len(records), 500):
            await store.write("big_1", records[start : start + 500])
        await store.optimize("big_1")
        info = await store.info("big_1")
        assert info["indexed_vectors"] == 3000
        query = records[0].vector
        red = {r.item_id for r in records if "red" in r.tags}
        hits = await store.search("big_1", Query(TENANT, limit=10, vector=query, filter=eq("tags", "red")))
        assert set(ids(hits)) <= red
        exact = await store.search(
            "big_1", Query(TENANT, limit=10, vector=query, filter=eq("tags", "red"), exact=True)
        )
        assert len(set(ids(hits)) & set(ids(exact))) >= 9
    finally:
        await store.close()


async def test_engine_write_failure_is_store_unavailable(tmp_path: Path) -> None:
    store = QdrantEdgeStore(tmp_path)
    try:
        await store.ensure_collection(Collection("docs_1", "docs@1", DIM, "cosine", ATTRIBUTES))
        store._open["docs_1"].shard.close()  # the engine now refuses every operation
        with pytest.raises(StoreUnavailable, match="write of 1 records"):
            await store.write("docs_1", [make_record(TENANT, "w1", np.random.default_rng(8))])
    finally:
        store._open.clear()
        await store.close()


async def test_vector_of_the_wrong_dimension_is_refused_before_writing(tmp_path: Path) -> None:
    store = QdrantEdgeStore(tmp_path)
    try:
        await store.ensure_collection(Collection("docs_1", "docs@1", DIM, "cosine", ATTRIBUTES))
        record = make_record(TENANT, "w1", np.random.default_rng(8))
        with pytest.raises(InvalidQuery, match="dimensions"):
            await store.write("docs_1", [replace(record, vector=np.ones(DIM + 1, np.float32))])
        with pytest.raises(StoreConflict):
            await store.ensure_collection(Collection("docs_1", "docs@1", DIM + 1, "cosine", ATTRIBUTES))
        assert await store.count("docs_1") == 0
    finally:
        await store.close()


async def test_provider_opens_the_embedded_store_from_store_settings(tmp_path: Path) -> None:
    provider = StoreProvider(StoreSettings(store_dir=tmp_path / "store"))
    store = await provider.get()
    assert isinstance(store, QdrantEdgeStore)
    assert await provider.get() is store
    await provider.close()
    assert "secret" not in repr(StoreSettings(store_dir=tmp_path, weaviate_api_key="secret"))


def test_store_errors_are_the_stores_own() -> None:
    assert StoreUnavailable is errors.StoreUnavailable  # still importable from base
    for error in (StoreLocked, StoreUnavailable, InvalidQuery, StoreConflict, errors.ResourceLimit):
        assert issubclass(error, errors.StoreError)
    assert issubclass(StoreLocked, StoreUnavailable)
    invalid = InvalidQuery("must be positive", field="limit")
    assert (str(invalid), invalid.message, invalid.detail) == ("limit: must be positive",) * 2 + (
        "must be positive",
    )
    assert InvalidQuery("bad").field is None


def test_the_store_package_imports_nothing_of_the_services() -> None:
    code = (
        "import sys, mmsearch.stores.base, mmsearch.stores.errors, mmsearch.stores.filters, "
        "mmsearch.stores.fusion, mmsearch.stores.query, mmsearch.stores.provider, "
        "mmsearch.stores.qdrant_edge, mmsearch.stores.weaviate_store\n"
        "bad = sorted(m for m in sys.modules if m.startswith('mmsearch.') "
        "and not m.startswith(('mmsearch.stores', 'mmsearch.v1')))\n"
        "print(','.join(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


async def test_passage_tokens_are_stored_per_passage_and_follow_the_generation(tmp_path: Path) -> None:
    """Stored reranker token vectors (opaque bytes) come back for the passage a hit names, from
    the head (passage 0) and from further passages; not for another generation, another tenant,
    a deleted item or an item written without them; ranking never reads them."""
    store = QdrantEdgeStore(tmp_path)
    try:
        await store.ensure_collection(Collection("docs_1", "docs@1", DIM, "cosine", ATTRIBUTES))
        rng = np.random.default_rng(3)
        vectors = [rng.normal(size=DIM).astype(np.float32) for _ in range(3)]
        plain = make_doc(TENANT, "doc", 1, ["one.", "two.", "three."], vectors)
        blobs = [b"tok-0" * 100, b"tok-1" * 100, b"\x00\xff" * 7]
        doc = replace(
            plain, passages=tuple(replace(p, tokens=b) for p, b in zip(plain.passages, blobs, strict=True))
        )
        bare = make_doc(TENANT, "bare", 1, ["alpha.", "beta."], vectors[:2])
        await store.write("docs_1", [doc, bare])
        hits = await store.search(
            "docs_1", Query(TENANT, limit=5, vector=vectors[1] / np.linalg.norm(vectors[1]))
        )
        top = next(h for h in hits if h.record.item_id == "doc")
        assert top.passage is not None and top.passage.index == 1 and top.passage.generation
        gen = top.passage.generation
        refs = [("doc", replace(top.passage, index=i)) for i in range(3)]
        bare_hit = next(h for h in hits if h.record.item_id == "bare")
        assert bare_hit.passage is not None
        assert await store.passage_tokens("docs_1", TENANT, [*refs, ("bare", bare_hit.passage)]) == [
            *blobs,
            b"",
        ]
        assert await store.passage_tokens("docs_1", "other-tenant", refs) == [b""] * 3
        assert await store.passage_tokens("docs_1", TENANT, []) == []
        # A new version: the old generation's refs find nothing, the new ones find the new tokens.
        v2 = replace(doc, version=2, passages=tuple(replace(p, tokens=b"v2") for p in doc.passages))
        await store.write("docs_1", [v2])
        assert await store.passage_tokens("docs_1", TENANT, refs) == [b"", b"", b""]
        fresh = await store.search(
            "docs_1", Query(TENANT, limit=5, vector=vectors[1] / np.linalg.norm(vectors[1]))
        )
        new = next(h for h in fresh if h.record.item_id == "doc").passage
        assert new is not None and new.generation != gen
        assert await store.passage_tokens("docs_1", TENANT, [("doc", new)]) == [b"v2"]
        await store.write("docs_1", [replace(v2, version=3, deleted=True, vector=None, passages=())])
        assert await store.passage_tokens("docs_1", TENANT, [("doc", replace(new, index=0))]) == [b""]
    finally:
        await store.close()
