"""The indexer against the real broker, Triton and the embedded store: the
store ends with exactly the expected items and versions whatever duplicates,
out-of-order updates, deletes and poison events the topic carries; poison
goes to the DLQ with its reason; a Triton outage loses nothing."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from kafka import KafkaConsumer, KafkaProducer

from mmsearch.dev.broker import create_topics
from mmsearch.producer import ContentProducer, delete_event, media_event, text_event
from mmsearch.stores.base import collection_name
from mmsearch.v1 import common_pb2, events_pb2, indexer_pb2, indexer_pb2_grpc
from tests.conftest import (
    DEV_TOKEN,
    BrokerHandle,
    ServiceHandle,
    TritonHandle,
    make_settings,
    sample,
    start_service,
)

pytestmark = pytest.mark.integration
AUTH = (("authorization", f"Bearer {DEV_TOKEN}"),)
T0 = datetime(2026, 3, 1, tzinfo=UTC)
REASON = events_pb2.DeadLetter


@dataclass
class Indexing:
    service: ServiceHandle
    topic: str
    dlq: str
    bootstrap: str

    async def status(self) -> indexer_pb2.GetStatusResponse:
        async with grpc.aio.insecure_channel(self.service.addr) as channel:
            stub = indexer_pb2_grpc.IndexerAdminStub(channel)
            response: indexer_pb2.GetStatusResponse = await stub.GetStatus(
                indexer_pb2.GetStatusRequest(), metadata=AUTH, timeout=30
            )
            return response

    async def wait_caught_up(self, produced: int, timeout_s: float = 180.0) -> indexer_pb2.GetStatusResponse:
        """Until every produced record is committed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = await self.status()
            committed = sum(p.committed_offset for p in status.partitions)
            if committed >= produced and all(p.lag == 0 for p in status.partitions):
                return status
            await asyncio.sleep(0.5)
        raise AssertionError(f"indexer did not catch up in {timeout_s}s: {await self.status()}")

    def dead_letters(self, expected: int, timeout_s: float = 30.0) -> list[events_pb2.DeadLetter]:
        consumer = KafkaConsumer(
            self.dlq,
            bootstrap_servers=self.bootstrap,
            group_id=f"dlq-reader-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        letters: list[events_pb2.DeadLetter] = []
        deadline = time.monotonic() + timeout_s
        try:
            while len(letters) < expected and time.monotonic() < deadline:
                for batch in consumer.poll(timeout_ms=500).values():
                    letters.extend(events_pb2.DeadLetter.FromString(m.value) for m in batch)
            # Anything beyond the expected count shows up too.
            for batch in consumer.poll(timeout_ms=1000).values():
                letters.extend(events_pb2.DeadLetter.FromString(m.value) for m in batch)
        finally:
            consumer.close()
        return letters


async def start_indexing(triton: TritonHandle, broker: BrokerHandle, **overrides: object) -> Indexing:
    topic = f"content.{uuid.uuid4().hex[:8]}"
    dlq = f"{topic}.dlq"
    await asyncio.to_thread(create_topics, broker.bootstrap, [topic, dlq, f"{topic}.enrich"])
    settings = make_settings(
        **{
            "triton_url": triton.grpc_url,
            "kafka_bootstrap": broker.bootstrap,
            "content_topic": topic,
            "dlq_topic": dlq,
            "indexer_group": f"indexer-{topic}",
            "indexer_batch_size": 64,
            "kafka_session_timeout_ms": 6000,
            **overrides,
        }
    )
    return Indexing(await start_service(settings), topic, dlq, broker.bootstrap)


@pytest.fixture
async def indexing(triton: TritonHandle, broker: BrokerHandle) -> AsyncIterator[Indexing]:
    handle = await start_indexing(triton, broker)
    yield handle
    await handle.service.running.stop()


def publish(
    bootstrap: str, topic: str, events: list[events_pb2.ContentEvent], raw: Sequence[bytes] = ()
) -> int:
    with ContentProducer(bootstrap, topic) as producer:
        for event in events:
            producer.publish(event)
    if raw:
        plain = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        for value in raw:
            plain.send(topic, key=b"poison", value=value)
        plain.flush()
        plain.close()
    return len(events) + len(raw)


# The acceptance run of issue #4: 10,000 events, about 1% poison.
ITEMS, UPDATED, REPLAYED, DELETED, POISON_EACH = 6000, 2000, 1000, 450, 25


async def test_duplicates_out_of_order_deletes_and_poison_end_in_the_exact_state(indexing: Indexing) -> None:
    live = ITEMS - DELETED
    events: list[events_pb2.ContentEvent] = []
    for i in range(ITEMS):
        events.append(text_event("acme", f"doc-{i}", f"document {i} version one", version=1, event_time=T0))
    for i in range(UPDATED):  # updates
        events.append(text_event("acme", f"doc-{i}", f"document {i} version two", version=2, event_time=T0))
    for i in range(REPLAYED):  # late replays of version 1, after version 2
        events.append(text_event("acme", f"doc-{i}", f"document {i} version one", version=1, event_time=T0))
    for i in range(live, ITEMS):  # deletes, then a late older upsert that must not resurrect them
        events.append(delete_event("acme", f"doc-{i}", version=5, event_time=T0 + timedelta(hours=1)))
        events.append(text_event("acme", f"doc-{i}", f"document {i} zombie", version=1, event_time=T0))
    events.append(text_event("other", "doc-0", "another tenant's document", event_time=T0))
    images = ("chelsea.png", "coffee.png")
    for name in images:
        events.append(
            media_event(
                "acme", f"img-{name}", sample(f"images/{name}"), common_pb2.MODALITY_IMAGE, event_time=T0
            )
        )
    events.append(
        media_event("acme", "snd-dog", sample("audio/dog.mp3"), common_pb2.MODALITY_AUDIO, event_time=T0)
    )
    # Poison, about 1%: undecodable, invalid, unknown space, corrupt image.
    poison_events = []
    for k in range(POISON_EACH):
        no_id = text_event("acme", f"bad-id-{k}", "no event id", event_time=T0)
        no_id.event_id = ""
        poison_events += [
            no_id,
            text_event("acme", f"bad-space-{k}", "bad space", event_time=T0, space="nope@3"),
            media_event(
                "acme", f"bad-img-{k}", b"\x89PNG\r\n\x1a\n broken", common_pb2.MODALITY_IMAGE, event_time=T0
            ),
        ]
    undecodable = [b"\x00\xffnot an event %d" % k for k in range(POISON_EACH)]
    produced = publish(indexing.bootstrap, indexing.topic, events + poison_events, undecodable)
    assert 9_900 <= produced <= 10_100
    await indexing.wait_caught_up(produced, timeout_s=600)

    store = await indexing.service.stores.get()
    text_collection = collection_name("minilm@1")
    assert await store.count(text_collection, "acme") == live + len(images)
    assert await store.count(text_collection, "other") == 1
    assert await store.count(collection_name("aisfx@1"), "acme") == 1
    states = await store.states(text_collection, "acme", [f"doc-{i}" for i in range(ITEMS)])
    for i in range(ITEMS):
        state = states[f"doc-{i}"]
        if i >= live:
            assert state.deleted and state.version == 5, (i, state)
        else:
            assert not state.deleted and state.version == (2 if i < UPDATED else 1), (i, state)

    letters = indexing.dead_letters(expected=4 * POISON_EACH)
    assert Counter(letter.reason for letter in letters) == {
        REASON.REASON_UNDECODABLE: POISON_EACH,
        REASON.REASON_INVALID_EVENT: POISON_EACH,
        REASON.REASON_UNKNOWN_SPACE: POISON_EACH,
        REASON.REASON_CORRUPT_MEDIA: POISON_EACH,
    }
    first = next(x for x in letters if x.reason == REASON.REASON_UNDECODABLE)
    assert first.original_value in undecodable and first.topic == indexing.topic
    status = await indexing.status()
    assert sum(status.dead_letters_by_reason.values()) == 4 * POISON_EACH and not status.paused


async def test_triton_outage_pauses_and_loses_nothing(
    private_triton: TritonHandle, broker: BrokerHandle
) -> None:
    indexing = await start_indexing(private_triton, broker)
    try:
        first = [text_event("acme", f"a-{i}", f"before the outage {i}", event_time=T0) for i in range(40)]
        produced = publish(indexing.bootstrap, indexing.topic, first)
        await indexing.wait_caught_up(produced)

        private_triton.kill()
        second = [text_event("acme", f"b-{i}", f"during the outage {i}", event_time=T0) for i in range(40)]
        produced += publish(indexing.bootstrap, indexing.topic, second)
        await asyncio.sleep(30)  # the acceptance: Triton stopped for 30 s mid-run
        status = await indexing.status()
        assert status.paused and "embedder" in status.pause_reason, status
        assert sum(p.lag for p in status.partitions) > 0

        private_triton.restart()
        status = await indexing.wait_caught_up(produced, timeout_s=120)
        store = await indexing.service.stores.get()
        assert await store.count(collection_name("minilm@1"), "acme") == 80
        assert not status.dead_letters_by_reason
    finally:
        await indexing.service.running.stop()
