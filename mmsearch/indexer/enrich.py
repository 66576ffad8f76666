"""Stage 2, enrich: turn the upserts of one space into stored records: split
texts into passages with the space's chunking policy (mmsearch/kit/passages.py;
an item over the policy's limits is dead-lettered, never truncated), embed
every passage (an item the embedder refuses is dead-lettered and the rest are
sent again; a passage the model truncated is split further and embedded again,
so no text is cut), read the text in images (OCR, best effort), make thumbnails,
and, when a reranker with stored vectors is configured, encode each passage's
token vectors for late-interaction reranking (best effort: an item stored
without them is reranked on the fly, see `TokenEncoder`).

Dependency failures (mmsearch/clients/errors.py) propagate: the consumer
pauses and replays the whole batch, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Protocol

import numpy as np
import structlog
from PIL import Image

from mmsearch.clients.errors import (
    DependencyDeadline,
    DependencyError,
    InputRejected,
    RejectionKind,
    RequestTooLarge,
)
from mmsearch.clients.priority import Priority
from mmsearch.clients.reranker import NoDocumentVectors
from mmsearch.indexer.batch import REASON, dead_letter
from mmsearch.indexer.document import DocumentLimits, DocumentPreparer, Prepared, embed_children
from mmsearch.indexer.embedding import Embedder, EmbedScheduler, Refusal, WorkBudget
from mmsearch.indexer.metrics import IndexerMetrics
from mmsearch.indexer.plan import Pending
from mmsearch.kit.errors import ServiceError
from mmsearch.kit.media import ImageLimits, decode_image
from mmsearch.kit.passages import ChunkingPolicy, TextPassage, over_limit, split_text, too_many_passages
from mmsearch.stores.base import ItemRecord, Passage
from mmsearch.v1 import common_pb2, embedder_pb2, events_pb2, reranker_pb2

SNIPPET_CHARS = 300
# How often a passage the model truncated is split again before the item is dead-lettered
# (each split halves the token budget; 6 halvings take 200 estimated tokens to 3).
MAX_RESPLITS = 6
OCR_CHUNK = 8
OCR_BASE_TIMEOUT_S = 2.0
OCR_SECONDS_PER_IMAGE = 2.0
# One image's last try: generous, so only a pathological image (not a busy machine) fails.
OCR_MAX_TIMEOUT_S = 60.0
THUMBNAIL_SIDE = 128
THUMBNAIL_MAX_BYTES = 16 * 1024
# The embedder refuses larger images before a thumbnail is made; these bound the
# decode here even so. Thumbnails decode two at a time (a photo decodes to ~100 MB).
THUMBNAIL_LIMITS = ImageLimits(max_bytes=64 << 20, max_pixels=50_000_000)
THUMBNAIL_CONCURRENCY = 2
# OCR lines kept for BM25: confident, and more than a stray character or two (on
# photos the detector reads texture as "A", "1", "T", which would match every query's "a").
OCR_MIN_CONFIDENCE = 0.8
OCR_MIN_ALNUM = 3
log = structlog.get_logger(__name__)
DLQ_REASON: dict[RejectionKind, events_pb2.DeadLetter.Reason.ValueType] = {
    "invalid": REASON.REASON_INVALID_EVENT,
    "corrupt_media": REASON.REASON_CORRUPT_MEDIA,
    "over_limit": REASON.REASON_OVER_LIMIT,
}


class EmbedderPort(Embedder, Protocol):
    """What enrichment needs of the embedder (mmsearch.clients.embedder.EmbedderClient):
    `embed` (through the scheduler) and OCR."""

    async def extract_text(
        self,
        images: Sequence[common_pb2.Media],
        timeout_s: float | None = None,
        *,
        priority: Priority = "interactive",
    ) -> list[embedder_pb2.ExtractedText]: ...


class RerankerPort(Protocol):
    """What enrichment needs of the reranker (mmsearch.clients.reranker.RerankerClient)."""

    async def encode_documents(
        self, texts: list[str], timeout_s: float, model: str = ""
    ) -> reranker_pb2.EncodeDocumentsResponse: ...


# Passages per EncodeDocuments call (an answer is ~60-100 KB per passage in int8), its deadline,
# and how long encoding is skipped after a failure (so a reranker outage costs ingest one timeout,
# not one per batch).
ENCODE_CHUNK = 32
ENCODE_BASE_TIMEOUT_S = 5.0
ENCODE_SECONDS_PER_TEXT = 0.5
ENCODE_BACKOFF_S = 30.0


class TokenEncoder:
    """Stored late-interaction vectors for passages, best effort. The reranker model's token
    vectors are not needed to index or find an item, only to rerank it cheaply: when the
    reranker fails, the item is stored without them (reranked on the fly, as items indexed
    before this existed) and encoding pauses for ENCODE_BACKOFF_S; a model without document
    vectors (a cross-encoder) turns encoding off for the process."""

    def __init__(self, reranker: RerankerPort, metrics: IndexerMetrics | None = None) -> None:
        self._reranker = reranker
        self._metrics = metrics
        self._off_until = 0.0
        self.disabled = False

    async def encode(self, texts: list[str]) -> list[bytes]:
        """One blob per text (b"" where none could be made)."""
        out = [b""] * len(texts)
        if self.disabled or time.monotonic() < self._off_until or not texts:
            return out
        for start in range(0, len(texts), ENCODE_CHUNK):
            chunk = texts[start : start + ENCODE_CHUNK]
            timeout_s = ENCODE_BASE_TIMEOUT_S + ENCODE_SECONDS_PER_TEXT * len(chunk)
            try:
                response = await self._reranker.encode_documents(chunk, timeout_s)
            except NoDocumentVectors as exc:
                self.disabled = True
                log.info("rerank_vectors_off", reason=exc.detail)
                return out
            except DependencyError as exc:
                self._off_until = time.monotonic() + ENCODE_BACKOFF_S
                log.warning("rerank_vectors_skipped", error=exc.detail, pause_s=ENCODE_BACKOFF_S)
                return out
            if len(response.token_vectors) != len(chunk):
                log.warning("rerank_vectors_mismatch", got=len(response.token_vectors), want=len(chunk))
                return out
            out[start : start + len(chunk)] = list(response.token_vectors)
            if self._metrics is not None:
                self._metrics.rerank_vector_bytes.inc(response.total_bytes)
                self._metrics.rerank_vectors.labels("reranker").inc(
                    sum(1 for b in response.token_vectors if b)
                )
        return out

    async def attach(self, records: list[ItemRecord]) -> list[ItemRecord]:
        """`records` with each text passage's stored token vectors (where they could be made);
        passages that already have them (from the embedding pass) are not encoded again, and a
        document's visual children are not reranked."""
        texts = [p.text for r in records for p in r.passages if _rerankable(p) and not p.tokens]
        if not texts:
            return records
        blobs = iter(await self.encode(texts))
        return [
            dataclasses.replace(
                r,
                passages=tuple(
                    dataclasses.replace(p, tokens=next(blobs)) if _rerankable(p) and not p.tokens else p
                    for p in r.passages
                ),
            )
            if r.passages
            else r
            for r in records
        ]


