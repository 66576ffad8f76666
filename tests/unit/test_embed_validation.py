"""Property tests on Embed's input handling: whatever the request, the handler
answers with one embedding per item or a typed ServiceError, never a crash.
Triton is replaced by a fake encoder here; the real one is in tests/integration."""

import asyncio
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mmsearch.v1 import common_pb2, embedder_pb2
from services.embedder.service import EmbedderService
from services.embedder.spaces import default_registry
from services.embedder.triton import TextEncoding
from services.kit.errors import ServiceError
from tests.conftest import make_settings


class FakeEncoders:
    async def encode_text(self, model: str, texts: list[str], remaining_s: float | None) -> TextEncoding:
        rng = np.random.default_rng(len(texts))
        vectors = rng.normal(size=(len(texts), 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return TextEncoding(
            model_version="1",
            vectors=vectors,
            tokens=np.full(len(texts), 5, dtype=np.int32),
            truncated=np.zeros(len(texts), dtype=np.bool_),
        )


class FakeContext:
    def time_remaining(self) -> float | None:
        return None


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
    st.just(common_pb2.Content()),
)
spaces = st.sampled_from(["", "default", "minilm@1", "minilm@2", "minilm@", "@1", "x@y@z", "ünï@1"])


@settings(max_examples=300, deadline=None)
@given(items=st.lists(contents, max_size=12), space=spaces, max_items=st.integers(1, 12))
def test_embed_answers_or_raises_a_typed_error(
    items: list[common_pb2.Content], space: str, max_items: int
) -> None:
    service = EmbedderService(
        make_settings(embed_max_items=max_items, embed_max_text_bytes=200),
        FakeEncoders(),  # type: ignore[arg-type]
        default_registry("minilm_l6_text"),
    )
    request = embedder_pb2.EmbedRequest(space=common_pb2.SpaceRef(name=space), items=items)
    context: Any = FakeContext()
    try:
        response = asyncio.run(service.Embed(request, context))
    except ServiceError as exc:
        assert type(exc) is not ServiceError, "untyped error would surface as INTERNAL"
        return
    assert response.space == "minilm@1"
    assert len(response.embeddings) == len(items)
    for embedding in response.embeddings:
        vector = np.asarray(embedding.vector.values)
        assert vector.shape == (384,) and np.all(np.isfinite(vector))
        assert abs(np.linalg.norm(vector) - 1.0) < 1e-3
