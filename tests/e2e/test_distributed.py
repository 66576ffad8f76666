"""The services as separate processes (issue #11 item 5): one embedder, one reranker, two
searchers and two indexer replicas in one consumer group, each `mmsearch serve --target T` on
its own ports, sharing PostgreSQL + pgvector (mmsearch/dev/distributed.py).

Events go in through Kafka; both searchers find what either indexer wrote; kill -9 of one
indexer replica moves its partitions to the other (events published while it is dead, on every
partition, become searchable), it restarts and takes partitions again; at the end every item is
checked one by one against what its events say (nothing lost, nothing applied twice, no stray
passages), and a page token from one searcher continues at the other."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import psycopg
import pytest

from mmsearch.clients.connect import DEV_TOKEN, auth_metadata
from mmsearch.dev.broker import create_topics
from mmsearch.dev.distributed import DistributedStack, running_distributed_stack
from mmsearch.dev.postgres import PostgresServer
from mmsearch.producer import ContentProducer, delete_event, text_event
from mmsearch.stores.base import collection_name
from mmsearch.stores.pgvector_store import PgVectorStore
from mmsearch.v1 import common_pb2, events_pb2, indexer_pb2, indexer_pb2_grpc, searcher_pb2, searcher_pb2_grpc
from tests.conftest import BrokerHandle, TritonHandle

pytestmark = pytest.mark.e2e
T0 = datetime(2026, 6, 1, tzinfo=UTC)
SUBJECTS = (
    "the harbour ferry timetable changes for the winter season",
    "a recipe for slow roasted tomatoes with garlic and thyme",
    "quarterly revenue grew while operating costs stayed flat",
    "the volcano on the island erupted again after forty years",
    "how to repot an orchid without damaging its roots",
    "the city council approved a new cycling lane downtown",
)


def note(i: int, version: int) -> str:
    return f"Note {i} revision {version}: {SUBJECTS[i % len(SUBJECTS)]}. Reference code ZX{i:04d}R{version}."


def batch(
    first: int, count: int, rng: random.Random
) -> tuple[list[events_pb2.ContentEvent], dict[str, tuple[bool, int]]]:
    """Events for items first..first+count-1: one to three versions each, stale replays and
    deletes; the expected final (deleted, version) per item."""
    events: list[events_pb2.ContentEvent] = []
    expected: dict[str, tuple[bool, int]] = {}
    for i in range(first, first + count):
        item = f"item-{i:04d}"
        versions = list(range(1, rng.randint(2, 4)))
        for v in versions:
            events.append(text_event("dev", item, note(i, v), title=f"note {i}", version=v, event_time=T0))
        expected[item] = (False, versions[-1])
        if rng.random() < 0.2:
            events.append(text_event("dev", item, f"stale replay of {i}", version=1, event_time=T0))
        if rng.random() < 0.1:
            events.append(delete_event("dev", item, version=10, event_time=T0 + timedelta(hours=1)))
            expected[item] = (True, 10)
    return events, expected


def publish(bootstrap: str, topic: str, events: Sequence[events_pb2.ContentEvent]) -> dict[int, int]:
    """Publish and wait for the acks; the offset after the last event written, per partition."""
    with ContentProducer(bootstrap, topic) as producer:
        for event in events:
            producer.publish(event)
        return {partition: last + 1 for partition, last in producer.flush().items()}


def status(addr: str) -> indexer_pb2.GetStatusResponse | None:
    try:
        with grpc.insecure_channel(addr) as channel:
            stub = indexer_pb2_grpc.IndexerAdminStub(channel)
            response: indexer_pb2.GetStatusResponse = stub.GetStatus(
                indexer_pb2.GetStatusRequest(), metadata=auth_metadata(DEV_TOKEN), timeout=10
            )
            return response
    except grpc.RpcError:
        return None


async def search(addr: str, request: searcher_pb2.SearchRequest) -> searcher_pb2.SearchResponse:
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = searcher_pb2_grpc.SearcherStub(channel)
        response: searcher_pb2.SearchResponse = await stub.Search(
            request, metadata=auth_metadata(DEV_TOKEN), timeout=60
        )
        return response


async def wait_states(store: PgVectorStore, expected: dict[str, tuple[bool, int]], timeout_s: float) -> None:
    """Until every item's stored (deleted, version) is the expected one."""
    collection = collection_name("minilm@1")
    deadline = time.monotonic() + timeout_s
    wrong: dict[str, object] = {}
    while time.monotonic() < deadline:
        try:
            states = await store.states(collection, "dev", list(expected))
        except Exception:  # the collection is created by the first write
            states = {}
        wrong = {
            item: (states[item].deleted, states[item].version) if item in states else None
            for item, want in expected.items()
            if item not in states or (states[item].deleted, states[item].version) != want
        }
        if not wrong:
            return
        await asyncio.sleep(1.0)
    raise AssertionError(f"{len(wrong)} of {len(expected)} items not as expected: {list(wrong.items())[:5]}")


async def both_searchers_find(stack: DistributedStack, expected: dict[str, tuple[bool, int]]) -> None:
    """A sample of live items, each by the text of its latest revision: the top hit on both
    searchers (they read the store the indexers wrote)."""
    live = [item for item, (deleted, _) in expected.items() if not deleted]
    for item in random.Random(7).sample(live, min(4, len(live))):
        i, version = int(item.split("-")[1]), expected[item][1]
        request = searcher_pb2.SearchRequest(query=common_pb2.Content(text=note(i, version)), top_k=3)
        for name in stack.names("searcher"):
            response = await search(stack.addr(name), request)
            assert [h.item_id for h in response.hits][:1] == [item], (name, item)


