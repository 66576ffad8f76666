"""Documents through the indexer pipeline against an in-memory store and a fake embedder (the real
ones: tests/integration/test_documents.py): the live pipeline defers them, the inline one stores
every child with its page, kind and box, halves a text child the model truncates, OCRs a scan,
dead-letters a hostile PDF, and a newer version or a delete wins over a late task."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from mmsearch.clients.spaces import SpaceResolver
from mmsearch.dev import pdfgen
from mmsearch.indexer.batch import Record
from mmsearch.indexer.metrics import IndexerMetrics
from mmsearch.indexer.pipeline import Pipeline
from mmsearch.producer import delete_event, media_event
from mmsearch.stores.base import collection_name
from mmsearch.v1 import common_pb2, events_pb2
from tests.fakes import FakeEmbedder, MemoryStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
REASON = events_pb2.DeadLetter
COLLECTION = collection_name("minilm@1")
FACTS = [
    pdfgen.Fact(1, "text", "", "The turbine overhaul at the Harwick site cost 48,300 euros in total."),
    pdfgen.Fact(2, "table", "", "sprockets=7741"),
    pdfgen.Fact(3, "chart", "Defects per production line", "A=12,B=4731,C=9"),
]


def doc_record(data: bytes, *, version: int = 1, offset: int = 0) -> Record:
    event = media_event(
        "a",
        "doc",
        data,
        common_pb2.MODALITY_DOCUMENT,
        version=version,
        event_time=T0 + timedelta(seconds=version),
    )
    return Record("content.v1", 0, offset, b"a/doc", event.SerializeToString(), ())


def make(*, inline: bool, max_words: int | None = None) -> tuple[Pipeline, MemoryStore, FakeEmbedder]:
    store, embedder = MemoryStore(), FakeEmbedder(max_words=max_words)
    pipeline = Pipeline(
        SpaceResolver(embedder, store),
        embedder,
        store,
        IndexerMetrics(CollectorRegistry()),
        ocr_inline=inline,
    )
    return pipeline, store, embedder


async def test_the_live_pipeline_defers_a_document_to_the_enrichment_stage() -> None:
    pipeline, store, _ = make(inline=False)
    result = await pipeline.process([doc_record(pdfgen.report(3, FACTS))])
    assert [(r.key, space) for r, space in result.followups] == [(b"a/doc", "minilm@1")]
    assert result.indexed == 0 and not store.live(COLLECTION)


async def test_every_child_is_stored_with_page_kind_and_box() -> None:
    pipeline, store, _ = make(inline=True)
    result = await pipeline.process([doc_record(pdfgen.report(3, FACTS))])
    assert result.indexed == 1 and result.dead_letters == []
    (stored,) = store.live(COLLECTION).values()
    assert stored.modality == "document" and stored.thumbnail_jpeg[:2] == b"\xff\xd8"
    kinds = [(p.page, p.kind) for p in stored.passages]
    assert kinds == sorted(kinds, key=lambda k: (k[0], ("text", "table", "figure", "page").index(k[1])))
    assert {k for _, k in kinds} == {"text", "table", "figure", "page"} and {p for p, _ in kinds} == {1, 2, 3}
    fact = next(p for p in stored.passages if "48,300" in p.text)
    assert fact.page == 1 and fact.kind == "text" and fact.bbox is not None and fact.vector is not None
    figure = next(p for p in stored.passages if p.kind == "figure")
    # The figure's BM25 text is its caption plus what OCR read in it (the fake reads "ocr text").
    assert figure.text.startswith("Figure 3: Defects per production line") and "ocr text" in figure.text


async def test_a_truncated_text_child_is_halved_until_it_fits() -> None:
    pipeline, store, _ = make(inline=True, max_words=20)
    await pipeline.process([doc_record(pdfgen.report(3, FACTS))])
    (stored,) = store.live(COLLECTION).values()
    texts = [p for p in stored.passages if p.kind == "text"]
    assert texts and all(len(p.text.split()) <= 20 for p in texts)
    assert any("48,300" in p.text for p in texts)


async def test_a_scanned_page_gets_its_text_from_ocr() -> None:
    pipeline, store, _ = make(inline=True)
    scan = pdfgen.PageSpec(scan=pdfgen.text_image(["A page of a scanned letter."]))
    await pipeline.process([doc_record(pdfgen.build_pdf([scan]))])
    (stored,) = store.live(COLLECTION).values()
    assert [(p.kind, p.text) for p in stored.passages] == [("text", "ocr text"), ("page", "")]


async def test_hostile_documents_are_dead_lettered_with_reasons() -> None:
    pipeline, store, _ = make(inline=True)
    records = [
        doc_record(pdfgen.encrypted_pdf(), offset=0),
        doc_record(pdfgen.bomb_pdf(), offset=1),
        doc_record(b"%PDF-1.7 truncated", offset=2),
    ]
    reasons = []
    for rec in records:  # one item id: one at a time, as three versions would be deduplicated
        result = await pipeline.process([rec])
        reasons += [letter.reason for letter in result.dead_letters]
    assert reasons == [REASON.REASON_ENCRYPTED, REASON.REASON_DECOMPRESSION_BOMB, REASON.REASON_CORRUPT_MEDIA]
    assert not store.live(COLLECTION)


async def test_a_late_task_does_not_undo_a_newer_version_or_a_delete() -> None:
    pipeline, store, _ = make(inline=True)
    await pipeline.process([doc_record(pdfgen.report(3, FACTS), version=2)])
    late = await pipeline.process([doc_record(pdfgen.report(3, []), version=1)])
    assert late.duplicates == 1 and late.indexed == 0
    delete = delete_event("a", "doc", version=3, event_time=T0)
    await pipeline.process([Record("content.v1", 0, 9, b"a/doc", delete.SerializeToString(), ())])
    again = await pipeline.process([doc_record(pdfgen.report(3, FACTS), version=2)])
    assert again.indexed == 0 and not store.live(COLLECTION)
