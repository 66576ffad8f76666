"""The audit trail: admin RPCs, data access (Search) and every refused caller are
recorded by the policy interceptor with caller, tenant, action, target, result count,
status and trace id, never content; the Kafka sink makes it durable (integration)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from opentelemetry.sdk.trace import TracerProvider

from mmsearch.dev.broker import create_topics
from mmsearch.dev.processes import free_port
from mmsearch.kit.audit import AuditEntry
from mmsearch.v1 import (
    common_pb2,
    embedder_pb2,
    embedder_pb2_grpc,
    indexer_pb2,
    indexer_pb2_grpc,
    searcher_pb2,
    searcher_pb2_grpc,
)
from tests.conftest import (
    DEV_TOKEN,
    READONLY_TOKEN,
    BrokerHandle,
    ServiceHandle,
    make_settings,
    start_service,
)

SECRET_TEXT = "the quarterly numbers nobody may see"


class Captured:
    name = "test"

    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []

    def emit(self, entry: AuditEntry) -> bool:
        self.entries.append(entry)
        return True

    def close(self) -> None:
        return None


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
async def service() -> AsyncIterator[tuple[ServiceHandle, Captured]]:
    # A real tracer provider (no exporter): each RPC gets a span, whose trace id the entry carries.
    handle = await start_service(
        make_settings(triton_url=f"127.0.0.1:{free_port()}", triton_timeout_s=2),
        tracer_provider=TracerProvider(),
    )
    captured = Captured()
    assert handle.running.audit is not None
    handle.running.audit.add_sink(captured)
    yield handle, captured
    await handle.running.stop()


async def test_admin_data_access_and_refusals_are_audited_without_content(
    service: tuple[ServiceHandle, Captured],
) -> None:
    handle, captured = service
    async with grpc.aio.insecure_channel(handle.addr) as channel:
        search = searcher_pb2_grpc.SearcherStub(channel)
        admin = indexer_pb2_grpc.IndexerAdminStub(channel)
        embed = embedder_pb2_grpc.EmbedderStub(channel)
        vector = common_pb2.Vector(values=(np.ones(384) / np.sqrt(384)).tolist())
        found = await search.Search(
            searcher_pb2.SearchRequest(query=common_pb2.Content(vector=vector), top_k=5),
            metadata=bearer(DEV_TOKEN),
        )
        with pytest.raises(grpc.aio.AioRpcError):  # the text query needs the (absent) model server
            await search.Search(
                searcher_pb2.SearchRequest(query=common_pb2.Content(text=SECRET_TEXT)),
                metadata=bearer(DEV_TOKEN),
            )
        with pytest.raises(grpc.aio.AioRpcError):
            await admin.DropSpace(indexer_pb2.DropSpaceRequest(space="minilm@9"), metadata=bearer(DEV_TOKEN))
        with pytest.raises(grpc.aio.AioRpcError):  # readonly: no index-admin role
            await admin.DropSpace(
                indexer_pb2.DropSpaceRequest(space="minilm@1"), metadata=bearer(READONLY_TOKEN)
            )
        with pytest.raises(grpc.aio.AioRpcError):  # no token at all
            await search.Search(searcher_pb2.SearchRequest(query=common_pb2.Content(text=SECRET_TEXT)))
        # Not audited: computing over the caller's own input touches no stored data.
        await embed.ListSpaces(embedder_pb2.ListSpacesRequest(), metadata=bearer(DEV_TOKEN))

    by = [(e.action.rsplit("/", 1)[1], e.kind, e.code) for e in captured.entries]
    assert by == [
        ("Search", "read", "OK"),
        ("Search", "read", "UNAVAILABLE"),
        ("DropSpace", "admin", "NOT_FOUND"),
        ("DropSpace", "denied", "PERMISSION_DENIED"),
        ("Search", "denied", "UNAUTHENTICATED"),
    ]
    ok, text, drop, denied, anonymous = captured.entries
    assert (ok.caller, ok.tenant, ok.target, ok.result_count) == (
        "dev",
        "dev",
        "space=default query=vector",
        0,
    )
    assert len(found.hits) == 0
    assert text.target == "space=default query=text" and text.result_count is None
    assert (drop.target, drop.caller) == ("space=minilm@9", "dev")
    assert (denied.caller, denied.tenant, denied.target) == ("dev-readonly", "dev", "")
    assert (anonymous.caller, anonymous.tenant) == ("", "")
    for entry in captured.entries:
        assert len(entry.trace_id) == 32 and int(entry.trace_id, 16)
        assert SECRET_TEXT not in entry.to_json().decode()
        assert len({e.trace_id for e in captured.entries}) == len(captured.entries)


@pytest.mark.integration
async def test_the_audit_topic_holds_every_entry_durably(broker: BrokerHandle) -> None:
    from kafka import KafkaConsumer

    topic = f"audit.{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(create_topics, broker.bootstrap, [topic])
    settings = make_settings(
        triton_url=f"127.0.0.1:{free_port()}", kafka_bootstrap=broker.bootstrap, audit_topic=topic,
        content_topic=f"content.{topic}", dlq_topic=f"content.{topic}.dlq",
    )  # fmt: skip
    handle = await start_service(settings, "indexer")
    try:
        async with grpc.aio.insecure_channel(handle.addr) as channel:
            admin = indexer_pb2_grpc.IndexerAdminStub(channel)
            for space in ("minilm@7", "minilm@8"):
                with pytest.raises(grpc.aio.AioRpcError):
                    await admin.DropSpace(
                        indexer_pb2.DropSpaceRequest(space=space), metadata=bearer(DEV_TOKEN)
                    )
    finally:
        await handle.running.stop()  # flushes the sink

    def read() -> list[dict[str, object]]:
        consumer = KafkaConsumer(
            topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000
        )
        try:
            return [json.loads(message.value) for message in consumer]
        finally:
            consumer.close()

    entries = await asyncio.to_thread(read)
    assert [(e["target"], e["code"], e["kind"], e["tenant"]) for e in entries] == [
        ("space=minilm@7", "NOT_FOUND", "admin", "dev"),
        ("space=minilm@8", "NOT_FOUND", "admin", "dev"),
    ]
