"""The HTTP gateway against the gRPC services it fronts (target all, real Triton,
broker and store): each endpoint answers what the gRPC call answers, errors map
to HTTP statuses with problem+json, uploads are limited while they stream."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from openapi_spec_validator import validate

from mmsearch.dev.mmsearch import start_mmsearch
from mmsearch.dev.processes import free_port
from mmsearch.gateway.openapi import missing_fields
from mmsearch.v1 import (
    common_pb2,
    embedder_pb2,
    embedder_pb2_grpc,
    indexer_pb2,
    indexer_pb2_grpc,
    searcher_pb2,
    searcher_pb2_grpc,
)
from tests.conftest import DEV_TOKEN, READONLY_TOKEN, TENANT_B_TOKEN, sample
from tests.integration.gateway_corpus import GatewayCorpus

pytestmark = pytest.mark.integration
AUTH = (("authorization", f"Bearer {DEV_TOKEN}"),)


@pytest.fixture
def corpus(gateway_corpus: GatewayCorpus) -> GatewayCorpus:
    return gateway_corpus


async def grpc_call(corpus: GatewayCorpus, service: str, method: str, request: Message) -> Any:
    stubs = {
        "search": searcher_pb2_grpc.SearcherStub,
        "embed": embedder_pb2_grpc.EmbedderStub,
        "index": indexer_pb2_grpc.IndexerAdminStub,
    }
    async with grpc.aio.insecure_channel(corpus.grpc_addr) as channel:
        stub = stubs[service](channel)
        return await getattr(stub, method)(request, metadata=AUTH, timeout=60)


def as_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def without(body: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in keys}


def assert_same_hits(http: dict[str, Any], direct: Message) -> None:
    """Same hits in the same order with the same scores and previews; timings differ per call."""
    expected = as_json(direct)
    assert without(http, "timings") == without(expected, "timings")


async def test_text_search_with_filters_hybrid_rerank_and_pages_equals_grpc(corpus: GatewayCorpus) -> None:
    body = {
        "query": {"text": "a photo of a cat"},
        "topK": 3,
        "modalities": ["MODALITY_IMAGE"],
        "filter": {"condition": {"field": "tags", "eq": {"stringValue": "photo"}}},
    }
    async with corpus.client() as http:
        answer = await http.post("/v1/search", json=body)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert page["hits"][0]["itemId"] == "chelsea.png"
        assert page["hits"][0]["preview"]["thumbnailJpeg"]  # base64 JPEG for the grid
        direct = await grpc_call(
            corpus, "search", "Search", json_format.ParseDict(body, searcher_pb2.SearchRequest())
        )
        assert_same_hits(page, direct)
        # The next page through the gateway is the gRPC call's next page.
        following = await http.post("/v1/search", json={**body, "pageToken": page["nextPageToken"]})
        request = json_format.ParseDict(
            {**body, "pageToken": page["nextPageToken"]}, searcher_pb2.SearchRequest()
        )
        assert_same_hits(following.json(), await grpc_call(corpus, "search", "Search", request))
        assert {h["itemId"] for h in following.json()["hits"]}.isdisjoint(h["itemId"] for h in page["hits"])
        hybrid = {
            "query": {"text": "invoice INV-2024-00731"},
            "topK": 5,
            "hybrid": {"enabled": True},
            "rerank": {"enabled": True, "topN": 10},
        }
        answer = await http.post("/v1/search", json=hybrid)
        assert answer.status_code == 200, answer.text
        assert answer.json()["hits"][0]["itemId"] == "doc-invoice"
        direct = await grpc_call(
            corpus, "search", "Search", json_format.ParseDict(hybrid, searcher_pb2.SearchRequest())
        )
        assert [h["itemId"] for h in answer.json()["hits"]] == [h.item_id for h in direct.hits]
        assert "bm25" in answer.json()["hits"][0]["scores"] and "rerank" in answer.json()["hits"][0]["scores"]


async def test_search_by_uploaded_image_and_sound_equals_grpc(corpus: GatewayCorpus) -> None:
    async with corpus.client() as http:
        photo = sample("images/coffee.png")
        answer = await http.post(
            "/v1/search/upload",
            files={"file": ("coffee.png", photo, "image/png")},
            data={"request": '{"topK": 3, "modalities": ["MODALITY_IMAGE"]}'},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["hits"][0]["itemId"] == "coffee.png"
        request = searcher_pb2.SearchRequest(
            query=common_pb2.Content(image=common_pb2.Media(data=photo, mime_type="image/png")),
            top_k=3,
            modalities=[common_pb2.MODALITY_IMAGE],
        )
        assert_same_hits(answer.json(), await grpc_call(corpus, "search", "Search", request))
        sound = sample("audio/dog.mp3")
        answer = await http.post("/v1/search/upload", files={"file": ("dog.mp3", sound, "audio/mpeg")})
        assert answer.status_code == 200, answer.text
        assert answer.json()["space"] == "aisfx@1" and answer.json()["hits"][0]["itemId"] == "dog.mp3"
        request = searcher_pb2.SearchRequest(
            space=common_pb2.SpaceRef(name="audio"),
            query=common_pb2.Content(audio=common_pb2.Media(data=sound, mime_type="audio/mpeg")),
        )
        assert_same_hits(answer.json(), await grpc_call(corpus, "search", "Search", request))


async def test_embed_extract_spaces_models_status_equal_grpc(corpus: GatewayCorpus) -> None:
    async with corpus.client() as http:
        body = {"items": [{"text": "a red sports car"}, {"text": "ein rotes Auto"}]}
        answer = await http.post("/v1/embed", json=body)
        assert answer.status_code == 200, answer.text
        direct = as_json(
            await grpc_call(
                corpus, "embed", "Embed", json_format.ParseDict(body, embedder_pb2.EmbedRequest())
            )
        )
        # The second call may be served from the embedder's cache; everything else is the same.
        strip = lambda r: [without(e, "cached") for e in r["embeddings"]]  # noqa: E731
        assert strip(answer.json()) == strip(direct) and answer.json()["space"] == direct["space"]
        photo = sample("images/rocket.jpg")
        answer = await http.post("/v1/embed/upload", files=[("file", ("rocket.jpg", photo, "image/jpeg"))])
        assert answer.status_code == 200, answer.text
        request = embedder_pb2.EmbedRequest(
            items=[common_pb2.Content(image=common_pb2.Media(data=photo, mime_type="image/jpeg"))]
        )
        direct = as_json(await grpc_call(corpus, "embed", "Embed", request))
        assert strip(answer.json()) == strip(direct)
        page = sample("images/page.png")
        answer = await http.post("/v1/extract-text/upload", files={"file": ("page.png", page, "image/png")})
        assert answer.status_code == 200, answer.text
        request = embedder_pb2.ExtractTextRequest(images=[common_pb2.Media(data=page, mime_type="image/png")])
        assert answer.json() == as_json(await grpc_call(corpus, "embed", "ExtractText", request))
        assert answer.json()["results"][0]["text"]
        for path, method, request in (
            ("/v1/spaces", "ListSpaces", embedder_pb2.ListSpacesRequest()),
            ("/v1/models", "ListModels", embedder_pb2.ListModelsRequest()),
        ):
            answer = await http.get(path)
            assert answer.status_code == 200 and answer.json() == as_json(
                await grpc_call(corpus, "embed", method, request)
            )
        answer = await http.get("/v1/index/status")
        assert answer.status_code == 200, answer.text
        direct = as_json(await grpc_call(corpus, "index", "GetStatus", indexer_pb2.GetStatusRequest()))
        for key in ("topic", "consumerGroup", "spaces", "deadLettersByReason"):
            assert answer.json().get(key) == direct.get(key), key


async def test_dead_letters_of_the_callers_tenant_equal_grpc(corpus: GatewayCorpus) -> None:
    async with corpus.client() as http:
        answer = await http.get("/v1/index/dead-letters", params={"limit": "10"})
        assert answer.status_code == 200, answer.text
        letters = answer.json()["letters"]
        assert [letter["itemId"] for letter in letters] == ["broken-dev.png"]  # never tenant-b's
        assert letters[0]["reason"] == "REASON_CORRUPT_MEDIA" and letters[0]["eventId"]
        assert letters[0]["originalSize"] != "0"
        direct = await grpc_call(
            corpus, "index", "ListDeadLetters", indexer_pb2.ListDeadLettersRequest(limit=10)
        )
        assert answer.json() == as_json(direct)
        assert (await http.get("/v1/index/dead-letters", params={"limit": "5000"})).status_code == 413
        assert (await http.get("/v1/index/dead-letters", params={"limit": "-1"})).status_code == 400
    async with corpus.client(TENANT_B_TOKEN) as other:  # no index-admin role
        assert (await other.get("/v1/index/dead-letters")).status_code == 403


async def test_item_and_thumbnail_of_the_callers_tenant_only(corpus: GatewayCorpus) -> None:
    async with corpus.client() as http:
        item = await http.get("/v1/items/chelsea.png")
        assert item.status_code == 200, item.text
        assert item.json()["itemId"] == "chelsea.png" and item.json()["metadata"]["tags"] == ["photo"]
        thumbnail = await http.get("/v1/items/chelsea.png/thumbnail")
        assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
        assert thumbnail.content[:2] == b"\xff\xd8"
        sound = await http.get("/v1/items/dog.mp3", params={"space": "audio"})
        assert sound.status_code == 200 and sound.json()["space"] == "aisfx@1"
        assert (await http.get("/v1/items/dog.mp3/thumbnail", params={"space": "audio"})).status_code == 404
        missing = await http.get("/v1/items/no-such-item")
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    async with corpus.client(TENANT_B_TOKEN) as other:
        assert (await other.get("/v1/items/chelsea.png")).status_code == 404
        assert (await other.get("/v1/items/secret")).status_code == 200


async def test_ingest_by_upload_becomes_searchable_then_delete_removes_it(corpus: GatewayCorpus) -> None:
    async with corpus.client() as http:
        answer = await http.post(
            "/v1/ingest",
            files={"file": ("gateway-horse.png", sample("images/horse.png"), "image/png")},
            data={"item_id": "uploaded-horse", "tags": "upload, animals", "title": "A horse"},
        )
        assert answer.status_code == 202, answer.text
        event = answer.json()
        assert event["tenant"] == "dev" and event["itemId"] == "uploaded-horse" and "offset" in event
        item = await _eventually(http, "/v1/items/uploaded-horse", 200)
        assert item.json()["metadata"]["tags"] == ["upload", "animals"]
        text = await http.post(
            "/v1/ingest", data={"item_id": "notes/zebras.txt", "text": "Gateway notes about zebras."}
        )
        assert text.status_code == 202, text.text
        note = await _eventually(http, "/v1/items/notes/zebras.txt", 200)  # an id with a slash
        assert note.json()["itemId"] == "notes/zebras.txt"
        deleted = await http.delete("/v1/items/uploaded-horse", params={"version": "99"})
        assert deleted.status_code == 202, deleted.text
        await _eventually(http, "/v1/items/uploaded-horse", 404)
    async with corpus.client(READONLY_TOKEN) as readonly:
        refused = await readonly.post("/v1/ingest", data={"item_id": "x", "text": "no"})
        assert refused.status_code == 403 and refused.json()["grpc_status"] == "PERMISSION_DENIED"


async def _eventually(
    http: httpx.AsyncClient, path: str, status: int, timeout_s: float = 60.0
) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        answer = await http.get(path)
        if answer.status_code == status or time.monotonic() > deadline:
            assert answer.status_code == status, answer.text
            return answer
        await asyncio.sleep(0.3)


@pytest.mark.parametrize(
    "case",
    [
        (None, "POST", "/v1/search", {"query": {"text": "x"}}, 401, "UNAUTHENTICATED"),
        ("not-a-token", "POST", "/v1/search", {"query": {"text": "x"}}, 401, "UNAUTHENTICATED"),
        (READONLY_TOKEN, "POST", "/v1/embed", {"items": [{"text": "x"}]}, 403, "PERMISSION_DENIED"),
        (DEV_TOKEN, "POST", "/v1/search", {"topK": 3}, 400, "INVALID_ARGUMENT"),
        (
            DEV_TOKEN,
            "POST",
            "/v1/search",
            {"query": {"text": "x"}, "filter": {"condition": {"field": "nope", "eq": {"stringValue": "a"}}}},
            400,
            "INVALID_ARGUMENT",
        ),
        (
            DEV_TOKEN,
            "POST",
            "/v1/search",
            {"query": {"text": "x"}, "space": {"name": "nope@9"}},
            404,
            "NOT_FOUND",
        ),
        (
            DEV_TOKEN,
            "POST",
            "/v1/search",
            {"query": {"text": "x"}, "topK": 100000},
            413,
            "RESOURCE_EXHAUSTED",
        ),
        (
            DEV_TOKEN,
            "POST",
            "/v1/search",
            {"query": {"vector": {"values": [0.5] * 384}}, "space": {"name": "audio"}},
            409,
            "FAILED_PRECONDITION",
        ),
    ],
)
async def test_grpc_status_maps_to_http_with_problem_json(
    corpus: GatewayCorpus, case: tuple[str | None, str, str, Any, int, str]
) -> None:
    token, method, path, body, status, grpc_status = case
    async with corpus.client(token) as http:
        answer = await http.request(method, path, json=body)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["status"] == status and problem["grpc_status"] == grpc_status and problem["detail"]
    assert problem["instance"] == path


async def test_page_token_of_another_space_is_409(corpus: GatewayCorpus) -> None:
    async with corpus.client() as http:
        first = (await http.post("/v1/search", json={"query": {"text": "cat"}, "topK": 1})).json()
        sound = await http.post(
            "/v1/search/upload",
            files={"file": ("dog.mp3", sample("audio/dog.mp3"), "audio/mpeg")},
            data={"request": f'{{"topK": 1, "pageToken": "{first["nextPageToken"]}"}}'},
        )
    assert sound.status_code in (400, 409), sound.text  # FAILED_PRECONDITION or a token for other query
    assert sound.json()["grpc_status"] in ("FAILED_PRECONDITION", "INVALID_ARGUMENT")


async def test_uploads_are_limited_while_streaming(corpus: GatewayCorpus) -> None:
    limit = 25 * 1024 * 1024
    async with corpus.client() as http:
        # No Content-Length (chunked): the gateway counts while reading and stops at the limit.
        async def body() -> AsyncIterator[bytes]:
            yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
            yield b"\x89PNG\r\n\x1a\n"
            for _ in range(limit // (1 << 20) + 4):
                yield b"\0" * (1 << 20)

        big = await http.post(
            "/v1/search/upload", content=body(), headers={"content-type": "multipart/form-data; boundary=b"}
        )
        assert big.status_code == 413 and big.json()["detail"].startswith("request body is over the limit")
        # A declared length over the limit is refused from the header, before any body byte is read.
        reader, writer = await asyncio.open_connection("127.0.0.1", corpus.indexing.service.gateway_port)
        writer.write(
            b"POST /v1/ingest HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
            + DEV_TOKEN.encode()
            + b"\r\ncontent-type: multipart/form-data; boundary=b\r\ncontent-length: "
            + str(limit + 1).encode()
            + b"\r\n\r\n"
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        assert status_line.startswith(b"HTTP/1.1 413"), status_line
        wrong = await http.post(
            "/v1/search/upload", files={"file": ("notes.pdf", b"%PDF-1.7\n" + b"x" * 4000, "application/pdf")}
        )
        assert wrong.status_code == 415, wrong.text
        lying = await http.post(
            "/v1/search/upload", files={"file": ("cat.mp3", sample("images/chelsea.png"), "audio/mpeg")}
        )
        assert lying.status_code == 415, lying.text
        truncated = await http.post(
            "/v1/search/upload",
            content=b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
            + sample("images/coffee.png")[:5000],
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
        assert truncated.status_code == 400 and "truncated" in truncated.json()["detail"]
        not_json = await http.post(
            "/v1/search", content=b'{"query": ', headers={"content-type": "application/json"}
        )
        assert not_json.status_code == 400
        as_form = await http.post("/v1/search", data={"query": "cat"})
        assert as_form.status_code == 415
        unknown_field = await http.post("/v1/search", json={"query": {"text": "x"}, "tenant": "tenant-b"})
        assert unknown_field.status_code == 400 and "tenant" in unknown_field.json()["detail"]
        deep = {"query": {"text": "x"}, "filter": {}}
        node = deep["filter"]
        for _ in range(200):
            node["negate"] = {}
            node = node["negate"]
        assert (await http.post("/v1/search", json=deep)).status_code == 400
    # The gateway kept serving.
    async with corpus.client() as http:
        assert (await http.post("/v1/search", json={"query": {"text": "cat"}})).status_code == 200


async def test_cors_is_off_openapi_validates_and_metrics_count(corpus: GatewayCorpus) -> None:
    async with corpus.client() as http:
        preflight = await http.options(
            "/v1/search", headers={"origin": "https://evil.example", "access-control-request-method": "POST"}
        )
        assert "access-control-allow-origin" not in preflight.headers
        answer = await http.post(
            "/v1/search", json={"query": {"text": "cat"}}, headers={"origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in answer.headers
        document = (await http.get("/openapi.json")).json()
        validate(document)
        assert missing_fields(document) == []
        console = await http.get("/")
        assert console.status_code == 200 and "<title>mmsearch" in console.text
        assert "default-src 'self'" in console.headers["content-security-policy"]
    registry = corpus.indexing.service.registry
    counted = registry.get_sample_value(
        "mmsearch_http_requests_total", {"method": "POST", "route": "/v1/search", "code": "200"}
    )
    assert counted is not None and counted >= 1


async def test_the_gateway_as_its_own_process_fronts_another(corpus: GatewayCorpus, tmp_path: Path) -> None:
    """`--target gateway` (its own Deployment) in front of the services of another process."""
    grpc_port, gateway_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")}
    env.update(
        MMSEARCH_GRPC_PORT=str(grpc_port),
        MMSEARCH_METRICS_PORT=str(free_port()),
        MMSEARCH_GATEWAY_PORT=str(gateway_port),
        MMSEARCH_GATEWAY_UPSTREAM_ADDR=corpus.grpc_addr,
        MMSEARCH_READINESS_INTERVAL_S="0.5",
    )
    # Ready (health SERVING) once the Searcher it fronts answers SERVING.
    process = await asyncio.to_thread(
        start_mmsearch, "gateway", env, tmp_path / "gateway.log", f"127.0.0.1:{grpc_port}", 60.0
    )
    try:
        body = {"query": {"text": "a cup of coffee"}, "modalities": ["MODALITY_IMAGE"], "topK": 3}
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{gateway_port}", headers={"authorization": f"Bearer {DEV_TOKEN}"}
        ) as http:
            answer = await http.post("/v1/search", json=body, timeout=60)
            assert answer.status_code == 200, answer.text
            direct = await grpc_call(
                corpus, "search", "Search", json_format.ParseDict(body, searcher_pb2.SearchRequest())
            )
            assert_same_hits(answer.json(), direct)
            assert (await http.get("/readyz")).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
