"""Distributed-mode VectorStore over Weaviate (weaviate-client v4, async API).

Layout in Weaviate
- One Weaviate collection per mmsearch collection. Weaviate wants collection
  names to start with an upper-case letter: "minilm_1" -> "Minilm_1"; names
  starting with a digit or "_" get the prefix "CX" ("0clip_2" -> "CX0clip_2").
  mmsearch names are lower case ([a-z0-9_]), so the mapping is reversible.
  Aliases use the same mapping and are native Weaviate collection aliases.
- Native multi-tenancy (default): one Weaviate tenant (= one shard) per
  mmsearch tenant, created lazily on first write (and by Weaviate's
  auto-tenant-creation as a backstop), cached per process. Weaviate tenant
  names allow [A-Za-z0-9_-]{1,64}; other mmsearch tenant ids are escaped
  ("_" -> "__", "." -> "_d") and ids longer than 64 are hashed ("_h" + sha256).
  In this mode Weaviate does not shard a tenant further, so `shards` has no
  effect (each tenant is one shard, tenants are spread over the nodes).
  `multi_tenancy=False` instead creates one collection sharded `shards` ways
  with every query filtered on the `tenant` property (for few, large tenants).
- Vectors are self-provided (no vectorizer) in one named vector "default",
  HNSW index, metric cosine -> cosine, dot -> dot, euclidean -> l2-squared.
- Every ItemRecord field is a property; filterable ones are indexed
  (index_filterable, plus index_range_filters on numbers and dates), `text`
  and `title` are BM25-searchable (word tokenization). Declared attributes are
  typed properties "attr_<name>"; all attributes also travel in
  `attributes_json` so they read back exactly as written. The inverted index
  keeps null state so negated conditions can also match items missing a field.

Scores: vector_score is a similarity, higher is better: cosine 1 - distance,
dot -distance (= the dot product), euclidean -sqrt(l2-squared distance).

Hybrid search: Weaviate's server-side hybrid fuses with RANKED (RRF with k=60
fixed in the server) or RELATIVE_SCORE and does not return the per-ranking
scores. The port carries the query's rrf_k and hits carry vector and BM25
scores and ranks, so this adapter always runs near_vector and bm25 concurrently
(each for max(candidates_per_ranking or hybrid_window, offset+limit)
candidates, capped at QUERY_MAXIMUM_RESULTS) and fuses them client-side with
mmsearch.stores.fusion, the code every adapter uses: score = sum over rankings
of 1 / (k + rank), rank from 1; ties by best rank, then item id.

Exact search: Weaviate cannot switch a collection's HNSW index to a flat
index per query, and `ef` is a collection setting, not a query parameter. With
exact=True the adapter fetches the tenant's filtered live items with their
vectors (at most `exact_max_items`, default 10000 = Weaviate's default
QUERY_MAXIMUM_RESULTS) and ranks them by brute force in the client. Larger
candidate sets raise ResourceLimit rather than silently answering with ANN.

Filters: the tree from mmsearch.stores.filters is translated into
weaviate.classes.query.Filter objects. Negation is pushed down to the leaves
(De Morgan; NotEqual, ContainsNone, inverted range bounds) because Weaviate's
server support for the generic Not operator is recent and incomplete; negated
conditions on optional fields also match items where the field is null.

Errors (mmsearch.stores.errors) follow the embedded store: a missing
collection is CollectionNotFound, bad input (queries: see
mmsearch.stores.query.validate_query; record vectors, names) InvalidQuery, a
dimension or metric or attribute-kind change StoreConflict; Weaviate
unreachable or refusing is StoreUnavailable. Needs Weaviate >= 1.32
(collection aliases).

Passages (see mmsearch.stores.base): the head object (item_uuid) holds the
item and its first passage, each further passage is an object of its own
(passage_uuid) with the filterable fields, its generation, offsets and BM25
text. A write inserts the new further passages, then the heads (the switch),
then delete_many's the item's passages of other generations. A search fetches
passages (doubling the limit until enough items are settled, as the embedded
store does), reads the heads of the items it saw further passages of, and keeps
only the passages of each head's generation, so no search mixes generations.

Writes go through insert_many per tenant (gRPC batch; an existing UUID is
replaced). Any failed object raises StoreUnavailable listing the errors, so
the caller retries the whole batch (upserts are idempotent) and commits
nothing. Reads and writes use consistency level QUORUM by default.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import json
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt
import weaviate
from weaviate.classes.config import (
    Configure,
    ConsistencyLevel,
    DataType,
    Property,
    Tokenization,
    VectorDistances,
)
from weaviate.classes.data import DataObject
from weaviate.classes.init import AdditionalConfig, Auth, Timeout
from weaviate.classes.query import Filter, MetadataQuery
from weaviate.collections.classes.batch import MAX_STORED_RESULTS
from weaviate.collections.classes.filters import _Filters
from weaviate.exceptions import WeaviateBaseError

from mmsearch.stores.base import (
    CORE_FIELDS,
    AttributeValue,
    Collection,
    FieldKind,
    ItemRecord,
    ItemState,
    Metric,
    Passage,
    PassageHit,
    Query,
    StoredItem,
    StoreHit,
    generation,
    item_uuid,
    passage_uuid,
)
from mmsearch.stores.errors import (
    CollectionNotFound,
    InvalidQuery,
    ResourceLimit,
    StoreConflict,
    StoreError,
    StoreUnavailable,
)
from mmsearch.stores.filters import ATTRIBUTE_PREFIX, AllOf, AnyOf, Condition, FilterNode, Not
from mmsearch.stores.fusion import reciprocal_rank_fusion
from mmsearch.stores.query import validate_query

VECTOR_NAME = "default"
# A collection's description holds what Weaviate does not keep: space id and dimension.
DESCRIPTION_PREFIX = "mmsearch collection "
ATTRIBUTE_PROPERTY_PREFIX = "attr_"
NAME_PREFIX = "CX"
_MM_NAME = re.compile(r"^[a-z0-9_]+$")
_WEAVIATE_TENANT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ATTRIBUTE_NAME = re.compile(r"^[A-Za-z0-9_]+$")
# Core fields that every record has, so a negated condition needs no null check.
_ALWAYS_SET = frozenset({"item_id", "modality", "source", "event_time", "version", "deleted", "tenant"})

T = TypeVar("T")

# --------------------------------------------------------------------------- names


def weaviate_collection_name(name: str) -> str:
    """mmsearch collection or alias name -> Weaviate name ("minilm_1" -> "Minilm_1")."""
    if not _MM_NAME.match(name):
        raise InvalidQuery(f"collection/alias name {name!r} must match [a-z0-9_]+ for the Weaviate store")
    if name[0].isalpha():
        return name[0].upper() + name[1:]
    return NAME_PREFIX + name


def mmsearch_collection_name(name: str) -> str:
    """Inverse of weaviate_collection_name."""
    if name.startswith(NAME_PREFIX) and len(name) > len(NAME_PREFIX):
        return name[len(NAME_PREFIX) :]
    return name[0].lower() + name[1:]


def weaviate_tenant_name(tenant: str) -> str:
    """mmsearch tenant id -> a valid, injective Weaviate tenant name."""
    if not tenant:
        raise ValueError("tenant must not be empty")
    escaped = tenant.replace("_", "__").replace(".", "_d")
    if _WEAVIATE_TENANT.match(escaped):
        return escaped
    # Raw "_" always becomes "__", so "_h" cannot come from an escaped name.
    return "_h" + hashlib.sha256(tenant.encode()).hexdigest()[:62]


def attribute_property(name: str) -> str:
    return ATTRIBUTE_PROPERTY_PREFIX + name


def field_property(field: str) -> str:
    """Filter field ("tags", "attributes.color") -> Weaviate property name."""
    if field.startswith(ATTRIBUTE_PREFIX):
        return attribute_property(field[len(ATTRIBUTE_PREFIX) :])
    return field


# --------------------------------------------------------------------------- collection config

_KIND_TYPES: Mapping[FieldKind, DataType] = {
    "keyword": DataType.TEXT,
    "keyword_list": DataType.TEXT_ARRAY,
    "int": DataType.INT,
    "float": DataType.NUMBER,
    "bool": DataType.BOOL,
    "datetime": DataType.DATE,
}
_TYPE_KINDS: Mapping[DataType, FieldKind] = {v: k for k, v in _KIND_TYPES.items()}
_DISTANCES: Mapping[Metric, VectorDistances] = {
    "cosine": VectorDistances.COSINE,
    "dot": VectorDistances.DOT,
    "euclidean": VectorDistances.L2_SQUARED,
}
_METRICS: Mapping[VectorDistances, Metric] = {v: k for k, v in _DISTANCES.items()}
# Stored, not indexed.
# version_exact: gRPC batches carry numbers as doubles, so the INT property (for filters) loses
# precision above 2**53; the exact version for ordering is kept as text.
_PLAIN_TEXT = (
    "content_sha256",
    "model_version",
    "source_uri",
    "snippet",
    "attributes_json",
    "version_exact",
    "passage_text",
)
_SEARCHABLE_TEXT = ("text", "title")
# Passage bookkeeping: head (bool) and generation are filtered on by writes; the rest is stored.
_PASSAGE_FIELDS: Mapping[str, FieldKind] = {"head": "bool", "generation": "keyword"}
_PASSAGE_INTS = ("passage", "start", "end", "passages")
RETURN_PROPERTIES: tuple[str, ...] = (
    *CORE_FIELDS,
    *_PLAIN_TEXT,
    *_SEARCHABLE_TEXT,
    "thumbnail_jpeg",
    *_PASSAGE_FIELDS,
    *_PASSAGE_INTS,
)
STATE_PROPERTIES = (
    "version",
    "version_exact",
    "event_time",
    "content_sha256",
    "deleted",
    "item_id",
    "tenant",
)


def distance_metric(metric: Metric) -> VectorDistances:
    return _DISTANCES[metric]


def _indexed_property(name: str, kind: FieldKind) -> Property:
    data_type = _KIND_TYPES[kind]
    text = data_type in (DataType.TEXT, DataType.TEXT_ARRAY)
    return Property(
        name=name,
        data_type=data_type,
        index_filterable=True,
        index_searchable=False,
        index_range_filters=kind in ("int", "float", "datetime"),
        tokenization=Tokenization.FIELD if text else None,
    )


def property_configs(collection: Collection) -> list[Property]:
    """Every ItemRecord field as a Weaviate property, indexed as mmsearch needs."""
    props = [_indexed_property(name, kind) for name, kind in CORE_FIELDS.items()]
    props += [
        Property(
            name=name,
            data_type=DataType.TEXT,
            index_filterable=False,
            index_searchable=True,
            tokenization=Tokenization.WORD,
        )
        for name in _SEARCHABLE_TEXT
    ]
    props += [
        Property(name=name, data_type=DataType.TEXT, index_filterable=False, index_searchable=False)
        for name in _PLAIN_TEXT
    ]
    props.append(Property(name="thumbnail_jpeg", data_type=DataType.BLOB))
    props += [_indexed_property(name, kind) for name, kind in _PASSAGE_FIELDS.items()]
    props += [
        Property(name=name, data_type=DataType.INT, index_filterable=False, index_searchable=False)
        for name in _PASSAGE_INTS
    ]
    for name, kind in sorted(collection.attributes.items()):
        if not _ATTRIBUTE_NAME.match(name):
            raise ValueError(f"attribute name {name!r} must match [A-Za-z0-9_]+ for the Weaviate store")
        props.append(_indexed_property(attribute_property(name), kind))
    return props


@dataclass(frozen=True)
class WeaviateSettings:
    """How this adapter creates and reads collections (not the provider's StoreSettings)."""

    multi_tenancy: bool = True
    shards: int = 1
    replication_factor: int = 1
    ef: int = -1  # -1: Weaviate's dynamic ef
    ef_construction: int = 128
    max_connections: int = 32
    flat_search_cutoff: int = 40000
    consistency: ConsistencyLevel = ConsistencyLevel.QUORUM


def collection_create_kwargs(collection: Collection, settings: WeaviateSettings) -> dict[str, Any]:
    """The keyword arguments of client.collections.create for one collection."""
    if settings.shards < 1 or settings.replication_factor < 1:
        raise ValueError("shards and replication_factor must be >= 1")
    kwargs: dict[str, Any] = {
        "name": weaviate_collection_name(collection.name),
        "description": DESCRIPTION_PREFIX
        + json.dumps(
            {"space_id": collection.space_id, "dimension": collection.dimension, "metric": collection.metric}
        ),
        "properties": property_configs(collection),
        "vector_config": Configure.Vectors.self_provided(
            name=VECTOR_NAME,
            vector_index_config=Configure.VectorIndex.hnsw(
                distance_metric=distance_metric(collection.metric),
                ef=settings.ef,
                ef_construction=settings.ef_construction,
                max_connections=settings.max_connections,
                flat_search_cutoff=settings.flat_search_cutoff,
            ),
        ),
        "inverted_index_config": Configure.inverted_index(index_null_state=True),
        "replication_config": Configure.replication(factor=settings.replication_factor),
    }
    if settings.multi_tenancy:
        kwargs["multi_tenancy_config"] = Configure.multi_tenancy(
            enabled=True, auto_tenant_creation=True, auto_tenant_activation=True
        )
    else:
        kwargs["sharding_config"] = Configure.sharding(desired_count=settings.shards)
    return kwargs


# --------------------------------------------------------------------------- filters


def _bounds(cond: Condition) -> list[_Filters]:
    prop = Filter.by_property(field_property(cond.field))
    out: list[_Filters] = []
    if cond.gt is not None:
        out.append(prop.greater_than(cond.gt))
    if cond.gte is not None:
        out.append(prop.greater_or_equal(cond.gte))
    if cond.lt is not None:
        out.append(prop.less_than(cond.lt))
    if cond.lte is not None:
        out.append(prop.less_or_equal(cond.lte))
    return out


def _negated_bounds(cond: Condition) -> list[_Filters]:
    prop = Filter.by_property(field_property(cond.field))
    out: list[_Filters] = []
    if cond.gt is not None:
        out.append(prop.less_or_equal(cond.gt))
    if cond.gte is not None:
        out.append(prop.less_than(cond.gte))
    if cond.lt is not None:
        out.append(prop.greater_or_equal(cond.lt))
    if cond.lte is not None:
        out.append(prop.greater_than(cond.lte))
    return out


def _leaf(cond: Condition) -> _Filters:
    prop = Filter.by_property(field_property(cond.field))
    if cond.op == "range":
        return Filter.all_of(_bounds(cond))
    values = list(cond.values)
    if cond.kind in ("keyword", "keyword_list"):
        # text / text[] with field tokenization: exact match of a whole value
        if cond.op == "eq" and cond.kind == "keyword":
            return prop.equal(values[0])
        return prop.contains_any([str(v) for v in values])
    if cond.op == "eq":
        return prop.equal(values[0])
    return Filter.any_of([prop.equal(v) for v in values])


def _negated_leaf(cond: Condition) -> _Filters:
    name = field_property(cond.field)
    prop = Filter.by_property(name)
    if cond.op == "range":
        negated = Filter.any_of(_negated_bounds(cond))
    elif cond.kind == "keyword_list":
        negated = prop.contains_none([str(v) for v in cond.values])
    else:
        negated = Filter.all_of([prop.not_equal(v) for v in cond.values])
    if cond.field in _ALWAYS_SET:
        return negated
    # An item without the field does not match the condition, so it matches its negation.
    return Filter.any_of([negated, prop.is_none(True)])


def translate_filter(node: FilterNode, negate: bool = False) -> _Filters:
    """Filter tree -> weaviate Filter, negation pushed down to the leaves."""
    if isinstance(node, Not):
        return translate_filter(node.node, not negate)
    if isinstance(node, AllOf | AnyOf):
        parts = [translate_filter(sub, negate) for sub in node.nodes]
        conjunction = isinstance(node, AllOf) != negate
        return Filter.all_of(parts) if conjunction else Filter.any_of(parts)
    return _negated_leaf(node) if negate else _leaf(node)


def base_filter(tenant: str | None, modalities: Sequence[str]) -> _Filters:
    """What every read carries: live items only, the tenant (without native
    multi-tenancy), the modality restriction."""
    parts: list[_Filters] = [Filter.by_property("deleted").equal(False)]
    if tenant is not None:
        parts.append(Filter.by_property("tenant").equal(tenant))
    if modalities:
        parts.append(Filter.by_property("modality").contains_any(list(modalities)))
    return Filter.all_of(parts)


# --------------------------------------------------------------------------- records


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def encode_attributes(attributes: Mapping[str, AttributeValue]) -> str:
    """Attributes as typed JSON so ints, floats, bools and datetimes read back as written."""
    out: dict[str, list[Any]] = {}
    for name, value in sorted(attributes.items()):
        if isinstance(value, bool):
            out[name] = ["b", value]
        elif isinstance(value, int):
            out[name] = ["i", value]
        elif isinstance(value, float):
            out[name] = ["f", value]
        elif isinstance(value, datetime):
            out[name] = ["t", _utc(value).isoformat()]
        else:
            out[name] = ["s", str(value)]
    return json.dumps(out, separators=(",", ":"))


def decode_attributes(text: str | None) -> dict[str, AttributeValue]:
    if not text:
        return {}
    out: dict[str, AttributeValue] = {}
    for name, (tag, value) in json.loads(text).items():
        if tag == "t":
            out[name] = datetime.fromisoformat(value)
        elif tag == "f":
            out[name] = float(value)
        else:
            out[name] = value
    return out


def _typed_attribute(name: str, value: AttributeValue, kind: FieldKind) -> Any:
    ok = {
        "keyword": isinstance(value, str),
        "keyword_list": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "datetime": isinstance(value, datetime),
    }[kind]
    if not ok:
        raise ValueError(f"attribute {name!r} is declared {kind}, got {type(value).__name__}")
    if kind == "keyword_list":
        return [value]
    if kind == "float":
        return float(value)  # type: ignore[arg-type]
    if kind == "datetime":
        return _utc(value)  # type: ignore[arg-type]
    return value


def record_to_properties(record: ItemRecord, attributes: Mapping[str, FieldKind]) -> dict[str, Any]:
    """ItemRecord -> Weaviate object properties (the vector travels separately)."""
    props: dict[str, Any] = {
        "tenant": record.tenant,
        "item_id": record.item_id,
        "modality": record.modality,
        "tags": list(record.tags),
        "source": record.source,
        "event_time": _utc(record.event_time),
        "version": record.version,
        "version_exact": str(record.version),
        "deleted": record.deleted,
        "content_sha256": record.content_sha256,
        "model_version": record.model_version,
        "source_uri": record.source_uri,
        "snippet": record.snippet,
        "text": record.text,
        "title": record.title,
        "attributes_json": encode_attributes(record.attributes),
    }
    if record.created_at is not None:
        props["created_at"] = _utc(record.created_at)
    if record.thumbnail_jpeg:
        props["thumbnail_jpeg"] = base64.b64encode(record.thumbnail_jpeg).decode("ascii")
    for name, kind in attributes.items():
        if name in record.attributes:
            props[attribute_property(name)] = _typed_attribute(name, record.attributes[name], kind)
    return props


def head_properties(record: ItemRecord, attributes: Mapping[str, FieldKind]) -> dict[str, Any]:
    """The head object: the item, its generation and (with passages) its first passage."""
    props = record_to_properties(record, attributes)
    props.update({"head": True, "generation": generation(record), "passages": len(record.passages)})
    if record.passages and not record.deleted:
        first = record.passages[0]
        props["text"] = first.text
        props.update({"passage": 0, "start": first.start, "end": first.end, "passage_text": first.text})
    return props


def passage_properties(
    record: ItemRecord, index: int, passage: Passage, attributes: Mapping[str, FieldKind]
) -> dict[str, Any]:
    """A further passage: the filterable fields, its generation, offsets and BM25 text."""
    full = record_to_properties(record, attributes)
    keep = {*CORE_FIELDS, "version_exact", *(attribute_property(a) for a in attributes)}
    props = {name: value for name, value in full.items() if name in keep}
    props.update(
        {
            "head": False,
            "generation": generation(record),
            "passage": index,
            "start": passage.start,
            "end": passage.end,
            "text": passage.text,
        }
    )
    return props


def passage_hit(props: Mapping[str, Any]) -> PassageHit | None:
    """The passage an object is (None for an item stored without passages)."""
    if props.get("start") is None:
        return None
    text = props.get("passage_text") if props.get("head", True) is not False else props.get("text")
    return PassageHit(int(props.get("passage") or 0), int(props["start"]), int(props["end"]), str(text or ""))


def _datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return _utc(value)
    return _utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))


