"""The Weaviate adapter without a server: names, the collection schema as the client would send it,
filter translation (and its gRPC encoding), ItemRecord <-> properties, scores and RRF fusion, and the
store's requests and error handling against a recording fake of the async client."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from weaviate.classes.config import ConsistencyLevel, VectorDistances
from weaviate.collections.batch.grpc_batch import _BatchGRPC
from weaviate.collections.classes.batch import BatchObjectReturn, ErrorObject, _BatchObject
from weaviate.collections.classes.config import _CollectionConfigCreate
from weaviate.collections.classes.filters import _FilterAnd, _FilterNot, _FilterOr, _Filters, _FilterValue
from weaviate.collections.filters import _FilterToGRPC
from weaviate.exceptions import WeaviateConnectionError
from weaviate.util import _ServerVersion

from mmsearch.stores.base import (
    CORE_FIELDS,
    AttributeValue,
    Collection,
    FieldKind,
    ItemRecord,
    Passage,
    PassageHit,
    Query,
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
from mmsearch.stores.filters import AllOf, AnyOf, Condition, FilterNode, Not, parse_filter
from mmsearch.stores.weaviate_store import (
    RETURN_PROPERTIES,
    VECTOR_NAME,
    WeaviateSettings,
    WeaviateStore,
    _Best,
    assemble_hits,
    base_filter,
    build_object,
    collection_create_kwargs,
    decode_attributes,
    distance_to_score,
    encode_attributes,
    exact_scores,
    head_properties,
    mmsearch_collection_name,
    passage_properties,
    properties_to_record,
    record_to_properties,
    schema_from_config,
    translate_filter,
    weaviate_collection_name,
    weaviate_tenant_name,
)
from mmsearch.v1 import common_pb2
from tests.contract.store_contract import DIM as CONTRACT_DIM
from tests.contract.store_contract import (
    FUSION_ITEMS,
    FUSION_ORDER,
    FUSION_QUERY,
    FUSION_TERM,
    fusion_records,
    rrf_expected,
)
from tests.contract.store_contract import TENANT as CONTRACT_TENANT

ATTRS: Mapping[str, FieldKind] = {
    "team": "keyword",
    "labels": "keyword_list",
    "priority": "int",
    "score": "float",
    "pinned": "bool",
    "due": "datetime",
}
T0 = datetime(2024, 1, 1, tzinfo=UTC)
COLLECTION = Collection("minilm_1", "minilm@1", 4, "cosine", ATTRS)


def record(item_id: str = "a1", tenant: str = "acme", **overrides: Any) -> ItemRecord:
    base = ItemRecord(
        tenant=tenant,
        item_id=item_id,
        modality="image",
        vector=np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32),
        version=7,
        event_time=T0 + timedelta(minutes=5, microseconds=123456),
        content_sha256="ab" * 32,
        model_version="clip@2",
        text="an invoice from the supplier",
        title="Invoice 42",
        tags=("red", "urgent"),
        source="mail",
        source_uri="s3://bucket/a1",
        created_at=T0,
        attributes={
            "team": "ops",
            "labels": "x",
            "priority": 3,
            "score": 0.25,
            "pinned": False,
            "due": T0 + timedelta(days=3),
            "undeclared": "kept",
        },
        snippet="an invoice",
        thumbnail_jpeg=b"\xff\xd8\x00\xff\xd9",
    )
    return replace(base, **overrides) if overrides else base


# --------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("name", "expected"),
    [("minilm_1", "Minilm_1"), ("clip_vit_2", "Clip_vit_2"), ("0clip_2", "CX0clip_2"), ("_x_1", "CX_x_1")],
)
def test_collection_names_map_both_ways(name: str, expected: str) -> None:
    assert weaviate_collection_name(name) == expected
    assert re.fullmatch(r"[A-Z][_0-9A-Za-z]*", expected)
    assert mmsearch_collection_name(expected) == name


def test_collection_name_mapping_is_injective_on_lower_case_names() -> None:
    names = ["c0", "0", "cx0", "x0", "c_x", "_x", "cxa", "a", "minilm_1", "m"]
    mapped = [weaviate_collection_name(n) for n in names]
    assert len(set(mapped)) == len(names)
    assert [mmsearch_collection_name(m) for m in mapped] == names


@pytest.mark.parametrize("bad", ["", "Minilm_1", "a-b", "a.b", "a b"])
def test_collection_names_outside_the_domain_are_refused(bad: str) -> None:
    with pytest.raises(InvalidQuery):
        weaviate_collection_name(bad)


def test_tenant_names_are_valid_and_injective() -> None:
    tenants = ["acme", "Acme", "a_b", "a__b", "a.b", "a_db", "a-b", "x" * 64, "x" * 65, "y" * 128, "a.b.c"]
    mapped = [weaviate_tenant_name(t) for t in tenants]
    assert mapped[0] == "acme"
    assert mapped[1] == "Acme"
    assert mapped[6] == "a-b"
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", m) for m in mapped)
    assert len(set(mapped)) == len(tenants)
    with pytest.raises(ValueError):
        weaviate_tenant_name("")


# ----------------------------------------------------------------------------------- collection schema


def schema_json(collection: Collection, settings: WeaviateSettings) -> dict[str, Any]:
    """The body client.collections.create sends (the client's own serialisation)."""
    kwargs = collection_create_kwargs(collection, settings)
    body: dict[str, Any] = _CollectionConfigCreate(**kwargs)._to_dict(emit_default_vector_index_type=True)
    return body


def test_collection_config_multi_tenant() -> None:
    body = schema_json(COLLECTION, WeaviateSettings(shards=4, replication_factor=3))
    assert body["class"] == "Minilm_1"
    assert body["multiTenancyConfig"] == {
        "enabled": True,
        "autoTenantCreation": True,
        "autoTenantActivation": True,
    }
    assert "shardingConfig" not in body  # each tenant is one shard; Weaviate does not shard tenants
    assert body["replicationConfig"] == {"factor": 3}
    assert body["invertedIndexConfig"]["indexNullState"] is True
    vector = body["vectorConfig"][VECTOR_NAME]
    assert vector["vectorizer"] == {"none": {}}
    assert vector["vectorIndexType"] == "hnsw"
    assert vector["vectorIndexConfig"]["distance"] == "cosine"
    description = json.loads(body["description"].removeprefix("mmsearch collection "))
    assert description == {"space_id": "minilm@1", "dimension": 4, "metric": "cosine"}


def test_collection_config_sharded_single_tenant() -> None:
    body = schema_json(COLLECTION, WeaviateSettings(multi_tenancy=False, shards=6, replication_factor=2))
    assert "multiTenancyConfig" not in body
    assert body["shardingConfig"]["desiredCount"] == 6
    assert body["replicationConfig"] == {"factor": 2}


@pytest.mark.parametrize(
    ("metric", "distance"), [("cosine", "cosine"), ("dot", "dot"), ("euclidean", "l2-squared")]
)
def test_metric_maps_to_weaviate_distance(metric: Any, distance: str) -> None:
    body = schema_json(replace(COLLECTION, metric=metric), WeaviateSettings())
    assert body["vectorConfig"][VECTOR_NAME]["vectorIndexConfig"]["distance"] == distance


def test_properties_cover_every_record_field_with_the_right_indexes() -> None:
    props = {p["name"]: p for p in schema_json(COLLECTION, WeaviateSettings())["properties"]}
    record_fields = set(ItemRecord.__dataclass_fields__) - {"vector", "attributes", "passages"}
    assert record_fields <= set(props)
    types = {
        "tenant": "text",
        "item_id": "text",
        "modality": "text",
        "tags": "text[]",
        "source": "text",
        "created_at": "date",
        "event_time": "date",
        "version": "int",
        "deleted": "boolean",
        "thumbnail_jpeg": "blob",
        "attr_team": "text",
        "attr_labels": "text[]",
        "attr_priority": "int",
        "attr_score": "number",
        "attr_pinned": "boolean",
        "attr_due": "date",
    }
    for name, data_type in types.items():
        assert props[name]["dataType"] == [data_type], name
    filterable = {*CORE_FIELDS, *(f"attr_{a}" for a in ATTRS)}
    for name in filterable:
        assert props[name]["indexFilterable"] is True, name
        assert props[name]["indexSearchable"] is False, name
        ranged = props[name]["dataType"][0] in ("int", "number", "date")
        assert props[name]["indexRangeFilters"] is ranged, name
        if props[name]["dataType"][0].startswith("text"):
            assert props[name]["tokenization"] == "field", name
    for name in ("text", "title"):
        assert props[name]["indexSearchable"] is True
        assert props[name]["tokenization"] == "word"
    for name in ("content_sha256", "model_version", "source_uri", "snippet", "attributes_json"):
        assert props[name]["indexFilterable"] is False
        assert props[name]["indexSearchable"] is False


def test_invalid_settings_and_attribute_names_are_refused() -> None:
    with pytest.raises(ValueError):
        collection_create_kwargs(COLLECTION, WeaviateSettings(shards=0))
    with pytest.raises(ValueError):
        collection_create_kwargs(COLLECTION, WeaviateSettings(replication_factor=0))
    with pytest.raises(ValueError, match="attribute name"):
        collection_create_kwargs(replace(COLLECTION, attributes={"bad-name": "int"}), WeaviateSettings())


def test_schema_read_back_from_config() -> None:
    kwargs = collection_create_kwargs(replace(COLLECTION, metric="dot"), WeaviateSettings())
    config = config_namespace(kwargs)
    schema = schema_from_config(config)
    assert schema.metric == "dot"
    assert schema.dimension == 4
    assert dict(schema.attributes) == dict(ATTRS)


# -------------------------------------------------------------------------------------------- filters


def shape(f: _Filters) -> Any:
    """A Filter object as nested tuples: (operator, target, value) or (operator, [children])."""
    if isinstance(f, _FilterValue):
        value = list(f.value) if isinstance(f.value, list | tuple) else f.value
        return (f.operator.value, f.target, value)
    assert isinstance(f, _FilterAnd | _FilterOr | _FilterNot)
    return (f.operator.value, [shape(c) for c in f.filters])


def translated(node: FilterNode) -> Any:
    f = translate_filter(node)
    _FilterToGRPC.convert(f)  # the client can encode it
    return shape(f)


D1 = T0 + timedelta(days=1)
D2 = T0 + timedelta(days=2)
LEAVES: list[tuple[Condition, Any]] = [
    (Condition("modality", "keyword", "eq", ("image",)), ("Equal", "modality", "image")),
    (Condition("source", "keyword", "in", ("web", "mail")), ("ContainsAny", "source", ["web", "mail"])),
    (Condition("item_id", "keyword", "in", ("a", "b")), ("ContainsAny", "item_id", ["a", "b"])),
    (Condition("tags", "keyword_list", "eq", ("red",)), ("ContainsAny", "tags", ["red"])),
    (Condition("tags", "keyword_list", "in", ("red", "blue")), ("ContainsAny", "tags", ["red", "blue"])),
    (Condition("attributes.team", "keyword", "eq", ("ops",)), ("Equal", "attr_team", "ops")),
    (Condition("attributes.labels", "keyword_list", "in", ("x",)), ("ContainsAny", "attr_labels", ["x"])),
    (Condition("attributes.priority", "int", "eq", (3,)), ("Equal", "attr_priority", 3)),
    (
        Condition("attributes.priority", "int", "in", (1, 2)),
        ("Or", [("Equal", "attr_priority", 1), ("Equal", "attr_priority", 2)]),
    ),
    (Condition("attributes.score", "float", "eq", (0.5,)), ("Equal", "attr_score", 0.5)),
    (Condition("attributes.score", "float", "in", (0.5,)), ("Equal", "attr_score", 0.5)),
    (Condition("attributes.pinned", "bool", "eq", (False,)), ("Equal", "attr_pinned", False)),
    (
        Condition("attributes.pinned", "bool", "in", (True, False)),
        ("Or", [("Equal", "attr_pinned", True), ("Equal", "attr_pinned", False)]),
    ),
    (Condition("attributes.due", "datetime", "eq", (D1,)), ("Equal", "attr_due", D1)),
    (
        Condition("created_at", "datetime", "in", (D1, D2)),
        ("Or", [("Equal", "created_at", D1), ("Equal", "created_at", D2)]),
    ),
    (Condition("event_time", "datetime", "range", gt=D1), ("GreaterThan", "event_time", D1)),
    (Condition("event_time", "datetime", "range", gte=D1), ("GreaterThanEqual", "event_time", D1)),
    (Condition("attributes.score", "float", "range", lt=0.5), ("LessThan", "attr_score", 0.5)),
    (Condition("attributes.priority", "int", "range", lte=4), ("LessThanEqual", "attr_priority", 4)),
    (
        Condition("attributes.priority", "int", "range", gte=1, lt=4),
        ("And", [("GreaterThanEqual", "attr_priority", 1), ("LessThan", "attr_priority", 4)]),
    ),
]


@pytest.mark.parametrize(("cond", "expected"), LEAVES, ids=lambda x: getattr(x, "field", ""))
def test_conditions_translate(cond: Condition, expected: Any) -> None:
    assert translated(cond) == expected


NEGATED: list[tuple[Condition, Any]] = [
    # always-present core fields: no null check
    (Condition("modality", "keyword", "eq", ("image",)), ("NotEqual", "modality", "image")),
    (
        Condition("source", "keyword", "in", ("web", "mail")),
        ("And", [("NotEqual", "source", "web"), ("NotEqual", "source", "mail")]),
    ),
    (
        Condition("event_time", "datetime", "range", gt=D1, lte=D2),
        ("Or", [("LessThanEqual", "event_time", D1), ("GreaterThan", "event_time", D2)]),
    ),
    # optional fields: a missing value matches the negation
    (
        Condition("tags", "keyword_list", "eq", ("red",)),
        ("Or", [("ContainsNone", "tags", ["red"]), ("IsNull", "tags", True)]),
    ),
    (
        Condition("attributes.team", "keyword", "eq", ("ops",)),
        ("Or", [("NotEqual", "attr_team", "ops"), ("IsNull", "attr_team", True)]),
    ),
    (
        Condition("attributes.priority", "int", "range", gte=1, lt=4),
        (
            "Or",
            [
                ("Or", [("LessThan", "attr_priority", 1), ("GreaterThanEqual", "attr_priority", 4)]),
                ("IsNull", "attr_priority", True),
            ],
        ),
    ),
    (
        Condition("created_at", "datetime", "range", lt=D1),
        ("Or", [("GreaterThanEqual", "created_at", D1), ("IsNull", "created_at", True)]),
    ),
    (
        Condition("attributes.pinned", "bool", "eq", (True,)),
        ("Or", [("NotEqual", "attr_pinned", True), ("IsNull", "attr_pinned", True)]),
    ),
]


@pytest.mark.parametrize(("cond", "expected"), NEGATED, ids=lambda x: getattr(x, "field", ""))
def test_negated_conditions_push_down(cond: Condition, expected: Any) -> None:
    assert translated(Not(cond)) == expected
    assert translated(Not(Not(cond))) == translated(cond)


def test_groups_and_de_morgan() -> None:
    a = Condition("modality", "keyword", "eq", ("image",))
    b = Condition("source", "keyword", "eq", ("web",))
    c = Condition("item_id", "keyword", "eq", ("x",))
    ta, tb, tc = translated(a), translated(b), translated(c)
    na, nb = translated(Not(a)), translated(Not(b))
    assert translated(AllOf((a, b))) == ("And", [ta, tb])
    assert translated(AnyOf((a, b))) == ("Or", [ta, tb])
    assert translated(AllOf((a,))) == ta  # a one-element group is the element
    assert translated(Not(AllOf((a, b)))) == ("Or", [na, nb])
    assert translated(Not(AnyOf((a, b)))) == ("And", [na, nb])
    assert translated(AllOf((a, AnyOf((b, Not(c)))))) == ("And", [ta, ("Or", [tb, translated(Not(c))])])
    assert translated(Not(AllOf((a, Not(AnyOf((b, c))))))) == ("Or", [na, ("Or", [tb, tc])])


def test_no_generic_not_operator_reaches_weaviate() -> None:
    a = Condition("tags", "keyword_list", "in", ("red",))
    tree: FilterNode = Not(AnyOf((a, Not(AllOf((a, Not(a)))))))
    assert "Not" not in json.dumps(translated(tree), default=str)


def test_filter_from_the_api_message() -> None:
    cond = common_pb2.FieldCondition(field="attributes.priority")
    cond.range.gte.int_value = 2
    tree = common_pb2.Filter(
        all_of=common_pb2.FilterList(
            filters=[
                common_pb2.Filter(condition=cond),
                common_pb2.Filter(
                    negate=common_pb2.Filter(
                        condition=common_pb2.FieldCondition(
                            field="tags", eq=common_pb2.Value(string_value="x")
                        )
                    )
                ),
            ]
        )
    )
    node = parse_filter(tree, ATTRS)
    assert node is not None
    assert translated(node) == (
        "And",
        [
            ("GreaterThanEqual", "attr_priority", 2),
            ("Or", [("ContainsNone", "tags", ["x"]), ("IsNull", "tags", True)]),
        ],
    )


def test_base_filter() -> None:
    assert shape(base_filter(None, ())) == ("Equal", "deleted", False)
    assert shape(base_filter("acme", ("image", "audio"))) == (
        "And",
        [
            ("Equal", "deleted", False),
            ("Equal", "tenant", "acme"),
            ("ContainsAny", "modality", ["image", "audio"]),
        ],
    )


# -------------------------------------------------------------------------------------------- records


def test_record_round_trips_through_properties() -> None:
    original = record()
    props = record_to_properties(original, ATTRS)
    assert props["attr_labels"] == ["x"]  # a keyword_list attribute holds a list
    assert props["attr_score"] == 0.25
    assert props["version_exact"] == "7"
    assert props["thumbnail_jpeg"] == "/9gA/9k="  # blobs travel base64
    back = properties_to_record(props)
    assert back == replace(original, vector=None)
    assert back.attributes["undeclared"] == "kept"
    with_vector = properties_to_record(props, [1.0, 2.0, 3.0, 4.0])
    assert with_vector.vector is not None
    assert with_vector.vector.dtype == np.float32


def test_values_as_weaviate_returns_them() -> None:
    props = record_to_properties(record(created_at=None, tags=(), thumbnail_jpeg=b""), ATTRS)
    assert "created_at" not in props
    assert "thumbnail_jpeg" not in props
    # Weaviate returns dates as aware datetimes (any offset), missing arrays as None, ints as ints.
    returned = {
        **props,
        "event_time": props["event_time"].astimezone(timezone(timedelta(hours=2))),
        "tags": None,
        "version": 7.0,
    }
    back = properties_to_record(returned)
    assert back.event_time == record().event_time
    assert back.event_time.tzinfo == UTC
    assert back.tags == ()
    assert back.created_at is None
    assert back.thumbnail_jpeg == b""


def test_naive_datetimes_are_taken_as_utc() -> None:
    naive = record(event_time=datetime(2024, 5, 1, 12, 0), created_at=datetime(2024, 5, 1))
    props = record_to_properties(naive, {})
    assert props["event_time"] == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert props["created_at"].tzinfo == UTC


def test_large_versions_are_exact() -> None:
    big = 1_700_000_000_123_456_789  # nanoseconds: beyond a double's 53 bits
    props = record_to_properties(record(version=big), ATTRS)
    props["version"] = float(props["version"])  # what the INT property holds after a gRPC batch
    assert properties_to_record(props).version == big


@pytest.mark.parametrize(
    ("kind", "value"),
    [("int", "3"), ("int", True), ("float", "x"), ("bool", 1), ("datetime", "2024-01-01"), ("keyword", 3)],
)
def test_declared_attributes_of_the_wrong_type_are_refused(kind: FieldKind, value: AttributeValue) -> None:
    with pytest.raises(ValueError, match="declared"):
        record_to_properties(record(attributes={"f": value}), {"f": kind})


def test_attributes_json_keeps_types() -> None:
    values: dict[str, AttributeValue] = {"i": 1, "f": 1.0, "b": True, "s": "1", "t": T0}
    back = decode_attributes(encode_attributes(values))
    assert back == values
    assert {k: type(v) for k, v in back.items()} == {k: type(v) for k, v in values.items()}
    assert decode_attributes("") == {}


def test_data_objects_and_their_grpc_encoding() -> None:
    live = build_object(item_uuid("acme", "a1"), record(), ATTRS)
    assert live.uuid == item_uuid("acme", "a1")
    assert live.vector == {VECTOR_NAME: [0.5, 0.5, 0.5, 0.5]}
    dead = build_object(item_uuid("acme", "a1"), record(vector=None, deleted=True), ATTRS)
    assert dead.vector is None
    assert dead.properties["deleted"] is True
    # The client's own batch encoding accepts our property values (dates, blobs, lists, empty lists).
    encoder = _BatchGRPC(_ServerVersion(1, 32, 0), None, None)
    for obj in (live, build_object(uuid.uuid4(), record(tags=()), ATTRS)):
        batch = _BatchObject(
            collection="Minilm_1",
            vector=obj.vector,
            uuid=str(obj.uuid),
            properties=obj.properties,
            tenant="acme",
            references=None,
            index=0,
        )
        message = encoder.grpc_object(batch)
        assert message.tenant == "acme"
        fields = message.properties.non_ref_properties.fields
        assert fields["event_time"].string_value.startswith("2024-01-01T00:05:00.123456")


# ------------------------------------------------------------------------------------ scores and fusion


def test_distance_to_score() -> None:
    assert distance_to_score("cosine", 0.25) == 0.75
    assert distance_to_score("dot", -3.5) == 3.5
    assert distance_to_score("euclidean", 4.0) == -2.0


def test_exact_scores_match_weaviate_distances() -> None:
    rng = np.random.default_rng(1)
    q = rng.standard_normal(8).astype(np.float32)
    m = rng.standard_normal((5, 8)).astype(np.float32)
    cos = (m @ q) / (np.linalg.norm(m, axis=1) * np.linalg.norm(q))
    np.testing.assert_allclose(
        exact_scores("cosine", q, m), [distance_to_score("cosine", 1 - c) for c in cos], 1e-5
    )
    np.testing.assert_allclose(exact_scores("dot", q, m), m @ q, 1e-5)
    l2sq = ((m - q) ** 2).sum(axis=1)
    np.testing.assert_allclose(
        exact_scores("euclidean", q, m), [distance_to_score("euclidean", d) for d in l2sq], 1e-5
    )


def best(rec: ItemRecord, score: float) -> _Best:
    return _Best(rec.item_id, score, record_to_properties(rec, ATTRS), None)


def test_assemble_hits_single_and_fused() -> None:
    a, b, c = record("a"), record("b"), record("c")
    vector_only = assemble_hits([best(a, 0.9), best(b, 0.8)], [], rrf_k=60, offset=0, limit=2, fused=False)
    assert [(h.score, h.vector_score, h.bm25_score, h.vector_rank, h.bm25_rank) for h in vector_only] == [
        (0.9, 0.9, None, 1, None),
        (0.8, 0.8, None, 2, None),
    ]
    # One ranking of items from rank 1: the page starts at the offset and its ranks continue from it.
    ranking = [best(record(f"x{i}"), 10.0 - i) for i in range(7)] + [best(c, 3.0)]
    text_only = assemble_hits([], ranking, rrf_k=60, offset=7, limit=2, fused=False)
    assert [(h.score, h.vector_score, h.bm25_score, h.vector_rank, h.bm25_rank) for h in text_only] == [
        (3.0, None, 3.0, None, 8)
    ]
    fused = assemble_hits(
        [best(a, 0.9), best(b, 0.8)], [best(c, 5.0), best(b, 4.0)], rrf_k=10, offset=0, limit=10, fused=True
    )
    # b: 1/12 + 1/12; a (vector #1) and c (BM25 #1) tie at 1/11 with best rank 1 each -> item id.
    assert [h.record.item_id for h in fused] == ["b", "a", "c"]
    assert fused[0].score == pytest.approx(2 / 12, rel=1e-12)
    assert fused[1].score == fused[2].score == pytest.approx(1 / 11, rel=1e-12)
    assert [(h.vector_score, h.bm25_score, h.vector_rank, h.bm25_rank) for h in fused] == [
        (0.8, 4.0, 2, 2),
        (0.9, None, 1, None),
        (None, 5.0, None, 1),
    ]
    page = assemble_hits(
        [best(a, 0.9), best(b, 0.8)], [best(b, 5.0), best(c, 4.0)], rrf_k=10, offset=1, limit=1, fused=True
    )
    assert [h.record.item_id for h in page] == ["a"]
    with pytest.raises(InvalidQuery) as raised:
        assemble_hits([best(a, 0.9)], [best(a, 1.0)], rrf_k=0, offset=0, limit=1, fused=True)
    assert raised.value.field == "hybrid.rrf_k"


# ---------------------------------------------------------------------- the store against a fake client


def config_namespace(kwargs: Mapping[str, Any]) -> Any:
    body = _CollectionConfigCreate(**kwargs)._to_dict(emit_default_vector_index_type=True)
    distance = body["vectorConfig"][VECTOR_NAME]["vectorIndexConfig"]["distance"]
    return SimpleNamespace(
        description=body["description"],
        properties=[SimpleNamespace(name=p.name, data_type=p.dataType) for p in kwargs["properties"]],
        vector_config={
            VECTOR_NAME: SimpleNamespace(
                vector_index_config=SimpleNamespace(distance_metric=VectorDistances(distance))
            )
        },
    )


def obj(rec: ItemRecord, distance: float | None = None, score: float | None = None) -> Any:
    props = record_to_properties(rec, ATTRS)
    vector = {} if rec.vector is None else {VECTOR_NAME: [float(x) for x in rec.vector]}
    return SimpleNamespace(
        uuid=item_uuid(rec.tenant, rec.item_id),
        properties=props,
        metadata=SimpleNamespace(distance=distance, score=score),
        vector=vector,
    )


class FakeClient:
    """Records every call the store makes; answers from canned values."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.created: dict[str, dict[str, Any]] = {}
        self.aliases: dict[str, str] = {}
        self.tenants: dict[str, set[str]] = {}
        self.results: dict[str, list[Any]] = {}
        self.counts: dict[str | None, int] = {}
        self.batch_errors: dict[int, str] = {}
        self.fail: Exception | None = None
        self.paged = False  # True: queries answer results[offset : offset + limit], as Weaviate does
        self.collections = SimpleNamespace(
            use=lambda name: FakeHandle(self, name),
            exists=self.exists,
            create=self.create,
            delete=self.delete,
        )
        self.alias = SimpleNamespace(
            get=self.alias_get,
            create=self.alias_create,
            update=self.alias_update,
            list_all=self.alias_list,
            delete=self.alias_delete,
        )

    async def exists(self, name: str) -> bool:
        return name in self.created

    async def create(self, **kwargs: Any) -> None:
        self.calls.append(("create", kwargs["name"]))
        self.created[kwargs["name"]] = dict(kwargs)
        self.tenants[kwargs["name"]] = set()

    async def delete(self, name: str) -> None:
        self.calls.append(("delete", name))
        self.created.pop(name, None)

    async def alias_get(self, *, alias_name: str) -> Any:
        target = self.aliases.get(alias_name)
        return None if target is None else SimpleNamespace(alias=alias_name, collection=target)

    async def alias_create(self, *, alias_name: str, target_collection: str) -> None:
        self.calls.append(("alias.create", alias_name, target_collection))
        self.aliases[alias_name] = target_collection

    async def alias_update(self, *, alias_name: str, new_target_collection: str) -> bool:
        self.calls.append(("alias.update", alias_name, new_target_collection))
        self.aliases[alias_name] = new_target_collection
        return True

    async def alias_list(self, *, collection: str | None = None) -> dict[str, Any]:
        return {a: SimpleNamespace(alias=a, collection=c) for a, c in self.aliases.items() if c == collection}

    async def alias_delete(self, *, alias_name: str) -> bool:
        self.calls.append(("alias.delete", alias_name))
        return self.aliases.pop(alias_name, None) is not None

    async def close(self) -> None:
        self.calls.append(("close",))


class FakeHandle:
    def __init__(self, client: FakeClient, name: str, tenant: str | None = None, level: Any = None) -> None:
        self.c, self.name, self.tenant, self.level = client, name, tenant, level
        self.tenants = SimpleNamespace(exists=self._t_exists, create=self._t_create, get=self._t_get)
        self.config = SimpleNamespace(get=self._config, add_property=self._add_property)
        self.data = SimpleNamespace(insert_many=self._insert_many, delete_many=self._delete_many)
        self.query = SimpleNamespace(
            near_vector=self._q("near_vector"),
            bm25=self._q("bm25"),
            fetch_objects=self._q("fetch_objects"),
            fetch_objects_by_ids=self._q("fetch_objects_by_ids"),
        )
        self.aggregate = SimpleNamespace(over_all=self._over_all)

    def with_consistency_level(self, level: Any) -> FakeHandle:
        return FakeHandle(self.c, self.name, self.tenant, level)

    def with_tenant(self, tenant: str) -> FakeHandle:
        return FakeHandle(self.c, self.name, tenant, self.level)

    async def _t_exists(self, name: str) -> bool:
        self.c.calls.append(("tenants.exists", self.name, name))
        return name in self.c.tenants.get(self.name, set())

    async def _t_create(self, name: str) -> None:
        self.c.calls.append(("tenants.create", self.name, name))
        self.c.tenants.setdefault(self.name, set()).add(name)

    async def _t_get(self) -> dict[str, Any]:
        return {t: SimpleNamespace(name=t) for t in sorted(self.c.tenants.get(self.name, set()))}

    async def _config(self) -> Any:
        return config_namespace(self.c.created[self.name])

    async def _add_property(self, prop: Any) -> None:
        self.c.calls.append(("add_property", self.name, prop.name))
        self.c.created[self.name]["properties"] = [*self.c.created[self.name]["properties"], prop]

    async def _insert_many(self, objects: Sequence[Any]) -> BatchObjectReturn:
        self.c.calls.append(("insert_many", self.name, self.tenant, self.level, list(objects)))
        if self.c.fail is not None:
            raise self.c.fail
        result = BatchObjectReturn()
        for i, o in enumerate(objects):
            if i in self.c.batch_errors:
                result.errors[i] = ErrorObject(message=self.c.batch_errors[i], object_=None)  # type: ignore[arg-type]
                result.has_errors = True
            else:
                result.uuids[i] = o.uuid
        return result

    async def _delete_many(self, *, where: Any) -> Any:
        self.c.calls.append(("delete_many", self.name, self.tenant, where))
        if self.c.fail is not None:
            raise self.c.fail
        return SimpleNamespace(matches=0, successful=0, failed=0)

    def _q(self, method: str) -> Any:
        async def run(*args: Any, **kwargs: Any) -> Any:
            self.c.calls.append((method, self.name, self.tenant, args, kwargs))
            if self.c.fail is not None:
                raise self.c.fail
            objects = self.c.results.get(method, [])
            if self.c.paged and "limit" in kwargs:
                start = kwargs.get("offset") or 0
                objects = objects[start : start + kwargs["limit"]]
            return SimpleNamespace(objects=objects)

        return run

    async def _over_all(self, **kwargs: Any) -> Any:
        self.c.calls.append(("over_all", self.name, self.tenant, kwargs))
        return SimpleNamespace(total_count=self.c.counts.get(self.tenant, 0))


async def open_store(**options: Any) -> tuple[WeaviateStore, FakeClient]:
    client = FakeClient()
    store = WeaviateStore("http://weaviate:8080", client=client, **options)
    await store.ensure_collection(COLLECTION)
    return store, client


# count(): live heads (a head from before passages has no "head" property).
LIVE_HEADS = (
    "And",
    [("Equal", "deleted", False), ("Or", [("Equal", "head", True), ("IsNull", "head", True)])],
)


def calls(client: FakeClient, name: str) -> list[tuple[Any, ...]]:
    return [c for c in client.calls if c[0] == name]


async def test_ensure_collection_is_idempotent_and_adds_new_attributes() -> None:
    store, client = await open_store()
    await store.ensure_collection(COLLECTION)
    assert calls(client, "create") == [("create", "Minilm_1")]
    wider = replace(COLLECTION, attributes={**ATTRS, "region": "keyword"})
    await store.ensure_collection(wider)
    assert calls(client, "add_property") == [("add_property", "Minilm_1", "attr_region")]
    with pytest.raises(StoreConflict):
        await store.ensure_collection(replace(COLLECTION, dimension=8))
    with pytest.raises(StoreConflict):
        await store.ensure_collection(replace(COLLECTION, metric="dot"))
    with pytest.raises(StoreConflict):
        await store.ensure_collection(replace(COLLECTION, attributes={**ATTRS, "team": "int"}))
    with pytest.raises(InvalidQuery):
        await store.ensure_collection(replace(COLLECTION, dimension=0))


async def test_write_groups_by_tenant_creates_tenants_once_and_upserts_by_uuid() -> None:
    store, client = await open_store()
    first, second = record("a1"), record("a1", version=8)  # same item twice: the last wins
    await store.write("minilm_1", [first, second, record("b1", tenant="glob.ex")])
    await store.write("minilm_1", [record("a2")])
    assert calls(client, "tenants.create") == [
        ("tenants.create", "Minilm_1", "acme"),
        ("tenants.create", "Minilm_1", "glob_dex"),
    ]
    inserts = calls(client, "insert_many")
    assert [(c[2], len(c[4])) for c in inserts] == [("acme", 1), ("glob_dex", 1), ("acme", 1)]
    assert inserts[0][3] == ConsistencyLevel.QUORUM
    sent = inserts[0][4][0]
    assert sent.uuid == item_uuid("acme", "a1")
    assert sent.properties["version"] == 8


async def test_write_reports_every_failed_object() -> None:
    store, client = await open_store()
    client.batch_errors = {1: "vector lengths don't match"}
    with pytest.raises(StoreUnavailable, match=r"1 objects .*acme/a2: vector lengths"):
        await store.write("minilm_1", [record("a1"), record("a2"), record("a3")])
    client.batch_errors = {}
    client.fail = WeaviateConnectionError("connection refused")
    with pytest.raises(StoreUnavailable, match="connection refused"):
        await store.write("minilm_1", [record("a1")])


async def test_write_validates_before_sending() -> None:
    store, client = await open_store()
    with pytest.raises(InvalidQuery, match="dimensions"):
        await store.write("minilm_1", [record(vector=np.ones(3, dtype=np.float32))])
    with pytest.raises(InvalidQuery, match="NaN"):
        await store.write("minilm_1", [record(vector=np.array([np.nan] * 4, dtype=np.float32))])
    with pytest.raises(CollectionNotFound):
        await store.write("nope_1", [record()])
    await store.write("minilm_1", [record(vector=None, deleted=True)])  # a tombstone has no vector
    assert len(calls(client, "insert_many")) == 1


async def test_states_reads_back_only_the_tenants_items() -> None:
    store, client = await open_store()
    assert await store.states("minilm_1", "acme", ["a1"]) == {}  # tenant not created yet: no query
    assert calls(client, "fetch_objects_by_ids") == []
    await store.write("minilm_1", [record("a1")])
    client.results["fetch_objects_by_ids"] = [
        obj(record("a1", version=9, deleted=True)),
        obj(record("zz", "other")),
    ]
    states = await store.states("minilm_1", "acme", ["a1", "a1", "missing"])
    assert set(states) == {"a1"}
    assert states["a1"].version == 9
    assert states["a1"].deleted
    (_, _, tenant, args, kwargs) = calls(client, "fetch_objects_by_ids")[0]
    assert tenant == "acme"
    assert list(args[0]) == [item_uuid("acme", "a1"), item_uuid("acme", "missing")]
    assert set(kwargs["return_properties"]) >= {
        "version",
        "version_exact",
        "event_time",
        "content_sha256",
        "deleted",
    }


async def test_vector_search_request() -> None:
    store, client = await open_store()
    await store.write("minilm_1", [record("a1")])
    client.results["near_vector"] = [obj(record("a1"), distance=0.1)]
    flt = common_pb2.Filter(
        condition=common_pb2.FieldCondition(field="tags", eq=common_pb2.Value(string_value="red"))
    )
    q = Query(
        "acme", limit=5, offset=0, vector=np.ones(4, dtype=np.float32), filter=flt, modalities=("image",)
    )
    hits = await store.search("minilm_1", q)
    assert [h.record.item_id for h in hits] == ["a1"]
    assert hits[0].score == pytest.approx(0.9)
    assert hits[0].vector_score == hits[0].score
    assert hits[0].bm25_score is None
    assert hits[0].record.vector is None
    (_, name, tenant, _, kwargs) = calls(client, "near_vector")[0]
    assert (name, tenant) == ("Minilm_1", "acme")
    assert kwargs["near_vector"] == [1.0, 1.0, 1.0, 1.0]
    assert kwargs["target_vector"] == VECTOR_NAME
    assert "offset" not in kwargs  # passages are grouped into items here: ranked from the top
    assert kwargs["limit"] == 6  # offset + limit items, + 1 to see the next score
    assert set(kwargs["return_properties"]) == set(RETURN_PROPERTIES)
    assert shape(kwargs["filters"]) == (
        "And",
        [
            ("And", [("Equal", "deleted", False), ("ContainsAny", "modality", ["image"])]),
            ("ContainsAny", "tags", ["red"]),
        ],
    )


async def test_hybrid_search_fuses_client_side_with_the_querys_k() -> None:
    store, client = await open_store(hybrid_window=50)
    await store.write("minilm_1", [record("a1")])
    a, b, c = record("a"), record("b"), record("c")
    client.results["near_vector"] = [obj(a, distance=0.1), obj(b, distance=0.2)]
    client.results["bm25"] = [obj(b, score=7.0), obj(c, score=3.0)]
    q = Query("acme", limit=2, offset=1, vector=np.ones(4, dtype=np.float32), text=" invoice ", rrf_k=5)
    hits = await store.search("minilm_1", q)
    # b: 1/7 + 1/6 first; a (vector #1) and c (BM25 #2): a = 1/6 > c = 1/7.
    assert [h.record.item_id for h in hits] == ["a", "c"]
    assert hits[0].score == pytest.approx(1 / 6, rel=1e-12)
    assert [(h.vector_rank, h.bm25_rank) for h in hits] == [(1, None), (None, 2)]
    for method in ("near_vector", "bm25"):
        kwargs = calls(client, method)[0][4]
        assert kwargs["limit"] == 51
    bm25 = calls(client, "bm25")[0][4]
    assert bm25["query"] == "invoice"
    assert bm25["query_properties"] == ["text", "title"]
    # candidates_per_ranking replaces the window (never below offset + limit).
    await store.search("minilm_1", replace(q, candidates_per_ranking=7))
    await store.search("minilm_1", replace(q, candidates_per_ranking=2))
    assert [c[4]["limit"] for c in calls(client, "near_vector")] == [51, 8, 4]
    assert [c[4]["limit"] for c in calls(client, "bm25")] == [51, 8, 4]


def fusion_case_results(client: FakeClient) -> None:
    """The contract's hand-built case as Weaviate would answer it (in rank order)."""
    records = {r.item_id: r for r in fusion_records()}
    dense = sorted(FUSION_ITEMS, key=lambda i: i.dense_rank)
    client.results["near_vector"] = [obj(records[i.item_id], distance=1 - i.cosine) for i in dense]
    in_text = sorted((i for i in FUSION_ITEMS if i.bm25_rank is not None), key=lambda i: i.bm25_rank or 0)
    client.results["bm25"] = [obj(records[i.item_id], score=10.0 - (i.bm25_rank or 0)) for i in in_text]
    client.paged = True


@pytest.mark.parametrize("k", [1, 60])
async def test_hybrid_fusion_matches_the_contract_case(k: int) -> None:
    client = FakeClient()
    store = WeaviateStore("http://weaviate:8080", client=client)
    await store.ensure_collection(replace(COLLECTION, dimension=CONTRACT_DIM, attributes={}))
    await store.write("minilm_1", fusion_records())
    fusion_case_results(client)
    q = Query(CONTRACT_TENANT, limit=5, vector=FUSION_QUERY, text=FUSION_TERM, rrf_k=k)
    hits = await store.search("minilm_1", q)
    assert [h.record.item_id for h in hits] == FUSION_ORDER[k]
    for hit in hits:
        item = next(i for i in FUSION_ITEMS if i.item_id == hit.record.item_id)
        assert (hit.vector_rank, hit.bm25_rank) == (item.dense_rank, item.bm25_rank)
        assert hit.score == pytest.approx(rrf_expected(k, item.dense_rank, item.bm25_rank), rel=1e-12)
        assert hit.vector_score == pytest.approx(item.cosine)
    # candidates_per_ranking=2 (the fake honours limit): as in the contract suite.
    two = await store.search("minilm_1", replace(q, limit=2, rrf_k=1, candidates_per_ranking=2))
    assert [h.record.item_id for h in two] == ["h4", "h5"]
    assert [(h.vector_rank, h.bm25_rank) for h in two] == [(1, None), (None, 1)]
    four = await store.search("minilm_1", replace(q, limit=4, rrf_k=1, candidates_per_ranking=2))
    assert [h.record.item_id for h in four] == ["h1", "h3", "h4", "h5"]


async def test_text_search_and_pages_beyond_the_servers_maximum() -> None:
    store, client = await open_store(query_max_results=100)
    await store.write("minilm_1", [record("a1")])
    client.results["bm25"] = [obj(record(f"x{i:03d}"), score=200.0 - i) for i in range(100)]
    hits = await store.search("minilm_1", Query("acme", limit=10, offset=95, text="invoice"))
    assert [(h.record.item_id, h.bm25_rank) for h in hits] == [(f"x{i:03d}", i + 1) for i in range(95, 100)]
    assert calls(client, "bm25")[0][4]["limit"] == 100  # never past the server's maximum
    assert await store.search("minilm_1", Query("acme", limit=10, offset=100, text="invoice")) == []
    assert len(calls(client, "bm25")) == 1


async def test_exact_search_is_brute_force_in_the_client() -> None:
    store, client = await open_store(exact_max_items=3)
    await store.write("minilm_1", [record("a1")])
    near = record("near", vector=np.array([1, 0, 0, 0], dtype=np.float32))
    far = record("far", vector=np.array([0, 1, 0, 0], dtype=np.float32))
    client.results["fetch_objects"] = [obj(far), obj(near)]
    q = Query("acme", limit=1, vector=np.array([1, 0.1, 0, 0], dtype=np.float32), exact=True)
    hits = await store.search("minilm_1", q)
    assert [h.record.item_id for h in hits] == ["near"]
    assert hits[0].vector_score == pytest.approx(1 / np.sqrt(1.01))
    assert calls(client, "near_vector") == []
    kwargs = calls(client, "fetch_objects")[0][4]
    assert kwargs["include_vector"] == [VECTOR_NAME]
    assert shape(kwargs["filters"]) == ("Equal", "deleted", False)
    # At the cap: counted, and refused when there are more.
    client.results["fetch_objects"] = [obj(record(f"x{i}")) for i in range(3)]
    client.counts["acme"] = 4
    with pytest.raises(ResourceLimit):
        await store.search("minilm_1", q)


async def test_search_argument_errors_and_unknown_tenant() -> None:
    store, client = await open_store()
    vector = np.ones(4, dtype=np.float32)
    with pytest.raises(InvalidQuery):
        await store.search("minilm_1", Query("acme", limit=0, vector=vector))
    with pytest.raises(InvalidQuery):
        await store.search("minilm_1", Query("acme", limit=1, offset=-1, vector=vector))
    with pytest.raises(InvalidQuery):
        await store.search("minilm_1", Query("acme", limit=1, text="  "))
    with pytest.raises(InvalidQuery, match="dimensions"):
        await store.search("minilm_1", Query("acme", limit=1, vector=np.ones(3, dtype=np.float32)))
    with pytest.raises(InvalidQuery, match="rrf_k") as raised:
        await store.search("minilm_1", Query("acme", limit=1, vector=vector, text="x", rrf_k=0))
    assert raised.value.field == "hybrid.rrf_k"
    with pytest.raises(InvalidQuery, match="candidates_per_ranking"):
        await store.search("minilm_1", Query("acme", limit=1, vector=vector, candidates_per_ranking=10_001))
    with pytest.raises(InvalidQuery, match="NaN"):
        await store.search("minilm_1", Query("acme", limit=1, vector=np.full(4, np.inf, np.float32)))
    with pytest.raises(InvalidQuery, match=r"modalities\[0\]"):
        await store.search("minilm_1", Query("acme", limit=1, vector=vector, modalities=("video",)))
    bad = common_pb2.Filter(
        condition=common_pb2.FieldCondition(field="nope", eq=common_pb2.Value(string_value="x"))
    )
    with pytest.raises(InvalidQuery, match="unknown filter field"):
        await store.search("minilm_1", Query("acme", limit=1, vector=vector, filter=bad))
    with pytest.raises(CollectionNotFound):
        await store.search("missing_1", Query("acme", limit=1, vector=vector))
    assert await store.search("minilm_1", Query("nobody", limit=1, vector=vector)) == []
    assert calls(client, "near_vector") == []
    client.tenants["Minilm_1"].add("acme")
    client.fail = WeaviateConnectionError("down")
    with pytest.raises(StoreUnavailable, match="down"):
        await store.search("minilm_1", Query("acme", limit=1, vector=vector))


async def test_single_tenant_mode_filters_on_the_tenant_property() -> None:
    store, client = await open_store(multi_tenancy=False, shards=3)
    assert "sharding_config" in client.created["Minilm_1"]
    await store.write("minilm_1", [record("a1")])
    assert calls(client, "tenants.create") == []
    assert calls(client, "insert_many")[0][2] is None
    await store.search("minilm_1", Query("acme", limit=1, text="x"))
    assert shape(calls(client, "bm25")[0][4]["filters"]) == (
        "And",
        [("Equal", "deleted", False), ("Equal", "tenant", "acme")],
    )
    client.counts[None] = 5
    assert await store.count("minilm_1", "acme") == 5
    assert shape(calls(client, "over_all")[0][3]["filters"]) == (
        "And",
        [LIVE_HEADS, ("Equal", "tenant", "acme")],
    )


async def test_count_per_tenant_and_over_all_tenants() -> None:
    store, client = await open_store()
    await store.write("minilm_1", [record("a1"), record("b1", tenant="globex")])
    client.counts.update({"acme": 3, "globex": 4})
    assert await store.count("minilm_1", "acme") == 3
    assert await store.count("minilm_1", "nobody") == 0
    assert await store.count("minilm_1") == 7
    for call in calls(client, "over_all"):
        assert shape(call[3]["filters"]) == LIVE_HEADS
    with pytest.raises(CollectionNotFound):
        await store.count("missing_1")


async def test_aliases_create_switch_resolve_and_drop() -> None:
    store, client = await open_store()
    await store.ensure_collection(replace(COLLECTION, name="minilm_2"))
    assert await store.resolve("minilm") is None
    await store.set_alias("minilm", "minilm_1")
    await store.set_alias("minilm", "minilm_2")
    assert calls(client, "alias.create") == [("alias.create", "Minilm", "Minilm_1")]
    assert calls(client, "alias.update") == [("alias.update", "Minilm", "Minilm_2")]
    assert await store.resolve("minilm") == "minilm_2"
    assert await store.resolve("minilm_1") == "minilm_1"
    assert await store.resolve("Bad-Name") is None
    with pytest.raises(CollectionNotFound):
        await store.set_alias("minilm", "missing_1")
    with pytest.raises(StoreConflict):
        await store.set_alias("minilm_1", "minilm_2")
    # Searches through the alias reach the collection it names.
    client.tenants["Minilm_2"].add("acme")
    await store.search("minilm", Query("acme", limit=1, text="x"))
    assert calls(client, "bm25")[0][1] == "Minilm_2"
    await store.drop_collection("minilm_2")
    assert ("alias.delete", "Minilm") in client.calls
    assert ("delete", "Minilm_2") in client.calls
    assert await store.resolve("minilm") is None


async def test_close_closes_the_client() -> None:
    store, client = await open_store()
    await store.close()
    await store.close()
    assert calls(client, "close") == [("close",)]


def test_url_parsing() -> None:
    store = WeaviateStore("https://w.example.com", api_key="k")
    assert store._params == {
        "http_host": "w.example.com",
        "http_port": 443,
        "http_secure": True,
        "grpc_host": "w.example.com",
        "grpc_port": 443,
        "grpc_secure": True,
    }
    plain = WeaviateStore("weaviate:8080", grpc_port=50052)
    assert (plain._params["http_port"], plain._params["grpc_port"], plain._params["http_secure"]) == (
        8080,
        50052,
        False,
    )
    with pytest.raises(ValueError):
        WeaviateStore("ftp://x")
    with pytest.raises(ValueError):
        WeaviateStore("http://x", shards=0)


async def test_attributes_declared_by_another_process_become_filterable() -> None:
    client = FakeClient()
    searcher = WeaviateStore("http://weaviate:8080", client=client, schema_cache_seconds=0)
    indexer = WeaviateStore("http://weaviate:8080", client=client)
    await indexer.ensure_collection(COLLECTION)
    await indexer.write("minilm_1", [record("a1")])
    flt = common_pb2.Filter(
        condition=common_pb2.FieldCondition(field="attributes.region", eq=common_pb2.Value(string_value="eu"))
    )
    query = Query("acme", limit=1, text="x", filter=flt)
    with pytest.raises(InvalidQuery, match="unknown filter field"):
        await searcher.search("minilm_1", query)
    await indexer.ensure_collection(replace(COLLECTION, attributes={**ATTRS, "region": "keyword"}))
    await searcher.search("minilm_1", query)
    assert shape(calls(client, "bm25")[0][4]["filters"])[1][1] == ("Equal", "attr_region", "eu")


async def test_store_errors_pass_through_client_errors_become_unavailable() -> None:
    store, _ = await open_store()

    async def raises(exc: Exception) -> None:
        raise exc

    for own in (InvalidQuery("x", field="limit"), ResourceLimit("big"), CollectionNotFound("gone")):
        with pytest.raises(StoreError) as raised:
            await store._call("op", lambda own=own: raises(own))
        assert raised.value is own
    with pytest.raises(StoreUnavailable, match=r"Weaviate op failed: .*refused"):
        await store._call("op", lambda: raises(WeaviateConnectionError("refused")))


# ---------------------------------------------------------------------- passages


def doc(version: int, texts: Sequence[str], item_id: str = "doc") -> ItemRecord:
    passages, start = [], 0
    for i, text in enumerate(texts):
        passages.append(Passage(start, start + len(text), text, np.full(4, i + 1.0, dtype=np.float32)))
        start += len(text) + 1
    return record(item_id, version=version, vector=None, passages=tuple(passages))


def passage_obj(
    rec: ItemRecord, index: int, distance: float | None = None, score: float | None = None
) -> Any:
    props = passage_properties(rec, index, rec.passages[index], ATTRS)
    return SimpleNamespace(
        uuid=None, properties=props, metadata=SimpleNamespace(distance=distance, score=score), vector={}
    )


def head_obj(rec: ItemRecord, distance: float | None = None, score: float | None = None) -> Any:
    return SimpleNamespace(
        uuid=item_uuid(rec.tenant, rec.item_id),
        properties=head_properties(rec, ATTRS),
        metadata=SimpleNamespace(distance=distance, score=score),
        vector={},
    )


async def test_write_of_passages_inserts_new_then_switches_heads_then_deletes_the_old() -> None:
    store, client = await open_store()
    new = doc(2, ["first part.", "second part.", "third part."])
    await store.write("minilm_1", [new])
    inserts = calls(client, "insert_many")
    further, heads = inserts[0][4], inserts[1][4]
    gen = generation(new)
    assert [o.uuid for o in further] == [passage_uuid("acme", "doc", gen, i) for i in (1, 2)]
    assert [o.properties["text"] for o in further] == ["second part.", "third part."]
    assert [(o.properties["start"], o.properties["end"]) for o in further] == [(12, 24), (25, 36)]
    assert all(o.properties["head"] is False and o.properties["generation"] == gen for o in further)
    (head,) = heads
    assert head.uuid == item_uuid("acme", "doc")
    assert head.properties["head"] is True and head.properties["passage_text"] == "first part."
    assert head.vector == {VECTOR_NAME: [1.0, 1.0, 1.0, 1.0]}
    (_, _, tenant, where) = calls(client, "delete_many")[0]
    assert tenant == "acme"
    assert shape(where) == (
        "And",
        [
            ("ContainsAny", "item_id", ["doc"]),
            ("Equal", "head", False),
            ("ContainsNone", "generation", [gen]),
        ],
    )
    # A tombstone: no further passages, the head, then every old passage goes.
    await store.write("minilm_1", [record("doc", version=3, vector=None, deleted=True)])
    assert len(calls(client, "insert_many")) == 3
    assert len(calls(client, "delete_many")) == 2


async def test_search_groups_passages_into_items_and_drops_other_generations() -> None:
    store, client = await open_store()
    await store.write("minilm_1", [record("a1")])
    old, new = doc(1, ["old a.", "old b.", "old c."]), doc(2, ["new a.", "new b."])
    other = record("other")
    client.results["near_vector"] = [
        passage_obj(old, 2, distance=0.01),  # a passage of the replaced generation: dropped
        passage_obj(new, 1, distance=0.05),
        head_obj(other, distance=0.1),
        head_obj(new, distance=0.2),  # the same item again: counted once, by its best passage
    ]
    client.results["fetch_objects_by_ids"] = [head_obj(new)]
    hits = await store.search("minilm_1", Query("acme", limit=5, vector=np.ones(4, dtype=np.float32)))
    assert [(h.record.item_id, h.vector_rank) for h in hits] == [("doc", 1), ("other", 2)]
    assert hits[0].passage == PassageHit(1, 7, 13, "new b.")
    assert hits[0].score == pytest.approx(0.95)
    assert hits[0].record.version == 2
    assert hits[1].passage is None
    # Heads are read only for items seen through further passages.
    (_, _, _, args, _) = calls(client, "fetch_objects_by_ids")[0]
    assert list(args[0]) == [item_uuid("acme", "doc")]
    # The item was deleted meanwhile: none of its passages count.
    client.results["fetch_objects_by_ids"] = [head_obj(record("doc", version=3, vector=None, deleted=True))]
    await store.close()
    store = WeaviateStore("http://weaviate:8080", client=client)
    hits = await store.search("minilm_1", Query("acme", limit=5, vector=np.ones(4, dtype=np.float32)))
    assert [h.record.item_id for h in hits] == ["other"]


async def test_count_passages_counts_the_items_live_objects() -> None:
    store, client = await open_store()
    assert await store.count_passages("minilm_1", "acme", "doc") == 0  # no tenant yet
    await store.write("minilm_1", [record("a1")])
    client.counts["acme"] = 3
    assert await store.count_passages("minilm_1", "acme", "doc") == 3
    assert shape(calls(client, "over_all")[0][3]["filters"]) == (
        "And",
        [("Equal", "deleted", False), ("Equal", "item_id", "doc")],
    )
