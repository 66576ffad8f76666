"""A document event (a PDF) -> one stored item whose passages are its children.

Parsing runs in a bounded worker process (pdfworker.py). Each page gives: text passages (its text
layer, or OCR text for a scanned page, split with the space's chunking policy; offsets in the
document text, which is the pages' text joined by form feeds; a box from the lines a passage
covers), ruled tables (their text and their crop), figures (their crop and caption) and the page
render. Text children are embedded as text, visual children as images (the same space), and all
of them become the item's passages, so the store's generation switch replaces or deletes every
child of a document at once for searchers (mmsearch/stores/base.py).

Parsing, OCR and embedding a document are heavy: the live consumer defers documents to the
enrichment topic (like OCR, mmsearch/indexer/ocr.py), so a large document never holds the
content partition; a re-embed replay processes them inline.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import structlog
from PIL import Image

from mmsearch.clients.errors import DependencyDeadline, InputRejected, RequestTooLarge
from mmsearch.clients.priority import Priority
from mmsearch.indexer.batch import REASON, dead_letter
from mmsearch.indexer.embedding import EmbedScheduler
from mmsearch.indexer.pdf import DocumentRejected, Line, ParsedDocument, ParsedPage
from mmsearch.indexer.pdfworker import WorkerLimits, parse_in_worker
from mmsearch.indexer.plan import Pending
from mmsearch.kit.passages import ChunkingPolicy, split_text
from mmsearch.stores.base import BBox, Passage
from mmsearch.v1 import common_pb2, embedder_pb2, events_pb2

log = structlog.get_logger(__name__)
PAGE_SEPARATOR = "\f"
THUMBNAIL_SIDE = 128
OCR_PAGE_TIMEOUT_S = 20.0
MAX_FIGURES_OCR = 64
# A text child the model truncates is halved, at most this many times.
MAX_HALVINGS = 6
# At most this many children per document (every page gives at least its render).
DEFAULT_MAX_CHILDREN = 4096
REJECTION_REASON: dict[str, events_pb2.DeadLetter.Reason.ValueType] = {
    "corrupt": REASON.REASON_CORRUPT_MEDIA,
    "encrypted": REASON.REASON_ENCRYPTED,
    "over_limit": REASON.REASON_OVER_LIMIT,
    "bomb": REASON.REASON_DECOMPRESSION_BOMB,
}


@dataclass(frozen=True)
class DocumentLimits:
    worker: WorkerLimits = field(default_factory=WorkerLimits)
    max_children: int = DEFAULT_MAX_CHILDREN


@dataclass
class Child:
    """One child before embedding: its content for the embedder, and what is stored."""

    content: common_pb2.Content
    passage: Passage  # vector None until embedded


def _union(boxes: Sequence[BBox]) -> BBox | None:
    if not boxes:
        return None
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def passage_box(lines: Sequence[Line], start: int, end: int, page: ParsedPage) -> BBox:
    """The union of the boxes of the lines [start, end) touches (offsets in the page text); the
    whole page when the lines are unknown."""
    box = _union([line.bbox for line in lines if line.start < end and line.end > start])
    return box if box is not None else (0.0, 0.0, page.width, page.height)


def ocr_text(
    result: embedder_pb2.ExtractedText, scale: float, min_confidence: float
) -> tuple[str, list[Line]]:
    """A scanned page's text (lines in reading order) and the lines' boxes in points."""
    text = ""
    lines: list[Line] = []
    for block in result.blocks:
        if block.confidence < min_confidence or not block.text.strip():
            continue
        if text:
            text += "\n"
        x, y, w, h = [*block.box, 0, 0, 0, 0][:4]
        box = (x / scale, y / scale, (x + w) / scale, (y + h) / scale)
        lines.append(Line(len(text), len(text) + len(block.text), box))
        text += block.text
    return text, lines


def thumbnail(jpeg: bytes) -> bytes:
    image = Image.open(io.BytesIO(jpeg))
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=70)
    return out.getvalue()


def children(document: ParsedDocument, policy: ChunkingPolicy) -> tuple[str, list[Child]]:
    """The document text and its children in page order: per page its text passages, then its
    tables, figures and the page itself."""
    parts: list[str] = []
    out: list[Child] = []
    offset = 0
    for page in document.pages:
        size = (page.width, page.height)
        for passage in split_text(page.text, policy) if page.text.strip() else []:
            box = passage_box(page.lines, passage.start, passage.end, page)
            out.append(
                Child(
                    common_pb2.Content(text=passage.text),
                    Passage(
                        offset + passage.start, offset + passage.end, passage.text, None,
                        kind="text", page=page.number, bbox=box, page_size=size,
                    ),
                )
            )  # fmt: skip
        for region in sorted(page.regions, key=lambda r: ("table", "figure", "page").index(r.kind)):
            out.append(
                Child(
                    common_pb2.Content(image=common_pb2.Media(data=region.jpeg, mime_type="image/jpeg")),
                    Passage(
                        offset, offset, region.text, None, kind=region.kind, page=page.number,
                        bbox=region.bbox, page_size=size, image_jpeg=region.jpeg,
                    ),
                )
            )  # fmt: skip
        parts.append(page.text)
        offset += len(page.text) + len(PAGE_SEPARATOR)
    return PAGE_SEPARATOR.join(parts), out


@dataclass
class Prepared:
    """A document ready to store (or the dead letter saying why not)."""

    pending: Pending
    text: str = ""
    children: list[Child] | None = None
    thumbnail: bytes = b""
    content_sha256: str = ""
    title: str = ""
    letter: events_pb2.DeadLetter | None = None


class DocumentPreparer:
    """Parse (worker), OCR the scans (the embedder), and cut the document into children."""

    def __init__(self, ocr: OcrPort, limits: DocumentLimits, ocr_min_confidence: float) -> None:
        self._ocr = ocr
        self._limits = limits
        self._min_confidence = ocr_min_confidence

    async def prepare(self, pending: Pending) -> Prepared:
        data = pending.event.event.content.document.data
        out = Prepared(pending, content_sha256=hashlib.sha256(data).hexdigest())
        try:
            document = await parse_in_worker(data, self._limits.worker)
        except DocumentRejected as exc:
            out.letter = dead_letter(pending.record, REJECTION_REASON[exc.reason], exc.detail)
            log.info(
                "document_rejected", item_id=pending.event.event.item_id, reason=exc.reason, detail=exc.detail
            )
            return out
        await self._read_scans(document)
        await self._read_figures(document)
        policy = pending.space.chunking
        out.text, out.children = children(document, policy)
        if len(out.children) > self._limits.max_children:
            out.letter = dead_letter(
                pending.record,
                REASON.REASON_OVER_LIMIT,
                f"document has {len(out.children)} children, over the limit {self._limits.max_children}",
            )
            return out
        first_page = next((c.passage.image_jpeg for c in out.children if c.passage.kind == "page"), b"")
        out.thumbnail = thumbnail(first_page) if first_page else b""
        out.title = pending.event.event.metadata.title or document.title
        return out

    async def _read(self, image: common_pb2.Media, page: int) -> embedder_pb2.ExtractedText | None:
        """One image's OCR, best effort: None when OCR refuses it or cannot finish in time. A down
        embedder raises (the batch is retried)."""
        try:
            found = await self._ocr.extract_text([image], timeout_s=OCR_PAGE_TIMEOUT_S, priority="bulk")
        except (InputRejected, DependencyDeadline, RequestTooLarge) as exc:
            log.warning("document_ocr_skipped", page=page, error=exc.detail)
            return None
        return found[0]

    async def _read_scans(self, document: ParsedDocument) -> None:
        """OCR text (and line boxes) for the pages without a text layer, one page per call."""
        for page in document.pages:
            if not page.scan_png:
                continue
            found = await self._read(common_pb2.Media(data=page.scan_png, mime_type="image/png"), page.number)
            if found is not None:
                page.text, page.lines = ocr_text(found, page.scan_scale, self._min_confidence)

    async def _read_figures(self, document: ParsedDocument) -> None:
        """A figure's words (a chart's labels and values) join its caption as its BM25 text, for
        the first MAX_FIGURES_OCR figures of a document (the image itself is the evidence)."""
        figures = [(p, r) for p in document.pages for r in p.regions if r.kind == "figure"]
        for page, region in figures[:MAX_FIGURES_OCR]:
            found = await self._read(common_pb2.Media(data=region.jpeg, mime_type="image/jpeg"), page.number)
            if found is None:
                continue
            words, _ = ocr_text(found, 1.0, self._min_confidence)
            region.text = "\n".join(part for part in (region.text, words.replace("\n", " ")) if part)


class OcrPort(Protocol):
    """The embedder's OCR (mmsearch.clients.embedder.EmbedderClient.extract_text)."""

    async def extract_text(
        self,
        images: Sequence[common_pb2.Media],
        timeout_s: float | None = None,
        *,
        priority: Priority = "interactive",
    ) -> list[embedder_pb2.ExtractedText]: ...