def _blob(value: Any) -> bytes:
    if not value:
        return b""
    if isinstance(value, bytes):
        return base64.b64decode(value)
    return base64.b64decode(str(value))


def _version(props: Mapping[str, Any]) -> int:
    exact = props.get("version_exact")
    return int(exact) if exact else int(props.get("version") or 0)


def properties_to_record(props: Mapping[str, Any], vector: Sequence[float] | None = None) -> ItemRecord:
    """Weaviate object properties -> ItemRecord (vector None unless given)."""
    created = props.get("created_at")
    return ItemRecord(
        tenant=str(props.get("tenant") or ""),
        item_id=str(props.get("item_id") or ""),
        modality=str(props.get("modality") or ""),
        vector=None if vector is None else np.asarray(vector, dtype=np.float32),
        version=_version(props),
        event_time=_datetime(props["event_time"]),
        content_sha256=str(props.get("content_sha256") or ""),
        deleted=bool(props.get("deleted")),
        model_version=str(props.get("model_version") or ""),
        text=str(props.get("text") or ""),
        title=str(props.get("title") or ""),
        tags=tuple(props.get("tags") or ()),
        source=str(props.get("source") or ""),
        source_uri=str(props.get("source_uri") or ""),
        created_at=None if created is None else _datetime(created),
        attributes=decode_attributes(props.get("attributes_json")),
        snippet=str(props.get("snippet") or ""),
        thumbnail_jpeg=_blob(props.get("thumbnail_jpeg")),
    )


