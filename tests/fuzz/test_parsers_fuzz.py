"""Property tests (hypothesis) of the decoders and parsers a hostile input reaches
first: the ContentEvent decoder and the plan stage, dead-letter fitting, filters
and queries (down to a real Qdrant Edge store), and page tokens.

Each property ends in a documented outcome: an event is accepted and can be
stored, or dead-lettered with a reason; a filter or query is refused with
InvalidQuery naming its field, or it runs on the store; a page token is a
cursor this server issued, or INVALID_ARGUMENT on `page_token`."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st

from mmsearch.clients.spaces import SpaceInfo
from mmsearch.indexer.batch import Record, dead_letter, fit
from mmsearch.indexer.enrich import item_record
from mmsearch.indexer.events import IndexEvent, Rejection, decode, validate
from mmsearch.indexer.plan import Pending, Planner
from mmsearch.kit.errors import InvalidArgument
from mmsearch.producer import delete_event, text_event
from mmsearch.searcher.cursor import Cursor, PageTokens
from mmsearch.stores.base import Collection, FieldKind, ItemRecord, Query
from mmsearch.stores.errors import InvalidQuery
from mmsearch.stores.qdrant_edge import QdrantEdgeStore
from mmsearch.stores.query import validate_query
from mmsearch.v1 import common_pb2, embedder_pb2, events_pb2
from tests.fuzz.budget import Tally, budget
from tests.fuzz.strategies import INT_EDGES, messages, mutated, strings

DIM = 8
SPACE = SpaceInfo("minilm@1", DIM, frozenset({"text", "image", "audio"}))
ATTRIBUTES: dict[str, FieldKind] = {
    "score": "float",
    "count": "int",
    "flag": "bool",
    "label": "keyword",
    "labels": "keyword_list",
    "when": "datetime",
}
COLLECTION = Collection("fuzz_1", "minilm@1", DIM, attributes=ATTRIBUTES)
T0 = datetime(2026, 7, 1, tzinfo=UTC)
REASONS = set(events_pb2.DeadLetter.Reason.values()) - {0}
TALLIES: dict[str, Tally] = {}


def tally(target: str) -> Tally:
    return TALLIES.setdefault(target, Tally(target))


@pytest.fixture(scope="module", autouse=True)
def report_tallies() -> Iterator[None]:
    yield
    for item in TALLIES.values():
        item.report()


class StoreRunner:
    """A real embedded store with a few items, driven from synchronous hypothesis tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.dir = tempfile.TemporaryDirectory(prefix="mmsearch-fuzz-store-")
        self.store = QdrantEdgeStore(Path(self.dir.name))
        self.run(self.store.ensure_collection(COLLECTION))
        seeds = [text_event("acme", f"seed-{i}", f"seed note {i}", event_time=T0) for i in range(3)]
        for event in seeds:
            event.metadata.attributes["score"].double_value = 0.5
            event.metadata.tags.append("red")
            accepted = validate(event)
            assert isinstance(accepted, IndexEvent)
            self.run(self.store.write(COLLECTION.name, [record_of(accepted)]))

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.run(self.store.close())
        self.loop.close()
        self.dir.cleanup()


@pytest.fixture(scope="module")
def store() -> Iterator[StoreRunner]:
    runner = StoreRunner()
    yield runner
    runner.close()


def record_of(event: IndexEvent) -> ItemRecord:
    vector = np.ones(DIM, dtype=np.float32) / np.sqrt(DIM)
    embedding = embedder_pb2.Embedding(
        vector=common_pb2.Vector(values=vector.tolist()),
        model="fuzz",
        model_version="1",
        content_sha256=hashlib.sha256(event.event.SerializeToString()).hexdigest(),
    )
    pending = Pending(Record("content", 0, 0, None, event.event.SerializeToString()), event, SPACE)
    return item_record(pending, [embedding], "", b"")


# ---- events -------------------------------------------------------------------------------------


def base_events() -> st.SearchStrategy[events_pb2.ContentEvent]:
    return st.sampled_from(
        [
            text_event("acme", "a", "a plain note about the harbour at dusk", event_time=T0),
            text_event("acme", "b", "word " * 2000, title="Long", tags=["x"], event_time=T0, version=3),
            delete_event("acme", "a", version=4, event_time=T0),
        ]
    )


