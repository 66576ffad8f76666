import pytest

from mmsearch.v1 import common_pb2
from services.embedder.spaces import default_registry
from services.kit.errors import InvalidArgument, NotFound


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