def properties_to_state(props: Mapping[str, Any]) -> ItemState:
    return ItemState(
        version=_version(props),
        event_time=_datetime(props["event_time"]),
        content_sha256=str(props.get("content_sha256") or ""),
        deleted=bool(props.get("deleted")),
    )


# --------------------------------------------------------------------------- scores


def distance_to_score(metric: Metric, distance: float) -> float:
    """Weaviate distance -> similarity (higher is better)."""
    if metric == "cosine":
        return 1.0 - distance
    if metric == "dot":
        return -distance
    return -math.sqrt(max(distance, 0.0))


def exact_scores(
    metric: Metric, query: npt.NDArray[np.float32], vectors: npt.NDArray[np.float32]
) -> npt.NDArray[np.float64]:
    """Brute-force similarities (same scale as distance_to_score)."""
    q = query.astype(np.float64)
    m = vectors.astype(np.float64)
    if metric == "cosine":
        norms = np.linalg.norm(m, axis=1) * np.linalg.norm(q)
        result: npt.NDArray[np.float64] = (m @ q) / np.where(norms == 0, 1.0, norms)
        return result
    if metric == "dot":
        result = m @ q
        return result
    result = -np.linalg.norm(m - q, axis=1)
    return result


# --------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class _Schema:
    metric: Metric
    attributes: Mapping[str, FieldKind]
    dimension: int | None = None  # None: not created by this adapter (no description)


