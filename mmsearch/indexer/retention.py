"""Per-space retention: items older than their space's configured age
(MMSEARCH_RETENTION_MAX_AGE_S, by event time) are deleted the way a producer's
delete is: a tombstone written through the indexer's Writer, so searches stop
seeing the item and its passages at once, and a replay of its old event
changes nothing.

Each run scans every policy's space for expired live items (any tenant), reads
their state again just before writing, and tombstones only those unchanged since
the scan (an item the consumer updated in between is no longer expired). The
last check and the write are not one atomic step: an update landing in the few
milliseconds between them is overwritten by the tombstone, which the producer's
next event (newer) undoes. Counted in `mmsearch_retention_deleted_total{space}`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from mmsearch.clients.errors import DependencyError
from mmsearch.indexer.metrics import IndexerMetrics
from mmsearch.indexer.plan import Resolver
from mmsearch.indexer.write import Writer, expiry_tombstone
from mmsearch.kit.logging import get_logger
from mmsearch.stores.base import StoredItem, VectorStore, collection_name
from mmsearch.stores.errors import CollectionNotFound, StoreError

log = get_logger(__name__)


class Retention:
    def __init__(
        self,
        store: VectorStore,
        resolver: Resolver,
        policies: Mapping[str, float],
        metrics: IndexerMetrics,
        *,
        batch: int = 500,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._writer = Writer(store)
        self._resolver = resolver
        self._policies = dict(policies)
        self._metrics = metrics
        self._batch = batch
        self._clock = clock

    async def run_once(self) -> dict[str, int]:
        """One pass over every policy; the items tombstoned per space id."""
        deleted: dict[str, int] = {}
        for name, max_age_s in self._policies.items():
            space = await self._resolver.resolve(name)
            if space is None:
                log.warning("retention_unknown_space", space=name)
                continue
            cutoff = self._clock() - timedelta(seconds=max_age_s)
            try:
                count = await self._expire(collection_name(space.id), cutoff)
            except CollectionNotFound:
                count = 0  # nothing written to it yet
            deleted[space.id] = deleted.get(space.id, 0) + count
            self._metrics.retention_deleted.labels(space.id).inc(count)
        return deleted

    async def _expire(self, collection: str, cutoff: datetime) -> int:
        total = 0
        while found := await self._store.expired(collection, cutoff, self._batch):
            unchanged = await self._unchanged(collection, found)
            if unchanged:
                await self._writer.write(collection, [expiry_tombstone(item) for item in unchanged])
                total += len(unchanged)
            if len(found) < self._batch or not unchanged:
                break
        return total

    async def _unchanged(self, collection: str, found: list[StoredItem]) -> list[StoredItem]:
        by_tenant: dict[str, list[StoredItem]] = defaultdict(list)
        for item in found:
            by_tenant[item.tenant].append(item)
        keep: list[StoredItem] = []
        for tenant, items in by_tenant.items():
            now = await self._store.states(collection, tenant, [i.item_id for i in items])
            keep.extend(i for i in items if now.get(i.item_id) == i.state)
        return keep

    async def run(self, interval_s: float, stopping: asyncio.Event) -> None:
        """Run every `interval_s` until `stopping` is set; a failed pass is logged and retried."""
        while not stopping.is_set():
            try:
                deleted = await self.run_once()
                self._metrics.retention_runs.labels("ok").inc()
                if any(deleted.values()):
                    log.info("retention_deleted", deleted=deleted)
            except (StoreError, DependencyError) as exc:
                self._metrics.retention_runs.labels("failed").inc()
                log.warning("retention_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), interval_s)
