"""The VectorStore contract against a real Weaviate server (>= 1.32, gRPC port reachable).

Runs only when WEAVIATE_URL is set (e.g. `WEAVIATE_URL=http://localhost:8080`, optional
WEAVIATE_GRPC_PORT, default 50051, and WEAVIATE_API_KEY); there is no Weaviate server on the project's
machines, so by default every test here is skipped and the adapter is covered by
tests/unit/test_weaviate_store.py only. Collections are named `contract_<hex>_...` and dropped afterwards,
so a shared server can be used.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mmsearch.stores.base import VectorStore
from mmsearch.stores.weaviate_store import WeaviateStore
from tests.contract.store_contract import VectorStoreContract

WEAVIATE_URL = os.environ.get("WEAVIATE_URL", "")
SKIP_REASON = "WEAVIATE_URL not set: no Weaviate server here; the Weaviate adapter is unit-tested only"

pytestmark = pytest.mark.skipif(not WEAVIATE_URL, reason=SKIP_REASON)


class TestWeaviateStore(VectorStoreContract):
    async def open_store(self, root: Path) -> VectorStore:
        # A server store: `root` is unused, persistence across close/reopen is the server's.
        grpc_port = os.environ.get("WEAVIATE_GRPC_PORT")
        return await WeaviateStore.connect(
            WEAVIATE_URL,
            api_key=os.environ.get("WEAVIATE_API_KEY") or None,
            grpc_port=int(grpc_port) if grpc_port else None,
        )