async def embed_children(
    scheduler: EmbedScheduler, space_id: str, prepared: Prepared
) -> tuple[list[Passage], list[str]]:
    """Every child embedded; a child the embedder refuses is left out (logged, returned as a
    reason); a text child the model truncated is split in halves until it fits."""
    assert prepared.children is not None
    pending = list(prepared.children)
    done: list[Passage] = []
    problems: list[str] = []
    for _ in range(MAX_HALVINGS + 1):
        if not pending:
            break
        embedded = await scheduler.embed(space_id, [c.content for c in pending])
        again: list[Child] = []
        for i, child in enumerate(pending):
            refusal = embedded.refused.get(i)
            if refusal is not None:
                problems.append(f"page {child.passage.page} {child.passage.kind}: {refusal.detail}")
                continue
            embedding = embedded.vectors[i]
            if embedding.truncated and child.passage.kind == "text" and len(child.passage.text) > 1:
                again += _halves(child)  # only these go again
                continue
            done.append(_with_vector(child.passage, np.asarray(embedding.vector.values, dtype=np.float32)))
        pending = again
    problems += [
        f"page {c.passage.page} text: still truncated after {MAX_HALVINGS} halvings" for c in pending
    ]
    ready = sorted(done, key=lambda p: (p.page, _rank(p), p.start))
    return ready, problems


def _rank(passage: Passage) -> int:
    return ("text", "table", "figure", "page").index(passage.kind)


def _halves(child: Child) -> list[Child]:
    p = child.passage
    half = max(1, len(p.text) // 2)
    out = []
    for start, text in ((p.start, p.text[:half]), (p.start + half, p.text[half:])):
        passage = Passage(
            start, start + len(text), text, None, kind="text", page=p.page, bbox=p.bbox, page_size=p.page_size
        )
        out.append(Child(common_pb2.Content(text=text), passage))
    return out


def _with_vector(passage: Passage, vector: np.ndarray) -> Passage:
    return Passage(
        passage.start, passage.end, passage.text, vector, passage.tokens, passage.kind,
        passage.page, passage.bbox, passage.page_size, passage.image_jpeg,
    )  # fmt: skip
