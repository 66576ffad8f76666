"""SIGTERM to `mmsearch serve --target all` while the indexer is ingesting:
the indexer drains first (its batch in flight finishes and commits while the
embedder in the same process still answers, or is replayed), the store closes
after the last component stopped, nothing is lost or applied twice."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mmsearch.dev.broker import create_topics
from mmsearch.dev.harness import service_settings
from mmsearch.dev.mmsearch import start_mmsearch
from mmsearch.dev.processes import free_port, stop_pid
from mmsearch.producer import ContentProducer, text_event
from mmsearch.stores.base import collection_name
from mmsearch.stores.qdrant_edge import QdrantEdgeStore
from tests.conftest import BrokerHandle, TritonHandle
from tests.integration.test_indexer_crash import _status

pytestmark = pytest.mark.integration
ITEMS = 400
T0 = datetime(2026, 5, 1, tzinfo=UTC)


def committed(addr: str) -> int:
    status = _status(addr)
    return sum(p.committed_offset for p in status.partitions) if status is not None else 0


async def test_sigterm_during_ingest_drains_the_indexer_before_the_store_closes(
    triton: TritonHandle, broker: BrokerHandle, tmp_path: Path
) -> None:
    topic = f"content.term.{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(create_topics, broker.bootstrap, [topic, f"{topic}.dlq", f"{topic}.enrich"])
    with ContentProducer(broker.bootstrap, topic) as producer:
        for i in range(ITEMS):
            producer.publish(text_event("acme", f"doc-{i}", f"document {i}: " + "words " * 40, event_time=T0))

    port = free_port()
    addr = f"127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")}
    settings = service_settings(
        tmp_path,
        grpc_port=port,
        metrics_port=free_port(),
        triton_url=triton.grpc_url,
        bootstrap=broker.bootstrap,
        topic=topic,
    )
    env.update(
        settings,
        MMSEARCH_INDEXER_BATCH_SIZE="16",
        MMSEARCH_KAFKA_SESSION_TIMEOUT_MS="6000",
        MMSEARCH_SHUTDOWN_GRACE_S="30",
    )
    log = tmp_path / "serve.log"
    process = start_mmsearch("all", env, log, addr)
    try:
        deadline = time.monotonic() + 120
        while (done := await asyncio.to_thread(committed, addr)) == 0:
            assert time.monotonic() < deadline, "the indexer committed nothing"
            await asyncio.sleep(0.1)
        assert done < ITEMS, "ingest finished before SIGTERM: the test needs more items"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        text = log.read_text()
        assert "store is closed" not in text
        assert "component_drain_failed" not in text and "component_stop_failed" not in text
        assert "module_close_failed" not in text

        # A second incarnation finishes the topic: nothing lost, nothing twice.
        process = start_mmsearch("all", env, log, addr)
        deadline = time.monotonic() + 240
        while await asyncio.to_thread(committed, addr) < ITEMS:
            assert time.monotonic() < deadline, "the indexer did not finish after the restart"
            await asyncio.sleep(0.5)
    finally:
        if process.poll() is None:
            stop_pid(process.pid, timeout_s=30)
    store = await asyncio.to_thread(QdrantEdgeStore, tmp_path / "store")
    try:
        assert await store.count(collection_name("minilm@1"), "acme") == ITEMS
    finally:
        await store.close()
