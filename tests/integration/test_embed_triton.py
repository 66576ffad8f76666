"""Embed through the gRPC API against a real tritonserver serving model_repository/."""

import grpc
import numpy as np
import pytest

from mmsearch.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc
from tests.conftest import DEV_TOKEN, ServiceHandle

pytestmark = pytest.mark.integration
AUTH = (("authorization", f"Bearer {DEV_TOKEN}"),)


async def embed(addr: str, items: list[common_pb2.Content], space: str = "") -> embedder_pb2.EmbedResponse:
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = embedder_pb2_grpc.EmbedderStub(channel)
        request = embedder_pb2.EmbedRequest(space=common_pb2.SpaceRef(name=space), items=items)
        response: embedder_pb2.EmbedResponse = await stub.Embed(request, metadata=AUTH, timeout=30)
        return response


def texts(*values: str) -> list[common_pb2.Content]:
    return [common_pb2.Content(text=v) for v in values]


def matrix(response: embedder_pb2.EmbedResponse) -> np.ndarray:
    return np.asarray([e.vector.values for e in response.embeddings], dtype=np.float32)


async def test_batch_of_sentences_gives_unit_vectors_with_semantic_order(service: ServiceHandle) -> None:
    sentences = (
        "A man is playing a guitar on stage.",
        "A musician performs a song with his guitar.",
        "The stock market closed lower on Friday.",
        "Quarterly earnings disappointed investors.",
        "How to grow tomatoes in a small garden",
    )
    response = await embed(service.addr, texts(*sentences))
    assert response.space == "minilm@1"
    vectors = matrix(response)
    assert vectors.shape == (5, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sim = vectors @ vectors.T
    # Paraphrases score higher than unrelated pairs.
    assert sim[0, 1] > 0.5
    assert sim[2, 3] > sim[2, 0] + 0.2
    assert sim[0, 1] > max(sim[0, 2], sim[0, 3], sim[0, 4]) + 0.3
    for e in response.embeddings:
        assert e.model == "minilm_l6_text"
        assert e.model_version == "1"
        assert e.modality == common_pb2.MODALITY_TEXT
        assert len(e.content_sha256) == 64
        assert not e.truncated


async def test_long_text_is_truncated_and_reported(service: ServiceHandle) -> None:
    response = await embed(service.addr, texts("short text", "lorem ipsum " * 400))
    short, long = response.embeddings
    assert not short.truncated and short.input_tokens < 10
    assert long.truncated and long.input_tokens == 256
    assert abs(np.linalg.norm(long.vector.values) - 1.0) < 1e-5


async def test_batches_beyond_max_batch_size_are_chunked_in_order(service: ServiceHandle) -> None:
    # max_batch_size is 64: 150 items take three Triton calls; order must survive.
    items = [f"sentence number {i} about topic {i % 7}" for i in range(150)]
    batch = matrix(await embed(service.addr, texts(*items)))
    for i in (0, 63, 64, 127, 149):
        single = matrix(await embed(service.addr, texts(items[i])))[0]
        assert float(batch[i] @ single) > 0.999


async def test_vector_items_are_validated_and_normalized(service: ServiceHandle) -> None:
    response = await embed(service.addr, [common_pb2.Content(vector=common_pb2.Vector(values=[2.0] * 384))])
    assert np.allclose(response.embeddings[0].vector.values, 1 / np.sqrt(384))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await embed(service.addr, [common_pb2.Content(vector=common_pb2.Vector(values=[1.0] * 3))])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "items[0].vector" in (err.value.details() or "")


@pytest.mark.parametrize(
    ("items", "space", "code", "detail"),
    [
        ([], "", grpc.StatusCode.INVALID_ARGUMENT, "items"),
        ([common_pb2.Content()], "", grpc.StatusCode.INVALID_ARGUMENT, "items[0]"),
        (
            [common_pb2.Content(image=common_pb2.Media(data=b"x"))],
            "",
            grpc.StatusCode.INVALID_ARGUMENT,
            "items[0].image",
        ),
        (texts("a"), "nope@3", grpc.StatusCode.NOT_FOUND, "nope@3"),
        (texts("a"), "bad@", grpc.StatusCode.INVALID_ARGUMENT, "space.name"),
        (texts(*["a"] * 257), "", grpc.StatusCode.RESOURCE_EXHAUSTED, "limit is 256"),
        (texts("x" * 70_000), "", grpc.StatusCode.RESOURCE_EXHAUSTED, "byte text limit"),
    ],
)
async def test_bad_requests_get_the_right_status(
    service: ServiceHandle, items: list[common_pb2.Content], space: str, code: grpc.StatusCode, detail: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await embed(service.addr, items, space)
    assert err.value.code() == code
    assert detail in (err.value.details() or "")


async def test_list_models_reports_triton_state(service: ServiceHandle) -> None:
    async with grpc.aio.insecure_channel(service.addr) as channel:
        stub = embedder_pb2_grpc.EmbedderStub(channel)
        models = await stub.ListModels(embedder_pb2.ListModelsRequest(), metadata=AUTH)
    by_name = {m.name: m for m in models.models}
    text = by_name["minilm_l6_text"]
    assert text.ready and text.max_batch_size == 64 and text.version == "1"
    assert list(text.spaces) == ["minilm@1"] and text.modality == common_pb2.MODALITY_TEXT
    image = by_name["efficientnet_lite0_conse"]
    assert image.ready and image.modality == common_pb2.MODALITY_IMAGE and list(image.spaces) == ["minilm@1"]
    assert list(by_name["aisfx_audio"].spaces) == ["aisfx@1"]
