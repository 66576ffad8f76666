"""The indexer pipeline's exactly-once effect and dead-lettering, against an
in-memory store and a fake embedder (the real ones: tests/integration)."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from prometheus_client import CollectorRegistry

from mmsearch.clients.errors import DependencyDown
from mmsearch.clients.spaces import SpaceResolver
from mmsearch.indexer.batch import Record
from mmsearch.indexer.events import decode
from mmsearch.indexer.metrics import IndexerMetrics
from mmsearch.indexer.pipeline import Pipeline
from mmsearch.producer import delete_event, media_event, text_event
from mmsearch.v1 import common_pb2, events_pb2
from tests.fakes import FakeEmbedder, MemoryStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PROTO = (("content-type", b"application/x-protobuf"),)
REASON = events_pb2.DeadLetter


def record(
    event: events_pb2.ContentEvent | bytes, offset: int = 0, headers: tuple[tuple[str, bytes], ...] = PROTO
) -> Record:
    value = event if isinstance(event, bytes) else event.SerializeToString()
    return Record("content.v1", 0, offset, b"k", value, headers)


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (300, 200), (10, 200, 10)).save(out, format="PNG")
    return out.getvalue()


def make() -> tuple[Pipeline, MemoryStore, FakeEmbedder]:
    store, embedder = MemoryStore(), FakeEmbedder()
    pipeline = Pipeline(SpaceResolver(embedder, store), embedder, store, IndexerMetrics(CollectorRegistry()))
    return pipeline, store, embedder


def run(pipeline: Pipeline, *records: Record):  # type: ignore[no-untyped-def]
    return asyncio.run(pipeline.process(list(records)))


def test_replays_and_out_of_order_updates_change_nothing() -> None:
    pipeline, store, _ = make()
    v1 = text_event("a", "doc", "first text", version=1, event_time=T0)
    v2 = text_event("a", "doc", "second text", version=2, event_time=T0 + timedelta(seconds=1))
    assert run(pipeline, record(v1)).indexed == 1
    assert run(pipeline, record(v2)).indexed == 1
    late = run(pipeline, record(v1), record(v2))  # a replay of both, in any order
    assert late.indexed == 0 and late.duplicates == 2
    (item,) = store.live("minilm_1").values()
    assert item.text == "second text" and item.version == 2 and item.snippet == "second text"


def test_newest_event_per_item_wins_within_a_batch() -> None:
    pipeline, store, _ = make()
    events = [text_event("a", "doc", f"text {v}", version=v, event_time=T0) for v in (3, 1, 2)]
    result = run(pipeline, *(record(e, i) for i, e in enumerate(events)))
    assert result.indexed == 1 and result.duplicates == 2
    assert store.live("minilm_1")[("a", "doc")].text == "text 3"


def test_delete_is_a_tombstone_that_a_late_older_upsert_cannot_undo() -> None:
    pipeline, store, _ = make()
    run(pipeline, record(text_event("a", "doc", "x", event_time=T0)))
    # A delete naming no space or modality tombstones the item in every default space.
    assert run(pipeline, record(delete_event("a", "doc", event_time=T0 + timedelta(seconds=5)))).deleted == 2
    late = run(pipeline, record(text_event("a", "doc", "x", event_time=T0 + timedelta(seconds=1))))
    assert late.duplicates == 1 and not store.live("minilm_1")
    # A newer upsert brings it back.
    assert (
        run(pipeline, record(text_event("a", "doc", "y", event_time=T0 + timedelta(seconds=9)))).indexed == 1
    )


def test_tenants_are_kept_apart() -> None:
    pipeline, store, _ = make()
    run(
        pipeline,
        record(text_event("a", "doc", "x", event_time=T0)),
        record(text_event("b", "doc", "y", event_time=T0)),
    )
    assert set(store.live("minilm_1")) == {("a", "doc"), ("b", "doc")}


def test_poison_events_are_dead_lettered_with_reasons_and_the_rest_indexed() -> None:
    pipeline, store, _ = make()
    no_tenant = text_event("", "doc", "x", event_time=T0)
    wrong_space = text_event("a", "doc2", "x", event_time=T0, space="nope@9")
    audio_in_text_space = media_event(
        "a", "snd", b"RIFF", common_pb2.MODALITY_AUDIO, event_time=T0, space="minilm@1"
    )
    corrupt = media_event("a", "img1", b"BAD bytes", common_pb2.MODALITY_IMAGE, event_time=T0)
    good_image = media_event("a", "img2", png(), common_pb2.MODALITY_IMAGE, event_time=T0)
    good_text = text_event("a", "doc3", "fine", event_time=T0)
    as_json = text_event("a", "doc4", "from json", event_time=T0)
    records = [
        record(b"\xff\x00 not protobuf", 0),
        record(no_tenant, 1),
        record(wrong_space, 2),
        record(audio_in_text_space, 3),
        record(corrupt, 4),
        record(good_image, 5),
        record(good_text, 6),
        record(json_format.MessageToJson(as_json).encode(), 7, (("content-type", b"application/json"),)),
        record(good_text, 8, (("content-type", b"text/csv"),)),
    ]
    result = run(pipeline, *records)
    reasons = {(d.offset, d.reason) for d in result.dead_letters}
    assert reasons == {
        (0, REASON.REASON_UNDECODABLE),
        (1, REASON.REASON_INVALID_EVENT),
        (2, REASON.REASON_UNKNOWN_SPACE),
        (3, REASON.REASON_UNKNOWN_SPACE),
        (4, REASON.REASON_CORRUPT_MEDIA),
        (8, REASON.REASON_UNDECODABLE),
    }
    letter = next(d for d in result.dead_letters if d.offset == 4)
    assert letter.original_value == records[4].value and letter.original_headers[0].key == "content-type"
    live = store.live("minilm_1")
    assert set(live) == {("a", "img2"), ("a", "doc3"), ("a", "doc4")}
    image = live[("a", "img2")]
    assert (
        image.modality == "image" and image.text == "ocr text" and 0 < len(image.thumbnail_jpeg) <= 16 * 1024
    )


def test_dependency_down_raises_and_writes_nothing() -> None:
    pipeline, store, embedder = make()
    embedder.down = True
    with pytest.raises(DependencyDown):
        run(pipeline, record(text_event("a", "doc", "x", event_time=T0)))
    embedder.down = False
    store.down = True
    with pytest.raises(DependencyDown):
        run(pipeline, record(text_event("a", "doc", "x", event_time=T0)))
    assert store.writes == 0


@settings(max_examples=200, deadline=None)
@given(
    value=st.binary(max_size=300),
    content_type=st.sampled_from(["", "application/json", "application/x-protobuf", "x/y"]),
)
def test_any_record_bytes_decode_or_are_rejected(value: bytes, content_type: str) -> None:
    headers = (("content-type", content_type.encode()),) if content_type else ()
    decode(value, headers)  # returns an event or a Rejection; never raises


def test_only_confident_ocr_lines_of_some_length_are_indexed() -> None:
    from mmsearch.indexer.enrich import searchable_text
    from mmsearch.v1 import embedder_pb2

    result = embedder_pb2.ExtractedText(
        blocks=[
            embedder_pb2.TextBlock(text="Invoice INV-2024-00731", confidence=0.97),
            embedder_pb2.TextBlock(text="A", confidence=0.99),  # texture read as a letter
            embedder_pb2.TextBlock(text="blurry words", confidence=0.4),
            embedder_pb2.TextBlock(text="Total 12", confidence=0.9),
        ]
    )
    assert searchable_text(result) == "Invoice INV-2024-00731\nTotal 12"
