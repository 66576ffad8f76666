"""The VectorStore contract: one suite every store adapter must pass.

Use it by subclassing `VectorStoreContract` in a `test_*.py` file and implementing `open_store`:

    class TestMyStore(VectorStoreContract):
        async def open_store(self, root: Path) -> VectorStore:
            return MyStore(root)           # or pytest.skip(...) when the backend is absent

`open_store(root)` must return a store whose data lives at `root` (an embedded store) or that is
otherwise persistent (a server): the persistence test closes a store and opens `root` again. Every test
uses fresh collection names (`contract_<hex>_...`) and drops what it created, so a shared server works.

What is checked: idempotent ensure_collection; write + states; tombstones hidden from search and
count but visible to states; tenant isolation; every filter operator on every field kind (core and
attribute fields) against a brute-force Python evaluation of the same parsed filter tree; modality
restriction; stable pagination; BM25 on a rare identifier; hybrid fusion; aliases; drop; persistence
across close/reopen; exact search against brute-force cosine; query validation (InvalidQuery naming the
field). Passages: an update replaces all of an item's passages and a delete removes them all; hits are
items (no duplicates) with their best passage and its offsets; pages and ranks count items; tenant
isolation; searches running during replaces never show a passage of another generation than the head.
Fusion is pinned exactly on a hand-built case (`FUSION_ITEMS`): fused scores, order (including
ties broken by best rank and by item id, the rule of mmsearch.stores.fusion), per-ranking ranks, and the
effect of candidates_per_ranking.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import pytest_asyncio

from mmsearch.stores.base import (
    AttributeValue,
    Collection,
    FieldKind,
    ItemRecord,
    Passage,
    Query,
    StoreHit,
    VectorStore,
)
from mmsearch.stores.errors import InvalidQuery
from mmsearch.stores.filters import AllOf, AnyOf, Condition, FilterNode, Not, parse_filter
from mmsearch.v1 import common_pb2

DIM = 16
TENANT = "acme"
OTHER_TENANT = "globex"
RARE_ID = "INV-2024-00731"
ATTRIBUTES: Mapping[str, FieldKind] = {
    "priority": "int",
    "score": "float",
    "pinned": "bool",
    "due": "datetime",
    "team": "keyword",
}
T0 = datetime(2024, 1, 1, tzinfo=UTC)
WORDS = [
    *("invoice", "report", "meeting", "photo", "receipt", "contract"),
    *("budget", "supplier", "audio", "memo", "draft", "scan"),
]


# ---------------------------------------------------------------------------------------------------
# Data


def unit(rng: np.random.Generator, dim: int = DIM) -> npt.NDArray[np.float32]:
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def make_record(tenant: str, item_id: str, rng: np.random.Generator, **overrides: Any) -> ItemRecord:
    r = random.Random(f"{tenant}/{item_id}")
    attributes: dict[str, AttributeValue] = {}
    if r.random() < 0.9:
        attributes["priority"] = r.randint(0, 4)
    if r.random() < 0.9:
        attributes["score"] = round(r.random(), 3)
    if r.random() < 0.9:
        attributes["pinned"] = r.random() < 0.3
    if r.random() < 0.9:
        attributes["due"] = T0 + timedelta(days=r.randint(0, 60), seconds=r.randint(0, 86399))
    if r.random() < 0.9:
        attributes["team"] = r.choice(["red", "blue", "ops"])
    attributes["labels"] = r.choice(["", "a", "b"])  # undeclared kinds still round-trip
    record = ItemRecord(
        tenant=tenant,
        item_id=item_id,
        modality=r.choice(["text", "text", "image", "audio"]),
        vector=unit(rng),
        version=r.randint(0, 5),
        event_time=T0 + timedelta(minutes=r.randint(0, 100_000)),
        content_sha256=uuid.uuid5(uuid.NAMESPACE_URL, item_id).hex,
        model_version="m@1",
        text=" ".join(r.choice(WORDS) for _ in range(r.randint(3, 12))),
        title=f"title {item_id}",
        tags=tuple(sorted(r.sample(["red", "green", "blue", "urgent"], r.randint(0, 3)))),
        source=r.choice(["web", "mail", "scan"]),
        source_uri=f"s3://bucket/{item_id}",
        created_at=None if r.random() < 0.15 else T0 + timedelta(hours=r.randint(0, 2000)),
        attributes=attributes,
        snippet=f"snippet {item_id}",
        thumbnail_jpeg=bytes([0xFF, 0xD8, r.randint(0, 255), 0x00, 0xFF, 0xD9]),
    )
    return replace(record, **overrides) if overrides else record


def tombstone(record: ItemRecord) -> ItemRecord:
    return replace(record, vector=None, deleted=True, version=record.version + 1, text="", passages=())


def make_doc(
    tenant: str,
    item_id: str,
    version: int,
    sentences: Sequence[str],
    vectors: Sequence[npt.NDArray[np.float32]],
    **overrides: Any,
) -> ItemRecord:
    """A text item stored as passages: passage i is sentences[i] (with its offsets in the text)."""
    text = " ".join(sentences)
    passages = []
    start = 0
    for sentence, vector in zip(sentences, vectors, strict=True):
        passages.append(Passage(start, start + len(sentence), sentence, vector))
        start += len(sentence) + 1
    fields: dict[str, Any] = {
        "tenant": tenant,
        "item_id": item_id,
        "modality": "text",
        "vector": None,
        "version": version,
        "event_time": T0 + timedelta(minutes=version),
        "content_sha256": uuid.uuid5(uuid.NAMESPACE_URL, text).hex,
        "title": f"doc {item_id}",
        "snippet": text[:50],
        "passages": tuple(passages),
        **overrides,
    }
    return ItemRecord(**fields)


def near(base: npt.NDArray[np.float32], rng: np.random.Generator, noise: float) -> npt.NDArray[np.float32]:
    v = base + noise * unit(rng, base.shape[0])
    return (v / np.linalg.norm(v)).astype(np.float32)


def dataset(seed: int = 7) -> list[ItemRecord]:
    """Tenant A: 240 items (the last 20 deleted) plus the rare-identifier invoice; tenant B: 60."""
    rng = np.random.default_rng(seed)
    records = [make_record(TENANT, f"a{i:03d}", rng) for i in range(240)]
    records[-20:] = [tombstone(r) for r in records[-20:]]
    records.append(
        make_record(
            TENANT, "invoice-rare", rng, text=f"invoice {RARE_ID} from supplier 2024", modality="text"
        )
    )
    records += [make_record(OTHER_TENANT, f"b{i:03d}", rng) for i in range(60)]
    return records


# ---------------------------------------------------------------------------------------------------
# The hand-built fusion case: five items whose dense and BM25 ranks are known by construction.
#
# Dense: every vector is cos(theta) e0 + sin(theta) e1 with a distinct cosine to the query e0.
# BM25 ("zephyr"): more occurrences in a document of the same length rank higher; with the same count
# the shorter document ranks higher; "h4" does not contain the word. No ties inside a ranking.
#
#   item  dense rank  BM25 rank   k=1: 1/(1+d) + 1/(1+b)
#   h1        4           2       1/5 + 1/3 = 8/15   } tie: same ranks as a multiset, best rank 2 both
#   h3        2           4       1/3 + 1/5 = 8/15   } -> item id: h1 before h3
#   h4        1           -       1/2                } tie: h4's best rank 1 beats h2's 3
#   h2        3           3       1/4 + 1/4 = 1/2    } (item id alone would put h2 first)
#   h5        5           1       1/6 + 1/2 = 2/3
#
# k=1 order: h5, h1, h3, h4, h2.   k=60 order: h5, h1, h3, h2, h4 (the h1/h3 tie again broken by id).

FUSION_TERM = "zephyr"
FUSION_QUERY = np.eye(DIM, dtype=np.float32)[0]


@dataclass(frozen=True)
class FusionItem:
    item_id: str
    cosine: float  # to FUSION_QUERY
    text: str
    dense_rank: int
    bm25_rank: int | None


FUSION_ITEMS = (
    FusionItem("h1", 0.6, "zephyr zephyr alpha beta", 4, 2),
    FusionItem("h2", 0.7, "zephyr alpha beta gamma", 3, 3),
    FusionItem("h3", 0.8, "zephyr alpha beta gamma delta epsilon omega", 2, 4),
    FusionItem("h4", 0.9, "alpha beta gamma delta", 1, None),
    FusionItem("h5", 0.5, "zephyr zephyr zephyr alpha", 5, 1),
)
FUSION_ORDER = {1: ["h5", "h1", "h3", "h4", "h2"], 60: ["h5", "h1", "h3", "h2", "h4"]}


def fusion_vector(cosine: float) -> npt.NDArray[np.float32]:
    v = np.zeros(DIM, dtype=np.float32)
    v[0], v[1] = cosine, np.sqrt(1 - cosine**2)
    return v


def fusion_records(tenant: str = TENANT) -> list[ItemRecord]:
    rng = np.random.default_rng(41)
    return [
        make_record(
            tenant,
            item.item_id,
            rng,
            vector=fusion_vector(item.cosine),
            text=item.text,
            title="",
            modality="text",
            attributes={},
        )
        for item in FUSION_ITEMS
    ]


def rrf_expected(k: int, *ranks: int | None) -> float:
    """The fused score, computed exactly: sum of 1 / (k + rank) over the given ranks."""
    return float(sum((Fraction(1, k + r) for r in ranks if r is not None), Fraction(0)))


def fusion_item(item_id: str) -> FusionItem:
    return next(item for item in FUSION_ITEMS if item.item_id == item_id)


def live(records: Sequence[ItemRecord], tenant: str = TENANT) -> list[ItemRecord]:
    return [r for r in records if r.tenant == tenant and not r.deleted]


# ---------------------------------------------------------------------------------------------------
# Filters: builders and the brute-force reference


def val(x: AttributeValue) -> common_pb2.Value:
    if isinstance(x, bool):
        return common_pb2.Value(bool_value=x)
    if isinstance(x, int):
        return common_pb2.Value(int_value=x)
    if isinstance(x, float):
        return common_pb2.Value(double_value=x)
    if isinstance(x, datetime):
        value = common_pb2.Value()
        value.timestamp_value.FromDatetime(x)
        return value
    return common_pb2.Value(string_value=x)


def eq(field: str, x: AttributeValue) -> common_pb2.Filter:
    return common_pb2.Filter(condition=common_pb2.FieldCondition(field=field, eq=val(x)))


def any_in(field: str, *xs: AttributeValue) -> common_pb2.Filter:
    cond = common_pb2.FieldCondition(field=field)
    getattr(cond, "in").values.extend(val(x) for x in xs)
    return common_pb2.Filter(condition=cond)


def between(field: str, **bounds: AttributeValue) -> common_pb2.Filter:
    rng = common_pb2.Range(**{k: val(v) for k, v in bounds.items()})
    return common_pb2.Filter(condition=common_pb2.FieldCondition(field=field, range=rng))


def all_of(*fs: common_pb2.Filter) -> common_pb2.Filter:
    return common_pb2.Filter(all_of=common_pb2.FilterList(filters=fs))


def any_of(*fs: common_pb2.Filter) -> common_pb2.Filter:
    return common_pb2.Filter(any_of=common_pb2.FilterList(filters=fs))


def negate(f: common_pb2.Filter) -> common_pb2.Filter:
    return common_pb2.Filter(negate=f)


def field_values(record: ItemRecord, name: str) -> list[AttributeValue]:
    if name.startswith("attributes."):
        key = name.removeprefix("attributes.")
        return [record.attributes[key]] if key in record.attributes else []
    if name == "tags":
        return list(record.tags)
    value = getattr(record, name)
    return [] if value is None else [value]


def matches(node: FilterNode, record: ItemRecord) -> bool:
    if isinstance(node, AllOf):
        return all(matches(n, record) for n in node.nodes)
    if isinstance(node, AnyOf):
        return any(matches(n, record) for n in node.nodes)
    if isinstance(node, Not):
        return not matches(node.node, record)
    assert isinstance(node, Condition)
    values = field_values(record, node.field)
    if node.op in ("eq", "in"):
        return any(v == w and type(v) is type(w) for v in values for w in node.values)

    def in_range(v: Any) -> bool:
        return (
            (node.gt is None or v > node.gt)
            and (node.gte is None or v >= node.gte)
            and (node.lt is None or v < node.lt)
            and (node.lte is None or v <= node.lte)
        )

    return any(in_range(v) for v in values)


def _pick(records: Sequence[ItemRecord], key: str) -> Any:
    return next(r.attributes[key] for r in live(records) if key in r.attributes)


def filter_cases(records: Sequence[ItemRecord]) -> dict[str, common_pb2.Filter]:
    some_score = _pick(records, "score")
    some_due = _pick(records, "due")
    ids = [r.item_id for r in records[:40:3]] + ["a239", "nope"]
    return {
        "modality-eq": eq("modality", "image"),
        "modality-in": any_in("modality", "image", "audio"),
        "source-eq": eq("source", "mail"),
        "item_id-in": any_in("item_id", *ids),
        "tags-eq": eq("tags", "urgent"),
        "tags-in": any_in("tags", "red", "blue"),
        "created_at-gte": between("created_at", gte=T0 + timedelta(hours=1000)),
        "event_time-gt-lt": between(
            "event_time", gt=T0 + timedelta(minutes=20_000), lt=T0 + timedelta(minutes=60_000)
        ),
        "int-eq": eq("attributes.priority", 3),
        "int-in": any_in("attributes.priority", 1, 2),
        "int-range": between("attributes.priority", gte=2, lt=4),
        "float-range": between("attributes.score", gt=0.5),
        "float-eq": eq("attributes.score", float(some_score)),
        "float-in-int-value": any_in("attributes.score", 0, float(some_score)),
        "bool-true": eq("attributes.pinned", True),
        "bool-false": eq("attributes.pinned", False),
        "bool-in": any_in("attributes.pinned", True, False),
        "datetime-eq": eq("attributes.due", some_due),
        "datetime-lte": between("attributes.due", lte=T0 + timedelta(days=20)),
        "keyword-attr-eq": eq("attributes.team", "ops"),
        "keyword-attr-in": any_in("attributes.team", "red", "blue"),
        "all_of": all_of(eq("tags", "red"), between("attributes.priority", gte=2)),
        "any_of": any_of(eq("modality", "audio"), eq("attributes.pinned", True)),
        "negate": negate(eq("tags", "urgent")),
        "negate-missing-attr": negate(eq("attributes.team", "ops")),
        "negate-any_of": negate(any_of(eq("source", "web"), between("attributes.score", lt=0.3))),
        "nested": all_of(
            negate(eq("source", "web")),
            any_of(any_in("attributes.priority", 1, 3), between("attributes.score", lt=0.2)),
            negate(all_of(eq("modality", "text"), eq("tags", "green"))),
        ),
    }


FILTER_CASE_NAMES = list(filter_cases(dataset()))


def ids(hits: Sequence[StoreHit]) -> list[str]:
    return [h.record.item_id for h in hits]


# ---------------------------------------------------------------------------------------------------
# The suite


class VectorStoreContract:
    """Subclass and implement `open_store(root)`; every test below then runs against that store."""

    async def open_store(self, root: Path) -> VectorStore:
        raise NotImplementedError

    # -- fixtures --------------------------------------------------------------------------------------

    @pytest.fixture
    def created(self) -> list[str]:
        return []

    @pytest.fixture
    def new_name(self, created: list[str]) -> Callable[[str], str]:
        run = uuid.uuid4().hex[:8]

        def make(suffix: str) -> str:
            created.append(f"contract_{run}_{suffix}")
            return created[-1]

        return make

    @pytest_asyncio.fixture
    async def store(self, tmp_path: Path, created: list[str]) -> AsyncIterator[VectorStore]:
        store = await self.open_store(tmp_path / "store")
        try:
            yield store
        finally:
            for name in created:  # what a failed test left behind (a shared server keeps it)
                if await store.resolve(name) == name:
                    await store.drop_collection(name)
            await store.close()

    @pytest_asyncio.fixture(scope="class")
    @classmethod
    async def loaded(
        cls, tmp_path_factory: pytest.TempPathFactory
    ) -> AsyncIterator[tuple[VectorStore, str, list[ItemRecord]]]:
        """A store holding `dataset()` (read-only tests share it)."""
        store = await cls().open_store(tmp_path_factory.mktemp("loaded"))
        name = f"contract_{uuid.uuid4().hex[:8]}_loaded"
        records = dataset()
        await store.ensure_collection(Collection(name, "contract@1", DIM, "cosine", ATTRIBUTES))
        for start in range(0, len(records), 64):
            await store.write(name, records[start : start + 64])
        try:
            yield store, name, records
        finally:
            await store.drop_collection(name)
            await store.close()

    async def _collection(self, store: VectorStore, name: str, dim: int = DIM) -> Collection:
        collection = Collection(name, "contract@1", dim, "cosine", ATTRIBUTES)
        await store.ensure_collection(collection)
        return collection

    # -- collections -----------------------------------------------------------------------------------

    async def test_ensure_collection_is_idempotent(
        self, store: VectorStore, new_name: Callable[[str], str]
    ) -> None:
        name = new_name("idem")
        collection = await self._collection(store, name)
        record = make_record(TENANT, "x1", np.random.default_rng(1))
        await store.write(name, [record])
        await store.ensure_collection(collection)  # again: keeps the data
        await store.ensure_collection(collection)
        assert await store.resolve(name) == name
        assert await store.count(name) == 1
        await store.drop_collection(name)

    async def test_drop_collection(self, store: VectorStore, new_name: Callable[[str], str]) -> None:
        name = new_name("drop")
        await self._collection(store, name)
        await store.write(name, [make_record(TENANT, "x1", np.random.default_rng(1))])
        await store.drop_collection(name)
        assert await store.resolve(name) is None
        await self._collection(store, name)
        assert await store.count(name) == 0
        await store.drop_collection(name)

    async def test_aliases_set_switch_resolve(
        self, store: VectorStore, new_name: Callable[[str], str]
    ) -> None:
        first, second, alias = new_name("v1"), new_name("v2"), new_name("live")
        await self._collection(store, first)
        await self._collection(store, second)
        assert await store.resolve(alias) is None
        await store.set_alias(alias, first)
        assert await store.resolve(alias) == first
        await store.set_alias(alias, second)  # switch
        assert await store.resolve(alias) == second
        assert await store.resolve(first) == first
        assert await store.resolve(new_name("missing")) is None
        await store.drop_collection(first)
        await store.drop_collection(second)

    # -- writes, states, tombstones -------------------------------------------------------------------

    async def test_write_then_states(self, store: VectorStore, new_name: Callable[[str], str]) -> None:
        name = new_name("states")
        await self._collection(store, name)
        rng = np.random.default_rng(2)
        a, b = make_record(TENANT, "s1", rng), make_record(TENANT, "s2", rng)
        await store.write(name, [a, b, tombstone(make_record(TENANT, "s3", rng))])
        states = await store.states(name, TENANT, ["s1", "s2", "s3", "missing"])
        assert set(states) == {"s1", "s2", "s3"}
        assert states["s1"].version == a.version
        assert states["s1"].event_time == a.event_time
        assert states["s1"].content_sha256 == a.content_sha256
        assert not states["s1"].deleted
        assert states["s3"].deleted
        assert await store.states(name, OTHER_TENANT, ["s1", "s2"]) == {}
        # An upsert replaces the item (same id), it does not add one.
        newer = replace(a, version=a.version + 1, text="replaced text", content_sha256="f" * 64)
        await store.write(name, [newer])
        assert (await store.states(name, TENANT, ["s1"]))["s1"].content_sha256 == "f" * 64
        assert await store.count(name, TENANT) == 2
        await store.drop_collection(name)

    async def test_expired_finds_old_live_heads_of_every_tenant(
        self, store: VectorStore, new_name: Callable[[str], str]
    ) -> None:
        """Retention's scan: live items (not passages, not tombstones) older than the cutoff."""
        name = new_name("expired")
        await self._collection(store, name)
        rng = np.random.default_rng(5)
        old = [
            make_record(TENANT, "old-a", rng, event_time=T0),
            make_record(OTHER_TENANT, "old-b", rng, event_time=T0 + timedelta(hours=1)),
        ]
        vectors = [rng.standard_normal(DIM).astype(np.float32) for _ in range(2)]
        passages = make_doc(TENANT, "old-doc", 1, ["one sentence.", "two sentence."], vectors, event_time=T0)
        gone = tombstone(make_record(TENANT, "old-gone", rng, event_time=T0))
        new = make_record(TENANT, "new", rng, event_time=T0 + timedelta(days=10))
        await store.write(name, [*old, passages, gone, new])
        found = await store.expired(name, T0 + timedelta(days=1), limit=100)
        assert sorted((f.tenant, f.item_id) for f in found) == sorted(
            [(TENANT, "old-a"), (OTHER_TENANT, "old-b"), (TENANT, "old-doc")]
        )
        by_id = {f.item_id: f.state for f in found}
        assert by_id["old-a"].version == old[0].version and by_id["old-a"].event_time == T0
        assert not by_id["old-a"].deleted
        assert len(await store.expired(name, T0 + timedelta(days=1), limit=2)) == 2
        assert await store.expired(name, T0, limit=100) == []
        await store.drop_collection(name)

    async def test_records_round_trip_in_hits(
        self, store: VectorStore, new_name: Callable[[str], str]
    ) -> None:
        name = new_name("roundtrip")
        await self._collection(store, name)
        record = make_record(TENANT, "rt", np.random.default_rng(3))
        await store.write(name, [record])
        hits = await store.search(name, Query(TENANT, limit=1, vector=record.vector))
        assert len(hits) == 1
        assert hits[0].record == replace(record, vector=None)
        await store.drop_collection(name)

    async def test_tombstone_hidden_from_search_and_count(
        self, store: VectorStore, new_name: Callable[[str], str]
    ) -> None:
        name = new_name("tomb")
        await self._collection(store, name)
        rng = np.random.default_rng(4)
        records = [make_record(TENANT, f"t{i}", rng, text=f"needle{i} haystack") for i in range(5)]
        await store.write(name, records)
        assert await store.count(name, TENANT) == 5
        gone = records[2]
        await store.write(name, [tombstone(gone)])
        assert await store.count(name, TENANT) == 4
        assert await store.count(name) == 4
        by_vector = await store.search(name, Query(TENANT, limit=10, vector=gone.vector))
        assert gone.item_id not in ids(by_vector)
        assert len(by_vector) == 4
        by_text = await store.search(name, Query(TENANT, limit=10, text="needle2"))
        assert gone.item_id not in ids(by_text)
        exact = await store.search(name, Query(TENANT, limit=10, vector=gone.vector, exact=True))
        assert gone.item_id not in ids(exact)
        assert (await store.states(name, TENANT, [gone.item_id]))[gone.item_id].deleted
        await store.drop_collection(name)

    async def test_set_text_adds_searchable_text_only_to_the_stored_version(
        self, store: VectorStore, new_name: Callable[[str], str]
    ) -> None:
        """The enrichment stage's OCR text: BM25-searchable and the snippet once set, refused
        for a state that is no longer stored (newer write, delete), never for another tenant."""
        name = new_name("settext")
        await self._collection(store, name)
        rng = np.random.default_rng(11)
        photo = make_record(TENANT, "scan-1", rng, modality="image", text="title scan-1", snippet="")
        other = make_record(OTHER_TENANT, "scan-1", rng, modality="image", text="title scan-1", snippet="")
        await store.write(name, [photo, other])
        state = (await store.states(name, TENANT, ["scan-1"]))["scan-1"]
        ocr = "title scan-1\nINVOICE QX-77123 total due"
        assert await store.set_text(name, TENANT, "scan-1", state, text=ocr, snippet="INVOICE QX-77123")
        (hit,) = await store.search(name, Query(TENANT, limit=5, text="QX-77123"))
        assert hit.record.item_id == "scan-1" and hit.record.snippet == "INVOICE QX-77123"
        assert hit.record.vector is None or hit.record.thumbnail_jpeg == photo.thumbnail_jpeg
        assert not await store.search(name, Query(OTHER_TENANT, limit=5, text="QX-77123"))
        stale = replace(state, version=state.version - 1)
        assert not await store.set_text(name, TENANT, "scan-1", stale, text="stale text", snippet="x")
        await store.write(name, [tombstone(photo)])
        gone = (await store.states(name, TENANT, ["scan-1"]))["scan-1"]
        assert not await store.set_text(name, TENANT, "scan-1", gone, text="after delete", snippet="x")
        assert not await store.search(name, Query(TENANT, limit=5, text="QX-77123"))
        await store.drop_collection(name)

    async def test_tenant_isolation(self, loaded: tuple[VectorStore, str, list[ItemRecord]]) -> None:
        store, name, records = loaded
        a_ids = {r.item_id for r in records if r.tenant == TENANT}
        target = live(records)[0]
        for query in (
            Query(OTHER_TENANT, limit=500, vector=target.vector),
            Query(OTHER_TENANT, limit=500, vector=target.vector, exact=True),
            Query(OTHER_TENANT, limit=500, text=RARE_ID),
            Query(OTHER_TENANT, limit=500, vector=target.vector, text="invoice supplier"),
            Query(OTHER_TENANT, limit=500, vector=target.vector, filter=any_in("item_id", *sorted(a_ids))),
        ):
            hits = await store.search(name, query)
            assert all(h.record.tenant == OTHER_TENANT for h in hits)
            assert not a_ids & set(ids(hits))
        assert await store.count(name, TENANT) == len(live(records, TENANT))
        assert await store.count(name, OTHER_TENANT) == len(live(records, OTHER_TENANT))
        assert await store.count(name, "nobody") == 0
        assert await store.count(name) == len(live(records, TENANT)) + len(live(records, OTHER_TENANT))
        mine = await store.search(name, Query(TENANT, limit=500, vector=target.vector, exact=True))
        assert {h.record.tenant for h in mine} == {TENANT}
        assert len(mine) == len(live(records))

    # -- filters -------------------------------------------------------------------------------------

    @pytest.mark.parametrize("case", FILTER_CASE_NAMES)
    async def test_filter_returns_exactly_the_matching_items(
        self, loaded: tuple[VectorStore, str, list[ItemRecord]], case: str
    ) -> None:
        store, name, records = loaded
        tree = filter_cases(records)[case]
        node = parse_filter(tree, ATTRIBUTES)
        assert node is not None
        expected = {r.item_id for r in live(records) if matches(node, r)}
        assert 0 < len(expected) < len(live(records)) or case == "bool-in", f"{case}: degenerate case"
        query_vector = unit(np.random.default_rng(11))
        for exact in (True, False):
            hits = await store.search(
                name, Query(TENANT, limit=1000, vector=query_vector, filter=tree, exact=exact)
            )
            got = ids(hits)
            assert len(got) == len(set(got))
            assert set(got) == expected, f"{case} exact={exact}: {set(got) ^ expected}"

    async def test_modality_restriction(self, loaded: tuple[VectorStore, str, list[ItemRecord]]) -> None:
        store, name, records = loaded
        vector = unit(np.random.default_rng(12))
        for modalities in (("image",), ("image", "audio"), ("text",)):
            hits = await store.search(
                name, Query(TENANT, limit=1000, vector=vector, modalities=modalities, exact=True)
            )
            assert set(ids(hits)) == {r.item_id for r in live(records) if r.modality in modalities}
        text_hits = await store.search(name, Query(TENANT, limit=1000, text="invoice", modalities=("image",)))
        assert text_hits
        assert {h.record.modality for h in text_hits} == {"image"}
        assert "invoice-rare" not in ids(text_hits)

    # -- ranking ---------------------------------------------------------------------------------------

    async def test_pagination_is_stable(self, loaded: tuple[VectorStore, str, list[ItemRecord]]) -> None:
        store, name, _ = loaded
        vector = unit(np.random.default_rng(13))
        for base in (
            Query(TENANT, limit=63, vector=vector),
            Query(TENANT, limit=63, text="invoice report budget"),
            Query(TENANT, limit=63, vector=vector, text="invoice report budget"),
            Query(TENANT, limit=63, vector=vector, filter=eq("tags", "red")),
        ):
            full = ids(await store.search(name, base))
            assert len(full) == len(set(full))
            pages: list[str] = []
            for offset in range(0, 63, 7):
                pages += ids(await store.search(name, replace(base, offset=offset, limit=7)))
            assert pages == full
            beyond = await store.search(name, replace(base, offset=10_000, limit=7))
            assert beyond == []

    async def test_bm25_finds_rare_identifier(
        self, loaded: tuple[VectorStore, str, list[ItemRecord]]
    ) -> None:
        store, name, records = loaded
        rare = next(r for r in records if r.item_id == "invoice-rare")
        assert rare.vector is not None
        away = -rare.vector  # a vector query that surely misses it
        by_vector = await store.search(name, Query(TENANT, limit=10, vector=away))
        assert "invoice-rare" not in ids(by_vector)
        by_text = await store.search(name, Query(TENANT, limit=10, text=RARE_ID))
        assert ids(by_text)[:1] == ["invoice-rare"]
        assert by_text[0].bm25_score is not None
        assert by_text[0].bm25_score > 0
        assert by_text[0].vector_score is None
        assert by_text[0].score == by_text[0].bm25_score

    async def test_hybrid_contains_both_lists_top_items(
        self, loaded: tuple[VectorStore, str, list[ItemRecord]]
    ) -> None:
        store, name, records = loaded
        anchor = live(records)[5]
        vector_top = ids(await store.search(name, Query(TENANT, limit=3, vector=anchor.vector)))
        text_top = ids(await store.search(name, Query(TENANT, limit=3, text=RARE_ID)))
        assert vector_top[0] == anchor.item_id
        assert text_top[0] == "invoice-rare"
        for k in (1, 60):
            hybrid = await store.search(
                name, Query(TENANT, limit=10, vector=anchor.vector, text=RARE_ID, rrf_k=k)
            )
            got = ids(hybrid)
            assert {anchor.item_id, "invoice-rare"} <= set(got[:2])
            scores = [h.score for h in hybrid]
            assert scores == sorted(scores, reverse=True)
            by_id = {h.record.item_id: h for h in hybrid}
            assert by_id[anchor.item_id].vector_score is not None
            assert by_id["invoice-rare"].bm25_score is not None
            assert all(h.vector_score is not None or h.bm25_score is not None for h in hybrid)
            # RRF with this k: the fused score is a sum of 1/(k + rank) terms, at most 2/k.
            assert 0 < by_id[anchor.item_id].score <= 2 / k + 1e-6

    async def test_exact_search_agrees_with_brute_force(
        self, store: VectorStore, new_name: Callable[[str], str]
    ) -> None:
        name = new_name("exact")
        dim = 32
        await self._collection(store, name, dim)
        rng = np.random.default_rng(21)
        vectors = rng.standard_normal((1000, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        records = [
            make_record(TENANT, f"e{i:04d}", rng, vector=vectors[i], attributes={})
            for i in range(len(vectors))
        ]
        for start in range(0, len(records), 250):
            await store.write(name, records[start : start + 250])
        for q in range(5):
            query = unit(rng, dim)
            expected_scores = vectors @ query
            expected = [f"e{i:04d}" for i in np.argsort(-expected_scores)[:20]]
            hits = await store.search(name, Query(TENANT, limit=20, vector=query, exact=True))
            assert ids(hits) == expected, f"query {q}"
            for hit in hits:
                assert hit.vector_score is not None
                assert abs(hit.vector_score - float(expected_scores[int(hit.record.item_id[1:])])) < 1e-4
        await store.drop_collection(name)

    # -- fusion, pinned exactly ------------------------------------------------------------------------

    async def _fusion_collection(self, store: VectorStore, new_name: Callable[[str], str]) -> str:
        name = new_name("fusion")
        await self._collection(store, name)
        await store.write(name, fusion_records())
        return name

    @pytest.mark.parametrize("k", [1, 60])
    async def test_hybrid_fusion_scores_order_and_ranks_are_exact(
        self, store: VectorStore, new_name: Callable[[str], str], k: int
    ) -> None:
        name = await self._fusion_collection(store, new_name)
        # Each ranking alone, as the case is built.
        dense = await store.search(name, Query(TENANT, limit=5, vector=FUSION_QUERY))
        assert ids(dense) == [i.item_id for i in sorted(FUSION_ITEMS, key=lambda i: i.dense_rank)]
        text = await store.search(name, Query(TENANT, limit=5, text=FUSION_TERM))
        in_text = [i for i in FUSION_ITEMS if i.bm25_rank is not None]
        assert ids(text) == [i.item_id for i in sorted(in_text, key=lambda i: i.bm25_rank or 0)]

        hits = await store.search(
            name, Query(TENANT, limit=5, vector=FUSION_QUERY, text=FUSION_TERM, rrf_k=k)
        )
        assert ids(hits) == FUSION_ORDER[k]
        for hit in hits:
            item = fusion_item(hit.record.item_id)
            assert (hit.vector_rank, hit.bm25_rank) == (item.dense_rank, item.bm25_rank), item.item_id
            assert hit.score == pytest.approx(rrf_expected(k, item.dense_rank, item.bm25_rank), rel=1e-12)
            assert hit.vector_score == pytest.approx(item.cosine, abs=1e-5)
            assert (hit.bm25_score is None) == (item.bm25_rank is None)
        by_bm25 = sorted((h for h in hits if h.bm25_rank is not None), key=lambda h: h.bm25_rank or 0)
        bm25_scores = [h.bm25_score or 0.0 for h in by_bm25]
        assert bm25_scores == sorted(bm25_scores, reverse=True)
        assert bm25_scores[-1] > 0
        # The ties are exact (the same float), broken by the documented rule.
        assert hits[1].score == hits[2].score
        if k == 1:
            assert hits[3].score == hits[4].score
        # Pages of the fused ranking are slices of it.
        page = await store.search(
            name, Query(TENANT, limit=2, offset=2, vector=FUSION_QUERY, text=FUSION_TERM, rrf_k=k)
        )
        assert ids(page) == FUSION_ORDER[k][2:4]
        assert [h.score for h in page] == [h.score for h in hits[2:4]]
        await store.drop_collection(name)

    async def test_single_ranking_hits_carry_their_rank(
        self, store: VectorStore, new_name: Callable[[str], str]
    ) -> None:
        name = await self._fusion_collection(store, new_name)
        for exact in (False, True):
            dense = await store.search(
                name, Query(TENANT, limit=2, offset=1, vector=FUSION_QUERY, exact=exact)
            )
            assert ids(dense) == ["h3", "h2"]
            assert [(h.vector_rank, h.bm25_rank) for h in dense] == [(2, None), (3, None)]
            assert [h.score for h in dense] == [h.vector_score for h in dense]
        text = await store.search(name, Query(TENANT, limit=10, text=FUSION_TERM))
        assert ids(text) == ["h5", "h1", "h2", "h3"]
        assert [(h.vector_rank, h.bm25_rank) for h in text] == [(None, 1), (None, 2), (None, 3), (None, 4)]
        assert [h.score for h in text] == [h.bm25_score for h in text]
        await store.drop_collection(name)

    async def test_candidates_per_ranking_bounds_what_is_fused(
        self, store: VectorStore, new_name: Callable[[str], str]
    ) -> None:
        name = await self._fusion_collection(store, new_name)
        base = Query(TENANT, limit=2, vector=FUSION_QUERY, text=FUSION_TERM, rrf_k=1)
        # Default window and 5 candidates: everything is fused, as in the full case.
        for candidates in (0, 5, 10_000):
            hits = await store.search(name, replace(base, candidates_per_ranking=candidates))
            assert ids(hits) == ["h5", "h1"]
            assert [(h.vector_rank, h.bm25_rank) for h in hits] == [(5, 1), (4, 2)]
        # 2 candidates per ranking: dense h4, h3; BM25 h5, h1. h4 and h5 tie at 1/2 with best rank 1
        # each, so the item id decides; h5's dense rank 5 was never fetched.
        two = await store.search(name, replace(base, candidates_per_ranking=2))
        assert ids(two) == ["h4", "h5"]
        assert [(h.vector_rank, h.bm25_rank) for h in two] == [(1, None), (None, 1)]
        assert [h.score for h in two] == [rrf_expected(1, 1), rrf_expected(1, 1)]
        assert two[1].vector_score is None
        # Never fewer candidates than offset + limit: 4 each, then the 1/2 tie of three items.
        four = await store.search(name, replace(base, limit=4, candidates_per_ranking=2))
        assert ids(four) == ["h1", "h3", "h4", "h5"]
        assert [(h.vector_rank, h.bm25_rank) for h in four] == [(4, 2), (2, 4), (1, None), (None, 1)]
        await store.drop_collection(name)

    async def test_invalid_queries_name_the_field(
        self, store: VectorStore, new_name: Callable[[str], str]
    ) -> None:
        name = await self._fusion_collection(store, new_name)
        hybrid = Query(TENANT, limit=5, vector=FUSION_QUERY, text=FUSION_TERM)
        bad_filter = eq("nope", "x")
        cases = {
            "hybrid.rrf_k": [
                replace(hybrid, rrf_k=0),
                replace(hybrid, text=None, rrf_k=0),
                replace(hybrid, rrf_k=-3),
            ],
            "hybrid.candidates_per_ranking": [
                replace(hybrid, candidates_per_ranking=-1),
                replace(hybrid, candidates_per_ranking=10_001),
            ],
            "limit": [replace(hybrid, limit=0)],
            "offset": [replace(hybrid, offset=-1)],
            "query": [replace(hybrid, vector=None, text="   ")],
            "vector": [
                replace(hybrid, vector=np.ones(DIM + 1, np.float32)),
                replace(hybrid, vector=np.full(DIM, np.nan, np.float32)),
            ],
            "modalities[1]": [replace(hybrid, modalities=("text", "video"))],
            "filter.condition.field": [replace(hybrid, filter=bad_filter)],
        }
        for field, queries in cases.items():
            for query in queries:
                with pytest.raises(InvalidQuery) as raised:
                    await store.search(name, query)
                assert raised.value.field == field
                assert str(raised.value).startswith(f"{field}: ")
        await store.drop_collection(name)

    # -- persistence -----------------------------------------------------------------------------------

    async def test_close_and_reopen_keeps_items_and_aliases(
        self, tmp_path: Path, new_name: Callable[[str], str]
    ) -> None:
        root = tmp_path / "persist"
        name, alias = new_name("persist"), new_name("alias")
        rng = np.random.default_rng(31)
        records = [make_record(TENANT, f"p{i}", rng) for i in range(30)]
        records[3] = tombstone(records[3])
        store = await self.open_store(root)
        try:
            await self._collection(store, name)
            await store.write(name, records)
            await store.set_alias(alias, name)
        finally:
            await store.close()
        reopened = await self.open_store(root)
        try:
            assert await reopened.resolve(alias) == name
            assert await reopened.count(name, TENANT) == 29
            states = await reopened.states(name, TENANT, [r.item_id for r in records])
            assert len(states) == 30
            assert states["p3"].deleted
            target = records[7]
            hits = await reopened.search(name, Query(TENANT, limit=1, vector=target.vector))
            assert hits[0].record == replace(target, vector=None)
            await reopened.drop_collection(name)
        finally:
            await reopened.close()

    # -- passages --------------------------------------------------------------------------------------

    async def test_passages_update_replaces_all_and_delete_removes_all(
        self, store: VectorStore, new_name: Callable[[str], str]
    ) -> None:
        name = new_name("passages")
        await self._collection(store, name)
        rng = np.random.default_rng(41)
        old_vectors = [unit(rng) for _ in range(5)]
        old = make_doc(
            TENANT,
            "doc",
            1,
            [f"old sentence number {i} mentions alphaword{i}." for i in range(5)],
            old_vectors,
        )
        await store.write(name, [old, make_record(TENANT, "other", rng)])
        assert await store.count(name, TENANT) == 2
        assert await store.count_passages(name, TENANT, "doc") == 5
        for i, vector in enumerate(old_vectors):
            hit = (await store.search(name, Query(TENANT, limit=1, vector=vector)))[0]
            assert hit.record.item_id == "doc"
            assert hit.passage is not None
            assert (hit.passage.index, hit.passage.text) == (i, old.passages[i].text)
            assert (hit.passage.start, hit.passage.end) == (old.passages[i].start, old.passages[i].end)
            assert hit.vector_rank == 1
        # A phrase of the last passage matches by BM25 (and the hit says which passage).
        hits = await store.search(name, Query(TENANT, limit=5, text="alphaword4"))
        assert ids(hits) == ["doc"]
        assert hits[0].passage is not None and hits[0].passage.index == 4

        new_vectors = [unit(rng) for _ in range(3)]
        new = make_doc(TENANT, "doc", 2, [f"new text {i} says betaword{i}." for i in range(3)], new_vectors)
        await store.write(name, [new])
        assert await store.count_passages(name, TENANT, "doc") == 3
        assert (await store.states(name, TENANT, ["doc"]))["doc"].version == 2
        for i in range(5):
            assert await store.search(name, Query(TENANT, limit=5, text=f"alphaword{i}")) == []
        for vector in old_vectors:  # the item is still found (by its new passages only)
            for hit in await store.search(name, Query(TENANT, limit=5, vector=vector)):
                if hit.record.item_id == "doc":
                    assert hit.passage is not None and hit.passage.text in {p.text for p in new.passages}
        hit = (await store.search(name, Query(TENANT, limit=1, vector=new_vectors[2], text="betaword2")))[0]
        assert hit.record.item_id == "doc" and hit.passage is not None and hit.passage.index == 2

        await store.write(name, [tombstone(new)])
        assert await store.count_passages(name, TENANT, "doc") == 0
        assert await store.count(name, TENANT) == 1
        assert (await store.states(name, TENANT, ["doc"]))["doc"].deleted
        assert "doc" not in ids(await store.search(name, Query(TENANT, limit=10, vector=new_vectors[0])))
        assert await store.search(name, Query(TENANT, limit=10, text="betaword0 newtext")) == []

    async def test_passages_hits_are_items_with_their_best_passage(
        self, store: VectorStore, new_name: Callable[[str], str]
    ) -> None:
        name = new_name("dedupe")
        await self._collection(store, name)
        rng = np.random.default_rng(43)
        query = unit(rng)
        # "long": 8 passages all near the query, the 6th nearest; 10 one-passage items farther away.
        long_vectors = [near(query, rng, 0.3) for _ in range(8)]
        long_vectors[5] = near(query, rng, 0.01)
        long = make_doc(TENANT, "long", 1, [f"part {i} of the zeta report." for i in range(8)], long_vectors)
        others = [
            make_doc(TENANT, f"s{i}", 1, [f"short zeta note {i}."], [near(query, rng, 0.6)])
            for i in range(10)
        ]
        await store.write(name, [long, *others])
        for q in (
            Query(TENANT, limit=11, vector=query),
            Query(TENANT, limit=11, text="zeta"),
            Query(TENANT, limit=11, vector=query, text="zeta report"),
        ):
            hits = await store.search(name, q)
            assert sorted(ids(hits)) == sorted(["long", *(f"s{i}" for i in range(10))])
            for hit in hits:
                assert hit.passage is not None
                item = (
                    long
                    if hit.record.item_id == "long"
                    else next(o for o in others if o.item_id == hit.record.item_id)
                )
                passage = item.passages[hit.passage.index]
                assert (hit.passage.start, hit.passage.end, hit.passage.text) == (
                    passage.start,
                    passage.end,
                    passage.text,
                )
            if q.vector is not None:
                assert hits[0].record.item_id == "long"
                assert hits[0].passage is not None and hits[0].passage.index == 5
        # Pages over items: stable, no duplicates, ranks count items.
        for base in (
            Query(TENANT, limit=11, vector=query),
            Query(TENANT, limit=11, vector=query, text="zeta"),
        ):
            full = ids(await store.search(name, base))
            pages: list[str] = []
            for offset in range(0, 11, 3):
                pages += ids(await store.search(name, replace(base, offset=offset, limit=3)))
            assert pages == full
        vector_only = await store.search(name, Query(TENANT, limit=11, vector=query))
        assert [h.vector_rank for h in vector_only] == list(range(1, 12))

    async def test_passages_tenant_isolation(
        self, store: VectorStore, new_name: Callable[[str], str]
    ) -> None:
        name = new_name("ptenants")
        await self._collection(store, name)
        rng = np.random.default_rng(47)
        vectors = [unit(rng) for _ in range(4)]
        mine = make_doc(TENANT, "same", 1, [f"acme private {i} omegaword." for i in range(4)], vectors)
        theirs = make_doc(
            OTHER_TENANT, "same", 1, [f"globex secret {i} omegaword." for i in range(4)], vectors
        )
        await store.write(name, [mine, theirs])
        await store.write(name, [tombstone(theirs)])
        assert await store.count_passages(name, TENANT, "same") == 4
        assert await store.count_passages(name, OTHER_TENANT, "same") == 0
        for q in (
            Query(TENANT, limit=5, vector=vectors[1]),
            Query(TENANT, limit=5, vector=vectors[1], text="omegaword"),
        ):
            hits = await store.search(name, q)
            assert ids(hits) == ["same"]
            assert hits[0].passage is not None and "acme" in hits[0].passage.text
        assert await store.search(name, Query(OTHER_TENANT, limit=5, text="omegaword")) == []

    async def test_search_during_replace_never_mixes_generations(
        self, store: VectorStore, new_name: Callable[[str], str]
    ) -> None:
        """A writer replaces one item's passages over and over (even versions: 12 passages, the
        query's nearest in the middle; odd: 3 passages) and finally deletes it; concurrent searches
        must only ever show a passage of the generation of the head they show."""
        name = new_name("race")
        await self._collection(store, name)
        rng = np.random.default_rng(53)
        query = unit(rng)
        await store.write(
            name, [make_doc(TENANT, f"f{i}", 1, [f"filler {i}."], [unit(rng)]) for i in range(20)]
        )

        def version(v: int) -> ItemRecord:
            n = 12 if v % 2 == 0 else 3
            vectors = [near(query, rng, 0.5) for _ in range(n)]
            vectors[n // 2] = near(query, rng, 0.05 if v % 2 == 0 else 0.2)
            return make_doc(TENANT, "hot", v, [f"gen{v} passage {i} kappaword." for i in range(n)], vectors)

        done = False
        seen: list[tuple[int, str]] = []

        async def writer() -> None:
            nonlocal done
            try:
                for v in range(1, 25):
                    await store.write(name, [version(v)])
                    await asyncio.sleep(0)
                await store.write(name, [tombstone(version(25))])
            finally:
                done = True

        async def searcher(q: Query) -> None:
            while not done:
                for hit in await store.search(name, q):
                    if hit.record.item_id == "hot":
                        assert hit.passage is not None
                        seen.append((hit.record.version, hit.passage.text))
                await asyncio.sleep(0)

        await asyncio.gather(
            writer(),
            searcher(Query(TENANT, limit=5, vector=query)),
            searcher(Query(TENANT, limit=5, vector=query, text="kappaword")),
        )
        assert seen, "the searches saw the item"
        for v, text in seen:
            assert text.startswith(f"gen{v} "), (v, text)
        assert "hot" not in ids(
            await store.search(name, Query(TENANT, limit=30, vector=query, text="kappaword"))
        )
        assert await store.count_passages(name, TENANT, "hot") == 0
