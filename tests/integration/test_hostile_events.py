"""Events a careless or hostile producer sends cannot stop a partition: each
is dead-lettered with its reason while its neighbours are indexed (a 5 MB
text, a created_at of 2^62 s, a NaN attribute); and the live space cannot be
dropped from under the indexer."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest

from mmsearch.producer import text_event
from mmsearch.stores.base import collection_name
from mmsearch.v1 import common_pb2, events_pb2, indexer_pb2, indexer_pb2_grpc
from tests.conftest import BrokerHandle, TritonHandle
from tests.integration.test_indexer import AUTH, publish, start_indexing

pytestmark = pytest.mark.integration
T0 = datetime(2026, 7, 1, tzinfo=UTC)
REASON = events_pb2.DeadLetter


def hostile_events() -> list[events_pb2.ContentEvent]:
    huge = text_event("acme", "huge", "word " * 1_000_000, event_time=T0)  # 5 MB
    far = text_event("acme", "far-future", "a note from the far future", event_time=T0)
    far.metadata.created_at.seconds = 2**62
    nan = text_event("acme", "nan", "a note with a NaN score", event_time=T0)
    nan.metadata.attributes["score"].CopyFrom(common_pb2.Value(double_value=float("nan")))
    return [huge, far, nan]


async def test_hostile_events_are_dead_lettered_and_their_neighbours_indexed(
    triton: TritonHandle, broker: BrokerHandle
) -> None:
    indexing = await start_indexing(triton, broker)
    try:
        good = [
            text_event("acme", f"ok-{i}", f"an ordinary note number {i}", event_time=T0) for i in range(6)
        ]
        events = [good[0], *hostile_events()[:1], good[1], good[2], *hostile_events()[1:], *good[3:]]
        produced = publish(indexing.bootstrap, indexing.topic, events)
        status = await indexing.wait_caught_up(produced, timeout_s=120)
        assert dict(status.dead_letters_by_reason) == {"REASON_OVER_LIMIT": 1, "REASON_INVALID_EVENT": 2}
        letters = {letter.detail.split(":")[0]: letter for letter in indexing.dead_letters(3)}
        assert len(letters) == 3
        huge = next(letter for letter in letters.values() if letter.reason == REASON.REASON_OVER_LIMIT)
        assert huge.original_omitted and huge.original_value_bytes > 5_000_000 and not huge.original_value
        assert huge.original_value_sha256
        details = sorted(
            letter.detail for letter in letters.values() if letter.reason == REASON.REASON_INVALID_EVENT
        )
        assert details[0].startswith("metadata.attributes['score']: must be finite")
        assert details[1].startswith("metadata.created_at is out of range")
        assert indexing.service.stores is not None
        store = await indexing.service.stores.get()
        assert await store.count(collection_name("minilm@1"), "acme") == len(good)
    finally:
        await indexing.service.running.stop()


async def test_the_live_space_cannot_be_dropped(triton: TritonHandle, broker: BrokerHandle) -> None:
    indexing = await start_indexing(triton, broker)
    try:
        produced = publish(
            indexing.bootstrap, indexing.topic, [text_event("acme", "a", "first note", event_time=T0)]
        )
        await indexing.wait_caught_up(produced)
        async with grpc.aio.insecure_channel(indexing.service.addr) as channel:
            stub = indexer_pb2_grpc.IndexerAdminStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.DropSpace(
                    indexer_pb2.DropSpaceRequest(space="minilm@1"), metadata=AUTH, timeout=30
                )
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "'default'" in (refused.value.details() or "")
        # Still there, and the indexer keeps indexing into it.
        produced += publish(
            indexing.bootstrap, indexing.topic, [text_event("acme", "b", "second note", event_time=T0)]
        )
        await indexing.wait_caught_up(produced)
        assert indexing.service.stores is not None
        store = await indexing.service.stores.get()
        assert await store.count(collection_name("minilm@1"), "acme") == 2
    finally:
        await indexing.service.running.stop()
