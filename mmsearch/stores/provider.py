"""One store per process, shared by the indexer and the searcher (under
--target all both use the same embedded store: its directory has one owner).

The provider knows nothing of the service configuration: the service edge builds a
`StoreSettings` from its own settings."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from mmsearch.stores.base import VectorStore


@dataclass(frozen=True)
class StoreSettings:
    """Which store to open: Weaviate when `weaviate_url` is set, PostgreSQL + pgvector when
    `postgres_dsn` is, else Qdrant Edge at `store_dir`."""

    store_dir: Path
    # Qdrant Edge: unindexed points that start a background index build; 0 = never.
    build_unindexed_points: int = 0
    weaviate_url: str = ""
    weaviate_api_key: str = field(default="", repr=False)  # "" = no authentication
    weaviate_grpc_port: int = 0  # 0 = the default for the URL's scheme (50051 / 443)
    weaviate_shards: int = 1
    weaviate_replication_factor: int = 1
    weaviate_multi_tenancy: bool = True
    postgres_dsn: str = field(default="", repr=False)  # may carry a password
    postgres_pool_size: int = 8
    postgres_hnsw_m: int = 16
    postgres_hnsw_ef_construction: int = 100
    postgres_hnsw_ef_search: int = 100
    postgres_index_threshold: int = 10_000


class StoreProvider:
    def __init__(self, settings: StoreSettings) -> None:
        self._settings = settings
        self._store: VectorStore | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> VectorStore:
        async with self._lock:
            if self._store is None:
                self._store = await self._open()
            return self._store

    async def _open(self) -> VectorStore:
        settings = self._settings
        if settings.weaviate_url:
            from mmsearch.stores.weaviate_store import WeaviateStore

            store: VectorStore = await WeaviateStore.connect(
                settings.weaviate_url,
                api_key=settings.weaviate_api_key or None,
                grpc_port=settings.weaviate_grpc_port or None,
                shards=settings.weaviate_shards,
                replication_factor=settings.weaviate_replication_factor,
                multi_tenancy=settings.weaviate_multi_tenancy,
            )
            return store
        if settings.postgres_dsn:
            from mmsearch.stores.pgvector_store import PgVectorStore

            return await PgVectorStore.connect(
                settings.postgres_dsn,
                pool_size=settings.postgres_pool_size,
                hnsw_m=settings.postgres_hnsw_m,
                hnsw_ef_construction=settings.postgres_hnsw_ef_construction,
                hnsw_ef_search=settings.postgres_hnsw_ef_search,
                index_threshold=settings.postgres_index_threshold,
            )
        from mmsearch.stores.qdrant_edge import QdrantEdgeStore

        auto = settings.build_unindexed_points or None
        return await asyncio.to_thread(
            lambda: QdrantEdgeStore(Path(settings.store_dir), auto_optimize_points=auto)
        )

    async def close(self) -> None:
        async with self._lock:
            store, self._store = self._store, None
        if store is not None:
            await store.close()
