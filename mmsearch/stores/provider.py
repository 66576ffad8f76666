"""One store per process, shared by the indexer and the searcher (under
--target all both use the same embedded store: its directory has one owner)."""

from __future__ import annotations

import asyncio

from mmsearch.kit.config import Settings
from mmsearch.stores.base import VectorStore


class StoreProvider:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._store: VectorStore | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> VectorStore:
        async with self._lock:
            if self._store is None:
                self._store = await self._open()
            return self._store

    async def _open(self) -> VectorStore:
        if self._settings.weaviate_url:
            from mmsearch.stores.weaviate_store import WeaviateStore

            settings = self._settings
            store: VectorStore = await WeaviateStore.connect(
                settings.weaviate_url,
                api_key=settings.weaviate_api_key.get_secret_value() or None,
                grpc_port=settings.weaviate_grpc_port or None,
                shards=settings.weaviate_shards,
                replication_factor=settings.weaviate_replication_factor,
                multi_tenancy=settings.weaviate_multi_tenancy,
            )
            return store
        from mmsearch.stores.qdrant_edge import QdrantEdgeStore

        return await asyncio.to_thread(QdrantEdgeStore, self._settings.store_dir)

    async def close(self) -> None:
        async with self._lock:
            store, self._store = self._store, None
        if store is not None:
            await store.close()
