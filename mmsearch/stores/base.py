"""The VectorStore port: what the indexer writes and the searcher reads,
independent of the store (Qdrant Edge embedded, Weaviate distributed).

One collection per embedding space version ("minilm@1" -> collection
"minilm_1"), aliases over collections for zero-downtime swaps. Every item is
keyed by (tenant, item id) -> a deterministic UUID; a delete is a tombstone
record (deleted=True) so that a late, older upsert cannot bring the item back.
Searches only ever see one tenant's live items.

Passages: a text item is stored as its passages (mmsearch/kit/passages.py), one point per passage.
The item's *head* point (id item_uuid) holds the item's fields, its first passage and the
item's current *generation* (`generation()`: a hash of version, event time, content and passage
count); every further passage is a point of its own (id `passage_uuid`) carrying its generation.
A write of an item (1) writes the new generation's further passages, (2) replaces the head (one
point: the atomic switch), (3) deletes the item's passages of any other generation. A search
ranks passages, then reads the heads of the candidate items and keeps only the passages of each
head's current generation: it sees an item's old passages or its new ones, never a mix, and
nothing of a deleted item (its head is a tombstone). Hits are items, ranked by their best passage
(`StoreHit.passage`); ranks count distinct items (mmsearch.stores.fusion's convention).

Errors are the store's own (mmsearch.stores.errors); `StoreUnavailable` is
re-exported here for existing imports. Queries are checked by
mmsearch.stores.query.validate_query and hybrid rankings fused by
mmsearch.stores.fusion, the same code in every adapter.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from mmsearch.stores.errors import StoreUnavailable as StoreUnavailable  # noqa: PLC0414 (re-export)
from mmsearch.v1 import common_pb2

Metric = Literal["cosine", "dot", "euclidean"]
# How a collection keeps its vectors for the approximate search: full float32, int8 (4x smaller)
# or 1 bit per dimension (32x smaller); the top candidates are always rescored on the originals.
Quantization = Literal["none", "int8", "binary"]
QUANTIZATIONS: tuple[Quantization, ...] = ("none", "int8", "binary")
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
MODALITIES = ("text", "image", "audio", "document")
# What a passage is: text (a text item's passage, a document page's text) or a document's visual
# child, embedded as an image (a figure, a ruled table's crop, a whole page).
PASSAGE_KINDS = ("text", "figure", "table", "page")
VISUAL_KINDS = ("figure", "table", "page")
BBox = tuple[float, float, float, float]  # x0, y0, x1, y1 in PDF points, origin top left
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
    # Chosen in the space definition; fixed when the collection is created (a store that cannot
    # quantize keeps full vectors).
    quantization: Quantization = "none"


def passage_uuid(tenant: str, item_id: str, generation: str, index: int) -> uuid.UUID:
    """Id of the index-th passage (index >= 1; passage 0 lives in the head) of one generation."""
    return uuid.uuid5(ITEM_NAMESPACE, f"{tenant}\x1f{item_id}\x1f{generation}\x1f{index}")


@dataclass(frozen=True)
class Passage:
    """One passage of an item's text: text == item_text[start:end] (code point offsets)."""

    start: int
    end: int
    text: str
    vector: npt.NDArray[np.float32] | None
    # The reranker's stored token vectors of `text` (late interaction): an opaque blob the store
    # keeps as it is (mmsearch/kit/token_vectors.py); empty when there are none.
    tokens: bytes = b""
    # Document children (mmsearch/indexer/document.py): what the passage is (PASSAGE_KINDS), its
    # 1-based page (0: not a document), its region and page size in points, and for a visual
    # child its image (JPEG, at most 768 px a side; `text` is then its caption, table text or
    # OCR text, and start == end == the page's offset in the document text).
    kind: str = "text"
    page: int = 0
    bbox: BBox | None = None
    page_size: tuple[float, float] | None = None
    image_jpeg: bytes = b""


@dataclass(frozen=True)
class PassageHit:
    """The passage an item hit with (its best one), as stored."""

    index: int
    start: int
    end: int
    text: str
    # The item's generation the passage belongs to (what `passage_tokens` needs to find it).
    generation: str = ""
    kind: str = "text"
    page: int = 0
    bbox: BBox | None = None
    page_size: tuple[float, float] | None = None


