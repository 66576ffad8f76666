"""Any Kafka producer could write into or delete from any tenant, and create
tenants no token maps to. Now an event applies only when signed by a producer
allowed its tenant; the rest is dead-lettered (REASON_UNAUTHORIZED) while its
neighbours are indexed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaProducer

from mmsearch.producer import ContentProducer, delete_event, text_event
from mmsearch.stores.base import collection_name
from tests.conftest import BrokerHandle, TritonHandle
from tests.integration.test_indexer import start_indexing

pytestmark = pytest.mark.integration
T0 = datetime(2026, 9, 1, tzinfo=UTC)
SECRET_A = "feed-a-secret-0123456789"


async def test_only_signed_events_for_allowed_tenants_apply(
    triton: TritonHandle, broker: BrokerHandle, tmp_path: Path
) -> None:
    keys = tmp_path / "producers.json"
    producers = [
        {"id": "feed-a", "secret": SECRET_A, "tenants": ["acme"]},
        {"id": "feed-g", "secret": "feed-g-secret-9876543210", "tenants": ["globex"]},
    ]
    keys.write_text(json.dumps({"producers": producers}))
    indexing = await start_indexing(triton, broker, producer_keys_file=keys)
    try:
        with ContentProducer(
            indexing.bootstrap, indexing.topic, producer="feed-g", secret=producers[1]["secret"]
        ) as g:
            g.publish(text_event("globex", "g-1", "globex's own note", event_time=T0))
            g.flush()
        with ContentProducer(indexing.bootstrap, indexing.topic, producer="feed-a", secret=SECRET_A) as a:
            a.publish(text_event("acme", "a-1", "acme's own note", event_time=T0))
            a.publish(text_event("globex", "planted", "written into another tenant", event_time=T0))
            a.publish(text_event("brand-new-tenant", "x", "a tenant nobody granted", event_time=T0))
            a.publish(delete_event("globex", "g-1", version=9, event_time=T0 + timedelta(hours=1)))
            a.flush()
        with ContentProducer(
            indexing.bootstrap, indexing.topic, producer="feed-a", secret="a-guessed-secret-xxxx"
        ) as forger:
            forger.publish(text_event("acme", "forged", "a forged note", event_time=T0))
            forger.flush()
        unsigned = KafkaProducer(bootstrap_servers=indexing.bootstrap, acks="all")
        event = text_event("acme", "unsigned", "no signature at all", event_time=T0)
        unsigned.send(indexing.topic, key=b"acme/unsigned", value=event.SerializeToString()).get(timeout=30)
        unsigned.close()

        status = await indexing.wait_caught_up(7)
        assert dict(status.dead_letters_by_reason) == {"REASON_UNAUTHORIZED": 5}
        assert indexing.service.stores is not None
        store = await indexing.service.stores.get()
        collection = collection_name("minilm@1")
        assert await store.count(collection, "acme") == 1
        assert await store.count(collection, "globex") == 1  # g-1 survived the unauthorized delete
        assert await store.count(collection, "brand-new-tenant") == 0
    finally:
        await indexing.service.running.stop()
