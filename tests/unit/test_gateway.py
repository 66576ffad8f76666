"""The gateway's own rules, without the services: status mapping, sniffing of
uploads, the OpenAPI document and its check against the protos, and what a
caller gets when the services are down or do not answer in time."""

from __future__ import annotations

import asyncio
import copy
import json
import socket
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from openapi_spec_validator import validate
from prometheus_client import CollectorRegistry

from mmsearch.gateway.app import build_app
from mmsearch.gateway.bodies import sniff
from mmsearch.gateway.endpoints import ENDPOINTS
from mmsearch.gateway.handlers import Gateway
from mmsearch.gateway.openapi import missing_fields, openapi_document
from mmsearch.gateway.problems import HTTP_STATUS, Problem, problem_response
from mmsearch.gateway.upstream import Upstream
from mmsearch.kit.auth import TokenAuthenticator
from mmsearch.kit.config import DEV_TOKENS_FILE
from tests.conftest import DEV_TOKEN, make_settings, sample


def test_every_grpc_status_has_an_http_status_and_a_problem_body() -> None:
    assert set(HTTP_STATUS) == set(grpc.StatusCode)
    assert HTTP_STATUS[grpc.StatusCode.INVALID_ARGUMENT] == 400
    assert HTTP_STATUS[grpc.StatusCode.UNAUTHENTICATED] == 401
    assert HTTP_STATUS[grpc.StatusCode.RESOURCE_EXHAUSTED] == 413  # a limit, not a rate: no retry
    assert HTTP_STATUS[grpc.StatusCode.UNAVAILABLE] == 503
    response = problem_response(
        Problem(404, "no item 'x'", grpc.StatusCode.NOT_FOUND), "/v1/items/x", "ab" * 16
    )
    body = json.loads(bytes(response.body))
    assert response.media_type == "application/problem+json"
    assert body == {
        "type": "urn:mmsearch:problem:not-found",
        "title": "Not Found",
        "status": 404,
        "detail": "no item 'x'",
        "instance": "/v1/items/x",
        "grpc_status": "NOT_FOUND",
        "trace_id": "ab" * 16,
    }


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("images/chelsea.png", "image"),
        ("images/rocket.jpg", "image"),
        ("images/retina.jpg", "image"),
        ("audio/dog.mp3", "audio"),
        ("audio/owl.mp3", "audio"),
    ],
)
def test_uploads_are_sniffed_from_their_bytes(path: str, kind: str) -> None:
    assert sniff(sample(path)) == kind


def test_what_is_not_media_is_not_sniffed_as_media() -> None:
    assert sniff(b"%PDF-1.7\n%\xe2\xe3") is None
    assert sniff(b"PK\x03\x04 a zip") is None
    assert sniff(b"Plain text, not a picture.") is None
    assert sniff(b"") is None


def test_openapi_document_validates_and_covers_every_proto_request_field() -> None:
    document = openapi_document()
    validate(document)
    assert missing_fields(document) == []
    assert set(document["paths"]) >= {"/v1/search", "/v1/search/upload", "/v1/ingest", "/v1/index/status"}


def test_the_check_fails_when_a_proto_field_is_not_exposed() -> None:
    document = openapi_document()
    dropped = copy.deepcopy(document)
    del dropped["components"]["schemas"]["RerankOptions"]["properties"]["budgetMs"]
    assert "schema RerankOptions lacks field budgetMs" in missing_fields(dropped)
    form = copy.deepcopy(document)
    del form["paths"]["/v1/search/upload"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"][
        "properties"
    ]["request"]
    assert any(
        "/v1/search/upload: request field mmsearch.v1.SearchRequest.top_k" in p for p in missing_fields(form)
    )
    invented = copy.deepcopy(document)
    invented["components"]["schemas"]["HybridOptions"]["properties"]["weight"] = {"type": "number"}
    assert "schema HybridOptions has no proto field weight" in missing_fields(invented)
    without_search = tuple(e for e in ENDPOINTS if e.rpc != "/mmsearch.v1.Searcher/Search")
    assert any("Searcher/Search has no HTTP endpoint" in p for p in missing_fields(document, without_search))


def _silent_server() -> socket.socket:
    """Accepts connections and never answers: a service that hangs."""
    server = socket.create_server(("127.0.0.1", 0))
    server.listen(8)
    return server


