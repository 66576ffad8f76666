"""ExtractText (OCR) through the embedder's gRPC API and the ppocr_text model."""

import io

import grpc
import pytest
from PIL import Image, ImageDraw, ImageFont

from mmsearch.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc
from tests.conftest import DEV_TOKEN, ServiceHandle

pytestmark = pytest.mark.integration
AUTH = (("authorization", f"Bearer {DEV_TOKEN}"),)


def rendered(lines: list[str], fmt: str = "PNG") -> bytes:
    font = ImageFont.load_default(size=28)
    image = Image.new("RGB", (720, 60 + 50 * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((30, 30 + 50 * i), line, fill="black", font=font)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


async def extract(addr: str, images: list[common_pb2.Media]) -> embedder_pb2.ExtractTextResponse:
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = embedder_pb2_grpc.EmbedderStub(channel)
        request = embedder_pb2.ExtractTextRequest(images=images)
        response: embedder_pb2.ExtractTextResponse = await stub.ExtractText(
            request, metadata=AUTH, timeout=60
        )
        return response


async def test_text_in_images_is_read_in_order(service: ServiceHandle) -> None:
    lines = ["Invoice INV-2024-00731", "Total due: 1,250.00 EUR"]
    blank = common_pb2.Media(data=rendered([]), mime_type="image/png")
    page = common_pb2.Media(data=rendered(lines, "JPEG"), mime_type="image/jpeg")
    first, second = (await extract(service.addr, [page, blank])).results
    assert [b.text for b in first.blocks] == lines
    assert first.text == "\n".join(lines)
    for block in first.blocks:
        x, y, width, height = block.box
        assert x >= 0 and y >= 0 and width > 0 and height > 0 and 0.5 < block.confidence <= 1.0
    assert second.text == "" and not second.blocks


async def test_bad_images_name_the_field(service: ServiceHandle) -> None:
    good = common_pb2.Media(data=rendered(["ok"]))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await extract(service.addr, [good, common_pb2.Media(data=b"not an image")])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "images[1]" in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await extract(service.addr, [])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
