"""The embedded VectorStore: Qdrant Edge (`qdrant-edge-py`) in-process.

Layout under `root`:

    root/.lock                     flock held while a store is open (one process per directory)
    root/aliases.json              {"alias": "collection"}, replaced atomically (tmp + fsync + rename)
    root/<collection>/collection.json  the Collection (dimension, metric, declared attributes,
                                   quantization) and `shard`: the name of the live shard directory
    root/<collection>/shard[-<tag>]/  the live Qdrant Edge shard (segments + WAL)
    root/<collection>/.build-<tag>/   a copy being indexed by a builder process (see below)

Choices worth knowing:

- Points: id = item_uuid(tenant, item_id); one named dense vector "dense"; the payload holds every
  ItemRecord field except the vector (datetimes as RFC 3339 strings, the thumbnail base64). A tombstone
  (deleted=True) is stored with NO vector (Qdrant allows a point without its named vector), so it never
  enters the HNSW graph; every read filters deleted=false and tenant=<tenant>.
- Payload indexes on every CORE_FIELDS field and every declared attribute. HNSW payload links
  (`enable_hnsw`) are built for the fields in `hnsw_payload_fields` (tenant, modality, tags, source and
  keyword / int / bool attributes by default) so filtered HNSW keeps its recall; not for item_id (unique),
  deleted (one value covers ~all points) or the text index. The engine itself skips blocks too large to
  need links and (except for the tenant field) blocks the main graph already connects well.
- BM25: the engine's own BM25 over a text index on `text` (TextIndexParams(scoring=True), word
  tokenizer, lowercase, ASCII folding, no stemming or stop words) queried with TextQuery; IDF and average
  length are the engine's, computed over the whole collection (all tenants), not per tenant.
- Hybrid: the vector ranking and the BM25 ranking (each the best max(candidates_per_ranking or
  hybrid_window, offset + limit), ids only) are fused here by mmsearch.stores.fusion (RRF, rank from 1,
  score = sum 1 / (k + rank), ties by best rank then item id), the same code as every adapter. Not the
  engine's Fusion.Rrf: it uses a 0-based position, and the engine orders equal scores arbitrarily and
  differently per limit (BM25 ties are common), so its fused ranks drifted between calls and pages
  overlapped; here every ranking is cut deterministically (ties completed past the cut, then ordered by
  item id), and the per-ranking ranks and scores come for free.
- Snapshot: Edge 0.9.0 restores server snapshots but cannot make one, so `snapshot()` flushes and
  copies the collection directory with its writes held; `restore()` installs such a copy under a new
  collection name (then `set_alias` switches to it). Offline: copy it to <root>/<collection>.
- Pages: the ranking is computed for offset + limit and sliced, the page's payloads fetched by id.
- Durability: `write` upserts then flush()es (WAL + segments, fsync) before returning; an engine
  failure raises StoreUnavailable.
- Errors (mmsearch.stores.errors): a missing collection is CollectionNotFound, bad input (query,
  record vector, collection name) InvalidQuery, a dimension / metric / attribute-kind change or an
  alias named like a collection StoreConflict, an engine failure StoreUnavailable.
- qdrant-edge-py 0.9.0 quirks handled here: MatchValue(False) is taken as the integer 0 and silently
  matches nothing on a bool field, so bool matches pass numpy.bool_; the engine keeps the GIL during
  optimize() (an HNSW build of minutes freezes the whole process), so the graph is built only when
  a build runs: `optimize()`, or after `auto_optimize_points` unindexed points (off by default here;
  the services set it from MMSEARCH_STORE_BUILD_UNINDEXED_POINTS).
  Until then the newest points live in a plain segment and are searched exactly.
- Index builds never run in this process (docs/architecture.md, "Index builds"): the shard is
  flushed and copied with the collection's writes held (searches go on), a child process
  (mmsearch.stores.edge_build) builds the HNSW graph over the copy, then the built copy is loaded
  here, the writes made meanwhile (kept as the engine operations they were) are applied to it, and
  it replaces the live shard under the write lock: `collection.json` names the new directory
  (one atomic rename), and the old shard is closed once the searches still reading it are done.
  A builder that fails or dies leaves the live shard as it was; a crash of this process mid-build
  leaves `collection.json` naming the old shard, and the leftovers are removed at the next open.
- Quantization (Collection.quantization, from the space definition): int8 (scalar, quantile 0.99)
  or binary, kept in RAM for the graph walk; the candidates (oversampled) are rescored on the
  original float32 vectors. Exact searches ignore it. Fixed when the collection is created.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import qdrant_edge as qe
import structlog

from mmsearch.stores.base import (
    CORE_FIELDS,
    VISUAL_KINDS,
    AttributeValue,
    Collection,
    FieldKind,
    ItemRecord,
    ItemState,
    Metric,
    Passage,
    PassageHit,
    PassageMatch,
    Quantization,
    Query,
    StoredItem,
    StoreHit,
    generation,
    item_uuid,
    passage_uuid,
)
from mmsearch.stores.errors import CollectionNotFound, InvalidQuery, StoreConflict, StoreUnavailable
from mmsearch.stores.filters import AllOf, AnyOf, Condition, FilterNode, Not
from mmsearch.stores.fusion import reciprocal_rank_fusion
from mmsearch.stores.query import CheckedQuery, validate_query

VECTOR = "dense"
# Payload key of a passage's stored reranker token vectors (base64 of Passage.tokens). Never read
# by a search's ranking; fetched by id for the candidates being reranked (`passage_tokens`).
TOKENS = "rerank_tokens"
# Payload key of a document child's image (base64 JPEG), fetched by id like TOKENS.
CHILD_IMAGE = "child_jpeg"
ALIASES_FILE = "aliases.json"
COLLECTION_FILE = "collection.json"
SHARD_DIR = "shard"
LOCK_FILE = ".lock"
# Payload key listing the attribute names whose values are datetimes (stored as strings).
DATETIME_ATTRS = "attribute_datetimes"
DEFAULT_HNSW_PAYLOAD_FIELDS = frozenset({"tenant", "modality", "tags", "source"})
_DISTANCE: Mapping[Metric, qe.Distance] = {
    "cosine": qe.Distance.Cosine,
    "dot": qe.Distance.Dot,
    "euclidean": qe.Distance.Euclid,
}
_STATE_FIELDS = ["item_id", "version", "event_time", "content_sha256", "deleted"]
T = TypeVar("T")
log: structlog.stdlib.BoundLogger = structlog.get_logger(__name__)


class StoreLocked(StoreUnavailable):
    """Another process (or another open store in this one) owns the store directory."""


@dataclass
class _ShardRef:
    """One shard directory, open, and how many reads are using it right now: a shard replaced by
    a build is closed only when its last reader is done (reads capture the ref, not the handle)."""

    shard: qe.EdgeShard
    directory: str
    readers: int = 0
    retired: bool = False
    idle: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Build:
    """A build in progress: the engine operations written since its copy was taken (applied to the
    built copy before the swap, so no write made during a build is lost) and the builder process."""

    ops: list[qe.UpdateOperation] = field(default_factory=list)
    process: asyncio.subprocess.Process | None = None


@dataclass
class _Open:
    collection: Collection
    live: _ShardRef
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    build: _Build | None = None  # set under write_lock, while a copy is being indexed
    build_task: asyncio.Task[bool] | None = None

    @property
    def shard(self) -> qe.EdgeShard:
        """The live shard, for writers (they hold write_lock, so no swap happens meanwhile)."""
        return self.live.shard

    def apply(self, ops: Sequence[qe.UpdateOperation]) -> None:
        """Apply engine writes to the live shard (write_lock held), kept for a running build."""
        shard, build = self.live.shard, self.build
        for op in ops:
            shard.update(op)
            if build is not None:
                build.ops.append(op)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime) -> str:
    return _utc(value).isoformat()


def _atomic_write_json(path: Path, data: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as out:
        json.dump(data, out, indent=1, sort_keys=True)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _collection_to_json(collection: Collection) -> dict[str, Any]:
    return {
        "name": collection.name,
        "space_id": collection.space_id,
        "dimension": collection.dimension,
        "metric": collection.metric,
        "attributes": dict(collection.attributes),
        "quantization": collection.quantization,
    }


def _collection_from_json(data: Mapping[str, Any]) -> Collection:
    return Collection(
        name=data["name"],
        space_id=data["space_id"],
        dimension=int(data["dimension"]),
        metric=data["metric"],
        attributes=dict(data["attributes"]),
        quantization=data.get("quantization", "none"),
    )


def _live_dir(data: Mapping[str, Any]) -> str:
    """The live shard's directory name (collections from before builds: `shard`)."""
    name = str(data.get("shard", SHARD_DIR))
    if name != SHARD_DIR and not name.startswith(f"{SHARD_DIR}-"):
        raise StoreUnavailable(f"collection.json names an unexpected shard directory {name!r}")
    return name