def schema_from_config(config: Any) -> _Schema:
    """A Weaviate CollectionConfig -> the metric and declared attributes."""
    metric: Metric = "cosine"
    vectors = getattr(config, "vector_config", None) or {}
    named = vectors.get(VECTOR_NAME) or next(iter(vectors.values()), None)
    if named is not None:
        metric = _METRICS.get(named.vector_index_config.distance_metric, "cosine")
    attributes: dict[str, FieldKind] = {}
    for prop in config.properties:
        if prop.name.startswith(ATTRIBUTE_PROPERTY_PREFIX) and prop.data_type in _TYPE_KINDS:
            attributes[prop.name[len(ATTRIBUTE_PROPERTY_PREFIX) :]] = _TYPE_KINDS[prop.data_type]
    dimension: int | None = None
    description = getattr(config, "description", None) or ""
    if description.startswith(DESCRIPTION_PREFIX):
        with contextlib.suppress(ValueError, TypeError):
            dimension = int(json.loads(description[len(DESCRIPTION_PREFIX) :])["dimension"])
    return _Schema(metric, attributes, dimension)


def _connection_params(url: str, grpc_port: int | None) -> dict[str, Any]:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"Weaviate URL must be http(s)://host[:port], got {url!r}")
    secure = parts.scheme == "https"
    return {
        "http_host": parts.hostname,
        "http_port": parts.port or (443 if secure else 80),
        "http_secure": secure,
        "grpc_host": parts.hostname,
        "grpc_port": grpc_port or (443 if secure else 50051),
        "grpc_secure": secure,
    }


