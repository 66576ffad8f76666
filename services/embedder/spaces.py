"""Embedding spaces: name@version, dimension, metric, the encoder per modality
and a hash of the preprocessing. Vectors of different spaces are never mixed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from mmsearch.v1 import common_pb2, embedder_pb2
from services.kit.errors import InvalidArgument, NotFound

DEFAULT_ALIAS = "default"
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

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def preprocessing_sha256(self) -> str:
        text = "\n".join(f"{e.modality}:{e.model}:{e.preprocessing}" for e in self.encoders)
        return hashlib.sha256(text.encode()).hexdigest()

    def encoder_for(self, modality: common_pb2.Modality.ValueType) -> Encoder | None:
        return next((e for e in self.encoders if e.modality == modality), None)


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
