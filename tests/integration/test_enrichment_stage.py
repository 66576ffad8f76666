"""OCR off the hot path: an image is searchable by its vector as soon as the
live consumer wrote it; its OCR text joins later through the enrichment topic
(its own consumer group), and becomes findable by BM25. A newer version of the
image is never overwritten by an older version's text."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from mmsearch.producer import media_event
from mmsearch.stores.base import Query, collection_name
from mmsearch.v1 import common_pb2
from tests.conftest import BrokerHandle, TritonHandle
from tests.integration.test_extract_text import rendered
from tests.integration.test_indexer import publish, start_indexing

pytestmark = pytest.mark.integration
T0 = datetime(2026, 8, 1, tzinfo=UTC)


async def test_ocr_text_joins_after_the_vector_through_the_enrichment_stage(
    triton: TritonHandle, broker: BrokerHandle
) -> None:
    indexing = await start_indexing(triton, broker)
    try:
        scan = rendered(["INVOICE QX77123", "Total due 480 EUR"])
        events = [media_event("acme", "scan-1", scan, common_pb2.MODALITY_IMAGE, title="Scan", event_time=T0)]
        produced = publish(indexing.bootstrap, indexing.topic, events)
        await indexing.wait_caught_up(produced)
        assert indexing.service.stores is not None
        store = await indexing.service.stores.get()
        collection = collection_name("minilm@1")
        assert await store.count(collection, "acme") == 1  # searchable by its vector now
        deadline = time.monotonic() + 60
        while not (hits := await store.search(collection, Query("acme", limit=3, text="QX77123"))):
            assert time.monotonic() < deadline, "OCR text never became searchable"
            await asyncio.sleep(0.5)
        assert hits[0].record.item_id == "scan-1" and "INVOICE" in hits[0].record.snippet
        status = await indexing.status()
        enrich = [p for p in status.partitions if p.topic == f"{indexing.topic}.enrich"]
        assert enrich and sum(p.committed_offset for p in enrich) == 1
        registry = indexing.service.registry
        assert (
            registry.get_sample_value("mmsearch_indexer_ocr_freshness_seconds_count", {"space": "minilm@1"})
            or 0
        ) == 1

        # A newer version with other text: its text wins, whatever order the tasks run in.
        newer = rendered(["RECEIPT ZK55810"])
        update = media_event(
            "acme", "scan-1", newer, common_pb2.MODALITY_IMAGE, event_time=T0 + timedelta(hours=1)
        )
        produced += publish(indexing.bootstrap, indexing.topic, [update])
        await indexing.wait_caught_up(produced)
        deadline = time.monotonic() + 60
        while not await store.search(collection, Query("acme", limit=3, text="ZK55810")):
            assert time.monotonic() < deadline, "the newer version's OCR text never became searchable"
            await asyncio.sleep(0.5)
        assert not await store.search(collection, Query("acme", limit=3, text="QX77123"))
    finally:
        await indexing.service.running.stop()
