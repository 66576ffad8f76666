import json
from pathlib import Path

import pytest

from mmsearch.embedder.spaces import default_registry, registry_from_file
from mmsearch.kit.config import ConfigError
from mmsearch.kit.errors import InvalidArgument, NotFound
from mmsearch.v1 import common_pb2


def test_default_alias_and_explicit_version_resolve_to_the_same_space() -> None:
    registry = default_registry("minilm_l6_text", "image", "audio")
    assert registry.resolve("").id == "minilm@1"
    assert registry.resolve("default").id == "minilm@1"
    assert registry.resolve("minilm@1").dimension == 384
    assert registry.aliases_of("minilm@1") == ["default", "image", "text"]
    assert registry.resolve("audio").id == "aisfx@1"


def test_bad_and_unknown_spaces() -> None:
    registry = default_registry("minilm_l6_text", "image", "audio")
    with pytest.raises(InvalidArgument, match="space: 'minilm@x'"):
        registry.resolve("minilm@x")
    with pytest.raises(NotFound, match="minilm@2"):
        registry.resolve("minilm@2")


def test_preprocessing_hash_changes_with_the_encoder() -> None:
    a = default_registry("minilm_l6_text", "image", "audio").resolve("")
    b = default_registry("other_model", "image", "audio").resolve("")
    assert a.preprocessing_sha256 != b.preprocessing_sha256
    assert a.encoder_for(common_pb2.MODALITY_TEXT) is not None
    assert a.encoder_for(common_pb2.MODALITY_IMAGE) is not None
    assert a.encoder_for(common_pb2.MODALITY_AUDIO) is None


def write(tmp_path: Path, spec: object) -> Path:
    path = tmp_path / "spaces.json"
    path.write_text(json.dumps(spec))
    return path


CLIP = {
    "name": "clip",
    "version": 1,
    "dimension": 512,
    "aliases": ["default", "image"],
    "encoders": [
        {"modality": "text", "model": "clip_text", "preprocessing": "clip-bpe;77"},
        {"modality": "image", "model": "clip_image", "preprocessing": "center-crop-224;clip-norm"},
    ],
}


def test_spaces_file_defines_the_registry(tmp_path: Path) -> None:
    registry = registry_from_file(write(tmp_path, {"spaces": [CLIP]}))
    space = registry.resolve("")
    assert space.id == "clip@1" and space.dimension == 512
    assert space.encoder_for(common_pb2.MODALITY_IMAGE).model == "clip_image"  # type: ignore[union-attr]
    assert space.encoder_for(common_pb2.MODALITY_AUDIO) is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"spaces": []}, "spaces"),
        ({"spaces": [{**CLIP, "aliases": []}]}, "no space has the 'default' alias"),
        ({"spaces": [CLIP, CLIP]}, "defined twice"),
        ({"spaces": [{**CLIP, "name": "Bad Name"}]}, "name"),
        (
            {"spaces": [{**CLIP, "encoders": [{"modality": "smell", "model": "x", "preprocessing": "y"}]}]},
            "modality",
        ),
        ({"spaces": [{**CLIP, "extra": 1}]}, "extra"),
        ("not an object", "spaces file"),
    ],
)
def test_bad_spaces_files_are_config_errors(tmp_path: Path, spec: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        registry_from_file(write(tmp_path, spec))


def test_chunking_is_part_of_the_space_and_its_hash(tmp_path: Path) -> None:
    from dataclasses import replace

    from mmsearch.clients.spaces import chunking_from_message
    from mmsearch.kit.passages import DEFAULT_CHUNKING, ChunkingPolicy
    from mmsearch.v1 import embedder_pb2

    space = default_registry("minilm_l6_text", "image", "audio").resolve("")
    assert space.chunking == DEFAULT_CHUNKING
    rechunked = replace(space, chunking=ChunkingPolicy(passage_tokens=120))
    assert rechunked.preprocessing_sha256 != space.preprocessing_sha256  # a new space version
    audio = default_registry("minilm_l6_text", "image", "audio").resolve("audio")
    assert replace(audio, chunking=ChunkingPolicy(passage_tokens=120)).preprocessing_sha256 == (
        audio.preprocessing_sha256
    )  # no text encoder: chunking does not apply
    # What ListSpaces publishes reads back as the same policy; an older embedder's: the defaults.
    message = embedder_pb2.Space(id=rechunked.id, chunking=rechunked.chunking_message())
    assert chunking_from_message(message) == rechunked.chunking
    assert chunking_from_message(embedder_pb2.Space(id="x@1")) == DEFAULT_CHUNKING
    # A spaces file may set it; invalid values are a configuration error.
    spec = {"spaces": [{**CLIP, "chunking": {"passage_tokens": 60, "overlap_tokens": 10, "max_passages": 9}}]}
    loaded = registry_from_file(write(tmp_path, spec)).resolve("clip@1")
    assert (loaded.chunking.passage_tokens, loaded.chunking.max_passages) == (60, 9)
    with pytest.raises(ConfigError, match="chunking"):
        registry_from_file(write(tmp_path, {"spaces": [{**CLIP, "chunking": {"overlap_tokens": 150}}]}))


def test_quantization_is_chosen_in_the_space_and_reaches_the_store(tmp_path: Path) -> None:
    import asyncio
    from dataclasses import replace

    from mmsearch.clients.spaces import SpaceInfo, quantization_from_message
    from mmsearch.indexer.write import Writer
    from mmsearch.stores.base import Collection
    from mmsearch.v1 import embedder_pb2
    from tests.fakes import MemoryStore

    space = default_registry("minilm_l6_text", "image", "audio").resolve("")
    assert space.quantization == "none"
    binary = replace(space, quantization="binary")
    assert binary.preprocessing_sha256 == space.preprocessing_sha256  # same vectors, same space hash
    for mode in ("none", "int8", "binary"):
        message = embedder_pb2.Space(
            id="clip@1", quantization=replace(space, quantization=mode).quantization_message()
        )
        assert quantization_from_message(message) == mode
    assert quantization_from_message(embedder_pb2.Space(id="x@1")) == "none"  # an older embedder
    with pytest.raises(ValueError, match="unknown quantization 9"):
        quantization_from_message(embedder_pb2.Space(id="x@1", quantization=9))  # type: ignore[arg-type]
    loaded = registry_from_file(write(tmp_path, {"spaces": [{**CLIP, "quantization": "int8"}]}))
    assert loaded.resolve("clip@1").quantization == "int8"
    with pytest.raises(ConfigError, match="quantization"):
        registry_from_file(write(tmp_path, {"spaces": [{**CLIP, "quantization": "pq"}]}))

    class Recording(MemoryStore):
        created: list[Collection] = []

        async def ensure_collection(self, collection: Collection) -> None:
            self.created.append(collection)
            await super().ensure_collection(collection)

    store = Recording()
    writer = Writer(store)  # type: ignore[arg-type]  # the fake keeps no rerank tokens
    asyncio.run(writer.collection(SpaceInfo("clip@1", 512, frozenset({"text"}), quantization="int8")))
    assert [(c.name, c.quantization) for c in store.created] == [("clip_1", "int8")]
