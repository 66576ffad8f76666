"""Per-space retention on the real embedded store: items older than their space's age are
tombstoned through the indexer's Writer (every tenant, passages included), counted in
`mmsearch_retention_deleted_total`; a replay of an expired item's event stays deleted, a
newer event brings it back, and an item updated after the scan is not deleted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from mmsearch.clients.spaces import SpaceInfo
from mmsearch.indexer.metrics import IndexerMetrics
from mmsearch.indexer.retention import Retention
from mmsearch.stores.base import Collection, ItemRecord, Passage, StoredItem, VectorStore
from mmsearch.stores.qdrant_edge import QdrantEdgeStore

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DAY = 24 * 3600.0
SPACE = SpaceInfo("minilm@1", 8, frozenset({"text"}))
COLLECTION = "minilm_1"


class Spaces:
    async def resolve(self, name: str) -> SpaceInfo | None:
        return SPACE if name in ("default", "minilm@1") else None


def item(tenant: str, item_id: str, age_days: float, *, version: int = 1, passages: int = 0) -> ItemRecord:
    rng = np.random.default_rng(abs(hash((tenant, item_id))) % 2**32)
    vector = rng.standard_normal(8).astype(np.float32)
    text = " ".join(f"sentence {i} of {item_id}." for i in range(passages))
    parts, start = [], 0
    for i in range(passages):
        sentence = f"sentence {i} of {item_id}."
        parts.append(Passage(start, start + len(sentence), sentence, vector))
        start += len(sentence) + 1
    return ItemRecord(
        tenant=tenant, item_id=item_id, modality="text", vector=vector, version=version,
        event_time=NOW - timedelta(days=age_days), content_sha256=f"{item_id}-{version}", text=text,
        passages=tuple(parts),
    )  # fmt: skip


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[QdrantEdgeStore]:
    opened = QdrantEdgeStore(tmp_path)
    await opened.ensure_collection(Collection(COLLECTION, SPACE.id, 8))
    yield opened
    await opened.close()


def deleted_metric(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("mmsearch_retention_deleted_total", {"space": "minilm@1"}) or 0.0


async def test_old_items_of_every_tenant_are_tombstoned_and_counted(store: QdrantEdgeStore) -> None:
    old = [item("acme", "old-1", 40), item("globex", "old-2", 31, passages=3), item("acme", "old-3", 90)]
    fresh = [item("acme", "new-1", 1), item("globex", "new-2", 29)]
    await store.write(COLLECTION, [*old, *fresh])
    registry = CollectorRegistry()
    retention = Retention(
        store, Spaces(), {"default": 30 * DAY}, IndexerMetrics(registry), batch=2, clock=lambda: NOW
    )

    assert await retention.run_once() == {"minilm@1": 3}
    assert deleted_metric(registry) == 3
    assert await store.count(COLLECTION, "acme") == 1 and await store.count(COLLECTION, "globex") == 1
    assert await store.count_passages(COLLECTION, "globex", "old-2") == 0
    states = await store.states(COLLECTION, "acme", ["old-1", "new-1"])
    assert states["old-1"].deleted and not states["new-1"].deleted
    # Idempotent: nothing more to do.
    assert await retention.run_once() == {"minilm@1": 0}

    # Writer.unseen's order, (version, event time): a replay of old-1's event is not newer than
    # the tombstone (stays deleted); the producer's next version is (applies).
    tomb = (await store.states(COLLECTION, "acme", ["old-1"]))["old-1"]
    assert (old[0].version, old[0].event_time) < (tomb.version, tomb.event_time)
    assert (2, old[0].event_time) > (tomb.version, tomb.event_time)


async def test_an_item_updated_after_the_scan_is_not_deleted(store: QdrantEdgeStore) -> None:
    old = item("acme", "busy", 60)
    await store.write(COLLECTION, [old])

    class UpdatedDuringScan:
        """The store, with the consumer writing a newer version right after retention's scan."""

        def __init__(self, inner: VectorStore) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> object:
            return getattr(self._inner, name)

        async def expired(self, collection: str, before: datetime, limit: int) -> list[StoredItem]:
            found = await self._inner.expired(collection, before, limit)
            await self._inner.write(collection, [replace(old, version=2, content_sha256="busy-2")])
            return found

    registry = CollectorRegistry()
    retention = Retention(
        UpdatedDuringScan(store),
        Spaces(),
        {"minilm@1": 30 * DAY},
        IndexerMetrics(registry),
        clock=lambda: NOW,  # type: ignore[arg-type]
    )
    assert await retention.run_once() == {"minilm@1": 0}
    assert not (await store.states(COLLECTION, "acme", ["busy"]))["busy"].deleted


async def test_unknown_spaces_and_empty_collections_are_skipped(tmp_path: Path) -> None:
    store = QdrantEdgeStore(tmp_path)
    try:
        retention = Retention(
            store, Spaces(), {"nope@1": DAY, "default": DAY}, IndexerMetrics(CollectorRegistry())
        )
        assert await retention.run_once() == {"minilm@1": 0}
    finally:
        await store.close()