def _rerankable(passage: Passage) -> bool:
    return passage.kind == "text" and bool(passage.text.strip())


@dataclass
class Enriched:
    records: list[ItemRecord] = field(default_factory=list)
    dead_letters: list[events_pb2.DeadLetter] = field(default_factory=list)
    # Images written without their OCR text: the enrichment stage reads it (mmsearch/indexer/ocr.py).
    ocr_deferred: list[Pending] = field(default_factory=list)
    # Documents left to the enrichment stage whole (mmsearch/indexer/document.py).
    documents_deferred: list[Pending] = field(default_factory=list)


def searchable_text(result: embedder_pb2.ExtractedText) -> str:
    lines = [
        block.text
        for block in result.blocks
        if block.confidence >= OCR_MIN_CONFIDENCE and sum(c.isalnum() for c in block.text) >= OCR_MIN_ALNUM
    ]
    return "\n".join(lines)


def thumbnail(data: bytes) -> bytes:
    """A small JPEG for result pages (at most THUMBNAIL_MAX_BYTES); empty if the
    bytes do not decode here (the embedder, not this, decides what is corrupt)."""
    try:
        image = decode_image(
            data, "", THUMBNAIL_LIMITS, "thumbnail", min_side=THUMBNAIL_SIDE, max_side=THUMBNAIL_SIDE
        )
    except ServiceError:
        return b""
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    for quality in (80, 60, 40):
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=quality)
        if out.tell() <= THUMBNAIL_MAX_BYTES:
            return out.getvalue()
    return b""