@st.composite
def hostile_events(draw: st.DrawFn) -> events_pb2.ContentEvent:
    """A valid event with random fields merged in, so most reach past the first checks."""
    event = events_pb2.ContentEvent()
    event.CopyFrom(draw(base_events()))
    if draw(st.booleans()):
        event.metadata.MergeFrom(draw(messages(common_pb2.ItemMetadata.DESCRIPTOR)))
    if draw(st.booleans()):
        event.event_time.seconds = draw(st.sampled_from(INT_EDGES) | st.integers(-(2**63), 2**63 - 1))
        event.event_time.nanos = draw(st.sampled_from([0, -1, 999_999_999, 10**9, 2**31 - 1]))
    if draw(st.booleans()):
        event.MergeFrom(draw(messages(events_pb2.ContentEvent.DESCRIPTOR)))
    return event


@st.composite
def records(draw: st.DrawFn) -> tuple[bytes, tuple[tuple[str, bytes], ...]]:
    kind = draw(st.sampled_from(["proto", "json", "mutated", "bytes"]))
    event = draw(hostile_events())
    if kind == "proto":
        value = event.SerializeToString()
    elif kind == "json":
        try:
            value = json_format.MessageToJson(event).encode()
        except (json_format.SerializeToJsonError, ValueError):
            # Not representable in JSON (an out-of-range timestamp): what a JSON producer
            # would write instead is a string of its own.
            value = json.dumps(
                {"eventId": "e", "tenant": "acme", "itemId": "x", "operation": "OPERATION_UPSERT",
                 "modality": "MODALITY_TEXT", "content": {"text": draw(strings())},
                 "eventTime": draw(strings()), "metadata": {"createdAt": draw(strings())}}
            ).encode()  # fmt: skip
        if draw(st.booleans()):
            value = draw(mutated(value))
    elif kind == "mutated":
        value = draw(mutated(event.SerializeToString()))
    else:
        value = draw(st.binary(max_size=2048))
    content_type = (
        "application/json"
        if kind == "json"
        else draw(
            st.sampled_from(
                ["", "application/x-protobuf", "application/json; charset=utf-8", "text/plain", "\xff"]
            )
        )
    )
    headers = (("content-type", content_type.encode("utf-8", "surrogatepass")),) if content_type else ()
    return value, headers


@budget(200)
@given(records())
def test_any_record_is_an_event_or_a_dead_letter_reason(
    record: tuple[bytes, tuple[tuple[str, bytes], ...]],
) -> None:
    value, headers = record
    decoded = decode(value, headers)
    if isinstance(decoded, Rejection):
        assert decoded.reason in REASONS and decoded.detail
        tally("ContentEvent decoder").count(events_pb2.DeadLetter.Reason.Name(decoded.reason))
    else:
        assert isinstance(decoded, IndexEvent)
        assert decoded.event.tenant and decoded.event.item_id and decoded.event.event_id
        tally("ContentEvent decoder").count("accepted")


@budget(100)
@given(hostile_events())
def test_every_accepted_event_can_be_stored(store: StoreRunner, event: events_pb2.ContentEvent) -> None:
    """What validation accepts, the store takes (before: a created_at of 2^62 s or a NaN
    attribute passed validation and failed at the store, stopping the partition)."""
    decoded = validate(event)
    if isinstance(decoded, Rejection):
        tally("ContentEvent accepted -> store write").count("rejected")
        return
    if decoded.is_delete:
        tally("ContentEvent accepted -> store write").count("delete")
        return
    store.run(store.store.write(COLLECTION.name, [record_of(decoded)]))
    states = store.run(store.store.states(COLLECTION.name, event.tenant, [event.item_id]))
    assert event.item_id in states
    tally("ContentEvent accepted -> store write").count("written")


class Spaces:
    async def resolve(self, name: str) -> SpaceInfo | None:
        return SPACE if name in ("default", "minilm@1", "audio") else None


@budget(40)
@given(st.lists(records(), max_size=12), st.integers(16_384, 1_000_000))
def test_the_plan_stage_places_every_record_and_letters_fit_the_dlq(
    batch: list[tuple[bytes, tuple[tuple[str, bytes], ...]]], max_bytes: int
) -> None:
    recs = [
        Record("content", 0, i, b"k" * (i * 300), value, headers) for i, (value, headers) in enumerate(batch)
    ]
    plan = asyncio.run(Planner(Spaces()).plan(recs))
    placed = sum(len(group) for group in plan.groups.values())
    assert len(plan.dead_letters) <= len(recs)
    assert placed + len(plan.dead_letters) + plan.duplicates >= len(recs)
    for letter in plan.dead_letters:
        assert fit(letter, max_bytes).ByteSize() <= max_bytes
    tally("plan stage (batches)").count("planned")