def _read_collection(directory: Path) -> tuple[Collection, str]:
    data = json.loads((directory / COLLECTION_FILE).read_text("utf-8"))
    return _collection_from_json(data), _live_dir(data)


def _write_collection(directory: Path, collection: Collection, live: str) -> None:
    _atomic_write_json(directory / COLLECTION_FILE, {**_collection_to_json(collection), "shard": live})


def _quantization_config(
    mode: Quantization,
) -> qe.ScalarQuantizationConfig | qe.BinaryQuantizationConfig | None:
    if mode == "int8":
        # quantile 0.99: a few outlying coordinates do not stretch the int8 range of all the others.
        return qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99, always_ram=True)
    if mode == "binary":
        return qe.BinaryQuantizationConfig(always_ram=True)
    return None


# ---------------------------------------------------------------------------------------------------
# Records <-> payload


def _attribute_payload(value: AttributeValue, kind: FieldKind | None) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if kind == "float" and not isinstance(value, bool):
        return float(value)
    return value


def record_payload(record: ItemRecord, attributes: Mapping[str, FieldKind]) -> dict[str, Any]:
    return {
        "tenant": record.tenant,
        "item_id": record.item_id,
        "modality": record.modality,
        "version": record.version,
        "event_time": _iso(record.event_time),
        "content_sha256": record.content_sha256,
        "deleted": record.deleted,
        "model_version": record.model_version,
        "text": record.text,
        "title": record.title,
        "tags": list(record.tags),
        "source": record.source,
        "source_uri": record.source_uri,
        "created_at": _iso(record.created_at) if record.created_at is not None else None,
        "attributes": {k: _attribute_payload(v, attributes.get(k)) for k, v in record.attributes.items()},
        DATETIME_ATTRS: sorted(k for k, v in record.attributes.items() if isinstance(v, datetime)),
        "snippet": record.snippet,
        "thumbnail_jpeg": base64.b64encode(record.thumbnail_jpeg).decode("ascii"),
    }


def head_payload(record: ItemRecord, attributes: Mapping[str, FieldKind]) -> dict[str, Any]:
    """The head point's payload: the item, its generation and (with passages) its first passage."""
    payload = record_payload(record, attributes)
    payload.update({"head": True, "generation": generation(record), "passages": len(record.passages)})
    if record.passages and not record.deleted:
        first = record.passages[0]
        payload["text"] = "\n".join(part for part in (record.title, first.text) if part)
        payload.update({"passage": 0, "start": first.start, "end": first.end, "passage_text": first.text})
        if first.tokens:
            payload[TOKENS] = base64.b64encode(first.tokens).decode("ascii")
        payload.update(_child_payload(first))
    return payload


def _child_payload(passage: Passage) -> dict[str, Any]:
    """A document child's kind, page, region and image (nothing for a plain text passage)."""
    if passage.kind == "text" and not passage.page:
        return {}
    payload: dict[str, Any] = {"kind": passage.kind, "page": passage.page}
    if passage.bbox is not None:
        payload["bbox"] = list(passage.bbox)
    if passage.page_size is not None:
        payload["page_size"] = list(passage.page_size)
    if passage.image_jpeg:
        payload[CHILD_IMAGE] = base64.b64encode(passage.image_jpeg).decode("ascii")
    return payload


def passage_payload(
    record: ItemRecord, index: int, passage: Passage, attributes: Mapping[str, FieldKind]
) -> dict[str, Any]:
    """A further passage's payload: what filters read (so filtered search needs no join), its
    generation, offsets and BM25 text. Item fields for display stay in the head."""
    full = record_payload(record, attributes)
    payload = {name: full[name] for name in (*CORE_FIELDS, "attributes", DATETIME_ATTRS) if name in full}
    payload.update(
        {
            "head": False,
            "generation": generation(record),
            "passage": index,
            "start": passage.start,
            "end": passage.end,
            "text": passage.text,
        }
    )
    if passage.tokens:
        payload[TOKENS] = base64.b64encode(passage.tokens).decode("ascii")
    payload.update(_child_payload(passage))
    return payload


def passage_hit(payload: Mapping[str, Any]) -> PassageHit | None:
    """The passage a ranked point is (None for an item stored without passages)."""
    if "start" not in payload:
        return None
    text = payload.get("passage_text", "") if payload.get("head", True) else payload.get("text", "")
    bbox = payload.get("bbox")
    size = payload.get("page_size")
    return PassageHit(
        int(payload.get("passage", 0)),
        int(payload["start"]),
        int(payload["end"]),
        str(text),
        str(payload.get("generation", "")),
        kind=str(payload.get("kind") or "text"),
        page=int(payload.get("page") or 0),
        bbox=(float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3])) if bbox else None,
        page_size=(float(size[0]), float(size[1])) if size else None,
    )


def _parse_dt(value: str) -> datetime:
    return _utc(datetime.fromisoformat(value))