@dataclass
class _Parts:
    """What one upsert sends to the embedder: its passages (text) or its content (else)."""

    pending: Pending
    passages: list[TextPassage] | None  # None: the content itself, one embedding
    policy: ChunkingPolicy | None = None
    resplits: int = 0

    def contents(self) -> list[common_pb2.Content]:
        if self.passages is None:
            return [self.pending.event.event.content]
        return [common_pb2.Content(text=p.text) for p in self.passages]


def resplit(passages: list[TextPassage], truncated: set[int], policy: ChunkingPolicy) -> list[TextPassage]:
    """Replace each truncated passage by its own split under `policy`, offsets kept in the text."""
    out: list[TextPassage] = []
    for i, passage in enumerate(passages):
        parts = split_text(passage.text, policy) if i in truncated else [passage]
        if i in truncated and len(parts) == 1:  # cannot be split by sentences or words: halve it
            half = max(1, len(passage.text) // 2)
            parts = [
                TextPassage(0, 0, half, passage.text[:half]),
                TextPassage(1, half, len(passage.text), passage.text[half:]),
            ]
        offset = passage.start if i in truncated else 0
        out += [TextPassage(0, offset + p.start, offset + p.end, p.text) for p in parts]
    return [TextPassage(i, p.start, p.end, p.text) for i, p in enumerate(out)]


class Enricher:
    def __init__(
        self,
        embedder: EmbedderPort,
        budget: WorkBudget | None = None,
        metrics: IndexerMetrics | None = None,
        tokens: TokenEncoder | None = None,
        *,
        ocr_inline: bool = True,
        documents: DocumentPreparer | None = None,
    ) -> None:
        """`ocr_inline=False`: images are written searchable by their vector at once and
        listed in `ocr_deferred`; their OCR text is added later by the enrichment stage, and
        documents are listed in `documents_deferred`, processed whole there.
        `documents`: how documents are parsed (default limits when None)."""
        self._embedder = embedder
        self._documents = documents or DocumentPreparer(embedder, DocumentLimits(), OCR_MIN_CONFIDENCE)
        self._ocr_inline = ocr_inline
        self._tokens = tokens
        # Passages' rerank vectors come from the embedding pass where the text model makes them;
        # `tokens` (the reranker's own encode) fills in for the rest.
        self._scheduler = EmbedScheduler(embedder, budget or WorkBudget(), token_vectors=tokens is not None)
        self._metrics = metrics
        self._decoding = asyncio.Semaphore(THUMBNAIL_CONCURRENCY)

    async def enrich(self, space_id: str, upserts: Sequence[Pending]) -> Enriched:
        out = Enriched()
        documents = [p for p in upserts if p.event.kind == "document"]
        upserts = [p for p in upserts if p.event.kind != "document"]
        if not self._ocr_inline:
            out.documents_deferred = documents
        else:
            for pending in documents:
                record = await self._document(space_id, pending, out)
                if record is not None:
                    out.records.append(record)
        remaining: list[_Parts] = []
        for pending in upserts:
            parts = self._split(pending)
            if isinstance(parts, str):
                out.dead_letters.append(dead_letter(pending.record, REASON.REASON_OVER_LIMIT, parts))
            else:
                remaining.append(parts)
        while remaining:
            remaining, per_item = await self._embed(space_id, remaining, out)
            if self._resplit_truncated(remaining, per_item, out):
                continue  # the embedder's cache answers the unchanged passages again
            out.records += await self._records(remaining, per_item, out)
            break
        if self._tokens is not None and documents and self._ocr_inline:
            docs = [r for r in out.records if r.modality == "document"]
            others = [r for r in out.records if r.modality != "document"]
            out.records = others + await self._tokens.attach(docs)  # a document's text children
        return out

    async def _document(self, space_id: str, pending: Pending, out: Enriched) -> ItemRecord | None:
        """A document's record with every child embedded, or None (dead-lettered)."""
        prepared = await self._documents.prepare(pending)
        if prepared.letter is not None:
            out.dead_letters.append(prepared.letter)
            return None
        passages, problems = await embed_children(self._scheduler, space_id, prepared)
        if not passages:
            detail = "no child of the document could be embedded" + (f": {problems[0]}" if problems else "")
            out.dead_letters.append(dead_letter(pending.record, REASON.REASON_UNPROCESSABLE, detail))
            return None
        if problems:
            log.warning(
                "document_children_skipped", item_id=pending.event.event.item_id, problems=problems[:5]
            )
        return document_record(prepared, passages)

    async def _embed(
        self, space_id: str, remaining: list[_Parts], out: Enriched
    ) -> tuple[list[_Parts], list[list[embedder_pb2.Embedding]]]:
        """Every passage of every item embedded; an item any of whose passages was refused
        is dead-lettered whole and left out."""
        contents = [content for parts in remaining for content in parts.contents()]
        owner = [i for i, parts in enumerate(remaining) for _ in parts.contents()]
        embedded = await self._scheduler.embed(space_id, contents)
        if self._metrics is not None:
            self._metrics.embed_calls.inc(embedded.calls)
            self._metrics.embed_splits.inc(embedded.splits)
        refused: dict[int, Refusal] = {}
        for index, refusal in sorted(embedded.refused.items()):
            refused.setdefault(owner[index], refusal)
        for i, refusal in refused.items():
            reason = DLQ_REASON[refusal.kind] if refusal.kind else REASON.REASON_UNPROCESSABLE
            out.dead_letters.append(dead_letter(remaining[i].pending.record, reason, refusal.detail))
        per_item: list[list[embedder_pb2.Embedding]] = [[] for _ in remaining]
        for index, i in enumerate(owner):
            if i not in refused:
                per_item[i].append(embedded.vectors[index])
        kept = [i for i in range(len(remaining)) if i not in refused]
        return [remaining[i] for i in kept], [per_item[i] for i in kept]

    async def _records(
        self, remaining: list[_Parts], per_item: list[list[embedder_pb2.Embedding]], out: Enriched
    ) -> list[ItemRecord]:
        images = [parts.pending for parts in remaining if parts.pending.event.kind == "image"]
        texts: dict[int, str] = {}
        if self._ocr_inline:
            # Inline (a re-embed replay): best effort, an image without text is still searchable.
            found = await read_text(self._embedder, [p.event.event.content.image for p in images])
            texts = {id(p): text for p, text in zip(images, found.texts, strict=True)}
        else:
            out.ocr_deferred = images
        # Decoding and resizing are CPU work: off the event loop, which also serves searches.
        thumbs = await asyncio.gather(*(self._thumbnail(p.event.event.content.image) for p in images))
        by_image = dict(zip((id(p) for p in images), thumbs, strict=True))
        records = [
            item_record(
                parts.pending,
                embeddings,
                texts.get(id(parts.pending), ""),
                by_image.get(id(parts.pending), b""),
                parts.passages,
            )
            for parts, embeddings in zip(remaining, per_item, strict=True)
        ]
        if self._tokens is not None:
            if self._metrics is not None:
                made = [len(p.tokens) for r in records for p in r.passages if p.tokens]
                self._metrics.rerank_vector_bytes.inc(sum(made))
                self._metrics.rerank_vectors.labels("embedding").inc(len(made))
            records = await self._tokens.attach(records)
        return records

    async def _thumbnail(self, image: common_pb2.Media) -> bytes:
        async with self._decoding:
            return await asyncio.to_thread(thumbnail, image.data)

    @staticmethod
    def _split(pending: Pending) -> _Parts | str:
        """A text's passages under its space's policy, or why the item is over a limit."""
        if pending.event.kind != "text":
            return _Parts(pending, None)
        policy = pending.space.chunking
        text = pending.event.event.content.text
        reason = over_limit(text, policy)
        if reason is not None:
            return reason
        passages = split_text(text, policy)
        if not passages:  # empty text: the embedder refuses it (dead-lettered as invalid)
            return _Parts(pending, None)
        reason = too_many_passages(len(passages), policy)
        return reason if reason is not None else _Parts(pending, passages, policy)

    @staticmethod
    def _resplit_truncated(
        remaining: list[_Parts], per_item: list[list[embedder_pb2.Embedding]], out: Enriched
    ) -> bool:
        """Split every passage the model truncated further (in place); True when any was. An item
        that cannot be split within its limits is dead-lettered (removed from `remaining`)."""
        changed = False
        for i in reversed(range(len(remaining))):
            parts = remaining[i]
            truncated = {j for j, e in enumerate(per_item[i]) if e.truncated}
            if not truncated or parts.passages is None or parts.policy is None:
                continue
            changed = True
            parts.resplits += 1
            parts.policy = parts.policy.halved()
            parts.passages = resplit(parts.passages, truncated, parts.policy)
            space_policy = parts.pending.space.chunking
            reason = too_many_passages(len(parts.passages), space_policy)
            if reason is None and parts.resplits > MAX_RESPLITS:
                reason = f"a passage is still truncated by the model after {MAX_RESPLITS} splits"
            if reason is not None:
                remaining.pop(i)
                out.dead_letters.append(dead_letter(parts.pending.record, REASON.REASON_OVER_LIMIT, reason))
        return changed


@dataclass
class OcrRead:
    """Per image: its searchable text ("" when none was read), and why no text could be
    read for the images in `failed` (index -> (kind, detail); kind None: too slow even alone
    at the generous bound), so a caller decides what a failure means instead of an empty
    text standing for both "no text in the image" and "not read"."""

    texts: list[str]
    failed: dict[int, tuple[RejectionKind | None, str]] = field(default_factory=dict)


async def read_text(embedder: EmbedderPort, images: Sequence[common_pb2.Media]) -> OcrRead:
    """OCR text for BM25, in small sequential chunks, each with a deadline for its images:
    OCR costs ~0.2 s per image on an idle CPU, and a whole batch in one call would outlast any
    fixed deadline. A refused image is taken out of its chunk (its neighbours are read); a chunk
    too slow or too large is read one image at a time; an image too slow alone is tried once
    more with OCR_MAX_TIMEOUT_S (a busy machine is not a bad image) before it is reported
    failed. A down embedder raises (the caller retries)."""
    out = OcrRead([""] * len(images))
    chunks = [list(range(i, min(i + OCR_CHUNK, len(images)))) for i in range(0, len(images), OCR_CHUNK)]
    escalated: set[int] = set()
    while chunks:
        chunk = chunks.pop(0)
        alone = len(chunk) == 1
        timeout_s = OCR_BASE_TIMEOUT_S + OCR_SECONDS_PER_IMAGE * len(chunk)
        if alone and chunk[0] in escalated:
            timeout_s = OCR_MAX_TIMEOUT_S
        try:
            found = await embedder.extract_text(
                [images[i] for i in chunk], timeout_s=timeout_s, priority="bulk"
            )
        except InputRejected as exc:
            if alone or 0 <= exc.index < len(chunk):
                bad = chunk[0] if alone else chunk[exc.index]
                out.failed[bad] = (exc.kind, exc.detail)
                rest = [i for i in chunk if i != bad]
                if rest:
                    chunks.insert(0, rest)
            else:  # names no image: each alone finds which
                chunks[:0] = [[i] for i in chunk]
            continue
        except (DependencyDeadline, RequestTooLarge) as exc:
            if not alone:
                chunks[:0] = [[i] for i in chunk]
            elif isinstance(exc, DependencyDeadline) and chunk[0] not in escalated:
                escalated.add(chunk[0])
                chunks.insert(0, chunk)
            else:
                kind: RejectionKind | None = "over_limit" if isinstance(exc, RequestTooLarge) else None
                out.failed[chunk[0]] = (kind, exc.detail)
                log.warning("ocr_failed", error=exc.detail, image_bytes=len(images[chunk[0]].data))
            continue
        for i, result in zip(chunk, found, strict=True):
            out.texts[i] = searchable_text(result)
    return out


def item_record(
    pending: Pending,
    embeddings: Sequence[embedder_pb2.Embedding],
    ocr_text: str,
    thumb: bytes,
    passages: Sequence[TextPassage] | None = None,
) -> ItemRecord:
    event = pending.event.event
    metadata = event.metadata
    embedding = embeddings[0]
    content_text = event.content.text if pending.event.kind == "text" else ocr_text
    body = "\n".join(part for part in (metadata.title, content_text) if part)
    stored: tuple[Passage, ...] = ()
    content_sha256 = embedding.content_sha256
    if passages is not None:
        stored = tuple(
            Passage(p.start, p.end, p.text, np.asarray(e.vector.values, dtype=np.float32), e.token_vectors)
            for p, e in zip(passages, embeddings, strict=True)
        )
        content_sha256 = hashlib.sha256(event.content.text.encode("utf-8")).hexdigest()
    attributes = {}
    for name, value in metadata.attributes.items():
        which = value.WhichOneof("kind")
        if which == "timestamp_value":
            attributes[name] = value.timestamp_value.ToDatetime(tzinfo=UTC)
        elif which is not None:
            attributes[name] = getattr(value, which)
    return ItemRecord(
        tenant=event.tenant,
        item_id=event.item_id,
        modality=pending.event.kind,
        vector=np.asarray(embedding.vector.values, dtype=np.float32),
        version=event.version,
        event_time=pending.event.event_time,
        content_sha256=content_sha256,
        model_version=f"{embedding.model}/{embedding.model_version}",
        text=body,
        title=metadata.title,
        tags=tuple(metadata.tags),
        source=metadata.source,
        source_uri=metadata.source_uri,
        created_at=metadata.created_at.ToDatetime(tzinfo=UTC) if metadata.HasField("created_at") else None,
        attributes=attributes,
        snippet=content_text[:SNIPPET_CHARS],
        thumbnail_jpeg=thumb,
        passages=stored,
    )


def document_record(prepared: Prepared, passages: Sequence[Passage]) -> ItemRecord:
    """A document item: its fields, and its children as passages (text first, page by page)."""
    pending = prepared.pending
    event = pending.event.event
    metadata = event.metadata
    base = item_record(pending, [embedder_pb2.Embedding()], "", b"", None)
    return dataclasses.replace(
        base,
        modality="document",
        vector=passages[0].vector,
        content_sha256=prepared.content_sha256,
        text="\n".join(part for part in (prepared.title, prepared.text) if part),
        title=metadata.title or prepared.title,
        snippet=prepared.text.strip()[:SNIPPET_CHARS],
        thumbnail_jpeg=prepared.thumbnail,
        passages=tuple(passages),
        model_version="",
    )
