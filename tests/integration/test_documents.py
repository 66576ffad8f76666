"""PDF documents end to end (real broker, Triton and embedded store): a 50-page report published
to Kafka goes to the enrichment stage, is parsed in the worker, and every child (text passages,
tables, figures, page renders) becomes searchable with page citations; a changed version replaces
every child, a delete removes every child. Corrupt, encrypted, oversized and decompression-bomb
PDFs are dead-lettered with their reasons while their neighbours are indexed."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from mmsearch.cli.main import main
from mmsearch.dev import pdfgen
from mmsearch.producer import delete_event, media_event, text_event
from mmsearch.stores.base import Query, collection_name
from mmsearch.v1 import common_pb2, events_pb2, searcher_pb2, searcher_pb2_grpc
from tests.conftest import DEV_TOKEN, BrokerHandle, TritonHandle
from tests.integration.test_indexer import Indexing, publish, start_indexing
from tests.integration.test_search import search

pytestmark = pytest.mark.integration
T0 = datetime(2026, 9, 1, tzinfo=UTC)
REASON = events_pb2.DeadLetter
FACTS_V1 = [
    pdfgen.Fact(37, "text", "", "The turbine overhaul at the Harwick site cost 48,300 euros in total."),
    pdfgen.Fact(12, "table", "", "sprockets=7741"),
    pdfgen.Fact(23, "chart", "Defects per production line", "A=12,B=47,C=9"),
]
FACTS_V2 = [
    pdfgen.Fact(41, "text", "", "The glacier survey at the Oskarby depot recorded eleven cracked pallets."),
]


def document_event(item_id: str, data: bytes, *, version: int, title: str = "") -> events_pb2.ContentEvent:
    return media_event(
        "dev",
        item_id,
        data,
        common_pb2.MODALITY_DOCUMENT,
        mime_type="application/pdf",
        title=title,
        source_uri=f"file:///reports/{item_id}.pdf",
        version=version,
        event_time=T0 + timedelta(minutes=version),
    )


async def retrieve(
    indexing: Indexing, request: searcher_pb2.RetrieveRequest
) -> searcher_pb2.RetrieveResponse:
    async with grpc.aio.insecure_channel(indexing.service.addr) as channel:
        stub = searcher_pb2_grpc.SearcherStub(channel)
        response: searcher_pb2.RetrieveResponse = await stub.Retrieve(
            request, metadata=(("authorization", f"Bearer {DEV_TOKEN}"),), timeout=60
        )
        return response


def evidence(response: searcher_pb2.RetrieveResponse) -> list[tuple[str, searcher_pb2.Evidence]]:
    return [(d.item_id, e) for d in response.documents for p in d.pages for e in p.evidence]


async def wait_for(check: object, timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(1.0)


async def publish_all(indexing: Indexing, report: Path, data: bytes) -> int:
    """The hostile PDFs and two notes (as events), the report through `mmsearch ingest`."""
    events = [
        text_event("dev", "before", "A note published before the reports.", event_time=T0),
        *(document_event(name, data, version=1) for name, data in hostile(data).items()),
        text_event("dev", "after", "A note published after the reports.", event_time=T0),
    ]
    produced = publish(indexing.bootstrap, indexing.topic, events)
    ingest = ["ingest", str(report), "--bootstrap", indexing.bootstrap, "--topic", indexing.topic]
    assert await asyncio.to_thread(main, ingest) == 0
    return produced + 1


def hostile(valid: bytes) -> dict[str, bytes]:
    return {
        "corrupt": pdfgen.corrupt_pdf(valid),
        "encrypted": pdfgen.encrypted_pdf(),
        "bomb": pdfgen.bomb_pdf(),
        "too-long": pdfgen.report(61, [], seed=3),
    }


async def check_dead_letters(indexing: Indexing) -> None:
    letters = await asyncio.to_thread(indexing.dead_letters, 4, 240.0)
    reasons = {letter.original_key.decode().split("/", 1)[1]: letter.reason for letter in letters}
    assert reasons == {
        "corrupt": REASON.REASON_CORRUPT_MEDIA,
        "encrypted": REASON.REASON_ENCRYPTED,
        "bomb": REASON.REASON_DECOMPRESSION_BOMB,
        "too-long": REASON.REASON_OVER_LIMIT,
    }, [(letter.original_key, letter.reason, letter.detail) for letter in letters]
    details = {letter.original_key.decode().split("/", 1)[1]: letter.detail for letter in letters}
    assert "61 pages" in details["too-long"] and "60000 x 60000" in details["bomb"]


async def check_evidence(
    indexing: Indexing, report: str, uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The text fact: found with its page, box and offsets.
    response = await retrieve(
        indexing,
        searcher_pb2.RetrieveRequest(
            query=common_pb2.Content(text="How much did the turbine overhaul at Harwick cost?"),
            hybrid=True,
            kinds=[searcher_pb2.EVIDENCE_KIND_TEXT],
        ),
    )
    found = evidence(response)
    assert found and found[0][0] == report, found[:3]
    top = found[0][1]
    assert top.citation.page == 37 and "48,300" in top.text
    assert top.citation.bbox.page_width == 612 and 0 < top.citation.bbox.y0 < top.citation.bbox.y1 < 792
    assert top.citation.end > top.citation.start > 0
    assert response.documents[0].metadata.title == "Plant report"

    # The CLI prints the same evidence with its citation.
    capsys.readouterr()
    question = ["retrieve", "How much did the turbine overhaul at Harwick cost?", "--kind", "text"]
    code = await asyncio.to_thread(main, [*question, "--addr", indexing.service.addr, "--token", DEV_TOKEN])
    printed = capsys.readouterr().out
    assert code == 0 and "== Plant report" in printed and "-- page 37" in printed, printed
    assert "48,300" in printed and f"[{report} p.37 (" in printed

    # The table: its text and its crop, on page 12; the chart's figure on page 23.
    response = await retrieve(
        indexing,
        searcher_pb2.RetrieveRequest(
            query=common_pb2.Content(text="sprockets count"),
            hybrid=True,
            kinds=[searcher_pb2.EVIDENCE_KIND_TABLE],
            include_images=True,
        ),
    )
    table = evidence(response)[0][1]
    assert table.kind == searcher_pb2.EVIDENCE_KIND_TABLE and table.citation.page == 12
    assert "7741" in table.text and table.image_jpeg[:2] == b"\xff\xd8"
    assert table.image_ref == f"{uri}#page=12"
    response = await retrieve(
        indexing,
        searcher_pb2.RetrieveRequest(
            query=common_pb2.Content(text="defects per production line"),
            hybrid=True,
            kinds=[searcher_pb2.EVIDENCE_KIND_FIGURE],
        ),
    )
    figure = evidence(response)[0][1]
    assert figure.kind == searcher_pb2.EVIDENCE_KIND_FIGURE and figure.citation.page == 23

    # Search (items) finds the report by its passage.
    hits = await search(
        indexing, searcher_pb2.SearchRequest(query=common_pb2.Content(text="turbine overhaul Harwick"))
    )
    assert hits.hits[0].item_id == report and hits.hits[0].modality == common_pb2.MODALITY_DOCUMENT
    assert hits.hits[0].passage.page == 37 and hits.hits[0].passage.kind == searcher_pb2.EVIDENCE_KIND_TEXT


async def test_a_50_page_pdf_is_indexed_with_citations_replaced_and_deleted(
    triton: TritonHandle, broker: BrokerHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    indexing = await start_indexing(triton, broker, indexer_doc_max_pages=60, enrich_batch_size=4)
    try:
        path = tmp_path / "Plant report.pdf"
        data = pdfgen.report(50, FACTS_V1, seed=1)
        path.write_bytes(data)
        report = str(path)  # `mmsearch ingest` names an item by its path
        produced = await publish_all(indexing, path, data)
        await check_dead_letters(indexing)
        await indexing.wait_caught_up(produced)
        assert indexing.service.stores is not None
        store = await indexing.service.stores.get()
        collection = collection_name("minilm@1")

        async def indexed() -> bool:
            return await store.count_passages(collection, "dev", report) > 0

        await wait_for(indexed)
        assert await store.count(collection, "dev") == 3  # the two notes and the report
        children = await store.count_passages(collection, "dev", report)
        assert children >= 50 + 50 + 2  # a render and text for every page, a table and a figure
        await check_evidence(indexing, report, path.resolve().as_uri(), capsys)

        # A changed version replaces every child: the old fact is gone, the new one is found.
        v2 = pdfgen.report(42, FACTS_V2, seed=2)
        update = document_event(report, v2, version=2, title="Plant report")
        produced += publish(indexing.bootstrap, indexing.topic, [update])
        await indexing.wait_caught_up(produced)

        async def replaced() -> bool:
            hits = await store.search(collection, Query("dev", limit=3, text="Oskarby glacier"))
            return bool(hits) and hits[0].record.item_id == report

        await wait_for(replaced)
        assert not await store.search(collection, Query("dev", limit=3, text="Harwick turbine"))
        assert 42 * 2 <= await store.count_passages(collection, "dev", report) < children

        # A delete removes every child.
        produced += publish(indexing.bootstrap, indexing.topic, [delete_event("dev", report, version=3)])
        await indexing.wait_caught_up(produced)

        async def deleted() -> bool:
            # wait_caught_up counts the enrichment topic's offsets too: it can return early.
            return await store.count_passages(collection, "dev", report) == 0

        await wait_for(deleted, 60)
        assert await store.count(collection, "dev") == 2
        response = await retrieve(
            indexing,
            searcher_pb2.RetrieveRequest(query=common_pb2.Content(text="Oskarby glacier"), hybrid=True),
        )
        assert all(item_id != report for item_id, _ in evidence(response))
    finally:
        await indexing.service.running.stop()