class WeaviateStore:
    """VectorStore over a Weaviate cluster (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        grpc_port: int | None = None,
        shards: int = 1,
        replication_factor: int = 1,
        multi_tenancy: bool = True,
        ef: int = -1,
        ef_construction: int = 128,
        max_connections: int = 32,
        flat_search_cutoff: int = 40000,
        consistency: ConsistencyLevel = ConsistencyLevel.QUORUM,
        exact_max_items: int = 10000,
        hybrid_window: int = 100,
        query_max_results: int = 10000,
        alias_cache_seconds: float = 5.0,
        schema_cache_seconds: float = 30.0,
        timeout_seconds: float = 30.0,
        client: Any = None,
    ) -> None:
        self.settings = WeaviateSettings(
            multi_tenancy=multi_tenancy,
            shards=shards,
            replication_factor=replication_factor,
            ef=ef,
            ef_construction=ef_construction,
            max_connections=max_connections,
            flat_search_cutoff=flat_search_cutoff,
            consistency=consistency,
        )
        if shards < 1 or replication_factor < 1:
            raise ValueError("shards and replication_factor must be >= 1")
        self._params = _connection_params(url, grpc_port)
        self._api_key = api_key
        self._timeout = timeout_seconds
        self._exact_max = exact_max_items
        self._window = hybrid_window
        self._query_max = query_max_results
        self._alias_ttl = alias_cache_seconds
        self._schema_ttl = schema_cache_seconds
        self._client: Any = client
        self._connect_lock = asyncio.Lock()
        # By real mmsearch collection name, with expiry: attributes declared by another process show up.
        self._schemas: dict[str, tuple[_Schema, float]] = {}
        self._resolved: dict[str, tuple[str, float]] = {}  # name or alias -> (collection, expiry)
        self._tenants: dict[str, set[str]] = {}  # real collection -> Weaviate tenants known to exist

    @classmethod
    async def connect(cls, url: str, **options: Any) -> WeaviateStore:
        """A store with its client connected (StoreUnavailable when Weaviate cannot be reached)."""
        store = cls(url, **options)
        await store._conn()
        return store

    # -- plumbing

    async def _conn(self) -> Any:
        if self._client is not None:
            return self._client
        async with self._connect_lock:
            if self._client is None:
                client = weaviate.use_async_with_custom(
                    **self._params,
                    auth_credentials=Auth.api_key(self._api_key) if self._api_key else None,
                    additional_config=AdditionalConfig(
                        timeout=Timeout(init=self._timeout, query=self._timeout, insert=self._timeout)
                    ),
                )
                try:
                    await client.connect()
                except Exception as exc:
                    await client.close()
                    raise StoreUnavailable(f"cannot connect to Weaviate: {exc}") from exc
                self._client = client
        return self._client

    async def _call(self, what: str, make: Callable[[], Awaitable[T]]) -> T:
        try:
            return await make()
        except (StoreError, ValueError):
            raise
        except (WeaviateBaseError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"Weaviate {what} failed: {exc}") from exc

    def _handle(self, client: Any, collection: str, tenant: str | None = None) -> Any:
        handle = client.collections.use(weaviate_collection_name(collection)).with_consistency_level(
            self.settings.consistency
        )
        if tenant is not None and self.settings.multi_tenancy:
            handle = handle.with_tenant(weaviate_tenant_name(tenant))
        return handle

    async def _real(self, name: str) -> str | None:
        cached = self._resolved.get(name)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        real = await self.resolve(name)
        if real is not None:
            self._resolved[name] = (real, time.monotonic() + self._alias_ttl)
        return real

    async def _schema(self, collection: str) -> _Schema:
        cached = self._schemas.get(collection)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        client = await self._conn()
        config = await self._call(
            "config.get",
            client.collections.use(weaviate_collection_name(collection)).config.get,
        )
        schema = schema_from_config(config)
        self._schemas[collection] = (schema, time.monotonic() + self._schema_ttl)
        return schema

    async def _tenant_exists(self, client: Any, collection: str, tenant: str) -> bool:
        name = weaviate_tenant_name(tenant)
        known = self._tenants.setdefault(collection, set())
        if name in known:
            return True
        base = client.collections.use(weaviate_collection_name(collection))
        exists = bool(await self._call("tenants.exists", lambda: base.tenants.exists(name)))
        if exists:
            known.add(name)
        return exists

    async def _ensure_tenant(self, client: Any, collection: str, tenant: str) -> None:
        if await self._tenant_exists(client, collection, tenant):
            return
        name = weaviate_tenant_name(tenant)
        base = client.collections.use(weaviate_collection_name(collection))
        try:
            await base.tenants.create(name)
        except (WeaviateBaseError, OSError, TimeoutError) as exc:
            # Another writer may have created it meanwhile.
            if not await self._call("tenants.exists", lambda: base.tenants.exists(name)):
                raise StoreUnavailable(
                    f"Weaviate cannot create tenant {name} in {collection}: {exc}"
                ) from exc
        self._tenants[collection].add(name)

    def _read_filter(self, tenant: str, modalities: Sequence[str]) -> _Filters:
        return base_filter(None if self.settings.multi_tenancy else tenant, modalities)

    # -- VectorStore

    async def _existing(self, collection: str) -> tuple[str, _Schema]:
        """The real collection behind a name or alias and its schema; NotFound when absent."""
        real = await self._real(collection)
        if real is None:
            raise CollectionNotFound(f"collection {collection!r} does not exist")
        return real, await self._schema(real)

    async def ensure_collection(self, collection: Collection) -> None:
        if collection.dimension <= 0:
            raise InvalidQuery(f"collection {collection.name}: dimension must be positive")
        client = await self._conn()
        kwargs = collection_create_kwargs(collection, self.settings)
        wname = kwargs["name"]
        if await self._call("alias.get", lambda: client.alias.get(alias_name=wname)) is not None:
            raise StoreConflict(f"collection {collection.name!r} is the name of an alias")
        if not await self._call("collections.exists", lambda: client.collections.exists(wname)):
            try:
                await client.collections.create(**kwargs)
            except WeaviateBaseError as exc:
                # Created concurrently by another process is fine; anything else is not.
                if not await self._call("collections.exists", lambda: client.collections.exists(wname)):
                    raise StoreUnavailable(f"Weaviate cannot create {wname}: {exc}") from exc
        handle = client.collections.use(wname)
        config = await self._call("config.get", handle.config.get)
        current = schema_from_config(config)
        if current.metric != collection.metric or current.dimension not in (None, collection.dimension):
            raise StoreConflict(
                f"collection {collection.name} exists with dimension {current.dimension} / {current.metric}, "
                f"not {collection.dimension} / {collection.metric}"
            )
        changed = sorted(k for k, v in collection.attributes.items() if current.attributes.get(k, v) != v)
        if changed:
            raise StoreConflict(f"collection {collection.name}: attribute kinds cannot change ({changed})")
        # Attributes declared since the collection was created (properties are append-only).
        existing = {prop.name for prop in config.properties}
        for prop in kwargs["properties"]:
            if prop.name not in existing:
                try:
                    await handle.config.add_property(prop)
                except WeaviateBaseError as exc:
                    raise StoreUnavailable(f"Weaviate cannot add {prop.name} to {wname}: {exc}") from exc
        schema = _Schema(
            collection.metric, {**current.attributes, **collection.attributes}, collection.dimension
        )
        self._schemas[collection.name] = (schema, time.monotonic() + self._schema_ttl)

    async def drop_collection(self, name: str) -> None:
        client = await self._conn()
        wname = weaviate_collection_name(name)

        async def drop() -> None:
            # Aliases pointing at the collection go with it (as in the embedded store).
            for alias in await client.alias.list_all(collection=wname):
                await client.alias.delete(alias_name=alias)
            await client.collections.delete(wname)

        await self._call("drop collection", drop)
        self._schemas.pop(name, None)
        self._tenants.pop(name, None)
        self._resolved.clear()

    async def set_alias(self, alias: str, collection: str) -> None:
        client = await self._conn()
        walias, wtarget = weaviate_collection_name(alias), weaviate_collection_name(collection)

        async def upsert() -> None:
            if not await client.collections.exists(wtarget):
                raise CollectionNotFound(f"alias {alias}: collection {collection!r} does not exist")
            current = await client.alias.get(alias_name=walias)
            if current is None and await client.collections.exists(walias):
                raise StoreConflict(f"alias {alias!r} is the name of a collection")
            if current is not None:
                await client.alias.update(alias_name=walias, new_target_collection=wtarget)
                return
            try:
                await client.alias.create(alias_name=walias, target_collection=wtarget)
            except WeaviateBaseError:
                # Created concurrently: switch it instead.
                if not await client.alias.update(alias_name=walias, new_target_collection=wtarget):
                    raise

        await self._call("alias", upsert)
        self._resolved.pop(alias, None)

    async def resolve(self, name_or_alias: str) -> str | None:
        try:
            wname = weaviate_collection_name(name_or_alias)
        except InvalidQuery:
            return None
        client = await self._conn()
        alias = await self._call("alias.get", lambda: client.alias.get(alias_name=wname))
        if alias is not None:
            return mmsearch_collection_name(alias.collection)
        if await self._call("collections.exists", lambda: client.collections.exists(wname)):
            return name_or_alias
        return None

    async def states(self, collection: str, tenant: str, item_ids: Sequence[str]) -> dict[str, ItemState]:
        if not item_ids:
            return {}
        real, _ = await self._existing(collection)
        client = await self._conn()
        if self.settings.multi_tenancy and not await self._tenant_exists(client, real, tenant):
            return {}
        handle = self._handle(client, real, tenant)
        ids = list(dict.fromkeys(item_ids))
        result = await self._call(
            "fetch_objects_by_ids",
            lambda: handle.query.fetch_objects_by_ids(
                [item_uuid(tenant, i) for i in ids], limit=len(ids), return_properties=list(STATE_PROPERTIES)
            ),
        )
        wanted = set(ids)
        out: dict[str, ItemState] = {}
        for obj in result.objects:
            props = obj.properties
            if props.get("tenant") == tenant and props.get("item_id") in wanted:
                out[str(props["item_id"])] = properties_to_state(props)
        return out

    async def write(self, collection: str, records: Sequence[ItemRecord]) -> None:
        if not records:
            return
        real, schema = await self._existing(collection)
        by_tenant: dict[str, dict[uuid.UUID, ItemRecord]] = {}
        for record in records:  # the last record of an item wins, as sequential upserts would
            check_vector(record, schema.dimension)
            for passage in record.passages:
                check_vector(replace(record, vector=passage.vector, passages=()), schema.dimension)
            by_tenant.setdefault(record.tenant, {})[item_uuid(record.tenant, record.item_id)] = record
        client = await self._conn()
        errors: list[str] = []
        for tenant, items in by_tenant.items():
            if self.settings.multi_tenancy:
                await self._ensure_tenant(client, real, tenant)
            handle = self._handle(client, real, tenant)
            further = [
                (record, build_passage_object(record, index, passage, schema.attributes))
                for record in items.values()
                if not record.deleted
                for index, passage in enumerate(record.passages[1:], start=1)
            ]
            heads = [(rec, build_object(uid, rec, schema.attributes)) for uid, rec in items.items()]
            # New passages, then the heads (the switch), then the other generations' passages.
            for batch in (further, heads):
                if not batch:
                    continue
                try:
                    result = await handle.data.insert_many([o for _, o in batch])
                except (WeaviateBaseError, OSError, TimeoutError) as exc:
                    raise StoreUnavailable(f"Weaviate batch write to {real} failed: {exc}") from exc
                errors += batch_errors(tenant, [r for r, _ in batch], result)
                if errors:
                    break
            if errors:
                break
            stale = stale_filter(list(items.values()), None if self.settings.multi_tenancy else tenant)
            try:
                await handle.data.delete_many(where=stale)
            except (WeaviateBaseError, OSError, TimeoutError) as exc:
                raise StoreUnavailable(f"Weaviate delete of old passages in {real} failed: {exc}") from exc
        if errors:
            shown = "; ".join(errors[:10])
            more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
            raise StoreUnavailable(f"Weaviate rejected {len(errors)} objects in {real}: {shown}{more}")

    async def search(self, collection: str, query: Query) -> list[StoreHit]:
        real, schema = await self._existing(collection)
        checked = validate_query(query, schema)
        vector, text = checked.vector, checked.text
        filters = self._read_filter(query.tenant, query.modalities)
        if checked.filter is not None:
            filters = Filter.all_of([filters, translate_filter(checked.filter)])
        client = await self._conn()
        if self.settings.multi_tenancy and not await self._tenant_exists(client, real, query.tenant):
            return []
        handle = self._handle(client, real, query.tenant)
        n = min(checked.candidates(self._window) if checked.hybrid else checked.depth, self._query_max)
        if not checked.hybrid and query.offset >= self._query_max:
            return []
        heads = _Heads(self, handle, query.tenant)
        jobs: list[Awaitable[list[_Best]]] = []
        if vector is not None:
            if query.exact:
                jobs.append(self._exact(handle, schema.metric, vector, filters, n=n, heads=heads))
            else:
                jobs.append(
                    self._items(
                        lambda limit: self._near_vector(handle, schema.metric, vector, filters, limit),
                        n,
                        heads,
                    )
                )
        if text:
            jobs.append(self._items(lambda limit: self._bm25(handle, text, filters, limit), n, heads))
        results = await asyncio.gather(*jobs)
        vector_hits = results[0] if vector is not None else []
        text_hits = results[-1] if text else []
        return assemble_hits(
            vector_hits,
            text_hits,
            rrf_k=query.rrf_k,
            offset=query.offset,
            limit=query.limit,
            fused=checked.hybrid,
        )

    async def _items(
        self,
        fetch_passages: Callable[[int], Awaitable[list[tuple[dict[str, Any], float]]]],
        n: int,
        heads: _Heads,
    ) -> list[_Best]:
        """The best `n` items by their best current passage (see mmsearch.stores.qdrant_edge._ranked:
        the same rule): fetch passages, doubling, until n items are settled or the ranking ends."""
        fetch = n + 1
        cap = self._query_max
        while True:
            fetch = min(fetch, cap)
            ranked = await fetch_passages(fetch)
            exhausted = len(ranked) < fetch or fetch >= cap
            items = await heads.best(ranked)
            if not exhausted:
                last = -round(ranked[-1][1], 5)
                settled = [item for item in items if -round(item.score, 5) < last]
                if len(settled) < n:
                    fetch *= 2
                    continue
                items = settled
            return items[:n]

    async def set_text(
        self, collection: str, tenant: str, item_id: str, state: ItemState, *, text: str, snippet: str
    ) -> bool:
        """Check, then a partial update (collection.data.update keeps the vector and the other
        properties). Not atomic in Weaviate: the enrichment topic's per-item order makes the
        newest version's text the last one set."""
        current = (await self.states(collection, tenant, [item_id])).get(item_id)
        if current != state or state.deleted:
            return False
        real, _ = await self._existing(collection)
        handle = self._handle(await self._conn(), real, tenant)
        await self._call(
            "data.update",
            lambda: handle.data.update(
                uuid=item_uuid(tenant, item_id), properties={"text": text, "snippet": snippet}
            ),
        )
        return True

    async def passage_tokens(
        self, collection: str, tenant: str, passages: Sequence[tuple[str, PassageHit]]
    ) -> list[bytes]:
        """Not stored in Weaviate (yet): every passage reads as b"", so the reranker encodes the
        candidates on the fly (correct, slower). Weaviate >= 1.29 has multi-vector named vectors
        with a MaxSim comparator (weaviate-client v4: `Configure.VectorIndex.MultiVector`) and
        BLOB properties; neither is written here because no Weaviate server can be run to verify
        them (docs/architecture.md, "Stored rerank vectors")."""
        return [b""] * len(passages)

    async def count_passages(self, collection: str, tenant: str, item_id: str) -> int:
        real, _ = await self._existing(collection)
        client = await self._conn()
        if self.settings.multi_tenancy and not await self._tenant_exists(client, real, tenant):
            return 0
        handle = self._handle(client, real, tenant)
        parts = [Filter.by_property("deleted").equal(False), Filter.by_property("item_id").equal(item_id)]
        if not self.settings.multi_tenancy:
            parts.append(Filter.by_property("tenant").equal(tenant))
        result = await self._call(
            "aggregate", lambda: handle.aggregate.over_all(filters=Filter.all_of(parts), total_count=True)
        )
        return int(result.total_count or 0)

    async def _near_vector(
        self, handle: Any, metric: Metric, vector: npt.NDArray[np.float32], filters: _Filters, limit: int
    ) -> list[tuple[dict[str, Any], float]]:
        result = await self._call(
            "near_vector",
            lambda: handle.query.near_vector(
                near_vector=[float(x) for x in vector],
                target_vector=VECTOR_NAME,
                limit=limit,
                filters=filters,
                return_metadata=MetadataQuery(distance=True),
                return_properties=list(RETURN_PROPERTIES),
            ),
        )
        return [
            (dict(obj.properties), distance_to_score(metric, float(obj.metadata.distance)))
            for obj in result.objects
        ]

    async def _bm25(
        self, handle: Any, text: str, filters: _Filters, limit: int
    ) -> list[tuple[dict[str, Any], float]]:
        result = await self._call(
            "bm25",
            lambda: handle.query.bm25(
                query=text,
                query_properties=list(_SEARCHABLE_TEXT),
                limit=limit,
                filters=filters,
                return_metadata=MetadataQuery(score=True),
                return_properties=list(RETURN_PROPERTIES),
            ),
        )
        return [(dict(obj.properties), float(obj.metadata.score or 0.0)) for obj in result.objects]

    async def _exact(
        self,
        handle: Any,
        metric: Metric,
        vector: npt.NDArray[np.float32],
        filters: _Filters,
        *,
        n: int,
        heads: _Heads,
    ) -> list[_Best]:
        result = await self._call(
            "fetch_objects",
            lambda: handle.query.fetch_objects(
                limit=self._exact_max,
                filters=filters,
                include_vector=[VECTOR_NAME],
                return_properties=list(RETURN_PROPERTIES),
            ),
        )
        if len(result.objects) >= self._exact_max:
            total = await self._call(
                "aggregate", lambda: handle.aggregate.over_all(filters=filters, total_count=True)
            )
            if int(total.total_count or 0) > self._exact_max:
                raise ResourceLimit(
                    f"exact search over more than {self._exact_max} items is not supported by the "
                    "Weaviate store"
                )
        objects = [obj for obj in result.objects if obj.vector.get(VECTOR_NAME)]
        if not objects:
            return []
        matrix = np.asarray([obj.vector[VECTOR_NAME] for obj in objects], dtype=np.float32)
        scores = exact_scores(metric, vector, matrix)
        order = sorted(range(len(objects)), key=lambda i: (-scores[i], i))
        items = await heads.best([(dict(objects[i].properties), float(scores[i])) for i in order])
        return items[:n]

    async def count(self, collection: str, tenant: str | None = None) -> int:
        real, _ = await self._existing(collection)
        client = await self._conn()
        # Heads only (an item's further passages are objects too; a head from before passages
        # has no "head" property).
        head = Filter.by_property("head")
        live = Filter.all_of(
            [
                Filter.by_property("deleted").equal(False),
                Filter.any_of([head.equal(True), head.is_none(True)]),
            ]
        )

        async def one(handle: Any, filters: _Filters) -> int:
            result = await self._call(
                "aggregate", lambda: handle.aggregate.over_all(filters=filters, total_count=True)
            )
            return int(result.total_count or 0)

        if not self.settings.multi_tenancy:
            filters = (
                live if tenant is None else Filter.all_of([live, Filter.by_property("tenant").equal(tenant)])
            )
            return await one(self._handle(client, real), filters)
        if tenant is not None:
            if not await self._tenant_exists(client, real, tenant):
                return 0
            return await one(self._handle(client, real, tenant), live)
        base = client.collections.use(weaviate_collection_name(real))
        tenants = await self._call("tenants.get", base.tenants.get)
        level = self.settings.consistency
        counts = await asyncio.gather(
            *(one(base.with_consistency_level(level).with_tenant(t), live) for t in tenants)
        )
        return sum(counts)

    async def expired(self, collection: str, before: datetime, limit: int) -> list[StoredItem]:
        real, _ = await self._existing(collection)
        client = await self._conn()
        head = Filter.by_property("head")
        old = Filter.all_of(
            [
                Filter.by_property("deleted").equal(False),
                Filter.by_property("event_time").less_than(before),
                Filter.any_of([head.equal(True), head.is_none(True)]),
            ]
        )
        wanted = ["tenant", "item_id", *STATE_PROPERTIES]
        if self.settings.multi_tenancy:
            base = client.collections.use(weaviate_collection_name(real))
            tenants = list(await self._call("tenants.get", base.tenants.get))
            handles = [self._handle(client, real, str(t)) for t in tenants]
        else:
            handles = [self._handle(client, real)]
        found: list[StoredItem] = []
        for handle in handles:
            if len(found) >= limit:
                break
            fetch = functools.partial(
                handle.query.fetch_objects, filters=old, limit=limit - len(found), return_properties=wanted
            )
            result = await self._call("fetch_objects", fetch)
            for obj in result.objects:
                props = obj.properties
                found.append(
                    StoredItem(str(props["tenant"]), str(props["item_id"]), properties_to_state(props))
                )
        return found

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()