def record_from_payload(payload: Mapping[str, Any]) -> ItemRecord:
    dt_attrs = set(payload.get(DATETIME_ATTRS) or ())
    attributes: dict[str, AttributeValue] = {
        k: _parse_dt(v) if k in dt_attrs else v for k, v in (payload.get("attributes") or {}).items()
    }
    created = payload.get("created_at")
    return ItemRecord(
        tenant=payload["tenant"],
        item_id=payload["item_id"],
        modality=payload["modality"],
        vector=None,
        version=int(payload["version"]),
        event_time=_parse_dt(payload["event_time"]),
        content_sha256=payload.get("content_sha256", ""),
        deleted=bool(payload.get("deleted", False)),
        model_version=payload.get("model_version", ""),
        text=payload.get("text", ""),
        title=payload.get("title", ""),
        tags=tuple(payload.get("tags") or ()),
        source=payload.get("source", ""),
        source_uri=payload.get("source_uri", ""),
        created_at=_parse_dt(created) if created else None,
        attributes=attributes,
        snippet=payload.get("snippet", ""),
        thumbnail_jpeg=base64.b64decode(payload.get("thumbnail_jpeg") or ""),
    )


# ---------------------------------------------------------------------------------------------------
# Filters


def _match_value(value: AttributeValue) -> qe.MatchValue:
    if isinstance(value, bool):
        # qdrant-edge-py 0.9.0 converts a Python bool to an integer match; numpy.bool_ stays a bool.
        return qe.MatchValue(np.bool_(value))  # type: ignore[arg-type]
    assert isinstance(value, str | int)
    return qe.MatchValue(value)


def _range(cond: Condition) -> qe.RangeFloat | qe.RangeDateTime:
    bounds = {name: getattr(cond, name) for name in ("gt", "gte", "lt", "lte")}
    if cond.kind == "datetime":
        return qe.RangeDateTime(**{k: _iso(v) for k, v in bounds.items() if v is not None})
    return qe.RangeFloat(**{k: float(v) for k, v in bounds.items() if v is not None})


def _one_value(cond: Condition, value: AttributeValue) -> qe.FieldCondition:
    if cond.kind == "float":
        assert not isinstance(value, datetime | str)
        return qe.FieldCondition(cond.field, range=qe.RangeFloat(gte=float(value), lte=float(value)))
    if cond.kind == "datetime":
        assert isinstance(value, datetime)
        return qe.FieldCondition(cond.field, range=qe.RangeDateTime(gte=_iso(value), lte=_iso(value)))
    return qe.FieldCondition(cond.field, match=_match_value(value))


def translate_condition(cond: Condition) -> qe.FieldCondition | qe.Filter:
    if cond.op == "range":
        return qe.FieldCondition(cond.field, range=_range(cond))
    if cond.op == "eq" or len(cond.values) == 1:
        return _one_value(cond, cond.values[0])
    if cond.kind in ("keyword", "keyword_list"):
        return qe.FieldCondition(cond.field, match=qe.MatchAny([str(v) for v in cond.values]))
    if cond.kind == "int":
        return qe.FieldCondition(cond.field, match=qe.MatchAny([int(v) for v in cond.values]))  # type: ignore[arg-type]
    # float / bool / datetime: no MatchAny for these, an OR of single-value conditions.
    return qe.Filter(should=[_one_value(cond, v) for v in cond.values])


def translate(node: FilterNode) -> qe.FieldCondition | qe.Filter:
    """A parse_filter tree as a Qdrant Edge condition."""
    if isinstance(node, Condition):
        return translate_condition(node)
    if isinstance(node, AllOf):
        return qe.Filter(must=[translate(n) for n in node.nodes])
    if isinstance(node, AnyOf):
        return qe.Filter(should=[translate(n) for n in node.nodes])
    assert isinstance(node, Not)
    return qe.Filter(must_not=[translate(node.node)])


def _live_filter(tenant: str | None, extra: Sequence[qe.FieldCondition | qe.Filter] = ()) -> qe.Filter:
    must: list[Any] = [qe.FieldCondition("deleted", match=_match_value(False))]
    if tenant is not None:
        must.append(qe.FieldCondition("tenant", match=qe.MatchValue(tenant)))
    must.extend(extra)
    return qe.Filter(must=must)


# ---------------------------------------------------------------------------------------------------
# Payload indexes


def _index_schema(name: str, kind: FieldKind, links: bool) -> Any:
    if name == "tenant":
        return qe.KeywordIndexParams(is_tenant=True, enable_hnsw=links)
    if kind in ("keyword", "keyword_list"):
        return qe.KeywordIndexParams(enable_hnsw=links)
    if kind == "int":
        return qe.IntegerIndexParams(lookup=True, range=True, enable_hnsw=links)
    if kind == "float":
        return qe.FloatIndexParams(enable_hnsw=links)
    if kind == "bool":
        return qe.BoolIndexParams(enable_hnsw=links)
    return qe.DatetimeIndexParams(enable_hnsw=links)


TEXT_INDEX = qe.TextIndexParams(
    tokenizer=qe.TokenizerType.Word,
    lowercase=True,
    ascii_folding=True,
    stopwords=qe.StopwordsSet(languages=set(), custom=set()),
    stemmer=qe.DisabledStemmer(),
    enable_hnsw=False,
    scoring=True,
)


def _plan(spec: Collection, query: Query) -> tuple[CheckedQuery, qe.Filter]:
    """Validate a query against its collection: the checked query and the full engine filter."""
    checked = validate_query(query, spec)
    extra: list[qe.FieldCondition | qe.Filter] = []
    if query.modalities:
        extra.append(qe.FieldCondition("modality", match=qe.MatchAny(list(query.modalities))))
    if checked.filter is not None:
        extra.append(translate(checked.filter))
    return checked, _live_filter(query.tenant, extra)


def _tie_key(score: float) -> float:
    # The engine's scores of one point jitter in the last bits between calls (summation order), so
    # equal-looking scores are compared at 1e-5.
    return round(score, 5)


def _item_id(point: qe.ScoredPoint) -> str:
    return str((point.payload or {})["item_id"])


# What a ranking reads of each point: enough to validate it against its head and show it.
_RANK_PAYLOAD = [
    "item_id", "generation", "head", "passage", "start", "end", "text", "passage_text",
    "kind", "page", "bbox", "page_size",
]  # fmt: skip


class _Heads:
    """The heads of the items a search has seen, read once per search: the snapshot every passage
    is checked against (same generation as its head, head live), so one search sees one
    generation of each item."""

    def __init__(self, shard: qe.EdgeShard, tenant: str) -> None:
        self._shard = shard
        self._tenant = tenant
        self.payloads: dict[str, Mapping[str, Any] | None] = {}

    def load(self, item_ids: set[str]) -> None:
        missing = [i for i in item_ids if i not in self.payloads]
        if not missing:
            return
        records = self._shard.retrieve(
            [item_uuid(self._tenant, i) for i in missing],
            with_payload=qe.PayloadSelector.Exclude([TOKENS, CHILD_IMAGE]),
            with_vector=False,
        )
        found = {str((r.payload or {}).get("item_id")): r.payload or {} for r in records}
        for item_id in missing:
            self.payloads[item_id] = found.get(item_id)

    def current(self, payload: Mapping[str, Any]) -> bool:
        """A ranked point belongs to its item's live head and that head's generation."""
        head = self.payloads.get(str(payload["item_id"]))
        if head is None or head.get("deleted"):
            return False
        return bool(head.get("generation", "") == payload.get("generation", ""))


@dataclass(frozen=True)
class _RankedItem:
    item_id: str
    score: float
    passage: Mapping[str, Any]  # the best passage's payload (_RANK_PAYLOAD)


