"""Which space (and so which collection) a name means right now.

A space id ("minilm@2") means itself. An alias ("default", "image") means what
the store's alias of that name points at once a re-embed has swapped it (the
shadow collection became live), else what the embedder's space registry says.
The indexer writes and the searcher reads through the same resolution, so an
alias swap moves both at once.
"""

from __future__ import annotations

from typing import Protocol

from mmsearch.indexer.pipeline import SpaceInfo
from mmsearch.stores.base import VectorStore, collection_name


class SpaceDirectory(Protocol):
    async def resolve_space(self, name: str) -> SpaceInfo | None: ...

    async def all_spaces(self) -> list[SpaceInfo]: ...


class SpaceResolver:
    def __init__(self, embedder: SpaceDirectory, store: VectorStore) -> None:
        self._embedder = embedder
        self._store = store

    async def resolve(self, name: str) -> SpaceInfo | None:
        space = await self._embedder.resolve_space(name)
        if "@" in name or space is None:
            return space
        target = await self._store.resolve(name)
        if target is None or target == collection_name(space.id):
            return space
        for candidate in await self._embedder.all_spaces():
            if collection_name(candidate.id) == target:
                return candidate
        return space  # an alias to a collection no configured space writes: keep the registry's