def check_vector(record: ItemRecord, dimension: int | None) -> None:
    """A live record needs a finite vector of the collection's dimension."""
    if record.vector is None or record.deleted:
        return
    array = np.asarray(record.vector, dtype=np.float32).reshape(-1)
    if dimension is not None and array.shape[0] != dimension:
        raise InvalidQuery(
            f"item {record.item_id}: vector has {array.shape[0]} dimensions, collection has {dimension}"
        )
    if not np.isfinite(array).all():
        raise InvalidQuery(f"item {record.item_id}: vector has NaN or infinite values")


def batch_errors(tenant: str, records: Sequence[ItemRecord], result: Any) -> list[str]:
    """The failed objects of one insert_many (objects in `records` order), as messages."""
    errors = [
        f"{tenant}/{record.item_id}: {result.errors[i].message}"
        for i, record in enumerate(records)
        if i in result.errors
    ]
    if result.has_errors and not errors:
        errors.append(f"{tenant}: batch reported errors for unknown objects")
    acknowledged = len(result.uuids)
    if not errors and len(records) <= MAX_STORED_RESULTS and acknowledged != len(records):
        errors.append(f"{tenant}: {len(records) - acknowledged} of {len(records)} objects not acknowledged")
    return errors


def build_object(uid: uuid.UUID, record: ItemRecord, attributes: Mapping[str, FieldKind]) -> Any:
    """One item's head DataObject (a tombstone carries no vector)."""
    first = record.passages[0].vector if record.passages else record.vector
    vector = None if first is None or record.deleted else {VECTOR_NAME: [float(x) for x in first]}
    return DataObject(properties=head_properties(record, attributes), uuid=uid, vector=vector)


