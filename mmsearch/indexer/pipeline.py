"""One batch of Kafka records -> store writes and dead letters, with an
exactly-once effect.

For each record: decode and validate (else dead-letter), resolve its space,
keep only the newest event per item in the batch, compare with what the store
holds (an event not newer than the stored one, by (version, event_time), is a
duplicate and changes nothing), embed the upserts (and OCR images), then write
items and tombstones. A dependency failure raises DependencyDown: the caller
commits nothing and retries the same records later, so nothing is lost and a
replay changes nothing.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import numpy as np
from PIL import Image

from mmsearch.indexer.events import IndexEvent, Rejection, decode
from mmsearch.indexer.metrics import IndexerMetrics
from mmsearch.kit.errors import ServiceError
from mmsearch.kit.media import ImageLimits, decode_image
from mmsearch.stores.base import Collection, ItemRecord, StoreUnavailable, VectorStore, collection_name
from mmsearch.v1 import common_pb2, embedder_pb2, events_pb2

SNIPPET_CHARS = 300
OCR_CHUNK = 8
THUMBNAIL_SIDE = 128
THUMBNAIL_MAX_BYTES = 16 * 1024
DEFAULT_SPACE_FOR = {"text": "default", "image": "default", "audio": "audio"}
REASON = events_pb2.DeadLetter


class DependencyDown(Exception):
    """The embedder or the store is unavailable: retry the whole batch later."""


class ItemRejected(Exception):
    """The embedder refused one item (corrupt media, over a limit)."""

    def __init__(self, index: int, reason: events_pb2.DeadLetter.Reason.ValueType, detail: str) -> None:
        super().__init__(detail)
        self.index = index
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SpaceInfo:
    id: str
    dimension: int
    modalities: frozenset[str]


class EmbedderPort(Protocol):
    async def resolve_space(self, name: str) -> SpaceInfo | None:
        """The space a name or alias points at in the embedder's registry, or None."""

    async def all_spaces(self) -> list[SpaceInfo]: ...

    async def embed(self, space: str, items: Sequence[common_pb2.Content]) -> list[embedder_pb2.Embedding]:
        """Raises ItemRejected for a bad item, DependencyDown when unavailable."""

    async def extract_text(self, images: Sequence[common_pb2.Media]) -> list[str]: ...


