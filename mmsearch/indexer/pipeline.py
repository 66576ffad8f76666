"""One batch of Kafka records -> store writes and dead letters, with an
exactly-once effect, as three stages (in the spirit of arroyo's processing
strategies), each testable alone:

  plan    decode / validate / resolve the space / newest event per item  (plan.py)
  enrich  embed, OCR, thumbnails; refused items dead-lettered             (enrich.py)
  write   skip what the store already has, write items and tombstones     (write.py)

A dependency failure raises a DependencyError: the caller commits nothing and
retries the same records later, so nothing is lost and a replay changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from opentelemetry import trace

from mmsearch.clients.spaces import SpaceInfo
from mmsearch.indexer.batch import BatchResult, Record
from mmsearch.indexer.document import DocumentPreparer
from mmsearch.indexer.embedding import WorkBudget
from mmsearch.indexer.enrich import EmbedderPort, Enricher, TokenEncoder
from mmsearch.indexer.metrics import IndexerMetrics
from mmsearch.indexer.plan import Planner, Resolver
from mmsearch.indexer.write import Writer, tombstone
from mmsearch.kit.signing import ProducerKeys
from mmsearch.stores.base import VectorStore


class Pipeline:
    def __init__(
        self,
        resolver: Resolver,
        embedder: EmbedderPort,
        store: VectorStore,
        metrics: IndexerMetrics,
        *,
        budget: WorkBudget | None = None,
        redirect: tuple[str, SpaceInfo] | None = None,
        ocr_inline: bool = True,
        producers: ProducerKeys | None = None,
        tokens: TokenEncoder | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        documents: DocumentPreparer | None = None,
    ) -> None:
        """`redirect` = (source space id, target space): a re-embed job's pipeline,
        which writes the source space's events into the target space only.
        `ocr_inline=False`: images are written without OCR text and returned as
        `followups` for the enrichment stage (mmsearch/indexer/ocr.py).
        `tokens`: stores each passage's late-interaction vectors for the reranker."""
        self._planner = Planner(resolver, redirect=redirect, producers=producers)
        self._enricher = Enricher(
            embedder, budget, metrics, tokens, ocr_inline=ocr_inline, documents=documents
        )
        self._writer = Writer(store)
        self._metrics = metrics
        self._tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)

    async def process(self, records: Sequence[Record]) -> BatchResult:
        plan = await self._planner.plan(records)
        result = BatchResult(dead_letters=plan.dead_letters, duplicates=plan.duplicates)
        for (space_id, _), group in plan.groups.items():
            collection = await self._writer.collection(group[0].space)
            fresh = await self._writer.unseen(collection, group[0].event.event.tenant, group)
            result.duplicates += len(group) - len(fresh)
            enriched = await self._enricher.enrich(space_id, [p for p in fresh if not p.event.is_delete])
            result.dead_letters += enriched.dead_letters
            result.followups += [(p.record, space_id) for p in enriched.documents_deferred]
            writes = [tombstone(p) for p in fresh if p.event.is_delete] + enriched.records
            if not writes:
                continue
            started = time.perf_counter()
            # Under the consumer's indexer.batch span, beside the batch's Embed calls.
            with self._tracer.start_as_current_span(
                "indexer.store_write", attributes={"records": len(writes)}
            ):
                await self._writer.write(collection, writes)
            self._metrics.store_write_seconds.observe(time.perf_counter() - started)
            result.followups += [(p.record, space_id) for p in enriched.ocr_deferred]
            for record in writes:
                result.applied.append((space_id, record.event_time))
                if record.deleted:
                    result.deleted += 1
                else:
                    result.indexed += 1
        return result