@budget(50)
@given(st.binary(min_size=0, max_size=6_000_000).map(lambda b: b * 1), st.integers(16_384, 200_000))
def test_a_dead_letter_of_any_size_fits(value: bytes, max_bytes: int) -> None:
    letter = dead_letter(
        Record("t" * 249, 1, 2, b"\xff" * 5000, value, (("h", b"v" * 10_000),)), 3, "d" * 9000
    )
    assert fit(letter, max_bytes).ByteSize() <= max_bytes
    tally("dead-letter fitting").count("fits")


# ---- filters and queries -----------------------------------------------------------------------

FIELDS = (
    ["modality", "tags", "source", "created_at", "event_time", "item_id", "tenant", "version", "deleted"]
    + [f"attributes.{name}" for name in ATTRIBUTES]
    + ["attributes.nope", "", "attributes.", "tags.x"]
)


def values() -> st.SearchStrategy[common_pb2.Value]:
    stamp = st.builds(
        lambda s, n: common_pb2.Value(timestamp_value={"seconds": s, "nanos": n}),
        st.sampled_from([0, -62135596800, 253402300799, 253402300800, 2**62, -(2**62)])
        | st.integers(-(2**63), 2**63 - 1),
        st.sampled_from([0, 999_999_999]) | st.integers(0, 10**9 - 1),
    )
    return st.one_of(
        strings().map(lambda s: common_pb2.Value(string_value=s)),
        (st.sampled_from(INT_EDGES) | st.integers(-(2**63), 2**63 - 1)).map(
            lambda i: common_pb2.Value(int_value=i)
        ),
        st.floats().map(lambda f: common_pb2.Value(double_value=f)),
        st.booleans().map(lambda b: common_pb2.Value(bool_value=b)),
        stamp,
        st.just(common_pb2.Value()),
    )


def conditions() -> st.SearchStrategy[common_pb2.Filter]:
    field = st.sampled_from(FIELDS)
    eq = st.builds(lambda f, v: common_pb2.FieldCondition(field=f, eq=v), field, values())
    in_ = st.builds(
        lambda f, vs: common_pb2.FieldCondition(field=f, **{"in": common_pb2.ValueList(values=vs)}),
        field,
        st.lists(values(), max_size=5) | st.lists(values(), min_size=1, max_size=1).map(lambda v: v * 1100),
    )
    rng = st.builds(
        lambda f, gt, lte: common_pb2.FieldCondition(field=f, range=common_pb2.Range(gt=gt, lte=lte)),
        field,
        values(),
        values(),
    )
    return st.one_of(eq, in_, rng).map(lambda c: common_pb2.Filter(condition=c))


def filters() -> st.SearchStrategy[common_pb2.Filter]:
    return st.recursive(
        conditions() | st.just(common_pb2.Filter()),
        lambda inner: st.one_of(
            inner.map(lambda f: common_pb2.Filter(negate=f)),
            st.lists(inner, max_size=4).map(
                lambda fs: common_pb2.Filter(all_of=common_pb2.FilterList(filters=fs))
            ),
            st.lists(inner, max_size=4).map(
                lambda fs: common_pb2.Filter(any_of=common_pb2.FilterList(filters=fs))
            ),
        ),
        max_leaves=80,
    )


def mostly(valid: object, *hostile: object) -> st.SearchStrategy[object]:
    """`valid` 7 times in 8, so most queries reach the filter and the store."""
    return st.sampled_from([valid] * 7 * max(1, len(hostile)) + list(hostile))


