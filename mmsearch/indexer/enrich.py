"""Stage 2, enrich: turn the upserts of one space into stored records: embed
them (an item the embedder refuses is dead-lettered and the rest are sent
again), read the text in images (OCR, best effort), make thumbnails.

Dependency failures (mmsearch/clients/errors.py) propagate: the consumer
pauses and replays the whole batch, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Protocol

import numpy as np
from PIL import Image

from mmsearch.clients.errors import InputRejected, RejectionKind
from mmsearch.clients.priority import Priority
from mmsearch.indexer.batch import REASON, dead_letter
from mmsearch.indexer.plan import Pending
from mmsearch.kit.errors import ServiceError
from mmsearch.kit.media import ImageLimits, decode_image
from mmsearch.stores.base import ItemRecord
from mmsearch.v1 import common_pb2, embedder_pb2, events_pb2

SNIPPET_CHARS = 300
OCR_CHUNK = 8
THUMBNAIL_SIDE = 128
THUMBNAIL_MAX_BYTES = 16 * 1024
# OCR lines kept for BM25: confident, and more than a stray character or two (on
# photos the detector reads texture as "A", "1", "T", which would match every query's "a").
OCR_MIN_CONFIDENCE = 0.8
OCR_MIN_ALNUM = 3
DLQ_REASON: dict[RejectionKind, events_pb2.DeadLetter.Reason.ValueType] = {
    "invalid": REASON.REASON_INVALID_EVENT,
    "corrupt_media": REASON.REASON_CORRUPT_MEDIA,
    "over_limit": REASON.REASON_OVER_LIMIT,
}


class EmbedderPort(Protocol):
    """What enrichment needs of the embedder (mmsearch.clients.embedder.EmbedderClient)."""

    async def embed(
        self,
        space: str,
        items: Sequence[common_pb2.Content],
        timeout_s: float | None = None,
        *,
        priority: Priority = "interactive",
    ) -> embedder_pb2.EmbedResponse:
        """Raises InputRejected for a bad item, DependencyDown when unavailable."""

    async def extract_text(
        self,
        images: Sequence[common_pb2.Media],
        timeout_s: float | None = None,
        *,
        priority: Priority = "interactive",
    ) -> list[embedder_pb2.ExtractedText]: ...


@dataclass
class Enriched:
    records: list[ItemRecord] = field(default_factory=list)
    dead_letters: list[events_pb2.DeadLetter] = field(default_factory=list)


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
        image = decode_image(data, "", ImageLimits(1 << 30, 1 << 30), "thumbnail", min_side=THUMBNAIL_SIDE)
    except ServiceError:
        return b""
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    for quality in (80, 60, 40):
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=quality)
        if out.tell() <= THUMBNAIL_MAX_BYTES:
            return out.getvalue()
    return b""


class Enricher:
    def __init__(self, embedder: EmbedderPort) -> None:
        self._embedder = embedder

    async def enrich(self, space_id: str, upserts: Sequence[Pending]) -> Enriched:
        out = Enriched()
        remaining = list(upserts)
        while remaining:
            try:
                response = await self._embedder.embed(
                    space_id, [p.event.event.content for p in remaining], priority="bulk"
                )
            except InputRejected as rejected:
                bad = remaining.pop(rejected.index)
                out.dead_letters.append(dead_letter(bad.record, DLQ_REASON[rejected.kind], rejected.detail))
                continue
            images = [p for p in remaining if p.event.kind == "image"]
            texts = await self._ocr(images)
            # Decoding and resizing are CPU work: off the event loop, which also serves searches.
            thumbs = await asyncio.gather(
                *(asyncio.to_thread(thumbnail, p.event.event.content.image.data) for p in images)
            )
            by_image = dict(zip((id(p) for p in images), thumbs, strict=True))
            out.records = [
                item_record(p, e, texts.get(id(p), ""), by_image.get(id(p), b""))
                for p, e in zip(remaining, response.embeddings, strict=True)
            ]
            break
        return out

    async def _ocr(self, images: list[Pending]) -> dict[int, str]:
        """OCR in small sequential chunks: OCR costs ~0.2 s per image on CPU, and a
        whole batch of images in one call would outlast the model-server deadline
        (each call's images share it), failing the same way on every retry."""
        texts: dict[int, str] = {}
        for start in range(0, len(images), OCR_CHUNK):
            chunk = images[start : start + OCR_CHUNK]
            try:
                found = await self._embedder.extract_text(
                    [p.event.event.content.image for p in chunk], priority="bulk"
                )
            except InputRejected:
                continue  # the images themselves were embedded; OCR text is best effort
            texts.update({id(p): searchable_text(r) for p, r in zip(chunk, found, strict=True)})
        return texts


def item_record(
    pending: Pending, embedding: embedder_pb2.Embedding, ocr_text: str, thumb: bytes
) -> ItemRecord:
    event = pending.event.event
    metadata = event.metadata
    content_text = event.content.text if pending.event.kind == "text" else ocr_text
    body = "\n".join(part for part in (metadata.title, content_text) if part)
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
        content_sha256=embedding.content_sha256,
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
    )