@dataclass(frozen=True)
class Record:
    """A Kafka record as the pipeline sees it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int = 0


@dataclass
class BatchResult:
    dead_letters: list[events_pb2.DeadLetter] = field(default_factory=list)
    indexed: int = 0
    deleted: int = 0
    duplicates: int = 0
    # (space id, event time) of each applied event, for freshness.
    applied: list[tuple[str, datetime]] = field(default_factory=list)


def dead_letter(
    record: Record, reason: events_pb2.DeadLetter.Reason.ValueType, detail: str
) -> events_pb2.DeadLetter:
    letter = events_pb2.DeadLetter(
        reason=reason,
        detail=detail,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        original_key=record.key or b"",
        original_value=record.value or b"",
        original_headers=[events_pb2.RecordHeader(key=k, value=v) for k, v in record.headers],
    )
    letter.dead_lettered_at.FromDatetime(datetime.now(UTC))
    return letter


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


@dataclass
class Pending:
    record: Record
    event: IndexEvent
    space: SpaceInfo


class Pipeline:
    def __init__(
        self,
        embedder: EmbedderPort,
        store: VectorStore,
        metrics: IndexerMetrics,
        *,
        redirect: tuple[str, SpaceInfo] | None = None,
    ) -> None:
        """`redirect` = (source space id, target space): a re-embed job's pipeline,
        which writes the source space's events into the target space only."""
        self._embedder = embedder
        self._store = store
        self._metrics = metrics
        self._redirect = redirect
        self._collections: set[str] = set()
        from mmsearch.clients.spaces import SpaceResolver  # resolver imports this module

        self._spaces = SpaceResolver(embedder, store)

    async def process(self, records: Sequence[Record]) -> BatchResult:
        result = BatchResult()
        newest: dict[tuple[str, str, str], Pending] = {}
        # Each space name is resolved once per batch (an alias lookup in the store),
        # not once per record.
        resolved: dict[str, SpaceInfo | None] = {}
        for record in records:
            decoded = decode(record.value, record.headers)
            if isinstance(decoded, Rejection):
                result.dead_letters.append(dead_letter(record, decoded.reason, decoded.detail))
                continue
            spaces = await self._spaces_for(decoded, resolved)
            if isinstance(spaces, Rejection):
                result.dead_letters.append(dead_letter(record, spaces.reason, spaces.detail))
                continue
            for space in spaces:
                key = (space.id, decoded.event.tenant, decoded.event.item_id)
                current = newest.get(key)
                if current is None or decoded.order > current.event.order:
                    if current is not None:
                        result.duplicates += 1
                    newest[key] = Pending(record, decoded, space)
                else:
                    result.duplicates += 1

        by_group: dict[tuple[str, str], list[Pending]] = {}
        for (space_id, tenant, _), pending in newest.items():
            by_group.setdefault((space_id, tenant), []).append(pending)
        for (space_id, tenant), group in by_group.items():
            await self._apply(space_id, tenant, group, result)
        return result

    async def _spaces_for(
        self, event: IndexEvent, resolved: dict[str, SpaceInfo | None]
    ) -> list[SpaceInfo] | Rejection:
        """The spaces an event applies to: its own or its modality's default; a
        delete that names neither applies to every default space (the item may be
        in any). A re-embed pipeline keeps only its source space's events."""
        if event.event.space or event.kind:
            names = [event.event.space or DEFAULT_SPACE_FOR[event.kind]]
        else:
            names = sorted(set(DEFAULT_SPACE_FOR.values()))
        spaces: list[SpaceInfo] = []
        for name in names:
            if name not in resolved:
                resolved[name] = await self._spaces.resolve(name)
            space = resolved[name]
            if space is None:
                return Rejection(REASON.REASON_UNKNOWN_SPACE, f"unknown space {name!r}")
            if event.kind and event.kind not in space.modalities:
                return Rejection(
                    REASON.REASON_UNKNOWN_SPACE, f"space {space.id} does not accept {event.kind}"
                )
            spaces.append(space)
        if self._redirect is not None:
            source, target = self._redirect
            return [target for space in spaces if space.id == source]
        return spaces

    async def _collection(self, space: SpaceInfo) -> str:
        name = collection_name(space.id)
        if name not in self._collections:
            try:
                await self._store.ensure_collection(Collection(name, space.id, space.dimension))
            except StoreUnavailable as exc:
                raise DependencyDown(f"store: {exc}") from exc
            self._collections.add(name)
        return name

    async def _apply(self, space_id: str, tenant: str, group: list[Pending], result: BatchResult) -> None:
        collection = await self._collection(group[0].space)
        try:
            stored = await self._store.states(collection, tenant, [p.event.event.item_id for p in group])
        except StoreUnavailable as exc:
            raise DependencyDown(f"store: {exc}") from exc
        fresh = []
        for pending in group:
            state = stored.get(pending.event.event.item_id)
            if state is not None and pending.event.order <= (state.version, state.event_time):
                result.duplicates += 1
            else:
                fresh.append(pending)
        deletes = [p for p in fresh if p.event.is_delete]
        upserts = [p for p in fresh if not p.event.is_delete]
        records = [self._tombstone(p) for p in deletes]
        records += await self._embed_upserts(space_id, upserts, result)
        if not records:
            return
        started = time.perf_counter()
        try:
            await self._store.write(collection, records)
        except StoreUnavailable as exc:
            raise DependencyDown(f"store: {exc}") from exc
        self._metrics.store_write_seconds.observe(time.perf_counter() - started)
        for record in records:
            result.applied.append((space_id, record.event_time))
            if record.deleted:
                result.deleted += 1
            else:
                result.indexed += 1

    @staticmethod
    def _tombstone(pending: Pending) -> ItemRecord:
        event = pending.event.event
        return ItemRecord(
            tenant=event.tenant,
            item_id=event.item_id,
            modality="",
            vector=None,
            version=event.version,
            event_time=pending.event.event_time,
            content_sha256="",
            deleted=True,
        )

    async def _embed_upserts(
        self, space_id: str, upserts: list[Pending], result: BatchResult
    ) -> list[ItemRecord]:
        """Embed all upserts of one space; an item the embedder refuses is
        dead-lettered and the rest are sent again."""
        remaining = list(upserts)
        while remaining:
            try:
                embeddings = await self._embedder.embed(space_id, [p.event.event.content for p in remaining])
            except ItemRejected as rejected:
                bad = remaining.pop(rejected.index)
                result.dead_letters.append(dead_letter(bad.record, rejected.reason, rejected.detail))
                continue
            images = [p for p in remaining if p.event.kind == "image"]
            texts = await self._ocr(images)
            # Decoding and resizing are CPU work: off the event loop, which also serves searches.
            thumbnails = dict(
                zip(
                    (id(p) for p in images),
                    await asyncio.gather(
                        *(asyncio.to_thread(thumbnail, p.event.event.content.image.data) for p in images)
                    ),
                    strict=True,
                )
            )
            return [
                self._item(p, e, texts.get(id(p), ""), thumbnails.get(id(p), b""))
                for p, e in zip(remaining, embeddings, strict=True)
            ]
        return []

    async def _ocr(self, images: list[Pending]) -> dict[int, str]:
        """OCR in small sequential chunks: OCR costs ~0.2 s per image on CPU, and a
        whole batch of images in one call would outlast the model-server deadline
        (each call's images share it), failing the same way on every retry."""
        texts: dict[int, str] = {}
        for start in range(0, len(images), OCR_CHUNK):
            chunk = images[start : start + OCR_CHUNK]
            found = await self._embedder.extract_text([p.event.event.content.image for p in chunk])
            texts.update({id(p): text for p, text in zip(chunk, found, strict=True)})
        return texts

    @staticmethod
    def _item(pending: Pending, embedding: embedder_pb2.Embedding, ocr_text: str, thumb: bytes) -> ItemRecord:
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
            created_at=metadata.created_at.ToDatetime(tzinfo=UTC)
            if metadata.HasField("created_at")
            else None,
            attributes=attributes,
            snippet=content_text[:SNIPPET_CHARS],
            thumbnail_jpeg=thumb,
        )