def _ranked(
    shard: qe.EdgeShard,
    request: Callable[[int], qe.QueryRequest],
    n: int,
    ascending: bool,
    heads: _Heads,
) -> list[_RankedItem]:
    """The best `n` items by their best current passage, in a deterministic order: score, then
    item id (a passage of the same score: the lower index).

    The engine ranks passages, orders equal scores arbitrarily and differently per limit, and one
    long item may fill many places. So passages are fetched (doubling) until `n` items are
    *settled*, i.e. their best passage scores strictly better than the last passage fetched (no
    unseen passage can overtake them or tie with them), or until the ranking is exhausted; at
    the cap the best found are returned."""
    fetch = n + 1
    cap = max(8 * n, n + 4096)
    sign = 1.0 if ascending else -1.0
    while True:
        points = shard.query(request(fetch))
        exhausted = len(points) < fetch
        heads.load({_item_id(p) for p in points})
        best: dict[str, tuple[tuple[float, int], float, Mapping[str, Any]]] = {}
        for point in points:
            payload = point.payload or {}
            if not heads.current(payload):
                continue
            key = (sign * _tie_key(point.score), int(payload.get("passage", 0)))
            item_id = str(payload["item_id"])
            if item_id not in best or key < best[item_id][0]:
                best[item_id] = (key, point.score, payload)
        items = sorted(best.items(), key=lambda entry: (entry[1][0][0], entry[0]))
        if not exhausted and fetch < cap:
            last = sign * _tie_key(points[-1].score)
            settled = [entry for entry in items if entry[1][0][0] < last]
            if len(settled) < n:
                fetch = min(fetch * 2, cap)
                continue
            items = settled
        return [_RankedItem(item_id, score, payload) for item_id, (_, score, payload) in items[:n]]