@dataclass(frozen=True)
class PassageMatch:
    """One ranked passage (not grouped by item): its item's head record and the passage."""

    record: ItemRecord
    passage: PassageHit
    score: float


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
    # A text item's passages, in order (mmsearch/kit/passages.py). Empty: the item is one
    # passage, `vector` and BM25 `text` (images, audio, records from before passages). Set:
    # `vector` and `text` are not used; the first passage goes into the head with the title as
    # BM25 text, the others are points of their own. In hits: empty (see StoreHit.passage).
    passages: tuple[Passage, ...] = ()


def generation(record: ItemRecord) -> str:
    """The generation of an item's stored passages: the same write always gives the same one
    (so replays overwrite, not duplicate), any other write another."""
    key = "\x1f".join(
        (str(record.version), record.event_time.isoformat(), record.content_sha256, str(len(record.passages)))
    )
    return hashlib.sha256(key.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class ItemState:
    """What idempotency checks need, without the vector."""

    version: int
    event_time: datetime
    content_sha256: str
    deleted: bool


@dataclass(frozen=True)
class StoredItem:
    """A live item found by a scan (retention), with what a tombstone for it needs."""

    tenant: str
    item_id: str
    state: ItemState


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
    # The item's best passage (for a hybrid hit: from the ranking where the item ranks better,
    # the vector ranking on a tie); None for items without passages.
    passage: PassageHit | None = None


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
        """Upsert records (tombstones included) by item_uuid; durable when it returns. A record
        replaces all of its item's passages and a tombstone removes them, atomically for
        searches (see the module docstring). Raises StoreUnavailable when nothing or not
        everything was written (a retry of the same records completes it)."""

    async def search(self, collection: str, query: Query) -> list[StoreHit]:
        """The tenant's live (non-deleted) items, best first, each once (ranked by its best
        passage). Raises InvalidQuery (see mmsearch.stores.query.validate_query) and
        CollectionNotFound."""

    async def expired(self, collection: str, before: datetime, limit: int) -> list[StoredItem]:
        """Up to `limit` live items, of any tenant, whose event time is before `before`
        (retention: the indexer tombstones them)."""

    async def count(self, collection: str, tenant: str | None = None) -> int:
        """Live items, for one tenant or all."""

    async def set_text(
        self, collection: str, tenant: str, item_id: str, state: ItemState, *, text: str, snippet: str
    ) -> bool:
        """Set a single-passage item's BM25 text and snippet (an image's OCR text, added by
        the enrichment stage after the item became searchable by its vector), only while the
        stored item is still `state` (same version, event time and content; not deleted).
        False when it is not (a newer write won; the newer write's own enrichment follows)."""

    async def passage_tokens(
        self, collection: str, tenant: str, passages: Sequence[tuple[str, PassageHit]]
    ) -> list[bytes]:
        """The stored token vectors (Passage.tokens) of (item id, passage hit) pairs, in order; b""
        where there are none (an item written without them, a passage of another generation,
        an adapter that does not store them)."""

    async def count_passages(self, collection: str, tenant: str, item_id: str) -> int:
        """Stored passage points of one item, every generation (0 once it is deleted)."""

    async def close(self) -> None: ...


@runtime_checkable
class PassageSearch(Protocol):
    """Passage-level ranking for evidence retrieval (Searcher.Retrieve). Qdrant Edge has it;
    an adapter without it makes Retrieve FAILED_PRECONDITION."""

    async def search_passages(
        self, collection: str, query: Query, kinds: Sequence[str]
    ) -> list[PassageMatch]:
        """The tenant's current passages (of live items, their head's generation) of the given
        kinds (PASSAGE_KINDS; stored passages without a kind are "text"), best first, at most
        query.limit, ranked by query.vector or else by BM25 over query.text (not fused; the
        caller fuses). query.filter and modalities apply to the items."""

    async def passage_images(
        self, collection: str, tenant: str, passages: Sequence[tuple[str, PassageHit]]
    ) -> list[bytes]:
        """The stored images (Passage.image_jpeg) of (item id, passage hit) pairs, b"" where none."""