@st.composite
def queries(draw: st.DrawFn) -> Query:
    vector = draw(
        st.lists(st.floats(-1, 1, width=32), min_size=DIM, max_size=DIM)
        | st.none()
        | st.lists(st.floats(width=32), min_size=DIM, max_size=DIM)
        | st.lists(st.floats(-1, 1, width=32), max_size=12)
    )
    return Query(
        tenant=draw(mostly("acme", "other", "")),  # type: ignore[arg-type]
        limit=draw(mostly(10, 0, 1, 1000, -1, 10_001)),  # type: ignore[arg-type]
        offset=draw(mostly(0, 5, -1, 10_000, 2**31)),  # type: ignore[arg-type]
        vector=np.asarray(vector, dtype=np.float32) if vector is not None else None,
        text=draw(st.none() | strings()),
        filter=draw(filters() | st.none() | messages(common_pb2.Filter.DESCRIPTOR)),  # type: ignore[arg-type]
        modalities=tuple(
            draw(st.lists(st.sampled_from(["text", "image", "audio", "video", ""]), max_size=3))
        ),
        rrf_k=draw(mostly(60, 1, 0, -5, 2**31)),  # type: ignore[arg-type]
        candidates_per_ranking=draw(mostly(0, 10, 10_000, 10_001, -1)),  # type: ignore[arg-type]
    )


@budget(150)
@given(queries())
def test_a_query_is_refused_naming_its_field_or_runs_on_the_store(store: StoreRunner, query: Query) -> None:
    """validate_query and parse_filter either refuse with the field's path, or the
    query is one the real store answers (a bound, a timestamp or a number that
    validation lets through must not fail in the store)."""
    try:
        validate_query(query, COLLECTION)
    except InvalidQuery as refused:
        assert refused.field and str(refused).startswith(refused.field), str(refused)
        root = refused.field.split(".")[0].split("[")[0]
        assert root in {"limit", "offset", "hybrid", "query", "vector", "modalities", "filter"}, refused.field
        tally("filter / query parser").count(f"InvalidQuery:{root}")
        return
    if query.limit * 1 > 1000 or query.offset > 1000:
        tally("filter / query parser").count("accepted (not run: large page)")
        return
    hits = store.run(store.store.search(COLLECTION.name, query))
    assert all(hit.record.tenant == query.tenant for hit in hits)
    tally("filter / query parser").count("ran on the store")


# ---- page tokens --------------------------------------------------------------------------------

KEY = b"fuzz-page-token-key-0123456789"
MAX_OFFSET = 10_000


@st.composite
def tokens(draw: st.DrawFn) -> str:
    tokens_ = PageTokens(KEY, MAX_OFFSET)
    genuine = tokens_.encode(
        Cursor(draw(st.integers(0, MAX_OFFSET)), draw(st.sampled_from(["minilm@1", "aisfx@1"])), "0" * 16)
    )
    kind = draw(st.sampled_from(["genuine-mutated", "text", "forged", "other-key", "bytes"]))
    if kind == "genuine-mutated":
        return draw(mutated(genuine.encode())).decode("latin-1")
    if kind == "forged":
        body = json.dumps(
            {"o": draw(st.sampled_from([2**64, -1, "x", None, 1.5, 10**400])), "s": "minilm@1", "f": "0" * 16}
        )
        # A body of the forger's own under a genuine token's MAC.
        return f"{base64.urlsafe_b64encode(body.encode()).decode()}.{genuine.split('.')[1]}"
    if kind == "other-key":
        return PageTokens(b"another-key-of-some-length-0000", 2**64).encode(
            Cursor(2**64, "minilm@1", "0" * 16)
        )
    if kind == "bytes":
        return draw(st.binary(max_size=1500)).decode("latin-1")
    return draw(strings())


@budget(500)
@given(tokens())
def test_a_page_token_is_ours_or_invalid_argument(token: str) -> None:
    tokens_ = PageTokens(KEY, MAX_OFFSET)
    try:
        cursor = tokens_.decode(token)
    except InvalidArgument as refused:
        assert refused.field == "page_token"
        tally("page-token parser").count("INVALID_ARGUMENT")
        return
    assert 0 <= cursor.offset <= MAX_OFFSET
    assert tokens_.encode(cursor) == token  # only a token we issued decodes
    tally("page-token parser").count("decoded")


@budget(100)
@given(st.integers(-(2**70), 2**70), st.text(max_size=30), st.text(max_size=30))
def test_a_cursor_round_trips_within_the_offset_bound(offset: int, space: str, print_: str) -> None:
    tokens_ = PageTokens(KEY, MAX_OFFSET)
    token = tokens_.encode(Cursor(offset, space, print_))
    if 0 <= offset <= MAX_OFFSET and len(token) <= 1024:
        assert tokens_.decode(token) == Cursor(offset, space, print_)
    else:
        with pytest.raises(InvalidArgument):
            tokens_.decode(token)
    tally("page-token round trip").count("checked")