class QdrantEdgeStore:
    """VectorStore over Qdrant Edge shards, one per collection, in this process."""

    def __init__(
        self,
        root: Path,
        *,
        hnsw_m: int = 16,
        hnsw_ef_construct: int = 100,
        hnsw_ef: int = 128,
        full_scan_threshold_kb: int = 10_000,
        indexing_threshold_kb: int | None = None,
        hnsw_payload_fields: frozenset[str] = DEFAULT_HNSW_PAYLOAD_FIELDS,
        link_attribute_kinds: frozenset[FieldKind] = frozenset({"keyword", "keyword_list", "int", "bool"}),
        hybrid_window: int = 100,
        auto_optimize_points: int | None = None,
        max_search_threads: int | None = None,
        build_niceness: int = 10,
        builder_command: Sequence[str] = (sys.executable, "-m", "mmsearch.stores.edge_build"),
        oversampling: Mapping[Quantization, float] | None = None,
    ) -> None:
        self._root = Path(root)
        self._root.mkdir(parents=True, exist_ok=True)
        self._hnsw = qe.HnswIndexConfig(
            m=hnsw_m,
            ef_construct=hnsw_ef_construct,
            full_scan_threshold=full_scan_threshold_kb,
            payload_m=hnsw_m,
        )
        self._hnsw_ef = hnsw_ef
        self._optimizers = (
            qe.EdgeOptimizersConfig(indexing_threshold=indexing_threshold_kb)
            if indexing_threshold_kb is not None
            else None
        )
        self._payload_links = hnsw_payload_fields
        self._link_kinds = link_attribute_kinds
        self._window = hybrid_window
        self._auto_optimize = auto_optimize_points
        self._search_threads = max_search_threads
        self._build_niceness = build_niceness
        self._builder = tuple(builder_command)
        # Candidates fetched per result before rescoring on the original vectors. Binary needs many
        # more: at 384-d one bit per dimension ranks poorly (recall@10 0.79 at 4x, 0.99 at 8x on
        # clustered data; docs/benchmarks.md, quantization table).
        self._oversampling = {"int8": 2.0, "binary": 8.0, **(oversampling or {})}
        self._open: dict[str, _Open] = {}
        self._admin = asyncio.Lock()  # create / drop / alias changes
        self._closed = False
        self._lock_fd = self._take_dir_lock()
        self._aliases = self._read_aliases()

    # -- process ownership ------------------------------------------------------------------------

    def _take_dir_lock(self) -> int:
        path = self._root / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreLocked(
                f"store directory {self._root} is in use by another process (pid {holder}) or another "
                "open store in this one; one process owns a Qdrant Edge store"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd

    # -- helpers ----------------------------------------------------------------------------------

    @staticmethod
    async def _run(fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(fn)

    def _read_aliases(self) -> dict[str, str]:
        path = self._root / ALIASES_FILE
        if not path.exists():
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): str(v) for k, v in data.items()}

    def _collection_dir(self, name: str) -> Path:
        if not name or not all(c.isalnum() or c == "_" for c in name):
            raise InvalidQuery(f"bad collection name {name!r}: letters, digits and '_' only")
        return self._root / name

    def _exists(self, name: str) -> bool:
        return (self._collection_dir(name) / COLLECTION_FILE).exists()

    def _edge_config(self, collection: Collection) -> qe.EdgeConfig:
        return qe.EdgeConfig(
            vectors={
                VECTOR: qe.EdgeVectorParams(size=collection.dimension, distance=_DISTANCE[collection.metric])
            },
            hnsw_config=self._hnsw,
            quantization_config=_quantization_config(collection.quantization),
            optimizers=self._optimizers,
            max_search_threads=self._search_threads,
        )

    def _load_sync(self, name: str) -> _Open:
        directory = self._collection_dir(name)
        collection, live = _read_collection(directory)
        try:
            shard = qe.EdgeShard.load(str(directory / live))
        except Exception as exc:
            if "WouldBlock" in str(exc):
                raise StoreLocked(f"collection {name} ({directory}) is open in another process") from exc
            raise StoreUnavailable(f"cannot open collection {name}: {exc}") from exc
        # Leftovers of a build this process did not finish (it crashed, or was killed): a copy being
        # built, or a built one not yet named in collection.json. We own the store directory.
        for entry in directory.iterdir():
            stale = entry.name.startswith(".build-") or (
                entry.name.startswith(f"{SHARD_DIR}-") and entry.name != live
            )
            if entry.is_dir() and entry.name != live and (stale or entry.name == SHARD_DIR):
                log.info("store_build_leftover_removed", collection=name, directory=str(entry))
                shutil.rmtree(entry, ignore_errors=True)
        return _Open(collection, _ShardRef(shard, live))

    @contextlib.asynccontextmanager
    async def _reading(self, handle: _Open) -> AsyncIterator[qe.EdgeShard]:
        """The live shard for one read; a swap meanwhile waits for this read before closing it."""
        ref = handle.live
        ref.readers += 1
        try:
            yield ref.shard
        finally:
            ref.readers -= 1
            if ref.readers == 0:
                ref.idle.set()

    async def _get(self, name: str) -> _Open:
        if self._closed:
            raise StoreUnavailable("the store is closed")
        handle = self._open.get(name)
        if handle is not None:
            return handle
        async with self._admin:
            handle = self._open.get(name)
            if handle is None:
                if not self._exists(name):
                    raise CollectionNotFound(f"collection {name!r} does not exist")
                handle = await self._run(lambda: self._load_sync(name))
                self._open[name] = handle
            return handle

    def _attribute_indexes(self, attributes: Mapping[str, FieldKind]) -> list[tuple[str, Any]]:
        return [
            (f"attributes.{name}", _index_schema(f"attributes.{name}", kind, kind in self._link_kinds))
            for name, kind in attributes.items()
        ]

    def _index_fields(self, collection: Collection) -> list[tuple[str, Any]]:
        fields = [
            (name, _index_schema(name, kind, name in self._payload_links))
            for name, kind in CORE_FIELDS.items()
        ]
        fields += self._attribute_indexes(collection.attributes)
        fields.append(("text", TEXT_INDEX))
        fields.append(("head", qe.BoolIndexParams()))
        fields.append(("generation", qe.KeywordIndexParams()))
        fields.append(("kind", qe.KeywordIndexParams()))
        return fields

    # -- VectorStore --------------------------------------------------------------------------------

    async def ensure_collection(self, collection: Collection) -> None:
        directory = self._collection_dir(collection.name)
        if collection.dimension <= 0:
            raise InvalidQuery(f"collection {collection.name}: dimension must be positive")
        async with self._admin:
            if not self._exists(collection.name):

                def create() -> _Open:
                    shard_dir = directory / SHARD_DIR
                    if shard_dir.exists():  # a create that crashed before collection.json: holds no data
                        shutil.rmtree(shard_dir)
                    directory.mkdir(parents=True, exist_ok=True)
                    shard = qe.EdgeShard.create(str(shard_dir), self._edge_config(collection))
                    for name, schema in self._index_fields(collection):
                        shard.update(qe.UpdateOperation.create_field_index(name, schema))
                    shard.flush()
                    _write_collection(directory, collection, SHARD_DIR)
                    return _Open(collection, _ShardRef(shard, SHARD_DIR))

                try:
                    self._open[collection.name] = await self._run(create)
                except Exception as exc:
                    raise StoreUnavailable(f"cannot create collection {collection.name}: {exc}") from exc
                return

        handle = await self._get(collection.name)
        current = handle.collection
        if (current.dimension, current.metric) != (collection.dimension, collection.metric):
            raise StoreConflict(
                f"collection {collection.name} exists with dimension {current.dimension} / "
                f"{current.metric}, not {collection.dimension} / {collection.metric}"
            )
        if current.quantization != collection.quantization:
            raise StoreConflict(
                f"collection {collection.name} exists with quantization {current.quantization}, not "
                f"{collection.quantization}: it is fixed at creation (a new space version changes it)"
            )
        changed = sorted(k for k, v in collection.attributes.items() if current.attributes.get(k, v) != v)
        if changed:
            raise StoreConflict(f"collection {collection.name}: attribute kinds cannot change ({changed})")
        added = {k: v for k, v in collection.attributes.items() if k not in current.attributes}
        if not added:
            return
        merged = Collection(
            current.name,
            current.space_id,
            current.dimension,
            current.metric,
            {**current.attributes, **added},
            current.quantization,
        )

        def add_indexes() -> None:
            handle.apply(
                [
                    qe.UpdateOperation.create_field_index(name, schema)
                    for name, schema in self._attribute_indexes(added)
                ]
            )
            handle.shard.flush()
            _write_collection(directory, merged, handle.live.directory)

        async with handle.write_lock:
            try:
                await self._run(add_indexes)
            except Exception as exc:
                raise StoreUnavailable(f"cannot index new attributes of {collection.name}: {exc}") from exc
            handle.collection = merged

    async def drop_collection(self, name: str) -> None:
        async with self._admin:
            handle = self._open.pop(name, None)
            directory = self._collection_dir(name)
            if handle is not None:
                await self._cancel_build(handle)

            def drop() -> None:
                if handle is not None:
                    handle.shard.close()
                if directory.exists():
                    shutil.rmtree(directory)

            if handle is not None:
                async with handle.write_lock:
                    await self._run(drop)
            else:
                await self._run(drop)
            dangling = [alias for alias, target in self._aliases.items() if target == name]
            if dangling:
                aliases = {k: v for k, v in self._aliases.items() if k not in dangling}
                await self._run(lambda: _atomic_write_json(self._root / ALIASES_FILE, aliases))
                self._aliases = aliases

    async def set_alias(self, alias: str, collection: str) -> None:
        self._collection_dir(alias)
        async with self._admin:
            if not self._exists(collection):
                raise CollectionNotFound(f"alias {alias}: collection {collection!r} does not exist")
            if self._exists(alias):
                raise StoreConflict(f"alias {alias!r} is the name of a collection")
            aliases = {**self._aliases, alias: collection}
            await self._run(lambda: _atomic_write_json(self._root / ALIASES_FILE, aliases))
            self._aliases = aliases

    async def resolve(self, name_or_alias: str) -> str | None:
        target = self._aliases.get(name_or_alias)
        if target is not None:
            return target
        try:
            return name_or_alias if self._exists(name_or_alias) else None
        except InvalidQuery:
            return None

    async def states(self, collection: str, tenant: str, item_ids: Sequence[str]) -> dict[str, ItemState]:
        if not item_ids:
            return {}
        handle = await self._get(collection)
        ids: list[qe.PointId] = [item_uuid(tenant, i) for i in dict.fromkeys(item_ids)]
        try:
            async with self._reading(handle) as shard:
                records = await self._run(
                    lambda: shard.retrieve(
                        ids, with_payload=qe.PayloadSelector.Include(_STATE_FIELDS), with_vector=False
                    )
                )
        except Exception as exc:
            raise StoreUnavailable(f"states on {collection} failed: {exc}") from exc
        result: dict[str, ItemState] = {}
        for record in records:
            p = record.payload or {}
            result[p["item_id"]] = ItemState(
                version=int(p["version"]),
                event_time=_parse_dt(p["event_time"]),
                content_sha256=p.get("content_sha256", ""),
                deleted=bool(p.get("deleted", False)),
            )
        return result

    async def write(self, collection: str, records: Sequence[ItemRecord]) -> None:
        if not records:
            return
        handle = await self._get(collection)
        spec = handle.collection
        latest = {(r.tenant, r.item_id): r for r in records}  # the last record of an item wins
        heads: list[qe.Point] = []
        further: list[qe.Point] = []
        for record in latest.values():
            if record.deleted:
                heads.append(
                    qe.Point(
                        item_uuid(record.tenant, record.item_id), {}, head_payload(record, spec.attributes)
                    )
                )
                continue
            first = record.passages[0].vector if record.passages else record.vector
            heads.append(
                qe.Point(
                    item_uuid(record.tenant, record.item_id),
                    self._vector(record, first, spec),
                    head_payload(record, spec.attributes),
                )
            )
            gen = generation(record)
            for index, passage in enumerate(record.passages[1:], start=1):
                further.append(
                    qe.Point(
                        passage_uuid(record.tenant, record.item_id, gen, index),
                        self._vector(record, passage.vector, spec),
                        passage_payload(record, index, passage, spec.attributes),
                    )
                )
        # Every further passage of these items that is not of the generation just written.
        stale = qe.Filter(
            should=[
                qe.Filter(
                    must=[
                        qe.FieldCondition("tenant", match=qe.MatchValue(r.tenant)),
                        qe.FieldCondition("item_id", match=qe.MatchValue(r.item_id)),
                        qe.FieldCondition("head", match=_match_value(False)),
                    ],
                    must_not=[qe.FieldCondition("generation", match=qe.MatchValue(generation(r)))],
                )
                for r in latest.values()
            ]
        )

        def upsert() -> None:
            # New passages first, then the heads (each head one point: the switch a search sees),
            # then the old passages go. A failure in between leaves every item searchable as its
            # old or its new generation; the retry of the batch completes the write.
            if further:
                handle.apply([qe.UpdateOperation.upsert_points(further)])
            handle.apply([qe.UpdateOperation.upsert_points(heads)])
            handle.apply([qe.UpdateOperation.delete_points_by_filter(stale)])
            handle.shard.flush()

        async with handle.write_lock:
            try:
                await self._run(upsert)
            except Exception as exc:
                raise StoreUnavailable(
                    f"write of {len(heads)} records ({len(heads) + len(further)} points) "
                    f"to {collection} failed: {exc}"
                ) from exc
        if self._auto_optimize is not None:
            await self._maybe_build(collection, handle)

    @staticmethod
    def _vector(record: ItemRecord, vector: Any, spec: Collection) -> dict[str, Any]:
        if vector is None:
            if record.passages:
                raise InvalidQuery(f"item {record.item_id}: a passage has no vector")
            return {}
        array = np.asarray(vector, dtype=np.float32).reshape(-1)
        if array.shape[0] != spec.dimension:
            raise InvalidQuery(
                f"item {record.item_id}: vector has {array.shape[0]} dimensions, "
                f"collection {spec.name} has {spec.dimension}"
            )
        if not np.isfinite(array).all():
            raise InvalidQuery(f"item {record.item_id}: vector has NaN or infinite values")
        return {VECTOR: array.tolist()}

    async def _maybe_build(self, collection: str, handle: _Open) -> None:
        """Start a background build once enough points are unindexed: at least
        `auto_optimize_points`, and at least 10% of the indexed ones (each build copies the whole
        collection, so builds get rarer as it grows)."""
        assert self._auto_optimize is not None
        if handle.build_task is not None and not handle.build_task.done():
            return
        async with self._reading(handle) as shard:
            info = await self._run(shard.info)
        unindexed = info.points_count - info.indexed_vectors_count
        if unindexed >= max(self._auto_optimize, info.indexed_vectors_count // 10):
            self._start_build(collection, handle)

    async def search(self, collection: str, query: Query) -> list[StoreHit]:
        handle = await self._get(collection)
        spec = handle.collection
        checked, flt = _plan(spec, query)
        vector = None if checked.vector is None else checked.vector.tolist()
        text = checked.text
        depth = checked.depth
        # Hybrid: both rankings take a fixed number of candidates, so pages are cut from one fused ranking.
        n = checked.candidates(self._window) if checked.hybrid else depth
        params = qe.SearchParams(
            hnsw_ef=max(self._hnsw_ef, n), exact=query.exact, quantization=self._rescoring(spec, query.exact)
        )
        vector_ascending = spec.metric == "euclidean"  # Qdrant scores Euclid as a distance

        def vector_request(limit: int) -> qe.QueryRequest:
            assert vector is not None
            return qe.QueryRequest(
                limit=limit,
                query=qe.Query.Nearest(vector, using=VECTOR),
                params=params,
                filter=flt,
                with_payload=_RANK_PAYLOAD,
            )

        def text_request(limit: int) -> qe.QueryRequest:
            return qe.QueryRequest(
                limit=limit, query=qe.TextQuery("text", text), filter=flt, with_payload=_RANK_PAYLOAD
            )

        def run(shard: qe.EdgeShard) -> list[StoreHit]:
            heads = _Heads(shard, query.tenant)
            vec = _ranked(shard, vector_request, n, vector_ascending, heads) if vector is not None else []
            txt = _ranked(shard, text_request, n, False, heads) if text else []
            best_vec = {r.item_id: r for r in vec}
            best_txt = {r.item_id: r for r in txt}
            # (item id, score, (vector rank, vector score), (bm25 rank, bm25 score)) per hit of the page
            page: list[tuple[str, float, tuple[int | None, float | None], tuple[int | None, float | None]]]
            if checked.hybrid:
                fused = reciprocal_rank_fusion(
                    [[(r.item_id, r.score) for r in vec], [(r.item_id, r.score) for r in txt]], query.rrf_k
                )[query.offset : depth]
                page = [
                    (f.id, f.score, (f.ranks[0], f.raw_scores[0]), (f.ranks[1], f.raw_scores[1]))
                    for f in fused
                ]
            else:
                ranking = vec or txt
                page = []
                for rank, item in enumerate(ranking[query.offset : depth], start=query.offset + 1):
                    mine, other = (rank, item.score), (None, None)
                    page.append(
                        (item.item_id, item.score, mine, other)
                        if vec
                        else (item.item_id, item.score, other, mine)
                    )
            hits = []
            for key, score, (vector_rank, vector_score), (bm25_rank, bm25_score) in page:
                payload = heads.payloads.get(key)
                if payload is None:
                    continue
                # The passage shown: from the ranking where the item ranks better (vector on a tie).
                from_vector = bm25_rank is None or (vector_rank is not None and vector_rank <= bm25_rank)
                best = best_vec.get(key) if from_vector else best_txt.get(key)
                hits.append(
                    StoreHit(
                        record_from_payload(payload),
                        score,
                        vector_score=vector_score,
                        bm25_score=bm25_score,
                        vector_rank=vector_rank,
                        bm25_rank=bm25_rank,
                        passage=None if best is None else passage_hit(best.passage),
                    )
                )
            return hits

        try:
            async with self._reading(handle) as shard:
                return await self._run(lambda: run(shard))
        except Exception as exc:
            raise StoreUnavailable(f"search on {collection} failed: {exc}") from exc

    def _rescoring(self, spec: Collection, exact: bool) -> qe.QuantizationSearchParams | None:
        if spec.quantization == "none":
            return None
        # Exact means exact: the original vectors, not their quantized copies.
        return qe.QuantizationSearchParams(
            ignore=exact, rescore=True, oversampling=self._oversampling[spec.quantization]
        )

    async def expired(self, collection: str, before: datetime, limit: int) -> list[StoredItem]:
        handle = await self._get(collection)
        old = qe.Filter(
            must=[
                _live_filter(None),
                qe.FieldCondition("event_time", range=qe.RangeDateTime(lt=_iso(before))),
            ],
            must_not=[qe.FieldCondition("head", match=_match_value(False))],  # heads only
        )
        request = qe.ScrollRequest(
            limit=limit, filter=old, with_payload=qe.PayloadSelector.Include(["tenant", *_STATE_FIELDS]),
            with_vector=False,
        )  # fmt: skip
        try:
            records, _ = await self._run(lambda: handle.shard.scroll(request))
        except Exception as exc:
            raise StoreUnavailable(f"expired scan on {collection} failed: {exc}") from exc
        found = []
        for record in records:
            p = record.payload or {}
            state = ItemState(
                int(p["version"]),
                _parse_dt(p["event_time"]),
                p.get("content_sha256", ""),
                bool(p.get("deleted")),
            )
            found.append(StoredItem(p["tenant"], p["item_id"], state))
        return found

    async def count(self, collection: str, tenant: str | None = None) -> int:
        handle = await self._get(collection)
        # Heads only (a head from before passages has no "head" field).
        heads = qe.Filter(
            must=[_live_filter(tenant)], must_not=[qe.FieldCondition("head", match=_match_value(False))]
        )
        request = qe.CountRequest(exact=True, filter=heads)
        try:
            async with self._reading(handle) as shard:
                return await self._run(lambda: shard.count(request))
        except Exception as exc:
            raise StoreUnavailable(f"count on {collection} failed: {exc}") from exc

    async def set_text(
        self, collection: str, tenant: str, item_id: str, state: ItemState, *, text: str, snippet: str
    ) -> bool:
        handle = await self._get(collection)
        # Under the collection's write lock, so no write of this process lands between the
        # check and the update (across processes, the enrichment topic's per-item order does).
        async with handle.write_lock:
            current = (await self.states(collection, tenant, [item_id])).get(item_id)
            if current != state or state.deleted:
                return False
            point = item_uuid(tenant, item_id)

            def update() -> None:
                handle.apply([qe.UpdateOperation.set_payload([point], {"text": text, "snippet": snippet})])
                handle.shard.flush()

            try:
                await self._run(update)
            except Exception as exc:
                raise StoreUnavailable(f"set_text on {collection} failed: {exc}") from exc
        return True

    async def passage_tokens(
        self, collection: str, tenant: str, passages: Sequence[tuple[str, PassageHit]]
    ) -> list[bytes]:
        return await self._passage_blobs(collection, tenant, passages, TOKENS)

    async def _passage_blobs(
        self, collection: str, tenant: str, passages: Sequence[tuple[str, PassageHit]], key: str
    ) -> list[bytes]:
        """One base64 payload field (TOKENS, CHILD_IMAGE) of each passage, b"" where none."""
        if not passages:
            return []
        handle = await self._get(collection)
        ids: list[qe.PointId] = [
            item_uuid(tenant, item_id)
            if hit.index == 0
            else passage_uuid(tenant, item_id, hit.generation, hit.index)
            for item_id, hit in passages
        ]
        selector = qe.PayloadSelector.Include(["tenant", "item_id", "generation", "deleted", key])
        try:
            async with self._reading(handle) as shard:
                records = await self._run(
                    lambda: shard.retrieve(list(dict.fromkeys(ids)), with_payload=selector, with_vector=False)
                )
        except Exception as exc:
            raise StoreUnavailable(f"passage {key} on {collection} failed: {exc}") from exc
        found = {str(r.id): r.payload or {} for r in records}
        out: list[bytes] = []
        for point_id, (item_id, hit) in zip(ids, passages, strict=True):
            payload = found.get(str(point_id), {})
            same = (
                payload.get("tenant") == tenant
                and payload.get("item_id") == item_id
                and not payload.get("deleted")
                and payload.get("generation", "") == hit.generation
            )
            blob = payload.get(key) if same else None
            out.append(base64.b64decode(blob) if isinstance(blob, str) else b"")
        return out

    async def search_passages(
        self, collection: str, query: Query, kinds: Sequence[str]
    ) -> list[PassageMatch]:
        handle = await self._get(collection)
        spec = handle.collection
        checked, flt = _plan(spec, query)
        visual = [k for k in kinds if k in VISUAL_KINDS]
        kind_filter: list[Any] = []
        if "text" not in kinds:
            kind_filter.append(qe.FieldCondition("kind", match=qe.MatchAny(visual or ["none"])))
        elif len(visual) < len(VISUAL_KINDS):
            # "text" is also every passage stored without a kind (text items).
            excluded = [k for k in VISUAL_KINDS if k not in visual]
            kind_filter.append(qe.Filter(must_not=[qe.FieldCondition("kind", match=qe.MatchAny(excluded))]))
        flt = qe.Filter(must=[flt, *kind_filter])
        vector = None if checked.vector is None else checked.vector.tolist()
        limit = query.limit
        params = qe.SearchParams(hnsw_ef=max(self._hnsw_ef, limit), exact=query.exact)

        def request(fetch: int) -> qe.QueryRequest:
            ranking: Any = (
                qe.Query.Nearest(vector, using=VECTOR)
                if vector is not None
                else qe.TextQuery("text", checked.text)
            )
            return qe.QueryRequest(
                limit=fetch, query=ranking, params=params, filter=flt, with_payload=_RANK_PAYLOAD
            )

        def run() -> list[PassageMatch]:
            heads = _Heads(handle.shard, query.tenant)
            fetch = limit
            while True:
                points = handle.shard.query(request(fetch))
                heads.load({_item_id(p) for p in points})
                current = [p for p in points if heads.current(p.payload or {})]
                # Stale passages (an old generation mid-replace) are skipped: fetch more.
                if len(current) >= limit or len(points) < fetch or fetch >= 8 * limit:
                    break
                fetch *= 2
            out = []
            for point in current[:limit]:
                payload = point.payload or {}
                head = heads.payloads[_item_id(point)]
                hit = passage_hit(payload)
                if head is None or hit is None:
                    continue
                out.append(PassageMatch(record_from_payload(head), hit, point.score))
            return out

        if vector is None and not checked.text:
            return []
        try:
            return await self._run(run)
        except Exception as exc:
            raise StoreUnavailable(f"passage search on {collection} failed: {exc}") from exc

    async def passage_images(
        self, collection: str, tenant: str, passages: Sequence[tuple[str, PassageHit]]
    ) -> list[bytes]:
        return await self._passage_blobs(collection, tenant, passages, CHILD_IMAGE)

    async def count_passages(self, collection: str, tenant: str, item_id: str) -> int:
        handle = await self._get(collection)
        flt = _live_filter(tenant, [qe.FieldCondition("item_id", match=qe.MatchValue(item_id))])
        request = qe.CountRequest(exact=True, filter=flt)
        try:
            async with self._reading(handle) as shard:
                return await self._run(lambda: shard.count(request))
        except Exception as exc:
            raise StoreUnavailable(f"count on {collection} failed: {exc}") from exc

    async def close(self) -> None:
        if self._closed:
            return
        async with self._admin:
            self._closed = True
            handles = list(self._open.values())
            self._open.clear()
            for handle in handles:
                await self._cancel_build(handle)
                async with handle.write_lock:
                    await self._run(handle.shard.close)
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)

    # -- beyond the port: index build, snapshot, restore --------------------------------------------

    async def optimize(self, collection: str, *, niceness: int | None = None) -> bool:
        """Build the HNSW graph (and payload links) over everything written so far and wait for it.
        The build runs in a child process; searches and writes go on meanwhile. `niceness`
        overrides `build_niceness` (e.g. 0 for a first build before the store serves)."""
        name = await self.resolve(collection) or collection
        handle = await self._get(name)
        running = handle.build_task
        if running is not None and not running.done():
            # Its copy predates the latest writes: let it finish, then build again.
            await asyncio.shield(running)
        return await self._start_build(name, handle, niceness)

    def _start_build(self, collection: str, handle: _Open, niceness: int | None = None) -> asyncio.Task[bool]:
        task = handle.build_task
        if task is None or task.done():
            nice = self._build_niceness if niceness is None else niceness
            task = asyncio.create_task(
                self._build(collection, handle, nice), name=f"store-build-{collection}"
            )
            task.add_done_callback(_log_build_failure)
            handle.build_task = task
        return task

    async def _build(self, collection: str, handle: _Open, niceness: int) -> bool:
        """Copy, build in a child process, catch up, swap. Raises StoreUnavailable on failure (the
        live shard is then untouched)."""
        directory = self._collection_dir(collection)
        tag = uuid.uuid4().hex[:12]
        copy_dir = directory / f".build-{tag}"
        built_dir = directory / f"{SHARD_DIR}-{tag}"
        build = _Build()
        new: _ShardRef | None = None
        started = time.perf_counter()
        try:
            async with handle.write_lock:

                def copy() -> None:
                    handle.shard.flush()
                    shutil.copytree(directory / handle.live.directory, copy_dir)

                await self._run(copy)
                handle.build = build  # every write from here on is kept for the catch-up
            copied = time.perf_counter()
            build.process = await asyncio.create_subprocess_exec(
                *self._builder,
                str(copy_dir),
                "--nice",
                str(niceness),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await build.process.communicate()
            if build.process.returncode != 0:
                detail = err.decode(errors="replace").strip().splitlines()[-3:]
                raise StoreUnavailable(
                    f"index build of {collection} failed: builder exited with {build.process.returncode}"
                    f" {' | '.join(detail)}"
                )
            built = time.perf_counter()
            await self._run(lambda: copy_dir.replace(built_dir))
            shard = await self._run(lambda: qe.EdgeShard.load(str(built_dir)))
            new = _ShardRef(shard, built_dir.name)
            async with handle.write_lock:
                caught_up = len(build.ops)

                def catch_up() -> None:
                    for op in build.ops:
                        shard.update(op)
                    shard.flush()
                    _write_collection(directory, handle.collection, built_dir.name)  # the commit point

                await self._run(catch_up)
                old, handle.live, handle.build = handle.live, new, None
        except Exception as exc:
            handle.build = None
            await self._discard(build, new, copy_dir, built_dir)
            if isinstance(exc, StoreUnavailable):
                raise
            raise StoreUnavailable(f"index build of {collection} failed: {exc}") from exc
        except BaseException:  # cancelled (close, drop): the live shard stays as it is
            handle.build = None
            await self._discard(build, new, copy_dir, built_dir)
            raise
        log.info(
            "store_index_built",
            collection=collection,
            builder=out.decode(errors="replace").strip(),
            copy_s=round(copied - started, 3),
            build_s=round(built - copied, 3),
            swap_s=round(time.perf_counter() - built, 3),
            writes_caught_up=caught_up,
        )
        # Shielded: a close() now must not leave the replaced shard open.
        await asyncio.shield(self._retire(directory, old))
        return True

    async def _retire(self, directory: Path, old: _ShardRef) -> None:
        """Close a replaced shard once no read uses it, and delete its directory."""
        old.retired = True
        while old.readers:
            old.idle.clear()
            await old.idle.wait()

        def close() -> None:
            old.shard.close()
            shutil.rmtree(directory / old.directory, ignore_errors=True)

        await self._run(close)

    async def _discard(self, build: _Build, new: _ShardRef | None, *dirs: Path) -> None:
        process = build.process
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()

        def remove() -> None:
            if new is not None:
                new.shard.close()
            for path in dirs:
                shutil.rmtree(path, ignore_errors=True)

        await asyncio.shield(self._run(remove))

    async def _cancel_build(self, handle: _Open) -> None:
        task = handle.build_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def info(self, collection: str) -> dict[str, int]:
        handle = await self._get(collection)
        async with self._reading(handle) as shard:
            info = await self._run(shard.info)
        return {
            "points": info.points_count,
            "indexed_vectors": info.indexed_vectors_count,
            "segments": info.segments_count,
            "building": int(handle.build is not None),
        }

    def building_pid(self, collection: str) -> int | None:
        """The builder process of a running build (for operators and tests), else None."""
        handle = self._open.get(collection)
        build = None if handle is None else handle.build
        process = None if build is None else build.process
        return None if process is None or process.returncode is not None else process.pid

    async def snapshot(self, collection: str, dest: Path) -> Path:
        """A consistent copy of one collection at `dest/<collection>/` (writes held meanwhile).

        Qdrant Edge 0.9.0 can restore server snapshots but cannot create one, so this flushes the shard
        (WAL + segments) and copies its files while the collection's write lock is held. Restore with
        `restore()` (under a new name, then `set_alias` to switch) or, with the store closed, by copying
        `dest/<collection>` to `<root>/<collection>`."""
        name = await self.resolve(collection) or collection
        handle = await self._get(name)
        target = Path(dest) / name
        if target.exists():
            raise StoreConflict(f"snapshot target {target} exists")

        def copy() -> None:
            handle.shard.flush()
            tmp = target.with_name(f".{target.name}.partial")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            source = self._collection_dir(name)
            shutil.copy2(source / COLLECTION_FILE, tmp / COLLECTION_FILE)
            # The live shard only: not a build in progress, not a replaced shard not yet removed.
            shutil.copytree(
                source / handle.live.directory,
                tmp / handle.live.directory,
                ignore=shutil.ignore_patterns("*.tmp"),
            )
            tmp.replace(target)

        async with handle.write_lock:
            try:
                await self._run(copy)
            except OSError as exc:
                raise StoreUnavailable(f"snapshot of {name} failed: {exc}") from exc
        return target

    async def restore(self, snapshot_dir: Path, name: str) -> None:
        """Install a `snapshot()` copy as collection `name` (which must not exist yet)."""
        directory = self._collection_dir(name)
        source = Path(snapshot_dir)
        try:
            _, live = _read_collection(source)
        except (OSError, ValueError, KeyError, StoreUnavailable) as exc:
            raise InvalidQuery(f"{source} is not a snapshot made by QdrantEdgeStore.snapshot") from exc
        if not (source / live).is_dir():
            raise InvalidQuery(f"{source} is not a snapshot made by QdrantEdgeStore.snapshot")
        async with self._admin:
            if directory.exists():
                raise StoreConflict(f"collection {name!r} exists; restore under a new name")

            def install() -> None:
                tmp = directory.with_name(f".{name}.restoring")
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(source, tmp)
                spec, _ = _read_collection(tmp)
                renamed = Collection(
                    name, spec.space_id, spec.dimension, spec.metric, spec.attributes, spec.quantization
                )
                _write_collection(tmp, renamed, live)
                tmp.replace(directory)

            await self._run(install)


def _log_build_failure(task: asyncio.Task[bool]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("store_index_build_failed", error=str(task.exception()))