async def check_item_by_item(store: PgVectorStore, expected: dict[str, tuple[bool, int]]) -> None:
    """Every item's state, one passage per live item and none for a deleted one."""
    collection = collection_name("minilm@1")
    states = await store.states(collection, "dev", list(expected))
    assert {i: (s.deleted, s.version) for i, s in states.items()} == expected
    assert await store.count(collection, "dev") == sum(1 for d, _ in expected.values() if not d)
    for item, (deleted, _) in expected.items():
        assert await store.count_passages(collection, "dev", item) == (0 if deleted else 1), item


async def page_continues_on_the_other_searcher(stack: DistributedStack) -> None:
    """A page token from searcher-1 continues at searcher-2 (shared page-token key)."""
    request = searcher_pb2.SearchRequest(query=common_pb2.Content(text=SUBJECTS[1]), top_k=5)
    first = await search(stack.addr("searcher-1"), request)
    assert first.next_page_token
    request.page_token = first.next_page_token
    second = await search(stack.addr("searcher-2"), request)
    whole = await search(
        stack.addr("searcher-2"),
        searcher_pb2.SearchRequest(query=common_pb2.Content(text=SUBJECTS[1]), top_k=10),
    )
    assert [h.item_id for h in (*first.hits, *second.hits)] == [h.item_id for h in whole.hits]


def committed(addr: str, topic: str) -> dict[int, int]:
    """The offsets a replica says it committed, per partition of `topic` (a partition it lost
    stays reported at the offset it had)."""
    found = status(addr)
    if found is None:
        return {}
    return {p.partition: p.committed_offset for p in found.partitions if p.topic == topic}


async def test_distributed_services_survive_an_indexer_kill(
    triton: TritonHandle, broker: BrokerHandle, postgres: PostgresServer, tmp_path: Path
) -> None:
    topic = f"content.dist.{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(create_topics, broker.bootstrap, [topic, f"{topic}.dlq", f"{topic}.enrich"])
    database = f"dist_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(postgres.dsn, autocommit=True) as admin:
        await admin.execute(f'CREATE DATABASE "{database}"')
    dsn = postgres.dsn.rsplit("/", 1)[0] + f"/{database}"
    overrides = {
        "MMSEARCH_CONTENT_TOPIC": topic,
        "MMSEARCH_DLQ_TOPIC": f"{topic}.dlq",
        "MMSEARCH_INDEXER_GROUP": f"indexer-{topic}",
        "MMSEARCH_INDEXER_BATCH_SIZE": "16",
        "MMSEARCH_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "MMSEARCH_LOG_LEVEL": "WARNING",
        "MMSEARCH_POSTGRES_POOL_SIZE": "4",
    }
    rng = random.Random(2026)
    expected: dict[str, tuple[bool, int]] = {}
    with running_distributed_stack(
        tmp_path, triton=triton, broker=broker, postgres_dsn=dsn, env_overrides=overrides
    ) as stack:
        assert len({r.grpc_port for r in stack.replicas.values()}) == 6
        store = await PgVectorStore.connect(dsn, pool_size=2)
        try:
            # 1. Both indexers consume; both searchers see the writes.
            events, want = batch(0, 60, rng)
            expected.update(want)
            await asyncio.to_thread(publish, broker.bootstrap, topic, events)
            await wait_states(store, expected, 120)
            await both_searchers_find(stack, want)
            owned = {name: committed(stack.addr(name), topic) for name in stack.names("indexer")}
            assert all(any(c.values()) for c in owned.values()), f"both replicas consume: {owned}"

            # 2. kill -9 of indexer-1 while events arrive (it dies with work in flight): indexer-2
            # commits up to the end of every partition, past events written after the kill.
            events, want = batch(60, 80, rng)
            expected.update(want)
            await asyncio.to_thread(publish, broker.bootstrap, topic, events[: len(events) // 2])
            stack.kill("indexer-1")
            ends = await asyncio.to_thread(publish, broker.bootstrap, topic, events[len(events) // 2 :])
            assert set(ends) == {0, 1, 2, 3}, ends
            await wait_states(store, expected, 120)
            deadline = time.monotonic() + 60
            while any(committed(stack.addr("indexer-2"), topic).get(p, 0) < end for p, end in ends.items()):
                assert time.monotonic() < deadline, (committed(stack.addr("indexer-2"), topic), ends)
                await asyncio.sleep(1.0)
            await both_searchers_find(stack, want)

            # 3. The replica restarts and takes its share again.
            await asyncio.to_thread(stack.restart, "indexer-1")
            events, want = batch(140, 60, rng)
            expected.update(want)
            await asyncio.to_thread(publish, broker.bootstrap, topic, events)
            await wait_states(store, expected, 120)
            deadline = time.monotonic() + 60
            while not any(committed(stack.addr("indexer-1"), topic).values()):  # a new process
                assert time.monotonic() < deadline, "the restarted replica got no partition"
                await asyncio.sleep(1.0)

            await check_item_by_item(store, expected)
            await page_continues_on_the_other_searcher(stack)
        finally:
            await store.close()