@pytest.fixture
async def down_and_hanging() -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    closed = socket.create_server(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()
    hanging = _silent_server()
    clients = []
    gateways = []
    for addr, timeout in ((f"127.0.0.1:{dead_port}", 5.0), (f"127.0.0.1:{hanging.getsockname()[1]}", 0.5)):
        settings = make_settings(gateway_timeout_s=timeout)
        upstream = Upstream(addr, timeout_s=timeout, max_message_bytes=1 << 20, tracer_provider=None)
        gateway = Gateway(settings, upstream)
        gateways.append(gateway)

        async def never_ready() -> str | None:
            return "down"

        app = build_app(
            gateway, TokenAuthenticator.from_file(DEV_TOKENS_FILE), CollectorRegistry(), None, never_ready
        )
        clients.append(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://gateway",
                headers={"authorization": f"Bearer {DEV_TOKEN}"},
            )
        )
    yield clients[0], clients[1]
    for client in clients:
        await client.aclose()
    for gateway in gateways:
        await gateway.close()
    hanging.close()


async def test_a_service_down_is_503_and_one_that_hangs_is_504(
    down_and_hanging: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    down, hanging = down_and_hanging
    answer = await down.post("/v1/search", json={"query": {"text": "a photo of a cat"}})
    assert answer.status_code == 503 and answer.json()["grpc_status"] == "UNAVAILABLE"
    answer = await asyncio.wait_for(hanging.post("/v1/search", json={"query": {"text": "cat"}}), 10)
    assert answer.status_code == 504 and answer.json()["grpc_status"] == "DEADLINE_EXCEEDED"
    ready = await down.get("/readyz")
    assert ready.status_code == 503 and (await down.get("/healthz")).status_code == 200
    # Ingest with no broker configured is refused plainly, not hung.
    refused = await down.post("/v1/ingest", data={"item_id": "a", "text": "b"})
    assert refused.status_code == 503 and "MMSEARCH_KAFKA_BOOTSTRAP" in refused.json()["detail"]
    # Authentication happens before the body is read or a service is called.
    anonymous = await down.post("/v1/search", json={}, headers={"authorization": ""})
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")


def test_a_query_vector_takes_the_fast_path_and_parses_the_same() -> None:
    from google.protobuf import json_format

    from mmsearch.gateway.bodies import parse_json
    from mmsearch.v1 import searcher_pb2

    values = [0.25, -1, 3.0e-8, 1e30] + [0.0] * 380
    body = json.dumps(
        {"query": {"vector": {"values": values}}, "topK": 3, "filter": {"condition": {"field": "tags"}}}
    )
    fast = parse_json(body, searcher_pb2.SearchRequest())
    slow = json_format.Parse(body, searcher_pb2.SearchRequest())
    assert fast == slow and len(fast.query.vector.values) == 384
    # Anything but plain numbers is left to json_format: it takes what json_format takes...
    odd = json.dumps({"query": {"vector": {"values": [True, "0.5", 2]}}})
    assert parse_json(odd, searcher_pb2.SearchRequest()) == json_format.Parse(
        odd, searcher_pb2.SearchRequest()
    )
    # ... and refuses what it refuses, with its message.
    for bad in (["0.5", "x"], [1e39]):
        with pytest.raises(Problem) as refused:
            parse_json(json.dumps({"query": {"vector": {"values": bad}}}), searcher_pb2.SearchRequest())
        assert refused.value.status == 400
    with pytest.raises(Problem):
        parse_json('{"query": {"vector": {"values": [NaN]}, "text": "x"}}', searcher_pb2.SearchRequest())


async def test_a_request_continues_the_callers_trace_and_is_counted() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    closed = socket.create_server(("127.0.0.1", 0))
    dead = closed.getsockname()[1]
    closed.close()
    upstream = Upstream(f"127.0.0.1:{dead}", timeout_s=2, max_message_bytes=1 << 20, tracer_provider=provider)
    gateway = Gateway(make_settings(), upstream)
    registry = CollectorRegistry()

    async def ready() -> str | None:
        return None

    app = build_app(gateway, TokenAuthenticator.from_file(DEV_TOKENS_FILE), registry, provider, ready)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
        answer = await client.get(
            "/v1/spaces",
            headers={
                "authorization": f"Bearer {DEV_TOKEN}",
                "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
            },
        )
    await gateway.close()
    assert answer.status_code == 503  # nothing listens upstream
    assert answer.json()["trace_id"] == trace_id and answer.headers["traceparent"].startswith(
        f"00-{trace_id}-"
    )
    spans = {span.name: span for span in exporter.get_finished_spans()}
    server = spans["GET /v1/spaces"]
    assert format(server.context.trace_id, "032x") == trace_id
    assert server.attributes is not None and server.attributes["http.response.status_code"] == 503
    client_spans = [
        s for s in spans.values() if s.parent is not None and s.parent.span_id == server.context.span_id
    ]
    assert client_spans, spans  # the gRPC call is a child of the HTTP request's span
    counted = registry.get_sample_value(
        "mmsearch_http_requests_total", {"method": "GET", "route": "/v1/spaces", "code": "503"}
    )
    assert counted == 1.0
