"""Bounded LRU cache of recent embeddings, keyed by tenant and content hash.

The key covers the caller's tenant (so one tenant cannot learn, from `cached`
or from timing, what another embedded), the space (and so its preprocessing),
the content's sha256 and the declared MIME type (a hit then implies the MIME
check passed for these very bytes and that declaration);
an entry also remembers the encoder version that made it, and is a miss once
the model server reports a newer version (hot reload), so stale vectors are
never served.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# Rough per-entry bookkeeping beyond the vector itself (key, dataclass, dict slot).
ENTRY_OVERHEAD_BYTES = 256


@dataclass(frozen=True)
class CachedEmbedding:
    vector: npt.NDArray[np.float32]
    model: str
    model_version: str
    input_tokens: int
    truncated: bool
    # Late-interaction blob made in the same pass (text, when asked); never kept in the cache.
    token_vectors: bytes = b""


class EmbeddingCache:
    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, ...], CachedEmbedding] = OrderedDict()
        self._bytes = 0

    @staticmethod
    def key(
        tenant: str, space_id: str, modality: int, content_sha256: str, mime_type: str = ""
    ) -> tuple[str, ...]:
        return (tenant, space_id, str(modality), content_sha256, mime_type.lower())

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes_used(self) -> int:
        return self._bytes

    @staticmethod
    def _size(entry: CachedEmbedding) -> int:
        return int(entry.vector.nbytes) + ENTRY_OVERHEAD_BYTES

    def get(self, key: tuple[str, ...], current_version: str | None) -> CachedEmbedding | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if current_version is not None and entry.model_version != current_version:
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: tuple[str, ...], entry: CachedEmbedding) -> None:
        if self._max_bytes <= 0:
            return
        if key in self._entries:
            self._remove(key)
        if entry.token_vectors:
            entry = dataclasses.replace(entry, token_vectors=b"")
        self._entries[key] = entry
        self._bytes += self._size(entry)
        while self._bytes > self._max_bytes and self._entries:
            oldest = next(iter(self._entries))
            self._remove(oldest)

    def _remove(self, key: tuple[str, ...]) -> None:
        entry = self._entries.pop(key)
        self._bytes -= self._size(entry)