def build_passage_object(
    record: ItemRecord, index: int, passage: Passage, attributes: Mapping[str, FieldKind]
) -> Any:
    """A further passage's DataObject."""
    assert passage.vector is not None
    return DataObject(
        properties=passage_properties(record, index, passage, attributes),
        uuid=passage_uuid(record.tenant, record.item_id, generation(record), index),
        vector={VECTOR_NAME: [float(x) for x in passage.vector]},
    )


def stale_filter(records: Sequence[ItemRecord], tenant: str | None) -> _Filters:
    """The further passages of these items that are not of the generation just written."""
    parts = [
        Filter.by_property("item_id").contains_any([r.item_id for r in records]),
        Filter.by_property("head").equal(False),
        Filter.by_property("generation").contains_none([generation(r) for r in records]),
    ]
    if tenant is not None:
        parts.append(Filter.by_property("tenant").equal(tenant))
    return Filter.all_of(parts)


@dataclass(frozen=True)
class _Best:
    """An item of one ranking: its head's properties, best passage score and passage."""

    item_id: str
    score: float
    head: Mapping[str, Any]
    passage: PassageHit | None


class _Heads:
    """The heads a search checks passages against: read once per search, only for items it saw
    further passages of (a head object ranked by itself is a consistent snapshot of its item)."""

    def __init__(self, store: WeaviateStore, handle: Any, tenant: str) -> None:
        self._store, self._handle, self._tenant = store, handle, tenant
        self.fetched: dict[str, Mapping[str, Any] | None] = {}

    async def _load(self, item_ids: set[str]) -> None:
        missing = sorted(i for i in item_ids if i not in self.fetched)
        if not missing:
            return
        result = await self._store._call(
            "fetch_objects_by_ids",
            lambda: self._handle.query.fetch_objects_by_ids(
                [item_uuid(self._tenant, i) for i in missing],
                limit=len(missing),
                return_properties=list(RETURN_PROPERTIES),
            ),
        )
        found = {
            str(o.properties.get("item_id")): dict(o.properties)
            for o in result.objects
            if o.properties.get("tenant") == self._tenant
        }
        for item_id in missing:
            self.fetched[item_id] = found.get(item_id)

    async def best(self, ranked: Sequence[tuple[dict[str, Any], float]]) -> list[_Best]:
        """Each item once, by its best current passage; ordered by score then item id."""
        await self._load({str(p["item_id"]) for p, _ in ranked if p.get("head") is False})
        best: dict[str, tuple[tuple[float, int], _Best]] = {}
        for props, score in ranked:
            item_id = str(props["item_id"])
            head: Mapping[str, Any] | None = props
            if item_id in self.fetched:
                head = self.fetched[item_id]
                if head is None or head.get("deleted") or head.get("generation") != props.get("generation"):
                    continue
            elif props.get("head") is False:
                continue
            assert head is not None
            key = (-round(score, 5), int(props.get("passage") or 0))
            if item_id not in best or key < best[item_id][0]:
                best[item_id] = (key, _Best(item_id, score, head, passage_hit(props)))
        ordered = sorted(best.values(), key=lambda entry: (entry[0][0], entry[1].item_id))
        return [entry[1] for entry in ordered]


