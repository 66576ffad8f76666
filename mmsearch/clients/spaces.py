"""Embedding spaces as the embedder's callers see them, and which space (so
which collection) a name means right now.

A space id ("minilm@2") means itself. An alias ("default", "image") means what
the store's alias of that name points at once a re-embed has swapped it (the
shadow collection became live), else what the embedder's space registry says.
The indexer writes and the searcher reads through the same resolution, so an
alias swap moves both at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mmsearch.kit.passages import DEFAULT_CHUNKING, ChunkingPolicy
from mmsearch.stores.base import Quantization, collection_name
from mmsearch.v1 import common_pb2, embedder_pb2

MODALITY_NAMES = {
    common_pb2.MODALITY_TEXT: "text",
    common_pb2.MODALITY_IMAGE: "image",
    common_pb2.MODALITY_AUDIO: "audio",
}
MODALITY_VALUES = {name: value for value, name in MODALITY_NAMES.items()}


@dataclass(frozen=True)
class SpaceInfo:
    id: str
    dimension: int
    modalities: frozenset[str]
    # How the indexer splits long text for this space (ListSpaces' Space.chunking).
    chunking: ChunkingPolicy = DEFAULT_CHUNKING
    # How the store keeps the space's vectors (ListSpaces' Space.quantization).
    quantization: Quantization = "none"


def chunking_from_message(space: embedder_pb2.Space) -> ChunkingPolicy:
    """A space's chunking policy as ListSpaces published it; the defaults when the embedder
    publishes none (one older than passages); unset fields take their defaults."""
    if not space.HasField("chunking"):
        return DEFAULT_CHUNKING
    message = space.chunking
    return ChunkingPolicy(
        passage_tokens=message.passage_tokens or DEFAULT_CHUNKING.passage_tokens,
        overlap_tokens=message.overlap_tokens,
        max_passages=message.max_passages or DEFAULT_CHUNKING.max_passages,
        max_text_bytes=message.max_text_bytes or DEFAULT_CHUNKING.max_text_bytes,
        estimator=message.estimator or DEFAULT_CHUNKING.estimator,
    )


_QUANTIZATIONS: dict[int, Quantization] = {
    embedder_pb2.QUANTIZATION_UNSPECIFIED: "none",  # an embedder older than the field
    embedder_pb2.QUANTIZATION_NONE: "none",
    embedder_pb2.QUANTIZATION_INT8: "int8",
    embedder_pb2.QUANTIZATION_BINARY: "binary",
}


def quantization_from_message(space: embedder_pb2.Space) -> Quantization:
    """A space's quantization as ListSpaces published it. A value this client does not know (a
    newer embedder) is an error, not a silent "none": the collection would be created wrong."""
    mode = _QUANTIZATIONS.get(space.quantization)
    if mode is None:
        raise ValueError(f"space {space.id}: unknown quantization {space.quantization}")
    return mode


class SpaceDirectory(Protocol):
    """The embedder's space registry (EmbedderClient, or a fake in tests)."""

    async def resolve_space(self, name: str) -> SpaceInfo | None:
        """The space a name or alias points at in the registry, or None."""

    async def all_spaces(self) -> list[SpaceInfo]: ...


class AliasDirectory(Protocol):
    """The store's aliases (any VectorStore)."""

    async def resolve(self, name_or_alias: str) -> str | None: ...


class SpaceResolver:
    def __init__(self, registry: SpaceDirectory, aliases: AliasDirectory) -> None:
        self._registry = registry
        self._aliases = aliases

    async def resolve(self, name: str) -> SpaceInfo | None:
        space = await self._registry.resolve_space(name)
        if "@" in name or space is None:
            return space
        target = await self._aliases.resolve(name)
        if target is None or target == collection_name(space.id):
            return space
        for candidate in await self._registry.all_spaces():
            if collection_name(candidate.id) == target:
                return candidate
        return space  # an alias to a collection no configured space writes: keep the registry's
