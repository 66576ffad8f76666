"""Property tests on Embed's input handling: whatever the request, the handler
answers with one embedding per item or a typed ServiceError, never a crash.
Triton is replaced by a fake encoder here; the real one is in tests/integration."""

import asyncio
import io
import time
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import numpy as np
import pytest
import soundfile
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from prometheus_client import CollectorRegistry

from mmsearch.clients.triton import InferResult, ModelInfo
from mmsearch.embedder.cache import EmbeddingCache
from mmsearch.embedder.metrics import EmbedderMetrics
from mmsearch.embedder.service import EmbedderService
from mmsearch.embedder.spaces import default_registry
from mmsearch.kit.auth import Principal, bind_principal, unbind_principal
from mmsearch.kit.errors import ServiceError
from mmsearch.v1 import common_pb2, embedder_pb2
from tests.conftest import make_settings


@pytest.fixture(autouse=True)
def caller() -> Iterator[None]:
    """What the policy interceptor does before any handler: bind the authenticated caller."""
    token = bind_principal(Principal("test", "dev", frozenset({"embed"})))
    yield
    unbind_principal(token)


class FakePool:
    """Stands in for TritonPool: deterministic unit vectors of the right shape."""

    versions: dict[str, str] = {}

    def __init__(self) -> None:
        self.priorities: list[str] = []

    def deadline(self, remaining_s: float | None) -> float:
        return time.monotonic() + 10

    async def cached_info(self, model: str, deadline: float) -> ModelInfo:
        return ModelInfo(model, "1", 8, True, {"sample_rate": "16000", "max_seconds": "2"})

    def _result(self, rows: int, outputs: Sequence[str]) -> InferResult:
        vectors = np.random.default_rng(rows).normal(size=(rows, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        arrays: dict[str, Any] = {
            "TOKENS": np.full((rows, 1), 5, dtype=np.int32),
            "TRUNCATED": np.zeros((rows, 1), dtype=np.bool_),
        }
        return InferResult("1", {name: arrays.get(name, vectors) for name in outputs})

    async def infer_batch(
        self,
        model: str,
        inputs: dict[str, Any],
        outputs: Sequence[str],
        deadline: float,
        modality: str,
        *,
        priority: str = "interactive",
    ) -> InferResult:
        self.priorities.append(priority)
        return self._result(len(next(iter(inputs.values()))), outputs)

    async def infer_one(
        self,
        model: str,
        inputs: dict[str, Any],
        outputs: Sequence[str],
        deadline: float,
        modality: str,
        *,
        priority: str = "interactive",
    ) -> InferResult:
        self.priorities.append(priority)
        return self._result(len(next(iter(inputs.values()))), outputs)


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(out, format="PNG")
    return out.getvalue()


def wav(samples: int, rate: int) -> bytes:
    out = io.BytesIO()
    soundfile.write(out, np.zeros(samples, dtype=np.float32), rate, format="WAV")
    return out.getvalue()


class FakeContext:
    def __init__(self, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self._metadata = metadata

    def time_remaining(self) -> float | None:
        return None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


def test_the_priority_header_reaches_the_model_server_requests() -> None:
    pool = FakePool()
    service = EmbedderService(
        make_settings(),
        pool,  # type: ignore[arg-type]
        default_registry("minilm_l6_text", "image_model", "audio_model"),
        EmbedderMetrics(CollectorRegistry()),
        EmbeddingCache(0),
    )
    items = [common_pb2.Content(text="a"), common_pb2.Content(image=common_pb2.Media(data=png(30, 30)))]
    request = embedder_pb2.EmbedRequest(items=items)
    bulk: Any = FakeContext((("authorization", "Bearer x"), ("x-mmsearch-priority", "bulk")))
    asyncio.run(service.Embed(request, bulk))
    assert pool.priorities == ["bulk", "bulk"]
    pool.priorities.clear()
    asyncio.run(service.Embed(request, FakeContext()))  # type: ignore[arg-type]
    assert pool.priorities == ["interactive", "interactive"]


floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
contents = st.one_of(
    st.builds(lambda t: common_pb2.Content(text=t), st.text(max_size=300)),
    st.builds(
        lambda v: common_pb2.Content(vector=common_pb2.Vector(values=v)), st.lists(floats, max_size=400)
    ),
    st.builds(
        lambda v: common_pb2.Content(vector=common_pb2.Vector(values=v)),
        st.lists(floats, min_size=384, max_size=384),
    ),
    st.builds(lambda b: common_pb2.Content(image=common_pb2.Media(data=b)), st.binary(max_size=64)),
    st.builds(lambda b: common_pb2.Content(audio=common_pb2.Media(data=b)), st.binary(max_size=64)),
    st.builds(
        lambda w, h, mime: common_pb2.Content(image=common_pb2.Media(data=png(w, h), mime_type=mime)),
        st.integers(1, 40),
        st.integers(1, 40),
        st.sampled_from(["", "image/png", "image/jpeg", "text/plain"]),
    ),
    st.builds(
        lambda n, rate: common_pb2.Content(audio=common_pb2.Media(data=wav(n, rate), mime_type="audio/wav")),
        st.integers(0, 4000),
        st.sampled_from([8000, 16000, 44100]),
    ),
    st.just(common_pb2.Content()),
)
spaces = st.sampled_from(["", "default", "minilm@1", "minilm@2", "minilm@", "@1", "x@y@z", "ünï@1"])


@settings(max_examples=300, deadline=None)
@given(items=st.lists(contents, max_size=12), space=spaces, max_items=st.integers(1, 12))
def test_embed_answers_or_raises_a_typed_error(
    items: list[common_pb2.Content], space: str, max_items: int
) -> None:
    service = EmbedderService(
        make_settings(embed_max_items=max_items, embed_max_text_bytes=200, embed_max_image_pixels=1000),
        FakePool(),  # type: ignore[arg-type]
        default_registry("minilm_l6_text", "image_model", "audio_model"),
        EmbedderMetrics(CollectorRegistry()),
        EmbeddingCache(1 << 20),
    )
    request = embedder_pb2.EmbedRequest(space=common_pb2.SpaceRef(name=space), items=items)
    context: Any = FakeContext()
    try:
        response = asyncio.run(service.Embed(request, context))
    except ServiceError as exc:
        assert type(exc) is not ServiceError, "untyped error would surface as INTERNAL"
        assert exc.code != grpc.StatusCode.UNAUTHENTICATED, "the caller is bound: the input is what is tested"
        return
    assert response.space == "minilm@1"
    assert len(response.embeddings) == len(items)
    for item, embedding in zip(items, response.embeddings, strict=True):
        assert embedding.modality == common_pb2.Modality.Value(f"MODALITY_{item.WhichOneof('kind').upper()}")
        vector = np.asarray(embedding.vector.values)
        assert vector.shape == (384,) and np.all(np.isfinite(vector))
        assert abs(np.linalg.norm(vector) - 1.0) < 1e-3


def cache_service() -> EmbedderService:
    return EmbedderService(
        make_settings(),
        FakePool(),  # type: ignore[arg-type]
        default_registry("minilm_l6_text", "image_model", "audio_model"),
        EmbedderMetrics(CollectorRegistry()),
        EmbeddingCache(1 << 20),
    )


async def embed_as(
    service: EmbedderService, tenant: str, item: common_pb2.Content
) -> embedder_pb2.EmbedResponse:
    from mmsearch.kit.auth import Principal, bind_principal, unbind_principal

    token = bind_principal(Principal(f"caller-{tenant}", tenant, frozenset({"embed"})))
    try:
        return await service.Embed(embedder_pb2.EmbedRequest(items=[item]), FakeContext())  # type: ignore[arg-type]
    finally:
        unbind_principal(token)


async def test_the_cache_is_per_tenant_no_side_channel() -> None:
    service = cache_service()
    secret = common_pb2.Content(text="tenant A's confidential merger memo")
    assert not (await embed_as(service, "a", secret)).embeddings[0].cached
    assert (await embed_as(service, "a", secret)).embeddings[0].cached
    # Tenant B sending A's exact text learns nothing: a miss, as for any new text.
    assert not (await embed_as(service, "b", secret)).embeddings[0].cached


async def test_a_cached_image_still_has_its_declared_mime_checked() -> None:
    import pytest

    from mmsearch.kit.errors import InvalidArgument

    service = cache_service()
    data = png(16, 16)
    await embed_as(service, "a", common_pb2.Content(image=common_pb2.Media(data=data, mime_type="image/png")))
    with pytest.raises(InvalidArgument, match="mime_type"):
        await embed_as(
            service, "a", common_pb2.Content(image=common_pb2.Media(data=data, mime_type="image/jpeg"))
        )


async def test_ocr_work_is_bounded_from_the_headers_before_any_decode() -> None:
    """Ten 7000 x 7000 pages (under every per-image limit) are 168 MP of OCR work after
    downscaling: refused from their headers, nothing decoded, nothing sent to the model."""
    import tracemalloc

    from mmsearch.kit.errors import ResourceExhausted
    from tests.unit.test_media import png_header

    pool = FakePool()
    service = EmbedderService(
        make_settings(),
        pool,  # type: ignore[arg-type]
        default_registry("minilm_l6_text", "image_model", "audio_model"),
        EmbedderMetrics(CollectorRegistry()),
        EmbeddingCache(0),
    )
    pages = [common_pb2.Media(data=png_header(7000, 7000)) for _ in range(10)]
    tracemalloc.start()
    with pytest.raises(ResourceExhausted, match="pixels of OCR work"):
        await service.ExtractText(embedder_pb2.ExtractTextRequest(images=pages), FakeContext())  # type: ignore[arg-type]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 4 << 20 and not pool.priorities
