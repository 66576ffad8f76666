"""Stage 3, write: compare each planned event with what the store holds (an
event not newer than the stored one, by (version, event_time), is a duplicate
and changes nothing), then write items and tombstones in one durable call.

A store failure becomes DependencyDown: the consumer commits nothing and
replays the batch, and a replay changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from mmsearch.clients.errors import DependencyDown
from mmsearch.clients.spaces import SpaceInfo
from mmsearch.indexer.plan import Pending
from mmsearch.stores.base import (
    Collection,
    ItemRecord,
    StoredItem,
    StoreUnavailable,
    VectorStore,
    collection_name,
)
from mmsearch.stores.errors import CollectionNotFound

DEPENDENCY = "store"


def tombstone(pending: Pending) -> ItemRecord:
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


def expiry_tombstone(item: StoredItem) -> ItemRecord:
    """Retention's delete: a tombstone ordered just after the stored item, so a replay of
    the event that wrote it (or of an older one) stays a duplicate, and any newer event of
    the producer's applies as usual."""
    return ItemRecord(
        tenant=item.tenant,
        item_id=item.item_id,
        modality="",
        vector=None,
        version=item.state.version,
        event_time=item.state.event_time + timedelta(milliseconds=1),
        content_sha256="",
        deleted=True,
    )


class Writer:
    def __init__(self, store: VectorStore) -> None:
        self._store = store
        self._collections: set[str] = set()

    async def collection(self, space: SpaceInfo) -> str:
        """The space's collection, created on first use."""
        name = collection_name(space.id)
        if name not in self._collections:
            try:
                await self._store.ensure_collection(
                    Collection(name, space.id, space.dimension, quantization=space.quantization)
                )
            except StoreUnavailable as exc:
                raise DependencyDown(DEPENDENCY, str(exc)) from exc
            self._collections.add(name)
        return name

    async def unseen(self, collection: str, tenant: str, group: Sequence[Pending]) -> list[Pending]:
        """The events newer than what the store holds for their item."""
        try:
            stored = await self._store.states(collection, tenant, [p.event.event.item_id for p in group])
        except StoreUnavailable as exc:
            raise DependencyDown(DEPENDENCY, str(exc)) from exc
        fresh = []
        for pending in group:
            state = stored.get(pending.event.event.item_id)
            if state is None or pending.event.order > (state.version, state.event_time):
                fresh.append(pending)
        return fresh

    async def write(self, collection: str, records: Sequence[ItemRecord]) -> None:
        try:
            await self._store.write(collection, records)
        except StoreUnavailable as exc:
            raise DependencyDown(DEPENDENCY, str(exc)) from exc
        except CollectionNotFound as exc:
            # Dropped under us (DropSpace refuses live spaces; a replay of an old space can
            # still race one): forget it, so the retry creates it again.
            self._collections.discard(collection)
            raise DependencyDown(DEPENDENCY, str(exc)) from exc
