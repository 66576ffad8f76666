"""The enrichment stage alone: sets OCR text on the stored version only, skips a
task whose version was superseded, dead-letters what is not an image task."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from mmsearch.indexer.batch import REASON, Record
from mmsearch.indexer.metrics import IndexerMetrics
from mmsearch.indexer.ocr import OcrStage, task_headers
from mmsearch.producer import media_event, text_event
from mmsearch.stores.base import Collection, ItemRecord
from mmsearch.v1 import common_pb2, events_pb2
from tests.fakes import FakeEmbedder, MemoryStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PROTO = (("content-type", b"application/x-protobuf"),)


def task(event: events_pb2.ContentEvent, offset: int, space: str = "minilm@1") -> Record:
    original = Record("content.v1", 0, offset, b"k", event.SerializeToString(), PROTO)
    headers = tuple(task_headers(original, space)) if space else PROTO
    return Record("content.v1.enrich", 0, offset, b"k", original.value, headers)


async def stored(store: MemoryStore, version: int, when: datetime) -> None:
    await store.ensure_collection(Collection("minilm_1", "minilm@1", 8))
    record = ItemRecord("acme", "img", "image", None, version, when, "sha", text="Photo", title="Photo")
    await store.write("minilm_1", [record])


async def test_text_is_set_on_the_stored_version_and_skipped_for_a_superseded_one() -> None:
    store = MemoryStore()
    await stored(store, version=2, when=T0)
    stage = OcrStage(FakeEmbedder(), store, IndexerMetrics(CollectorRegistry()))
    old = media_event(
        "acme", "img", b"png", common_pb2.MODALITY_IMAGE, title="Photo", version=1, event_time=T0
    )
    current = media_event(
        "acme", "img", b"png", common_pb2.MODALITY_IMAGE, title="Photo", version=2, event_time=T0
    )
    result = await stage.process([task(old, 0), task(current, 1)])
    assert (result.indexed, result.duplicates, result.dead_letters) == (1, 1, [])
    item = store.collections["minilm_1"][("acme", "img")]
    assert item.text == "Photo\nocr text" and item.snippet == "ocr text"


async def test_what_is_not_an_image_task_is_dead_lettered() -> None:
    store = MemoryStore()
    await stored(store, version=1, when=T0 + timedelta(days=1))
    stage = OcrStage(FakeEmbedder(), store, IndexerMetrics(CollectorRegistry()))
    text = text_event("acme", "doc", "words", event_time=T0)
    image = media_event("acme", "img", b"png", common_pb2.MODALITY_IMAGE, event_time=T0)
    result = await stage.process([task(text, 0), task(image, 1, space=""), task(image, 2)])
    assert [(d.offset, d.reason) for d in result.dead_letters] == [
        (0, REASON.REASON_INVALID_EVENT),
        (1, REASON.REASON_INVALID_EVENT),
    ]
    assert result.duplicates == 1  # its version is not the stored one


async def test_ocr_waits_while_ingest_has_lag_but_never_forever() -> None:
    import time

    store = MemoryStore()
    await stored(store, version=1, when=T0)
    calls: list[float] = []

    def busy() -> bool:
        calls.append(time.monotonic())
        return True  # ingest never catches up: OCR must still run after its bound

    stage = OcrStage(
        FakeEmbedder(), store, IndexerMetrics(CollectorRegistry()), ingest_busy=busy, max_yield_s=1.0
    )
    image = media_event("acme", "img", b"png", common_pb2.MODALITY_IMAGE, version=1, event_time=T0)
    started = time.monotonic()
    result = await stage.process([task(image, 0)])
    assert result.indexed == 1 and 1.0 <= time.monotonic() - started < 3.0 and len(calls) >= 2
