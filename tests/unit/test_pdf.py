"""PDF parsing (mmsearch/indexer/pdf.py) on generated reports and hostile files, and the worker
process that bounds it in time and memory (pdfworker.py). No Triton, no broker."""

from __future__ import annotations

import json

import pytest

from mmsearch.dev import pdfgen
from mmsearch.indexer.document import children, passage_box
from mmsearch.indexer.pdf import DocLimits, DocumentRejected, from_json, parse, to_json
from mmsearch.indexer.pdfworker import WorkerLimits, parse_in_worker
from mmsearch.kit.passages import DEFAULT_CHUNKING

FACTS = [
    pdfgen.Fact(2, "text", "", "The turbine overhaul at the Harwick site cost 48,300 euros in total."),
    pdfgen.Fact(3, "table", "", "sprockets=7741"),
    pdfgen.Fact(4, "chart", "Defects per production line", "A=12,B=4731,C=9"),
]


@pytest.fixture(scope="module")
def report() -> bytes:
    return pdfgen.report(5, FACTS, seed=1)


def test_pages_text_lines_tables_figures_and_renders(report: bytes) -> None:
    document = parse(report, DocLimits())
    assert [p.number for p in document.pages] == [1, 2, 3, 4, 5]
    page2 = document.pages[1]
    start = page2.text.index("48,300")
    box = passage_box(page2.lines, start, start + 6, page2)
    assert 72 <= box[0] < box[2] <= 612 - 60 and 60 < box[1] < box[3] < 792 / 2  # a line near the top
    table = [r for r in document.pages[2].regions if r.kind == "table"]
    assert len(table) == 1 and "sprockets" in table[0].text and "7741" in table[0].text
    assert table[0].jpeg[:2] == b"\xff\xd8"
    figure = [r for r in document.pages[3].regions if r.kind == "figure"]
    assert len(figure) == 1 and figure[0].text.startswith("Figure 4: Defects per production line")
    assert "4731" not in document.pages[3].text  # the chart's numbers are only in its pixels
    assert all(sum(r.kind == "page" for r in p.regions) == 1 for p in document.pages)


def test_children_offsets_pages_and_kinds(report: bytes) -> None:
    document = parse(report, DocLimits())
    text, kids = children(document, DEFAULT_CHUNKING)
    assert text.count("\f") == 4
    for child in kids:
        passage = child.passage
        assert 1 <= passage.page <= 5 and passage.bbox is not None and passage.page_size == (612.0, 792.0)
        if passage.kind == "text":
            assert text[passage.start : passage.end] == passage.text
        else:
            assert passage.image_jpeg and child.content.image.data == passage.image_jpeg
    fact = next(c.passage for c in kids if "48,300" in c.passage.text)
    assert fact.page == 2
    assert {c.passage.kind for c in kids} == {"text", "table", "figure", "page"}


def test_a_scanned_page_is_marked_for_ocr_without_a_duplicate_figure() -> None:
    scan = pdfgen.text_image(["This page was scanned.", "Invoice 88231."])
    document = parse(pdfgen.build_pdf([pdfgen.PageSpec(scan=scan)]), DocLimits())
    page = document.pages[0]
    assert page.scan_png[:4] == b"\x89PNG" and page.scan_scale > 0
    assert [r.kind for r in page.regions] == ["page"]


def test_json_round_trip(report: bytes) -> None:
    document = parse(report, DocLimits())
    again = from_json(json.loads(json.dumps(to_json(document))))
    assert again == document


@pytest.mark.parametrize(
    ("data", "reason", "detail"),
    [
        (pdfgen.encrypted_pdf(), "encrypted", "user password"),
        (pdfgen.bomb_pdf(), "bomb", "60000 x 60000"),
        (b"%PDF-1.7\n" + b"\x00garbage" * 500, "corrupt", "PDFium cannot open it"),
        (b"<html>not a pdf</html>", "corrupt", "not a PDF"),
    ],
)
def test_hostile_files_are_refused_with_a_reason(data: bytes, reason: str, detail: str) -> None:
    with pytest.raises(DocumentRejected) as raised:
        parse(data, DocLimits())
    assert raised.value.reason == reason and detail in raised.value.detail


def test_limits_are_checked_before_any_page(report: bytes) -> None:
    with pytest.raises(DocumentRejected, match="5 pages, over the limit 4"):
        parse(report, DocLimits(max_pages=4))
    with pytest.raises(DocumentRejected, match="over the limit 1024"):
        parse(report, DocLimits(max_bytes=1024))


def test_corrupted_copy_of_a_real_report(report: bytes) -> None:
    with pytest.raises(DocumentRejected) as raised:
        parse(pdfgen.corrupt_pdf(report), DocLimits())
    assert raised.value.reason == "corrupt"


async def test_worker_parses_and_refuses(report: bytes) -> None:
    document = await parse_in_worker(report, WorkerLimits())
    assert len(document.pages) == 5
    with pytest.raises(DocumentRejected) as raised:
        await parse_in_worker(pdfgen.encrypted_pdf(), WorkerLimits())
    assert raised.value.reason == "encrypted"
    with pytest.raises(DocumentRejected, match="over the limit 100"):  # refused before a process starts
        await parse_in_worker(report, WorkerLimits(DocLimits(max_bytes=100)))


async def test_worker_time_limit(report: bytes) -> None:
    with pytest.raises(DocumentRejected) as raised:
        await parse_in_worker(report, WorkerLimits(timeout_s=0.05))
    assert raised.value.reason == "over_limit" and "longer than" in raised.value.detail


async def test_a_stream_bomb_stops_at_the_memory_limit() -> None:
    """~1 MB inflating to 600 MB of drawing operators: the worker's address space is capped, the
    parser aborts on the failed allocation, the document is refused as a bomb."""
    bomb = pdfgen.stream_bomb_pdf(600)
    assert len(bomb) < 2 << 20
    with pytest.raises(DocumentRejected) as raised:
        await parse_in_worker(bomb, WorkerLimits(timeout_s=60, memory_bytes=512 << 20))
    assert raised.value.reason == "bomb", raised.value.detail
