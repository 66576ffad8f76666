"""The VectorStore port: what the indexer writes and the searcher reads,
independent of the store (Qdrant Edge embedded, Weaviate distributed).

One collection per embedding space version ("minilm@1" -> collection
"minilm_1"), aliases over collections for zero-downtime swaps. Every item is
keyed by (tenant, item id) -> a deterministic UUID; a delete is a tombstone
record (deleted=True) so that a late, older upsert cannot bring the item back.
Searches only ever see one tenant's live items.

Errors are the store's own (mmsearch.stores.errors); `StoreUnavailable` is
re-exported here for existing imports. Queries are checked by
mmsearch.stores.query.validate_query and hybrid rankings fused by
mmsearch.stores.fusion, the same code in every adapter.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from mmsearch.stores.errors import StoreUnavailable as StoreUnavailable  # noqa: PLC0414 (re-export)
from mmsearch.v1 import common_pb2

Metric = Literal["cosine", "dot", "euclidean"]
FieldKind = Literal["keyword", "keyword_list", "int", "float", "bool", "datetime"]
AttributeValue = str | int | float | bool | datetime

# Fields every item has; all are indexed (filtered HNSW needs payload indexes to keep recall).
CORE_FIELDS: Mapping[str, FieldKind] = {
    "tenant": "keyword",
    "item_id": "keyword",
    "modality": "keyword",
    "tags": "keyword_list",
    "source": "keyword",
    "created_at": "datetime",
    "event_time": "datetime",
    "version": "int",
    "deleted": "bool",
}
# Filter field names a caller may use (FieldCondition.field); tenant never.
FILTERABLE_CORE = ("modality", "tags", "source", "created_at", "event_time", "item_id")
MODALITIES = ("text", "image", "audio")
# Upper bound of Query.candidates_per_ranking.
MAX_CANDIDATES_PER_RANKING = 10_000
ITEM_NAMESPACE = uuid.UUID("6f1c1a52-3b0e-5e8e-9a57-6d6d73656172")


def item_uuid(tenant: str, item_id: str) -> uuid.UUID:
    """Deterministic id of an item: the same (tenant, item id) always maps to it."""
    return uuid.uuid5(ITEM_NAMESPACE, f"{tenant}\x1f{item_id}")


def collection_name(space_id: str) -> str:
    """'minilm@1' -> 'minilm_1' (letters, digits and '_' only, as every store accepts)."""
    name, _, version = space_id.partition("@")
    return f"{name.replace('-', '_')}_{version}"


@dataclass(frozen=True)
class Collection:
    name: str
    space_id: str
    dimension: int
    metric: Metric = "cosine"
    # Declared filterable attributes ("attributes.<name>" in filters) and their kinds.
    attributes: Mapping[str, FieldKind] = field(default_factory=dict)


@dataclass(frozen=True)
class ItemRecord:
    """One item as stored. A tombstone has deleted=True and no vector."""

    tenant: str
    item_id: str
    modality: str  # "text" | "image" | "audio"
    vector: npt.NDArray[np.float32] | None
    # Ordering key: the producer's version when set, else 0; event_time breaks ties.
    version: int
    event_time: datetime
    content_sha256: str
    deleted: bool = False
    model_version: str = ""
    # BM25 text: title, the text itself, an image's caption and OCR text.
    text: str = ""
    title: str = ""
    tags: tuple[str, ...] = ()
    source: str = ""
    source_uri: str = ""
    created_at: datetime | None = None
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    snippet: str = ""
    thumbnail_jpeg: bytes = b""


@dataclass(frozen=True)
class ItemState:
    """What idempotency checks need, without the vector."""

    version: int
    event_time: datetime
    content_sha256: str
    deleted: bool


@dataclass(frozen=True)
class Query:
    tenant: str
    limit: int
    offset: int = 0
    # Dense query vector (unit length for cosine); None for BM25 only.
    vector: npt.NDArray[np.float32] | None = None
    # BM25 query text; with a vector too, both rankings are fused by RRF (mmsearch.stores.fusion).
    text: str | None = None
    filter: common_pb2.Filter | None = None
    # Only these modalities ("image", ...); empty means all.
    modalities: tuple[str, ...] = ()
    # The effective RRF constant, >= 1 (the searcher resolves a request's 0 to its default).
    rrf_k: int = 60
    # Brute-force search (exact recall reference).
    exact: bool = False
    # Hybrid only: candidates each ranking (dense, BM25) fetches before fusion, at least
    # offset + limit; 0 means the adapter's default window. 0..MAX_CANDIDATES_PER_RANKING.
    candidates_per_ranking: int = 0


@dataclass(frozen=True)
class StoreHit:
    record: ItemRecord  # vector is None in hits
    score: float  # the final order: fused when both rankings ran, else the one ranking's score
    vector_score: float | None = None
    bm25_score: float | None = None
    # 1-based rank of the hit in the dense / BM25 ranking, whenever that ranking ran (also for a
    # single-ranking search); None when the ranking did not run or its candidates missed the hit.
    vector_rank: int | None = None
    bm25_rank: int | None = None


class VectorStore(Protocol):
    async def ensure_collection(self, collection: Collection) -> None:
        """Create the collection and its payload indexes if missing (idempotent)."""

    async def drop_collection(self, name: str) -> None: ...

    async def set_alias(self, alias: str, collection: str) -> None:
        """Point `alias` at `collection` atomically (create or switch)."""

    async def resolve(self, name_or_alias: str) -> str | None:
        """The collection an alias points at, the name itself if it is a collection, or None."""

    async def states(self, collection: str, tenant: str, item_ids: Sequence[str]) -> dict[str, ItemState]:
        """Stored state (including tombstones) of the given items; missing ones are absent."""

    async def write(self, collection: str, records: Sequence[ItemRecord]) -> None:
        """Upsert records (tombstones included) by item_uuid; durable when it returns.
        Raises StoreUnavailable when nothing or not everything was written."""

    async def search(self, collection: str, query: Query) -> list[StoreHit]:
        """The tenant's live (non-deleted) items, best first. Raises InvalidQuery (see
        mmsearch.stores.query.validate_query) and CollectionNotFound."""

    async def count(self, collection: str, tenant: str | None = None) -> int:
        """Live items, for one tenant or all."""

    async def close(self) -> None: ...
