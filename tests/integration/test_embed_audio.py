"""Audio through the embedder's gRPC API into the aisfx@1 space (alias `audio`),
decoded from the bundled MP3s by the embedder itself."""

import grpc
import numpy as np
import pytest

from mmsearch.v1 import common_pb2
from tests.conftest import ServiceHandle, sample
from tests.integration.test_embed_triton import embed, matrix, texts
from tests.sound_clips import ANIMALS

pytestmark = pytest.mark.integration


def audio(data: bytes, mime: str = "") -> common_pb2.Content:
    return common_pb2.Content(audio=common_pb2.Media(data=data, mime_type=mime))


async def test_animal_sounds_embed_into_the_audio_space(service: ServiceHandle) -> None:
    clips = [audio(sample(f"audio/{name}.mp3"), "audio/mpeg") for name in ANIMALS]
    response = await embed(service.addr, clips, space="audio")
    assert response.space == "aisfx@1"
    vectors = matrix(response)
    assert vectors.shape == (len(ANIMALS), 512)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    for e in response.embeddings:
        assert e.modality == common_pb2.MODALITY_AUDIO and e.model == "aisfx_audio" and not e.truncated
    # A clip is nearest to itself re-encoded (cache off the path: a new request, same bytes).
    again = matrix(await embed(service.addr, [clips[2]], space="aisfx@1"))[0]
    assert int(np.argmax(vectors @ again)) == 2


async def test_audio_is_refused_by_the_text_space_and_corrupt_audio_is_invalid(
    service: ServiceHandle,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await embed(service.addr, [audio(sample("audio/dog.mp3"))])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no encoder for audio" in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await embed(service.addr, [audio(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")], space="audio")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "items[0].audio" in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await embed(service.addr, texts("a dog barking"), space="audio")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
