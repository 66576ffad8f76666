"""Retention on the live indexer: events older than the space's age are indexed, then
tombstoned by the retention pass (the indexer's delete path), and counted; fresh items
stay searchable."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from mmsearch.producer import text_event
from mmsearch.stores.base import collection_name
from tests.conftest import BrokerHandle, TritonHandle
from tests.integration.test_indexer import publish, start_indexing

pytestmark = pytest.mark.integration
DAY = 24 * 3600.0


async def test_expired_items_are_tombstoned_by_the_live_indexer(
    triton: TritonHandle, broker: BrokerHandle
) -> None:
    # Retention first runs at start (before anything is indexed), then every second.
    indexing = await start_indexing(
        triton, broker, retention_max_age_s={"default": 30 * DAY}, retention_interval_s=1.0
    )
    try:
        now = datetime.now(UTC)
        last_year = now - timedelta(days=400)
        old = [
            text_event(t, f"old-{t}", f"a note from last year by {t}", event_time=last_year)
            for t in ("acme", "globex")
        ]
        fresh = [text_event("acme", "fresh", "a note from this morning", event_time=now - timedelta(hours=3))]
        produced = publish(indexing.bootstrap, indexing.topic, [*old, *fresh])
        await indexing.wait_caught_up(produced)
        assert indexing.service.stores is not None
        store = await indexing.service.stores.get()
        collection = collection_name("minilm@1")
        deadline = time.monotonic() + 30
        for _ in range(60):  # the pass runs every second
            if await store.count(collection) == 1 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert await store.count(collection, "acme") == 1
        assert await store.count(collection, "globex") == 0
        states = await store.states(collection, "acme", ["old-acme", "fresh"])
        assert states["old-acme"].deleted and not states["fresh"].deleted
        deleted = indexing.service.registry.get_sample_value(
            "mmsearch_retention_deleted_total", {"space": "minilm@1"}
        )
        assert deleted == 2
    finally:
        await indexing.service.running.stop()
