"""The enrichment stage alone: sets OCR text on the stored version only, skips a
task whose version was superseded, dead-letters what is not an image task."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from mmsearch.clients.errors import DependencyDeadline, InputRejected
from mmsearch.clients.priority import Priority
from mmsearch.indexer.batch import REASON, Record
from mmsearch.indexer.enrich import OCR_MAX_TIMEOUT_S, read_text
from mmsearch.indexer.metrics import IndexerMetrics
from mmsearch.indexer.ocr import OcrStage, task_headers
from mmsearch.producer import media_event, text_event
from mmsearch.stores.base import Collection, ItemRecord
from mmsearch.v1 import common_pb2, embedder_pb2, events_pb2
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


class PickyOcr(FakeEmbedder):
    """Refuses images whose bytes start with b"BAD" (naming the index), and is too slow for
    images starting with b"SLOW" unless given `slow_needs_s`."""

    def __init__(self, slow_needs_s: float) -> None:
        super().__init__()
        self.slow_needs_s = slow_needs_s
        self.calls: list[tuple[int, float]] = []

    async def extract_text(
        self,
        images: Sequence[common_pb2.Media],
        timeout_s: float | None = None,
        *,
        priority: Priority = "interactive",
    ) -> list[embedder_pb2.ExtractedText]:
        self.calls.append((len(images), timeout_s or 0.0))
        for i, image in enumerate(images):
            if image.data.startswith(b"BAD"):
                raise InputRejected("embedder", f"images[{i}]: corrupt", index=i, kind="corrupt_media")
        if any(image.data.startswith(b"SLOW") for image in images) and (timeout_s or 0) < self.slow_needs_s:
            raise DependencyDeadline("embedder", "DEADLINE_EXCEEDED")
        return await super().extract_text(images, timeout_s, priority=priority)


async def test_a_refused_or_slow_image_does_not_cost_its_neighbours_their_text() -> None:
    images = [common_pb2.Media(data=d) for d in (b"png", b"BAD", b"png", b"SLOW", b"png")]
    # Slow: past the per-chunk deadlines, within the generous last try.
    embedder = PickyOcr(slow_needs_s=OCR_MAX_TIMEOUT_S / 2)
    read = await read_text(embedder, images)
    assert read.texts == ["ocr text", "", "ocr text", "ocr text", "ocr text"]
    assert list(read.failed) == [1] and read.failed[1][0] == "corrupt_media"
    assert max(timeout for _, timeout in embedder.calls) == OCR_MAX_TIMEOUT_S


async def test_an_image_too_slow_even_alone_is_dead_lettered_not_given_an_empty_text() -> None:
    store = MemoryStore()
    await store.ensure_collection(Collection("minilm_1", "minilm@1", 8))
    events = [
        media_event("acme", f"img-{i}", data, common_pb2.MODALITY_IMAGE, title="Photo", event_time=T0)
        for i, data in enumerate((b"png", b"SLOW", b"png"))
    ]
    await store.write(
        "minilm_1",
        [
            ItemRecord("acme", f"img-{i}", "image", None, 0, T0, "sha", text="Photo", title="Photo")
            for i in range(3)
        ],
    )
    stage = OcrStage(
        PickyOcr(slow_needs_s=10 * OCR_MAX_TIMEOUT_S), store, IndexerMetrics(CollectorRegistry())
    )
    result = await stage.process([task(e, i) for i, e in enumerate(events)])
    assert result.indexed == 2
    assert [(d.offset, d.reason) for d in result.dead_letters] == [(1, REASON.REASON_UNPROCESSABLE)]
    assert "OCR" in result.dead_letters[0].detail
    assert store.collections["minilm_1"][("acme", "img-1")].text == "Photo"  # untouched, not emptied
