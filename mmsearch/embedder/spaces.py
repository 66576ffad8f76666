"""Embedding spaces: name@version, dimension, metric, the encoder per modality,
the chunking policy of long text (mmsearch/kit/passages.py) and a hash of the
preprocessing, chunking included. Vectors of different spaces are never mixed."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mmsearch.kit.config import ConfigError
from mmsearch.kit.errors import InvalidArgument, NotFound
from mmsearch.kit.passages import DEFAULT_CHUNKING, ChunkingPolicy
from mmsearch.v1 import common_pb2, embedder_pb2

DEFAULT_ALIAS = "default"
QuantizationName = Literal["none", "int8", "binary"]
AISFX_DIMENSION = 512


@dataclass(frozen=True)
class Encoder:
    modality: common_pb2.Modality.ValueType
    model: str
    # Human-readable description of the preprocessing; hashed into the space.
    preprocessing: str
    # The model output holding this space's vector (a model may write into two spaces).
    output: str = "EMBEDDING"


@dataclass(frozen=True)
class Space:
    name: str
    version: int
    dimension: int
    metric: embedder_pb2.DistanceMetric.ValueType
    encoders: tuple[Encoder, ...]
    aliases: tuple[str, ...] = ()
    # How the indexer splits long text into passages; part of the space (hashed below).
    chunking: ChunkingPolicy = DEFAULT_CHUNKING
    # How the store keeps this space's vectors (none / int8 / binary, rescored on the originals).
    # Not hashed: the vectors are the same; the store fixes it when it creates the collection.
    quantization: QuantizationName = "none"

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def preprocessing_sha256(self) -> str:
        lines = [f"{e.modality}:{e.model}:{e.preprocessing}" for e in self.encoders]
        if self.encoder_for(common_pb2.MODALITY_TEXT) is not None:
            # Passages are what gets embedded: another split is other vectors (a new space version).
            lines.append(f"chunking:{self.chunking.describe()}")
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def chunking_message(self) -> embedder_pb2.ChunkingPolicy:
        """The chunking policy as ListSpaces publishes it (`Space.chunking`)."""
        return chunking_message(self.chunking)

    def quantization_message(self) -> embedder_pb2.Quantization.ValueType:
        """The quantization as ListSpaces publishes it (`Space.quantization`)."""
        return QUANTIZATIONS[self.quantization]

    def encoder_for(self, modality: common_pb2.Modality.ValueType) -> Encoder | None:
        return next((e for e in self.encoders if e.modality == modality), None)


def chunking_message(policy: ChunkingPolicy) -> embedder_pb2.ChunkingPolicy:
    return embedder_pb2.ChunkingPolicy(
        passage_tokens=policy.passage_tokens,
        overlap_tokens=policy.overlap_tokens,
        max_passages=policy.max_passages,
        max_text_bytes=policy.max_text_bytes,
        estimator=policy.estimator,
    )


@dataclass
class SpaceRegistry:
    spaces: dict[str, Space] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def add(self, space: Space) -> None:
        self.spaces[space.id] = space
        for alias in space.aliases:
            self.aliases[alias] = space.id

    def resolve(self, ref: str, *, field_name: str = "space") -> Space:
        key = ref or DEFAULT_ALIAS
        if "@" in key:
            name, _, version = key.partition("@")
            if not name or not version.isdigit():
                raise InvalidArgument(f"{key!r} is not 'name@version'", field=field_name)
        space_id = self.aliases.get(key, key)
        space = self.spaces.get(space_id)
        if space is None:
            raise NotFound(f"unknown space or alias {key!r}; known: {sorted(self.spaces)}")
        return space

    def aliases_of(self, space_id: str) -> list[str]:
        return sorted(a for a, target in self.aliases.items() if target == space_id)


TEXT_PREPROCESSING = "bert-wordpiece-uncased;max_tokens=256;mean-pool;l2-normalize"
IMAGE_PREPROCESSING = (
    "sniff;exif-transpose;alpha-over-white;rgb;shorter-side-224-bicubic;center-crop-224;"
    "efficientnet-lite0-imagenet;conse-top10;class-prompts=clip-simple-7"
)
AUDIO_PREPROCESSING = "mono-mean;soxr-hq-44100;max-30s;mel96-htk;aisfx-blocks-100-hop-50"


def default_registry(text_model: str, image_model: str, audio_model: str) -> SpaceRegistry:
    """The embedded default's spaces: `minilm@1` (alias `default`) holds text and,
    through ConSE, images; `aisfx@1` (alias `audio`) holds sound effects."""
    registry = SpaceRegistry()
    registry.add(
        Space(
            name="minilm",
            version=1,
            dimension=384,
            metric=embedder_pb2.DISTANCE_METRIC_COSINE,
            encoders=(
                Encoder(common_pb2.MODALITY_TEXT, text_model, TEXT_PREPROCESSING),
                Encoder(common_pb2.MODALITY_IMAGE, image_model, IMAGE_PREPROCESSING),
            ),
            aliases=(DEFAULT_ALIAS, "text", "image"),
        )
    )
    registry.add(
        Space(
            name="aisfx",
            version=1,
            dimension=AISFX_DIMENSION,
            metric=embedder_pb2.DISTANCE_METRIC_COSINE,
            encoders=(Encoder(common_pb2.MODALITY_AUDIO, audio_model, AUDIO_PREPROCESSING),),
            aliases=("audio",),
        )
    )
    return registry


MODALITIES = {
    "text": common_pb2.MODALITY_TEXT,
    "image": common_pb2.MODALITY_IMAGE,
    "audio": common_pb2.MODALITY_AUDIO,
}
QUANTIZATIONS: dict[QuantizationName, embedder_pb2.Quantization.ValueType] = {
    "none": embedder_pb2.QUANTIZATION_NONE,
    "int8": embedder_pb2.QUANTIZATION_INT8,
    "binary": embedder_pb2.QUANTIZATION_BINARY,
}
METRICS = {
    "cosine": embedder_pb2.DISTANCE_METRIC_COSINE,
    "dot": embedder_pb2.DISTANCE_METRIC_DOT,
    "euclidean": embedder_pb2.DISTANCE_METRIC_EUCLIDEAN,
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EncoderSpec(_Strict):
    modality: Literal["text", "image", "audio"]
    model: str = Field(min_length=1)
    preprocessing: str = Field(min_length=1)
    output: str = "EMBEDDING"


class ChunkingSpec(_Strict):
    passage_tokens: int = Field(default=DEFAULT_CHUNKING.passage_tokens, ge=3, le=65536)
    overlap_tokens: int = Field(default=DEFAULT_CHUNKING.overlap_tokens, ge=0)
    max_passages: int = Field(default=DEFAULT_CHUNKING.max_passages, ge=1, le=100_000)
    max_text_bytes: int = Field(default=DEFAULT_CHUNKING.max_text_bytes, ge=1, le=256 * 1024 * 1024)


class SpaceSpec(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    version: int = Field(ge=1)
    dimension: int = Field(ge=1, le=65536)
    metric: Literal["cosine", "dot", "euclidean"] = "cosine"
    encoders: list[EncoderSpec] = Field(min_length=1)
    aliases: list[str] = []
    chunking: ChunkingSpec = ChunkingSpec()
    quantization: QuantizationName = "none"


class SpacesFile(_Strict):
    spaces: list[SpaceSpec] = Field(min_length=1)


def registry_from_file(path: Path) -> SpaceRegistry:
    """Spaces from a JSON file (MMSEARCH_SPACES_FILE), e.g. the `clip@1` space of a
    production model repository (docs/production-models.md). One space must
    carry the `default` alias; ids, aliases and modalities per space are unique."""
    try:
        spec = SpacesFile.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError, ValidationError) as exc:
        raise ConfigError(f"spaces file {path}: {exc}") from exc
    registry = SpaceRegistry()
    for space in spec.spaces:
        space_id = f"{space.name}@{space.version}"
        modalities = [e.modality for e in space.encoders]
        if space_id in registry.spaces or len(set(modalities)) != len(modalities):
            raise ConfigError(f"spaces file {path}: {space_id} is defined twice or repeats a modality")
        try:
            chunking = ChunkingPolicy(**space.chunking.model_dump())
        except ValueError as exc:
            raise ConfigError(f"spaces file {path}: {space_id} chunking: {exc}") from exc
        clash = [a for a in space.aliases if a in registry.aliases]
        if clash:
            raise ConfigError(f"spaces file {path}: alias {clash[0]!r} is used by two spaces")
        registry.add(
            Space(
                name=space.name,
                version=space.version,
                dimension=space.dimension,
                metric=METRICS[space.metric],
                encoders=tuple(
                    Encoder(MODALITIES[e.modality], e.model, e.preprocessing, e.output)
                    for e in space.encoders
                ),
                aliases=tuple(space.aliases),
                chunking=chunking,
                quantization=space.quantization,
            )
        )
    if DEFAULT_ALIAS not in registry.aliases:
        raise ConfigError(f"spaces file {path}: no space has the {DEFAULT_ALIAS!r} alias")
    return registry
