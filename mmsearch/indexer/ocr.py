"""The enrichment stage: OCR text for images, off the path that makes them searchable.

The live pipeline writes an image searchable by its vector at once and, before
committing its offsets, republishes the image's original record to the
enrichment topic (MMSEARCH_ENRICH_TOPIC), keyed like the original and tagged
with the space it was written to. This stage consumes that topic with its own
consumer group, through the same consumer (pause, retry, isolate, dead-letter,
commit after the effect is durable), reads the text (bulk priority) and sets
it as the item's BM25 text and snippet, only while the stored item is still
the version the task describes.

Nothing is lost: a task is published before the content offsets are committed
and committed here only after the text is stored; a crash repeats a task, and
setting the same text again changes nothing. Nothing goes stale: tasks for one
item share a partition, in order, and a task whose version is no longer stored
is skipped (the newer version's own task follows).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from mmsearch.clients.errors import DependencyDown
from mmsearch.indexer.batch import REASON, BatchResult, Record, dead_letter
from mmsearch.indexer.enrich import DLQ_REASON, SNIPPET_CHARS, EmbedderPort, read_text
from mmsearch.indexer.events import IndexEvent, Rejection, decode, header
from mmsearch.indexer.metrics import IndexerMetrics
from mmsearch.indexer.write import DEPENDENCY
from mmsearch.stores.base import StoreUnavailable, VectorStore, collection_name

SPACE_HEADER = "mmsearch-space"


class Processor(Protocol):
    """A pipeline for document tasks (mmsearch.indexer.pipeline.Pipeline)."""

    async def process(self, records: Sequence[Record]) -> BatchResult: ...


def task_headers(record: Record, space_id: str) -> list[tuple[str, bytes]]:
    """The original headers (content type, trace context) plus the space written to."""
    kept = [(k, v) for k, v in record.headers if k.lower() != SPACE_HEADER]
    return [*kept, (SPACE_HEADER, space_id.encode())]


class OcrStage:
    def __init__(
        self,
        embedder: EmbedderPort,
        store: VectorStore,
        metrics: IndexerMetrics,
        *,
        documents: Processor | None = None,
    ) -> None:
        """Its consumer holds while the live consumer has lag (IndexerConsumer `hold`), so OCR
        leaves the cores to the work that makes items searchable. `documents`: the pipeline that
        processes document tasks whole (parse, OCR, embed, write; mmsearch/indexer/document.py);
        without it a document task is dead-lettered."""
        self._documents = documents
        self._embedder = embedder
        self._store = store
        self._metrics = metrics

    async def process(self, records: Sequence[Record]) -> BatchResult:
        result = BatchResult()
        tasks: list[tuple[Record, IndexEvent, str]] = []
        documents: list[Record] = []
        for record in records:
            decoded = decode(record.value, record.headers)
            space = header(record.headers, SPACE_HEADER)
            if (
                self._documents is not None
                and not isinstance(decoded, Rejection)
                and decoded.kind == "document"
            ):
                documents.append(record)
                continue
            if isinstance(decoded, Rejection) or decoded.kind != "image" or "@" not in space:
                detail = (
                    decoded.detail if isinstance(decoded, Rejection) else "not an image task with a space"
                )
                result.dead_letters.append(
                    dead_letter(record, REASON.REASON_INVALID_EVENT, f"enrichment: {detail}")
                )
                continue
            tasks.append((record, decoded, space))
        if documents:
            assert self._documents is not None
            result.merge(await self._documents.process(documents))
        if not tasks:
            return result
        read = await read_text(self._embedder, [event.event.content.image for _, event, _ in tasks])
        for i, ((record, event, space), text) in enumerate(zip(tasks, read.texts, strict=True)):
            if i in read.failed:
                # Visible and replayable, not an empty text that looks like "no text in it".
                kind, detail = read.failed[i]
                reason = DLQ_REASON[kind] if kind else REASON.REASON_UNPROCESSABLE
                result.dead_letters.append(dead_letter(record, reason, f"enrichment (OCR): {detail}"))
                continue
            if await self._set(event, space, text):
                result.indexed += 1
                self._metrics.ocr_freshness_seconds.labels(space).observe(
                    max(0.0, (datetime.now(UTC) - event.event_time).total_seconds())
                )
            else:
                result.duplicates += 1
        return result

    async def _set(self, event: IndexEvent, space: str, text: str) -> bool:
        item = event.event
        body = "\n".join(part for part in (item.metadata.title, text) if part)
        collection = collection_name(space)
        started = time.perf_counter()
        try:
            current = (await self._store.states(collection, item.tenant, [item.item_id])).get(item.item_id)
            if current is None or (current.version, current.event_time) != event.order:
                return False  # a newer write (or a delete) won: its own task follows
            done = await self._store.set_text(
                collection, item.tenant, item.item_id, current, text=body, snippet=text[:SNIPPET_CHARS]
            )
        except StoreUnavailable as exc:
            raise DependencyDown(DEPENDENCY, str(exc)) from exc
        self._metrics.store_write_seconds.observe(time.perf_counter() - started)
        return done
