"""Images into the text space (ConSE over EfficientNet-Lite0) through the gRPC
API and a real Triton: cross-modal sanity on the bundled photos, the cache,
and bad media."""

import io

import grpc
import numpy as np
import pytest
from PIL import Image

from mmsearch.v1 import common_pb2
from tests.conftest import ServiceHandle, sample
from tests.integration.test_embed_triton import embed, matrix, texts

pytestmark = pytest.mark.integration

PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "camera.png", "horse.png", "page.png")


def image(data: bytes, mime: str = "") -> common_pb2.Content:
    return common_pb2.Content(image=common_pb2.Media(data=data, mime_type=mime))


async def photo_vectors(service: ServiceHandle) -> np.ndarray:
    response = await embed(service.addr, [image(sample(f"images/{name}")) for name in PHOTOS])
    assert response.space == "minilm@1"
    for e in response.embeddings:
        assert e.modality == common_pb2.MODALITY_IMAGE
        assert e.model == "efficientnet_lite0_conse" and e.model_version == "1"
    return matrix(response)


async def test_a_photo_of_a_cat_finds_the_cat(service: ServiceHandle) -> None:
    photos = await photo_vectors(service)
    np.testing.assert_allclose(np.linalg.norm(photos, axis=1), 1.0, atol=1e-5)
    query = matrix(await embed(service.addr, texts("a photo of a cat")))[0]
    scores = photos @ query
    assert PHOTOS[int(np.argmax(scores))] == "chelsea.png", dict(zip(PHOTOS, scores.round(3), strict=True))


async def test_the_coffee_photo_is_nearest_to_a_cup_of_coffee(service: ServiceHandle) -> None:
    captions = (
        "a cup of coffee",
        "a photo of a cat",
        "a rocket on the launch pad",
        "a man with a camera on a tripod",
        "a page of printed text",
        "an astronaut in a space suit",
    )
    coffee = matrix(await embed(service.addr, [image(sample("images/coffee.png"), "image/png")]))[0]
    scores = matrix(await embed(service.addr, texts(*captions))) @ coffee
    assert captions[int(np.argmax(scores))] == "a cup of coffee", dict(
        zip(captions, scores.round(3), strict=True)
    )


async def test_images_are_cached_and_exif_rotation_does_not_matter_much(service: ServiceHandle) -> None:
    data = sample("images/chelsea.png")
    first, second = (await embed(service.addr, [image(data)])).embeddings[0], None
    second = (await embed(service.addr, [image(data)])).embeddings[0]
    assert not first.cached and second.cached
    assert first.content_sha256 == second.content_sha256
    assert np.allclose(first.vector.values, second.vector.values)
    hits = service.registry.get_sample_value(
        "mmsearch_embedder_cache_lookups_total", {"modality": "image", "result": "hit"}
    )
    assert hits is not None and hits >= 1

    # The same photo stored rotated with an EXIF orientation tag embeds like the original.
    upright = Image.open(io.BytesIO(data)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed after a 90-degree clockwise turn
    stored = io.BytesIO()
    upright.rotate(90, expand=True).save(stored, format="JPEG", quality=95, exif=exif.tobytes())
    rotated = (await embed(service.addr, [image(stored.getvalue(), "image/jpeg")])).embeddings[0]
    assert float(np.dot(first.vector.values, rotated.vector.values)) > 0.9


@pytest.mark.parametrize(
    ("content", "code", "detail"),
    [
        (image(b"\x89PNG\r\n\x1a\n garbage"), grpc.StatusCode.INVALID_ARGUMENT, "items[0].image"),
        (image(sample("images/coffee.png")[:5000]), grpc.StatusCode.INVALID_ARGUMENT, "items[0].image"),
        (image(sample("images/coffee.png"), "image/jpeg"), grpc.StatusCode.INVALID_ARGUMENT, "mime_type"),
    ],
)
async def test_bad_images_are_invalid_argument(
    service: ServiceHandle, content: common_pb2.Content, code: grpc.StatusCode, detail: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await embed(service.addr, [content])
    assert err.value.code() == code
    assert detail in (err.value.details() or "")


async def test_mixed_batch_keeps_request_order(service: ServiceHandle) -> None:
    cat = sample("images/chelsea.png")
    response = await embed(service.addr, [*texts("a photo of a cat"), image(cat), *texts("a cup of coffee")])
    kinds = [e.modality for e in response.embeddings]
    assert kinds == [common_pb2.MODALITY_TEXT, common_pb2.MODALITY_IMAGE, common_pb2.MODALITY_TEXT]
    vectors = matrix(response)
    assert vectors[1] @ vectors[0] > vectors[1] @ vectors[2]