def assemble_hits(
    vector_hits: Sequence[_Best],
    text_hits: Sequence[_Best],
    *,
    rrf_k: int,
    offset: int,
    limit: int,
    fused: bool,
) -> list[StoreHit]:
    """The final page of items. One ranking: its items from `offset` (ranks offset + 1, ...).
    Both: fused by mmsearch.stores.fusion and paged here; the passage shown is the one of the
    ranking where the item ranks better (vector on a tie)."""
    if not fused:
        first = offset + 1
        if vector_hits:
            return [
                StoreHit(
                    record=properties_to_record(b.head),
                    score=b.score,
                    vector_score=b.score,
                    vector_rank=rank,
                    passage=b.passage,
                )
                for rank, b in enumerate(vector_hits[offset : offset + limit], start=first)
            ]
        return [
            StoreHit(
                record=properties_to_record(b.head),
                score=b.score,
                bm25_score=b.score,
                bm25_rank=rank,
                passage=b.passage,
            )
            for rank, b in enumerate(text_hits[offset : offset + limit], start=first)
        ]
    by_vector = {b.item_id: b for b in vector_hits}
    by_text = {b.item_id: b for b in text_hits}
    rankings = [[(b.item_id, b.score) for b in vector_hits], [(b.item_id, b.score) for b in text_hits]]
    hits = []
    for item in reciprocal_rank_fusion(rankings, rrf_k)[offset : offset + limit]:
        vrank, brank = item.ranks
        from_vector = brank is None or (vrank is not None and vrank <= brank)
        shown = by_vector[item.id] if from_vector else by_text[item.id]
        hits.append(
            StoreHit(
                record=properties_to_record(shown.head),
                score=item.score,
                vector_score=item.raw_scores[0],
                bm25_score=item.raw_scores[1],
                vector_rank=vrank,
                bm25_rank=brank,
                passage=shown.passage,
            )
        )
    return hits
