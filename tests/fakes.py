"""In-memory stand-ins for unit tests of the indexer pipeline (the real stores
are tested by tests/contract/)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

import numpy as np

from mmsearch.clients.errors import DependencyDown, InputRejected
from mmsearch.clients.priority import Priority
from mmsearch.clients.spaces import SpaceInfo
from mmsearch.stores.base import (
    Collection,
    ItemRecord,
    ItemState,
    Query,
    StoredItem,
    StoreHit,
    StoreUnavailable,
)
from mmsearch.v1 import common_pb2, embedder_pb2


class MemoryStore:
    def __init__(self) -> None:
        self.collections: dict[str, dict[tuple[str, str], ItemRecord]] = {}
        self.aliases: dict[str, str] = {}
        self.down = False
        self.writes = 0

    async def ensure_collection(self, collection: Collection) -> None:
        self.collections.setdefault(collection.name, {})

    async def drop_collection(self, name: str) -> None:
        self.collections.pop(name, None)

    async def set_alias(self, alias: str, collection: str) -> None:
        self.aliases[alias] = collection

    async def resolve(self, name_or_alias: str) -> str | None:
        if name_or_alias in self.collections:
            return name_or_alias
        return self.aliases.get(name_or_alias)

    async def states(self, collection: str, tenant: str, item_ids: Sequence[str]) -> dict[str, ItemState]:
        if self.down:
            raise StoreUnavailable("memory store is down")
        items = self.collections[collection]
        return {
            i: ItemState(r.version, r.event_time, r.content_sha256, r.deleted)
            for i in item_ids
            if (r := items.get((tenant, i))) is not None
        }

    async def write(self, collection: str, records: Sequence[ItemRecord]) -> None:
        if self.down:
            raise StoreUnavailable("memory store is down")
        self.writes += 1
        for record in records:
            self.collections[collection][(record.tenant, record.item_id)] = record

    async def search(self, collection: str, query: Query) -> list[StoreHit]:
        raise NotImplementedError

    async def set_text(
        self, collection: str, tenant: str, item_id: str, state: ItemState, *, text: str, snippet: str
    ) -> bool:
        record = self.collections.get(collection, {}).get((tenant, item_id))
        if record is None or record.deleted:
            return False
        if ItemState(record.version, record.event_time, record.content_sha256, record.deleted) != state:
            return False
        self.collections[collection][(tenant, item_id)] = replace(record, text=text, snippet=snippet)
        return True

    async def count(self, collection: str, tenant: str | None = None) -> int:
        return sum(
            1
            for (t, _), r in self.collections.get(collection, {}).items()
            if not r.deleted and (tenant is None or t == tenant)
        )

    async def expired(self, collection: str, before: datetime, limit: int) -> list[StoredItem]:
        found = [
            StoredItem(t, i, ItemState(r.version, r.event_time, r.content_sha256, r.deleted))
            for (t, i), r in self.collections.get(collection, {}).items()
            if not r.deleted and r.event_time < before
        ]
        return found[:limit]

    async def count_passages(self, collection: str, tenant: str, item_id: str) -> int:
        record = self.collections.get(collection, {}).get((tenant, item_id))
        if record is None or record.deleted:
            return 0
        return max(1, len(record.passages))

    async def close(self) -> None:
        return None

    def live(self, collection: str) -> dict[tuple[str, str], ItemRecord]:
        return {k: r for k, r in self.collections.get(collection, {}).items() if not r.deleted}


class FakeEmbedder:
    """Deterministic vectors; an image whose bytes start with b"BAD" is corrupt."""

    def __init__(self, max_words: int | None = None) -> None:
        self.down = False
        self.calls = 0
        # Like the model's token limit: a text of more words comes back truncated.
        self.max_words = max_words
        self.embedded: list[str] = []
        self.priorities: list[Priority] = []  # of each embed / extract_text call
        self.spaces = {
            "default": SpaceInfo("minilm@1", 8, frozenset({"text", "image"})),
            "minilm@1": SpaceInfo("minilm@1", 8, frozenset({"text", "image"})),
            "audio": SpaceInfo("aisfx@1", 8, frozenset({"audio"})),
            "aisfx@1": SpaceInfo("aisfx@1", 8, frozenset({"audio"})),
        }

    async def resolve_space(self, name: str) -> SpaceInfo | None:
        if self.down:
            raise DependencyDown("embedder", "down")
        return self.spaces.get(name)

    async def all_spaces(self) -> list[SpaceInfo]:
        return list({s.id: s for s in self.spaces.values()}.values())

    async def embed(
        self,
        space: str,
        items: Sequence[common_pb2.Content],
        timeout_s: float | None = None,
        *,
        priority: Priority = "interactive",
        token_vectors: bool = False,
    ) -> embedder_pb2.EmbedResponse:
        self.calls += 1
        self.priorities.append(priority)
        if self.down:
            raise DependencyDown("embedder", "down")
        out = []
        for i, item in enumerate(items):
            kind = item.WhichOneof("kind")
            if kind == "text":
                self.embedded.append(item.text)
            data = item.text.encode() if kind == "text" else getattr(item, str(kind)).data
            if data.startswith(b"BAD"):
                raise InputRejected("embedder", f"items[{i}].{kind}: corrupt", index=i, kind="corrupt_media")
            digest = hashlib.sha256(data).digest()
            vector = np.frombuffer(digest[:32], dtype=np.uint8)[:8].astype(np.float32) + 1
            vector /= np.linalg.norm(vector)
            out.append(
                embedder_pb2.Embedding(
                    vector=common_pb2.Vector(values=vector.tolist()),
                    model="fake",
                    model_version="1",
                    content_sha256=hashlib.sha256(data).hexdigest(),
                    truncated=kind == "text"
                    and self.max_words is not None
                    and len(item.text.split()) > self.max_words,
                )
            )
        return embedder_pb2.EmbedResponse(space=space, embeddings=out)

    async def extract_text(
        self,
        images: Sequence[common_pb2.Media],
        timeout_s: float | None = None,
        *,
        priority: Priority = "interactive",
    ) -> list[embedder_pb2.ExtractedText]:
        self.priorities.append(priority)
        block = embedder_pb2.TextBlock(text="ocr text", confidence=0.99)
        return [embedder_pb2.ExtractedText(blocks=[block]) for _ in images]
