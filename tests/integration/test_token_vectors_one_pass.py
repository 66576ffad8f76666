"""Stored rerank vectors from the embedding pass (issue #10): the text model's MAXSIM_TOKENS are
the reranker's encode-mode document vectors (same ONNX file, tokenizer, limit and exclusions),
so the indexer gets them without running the network a second time, and the reranker scores
with them exactly as with its own."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from mmsearch.producer import text_event
from tests.conftest import BrokerHandle, TritonHandle
from tests.integration.test_indexer import publish, start_indexing
from tests.integration.test_passages import ENDINGS, document
from tests.integration.test_rerank_model import MODEL as RERANK_MODEL
from tests.integration.test_rerank_model import encode

pytestmark = pytest.mark.integration

TEXT_MODEL = "minilm_l6_text"


def text_model_tokens(client: grpcclient.InferenceServerClient, texts: list[str]) -> list[np.ndarray]:
    array = np.asarray([t.encode("utf-8") for t in texts], dtype=object).reshape(-1, 1)
    tensor = grpcclient.InferInput("TEXT", list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    names = ("EMBEDDING", "MAXSIM_TOKENS", "MAXSIM_COUNT")
    result = client.infer(
        TEXT_MODEL, [tensor], outputs=[grpcclient.InferRequestedOutput(n) for n in names], client_timeout=120
    )
    tokens, counts = result.as_numpy("MAXSIM_TOKENS"), result.as_numpy("MAXSIM_COUNT")
    assert tokens.dtype == np.float16 and tokens.shape[0] == len(texts) and tokens.shape[2] == 384
    return [tokens[i, : int(counts[i, 0])].astype(np.float32) for i in range(len(texts))]


def test_text_model_tokens_are_the_rerankers_document_vectors(triton: TritonHandle) -> None:
    # Real-length passages of different lengths in one request (one bucket pads the shorter).
    texts = [document(n, ENDINGS[i % len(ENDINGS)], seed=7 + i) for i, n in enumerate((20, 90, 180))]
    with grpcclient.InferenceServerClient(triton.grpc_url) as client:
        config = client.get_model_config(TEXT_MODEL, as_json=True)["config"]
        assert config["parameters"]["maxsim_tokens_for"]["string_value"] == f"{RERANK_MODEL}/1"
        ours = text_model_tokens(client, texts)
        theirs = [tokens for tokens, _ in encode(client, "DOCUMENT", texts)]
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape and len(a) > 15
        # Per-token cosine (float16 outputs; padding in a bucket moves states by ~1e-3 at most).
        assert float((a * b).sum(axis=1).min()) > 0.999


async def test_the_indexer_stores_rerank_vectors_from_the_embedding_pass(
    triton: TritonHandle, broker: BrokerHandle
) -> None:
    indexing = await start_indexing(triton, broker)
    try:
        texts = {f"doc-{i}": document(200, ENDINGS[i % len(ENDINGS)], seed=300 + i) for i in range(6)}
        produced = publish(
            indexing.bootstrap,
            indexing.topic,
            [text_event("dev", item_id, text, event_time=None) for item_id, text in texts.items()],
        )
        await indexing.wait_caught_up(produced)
        registry = indexing.service.registry
        by_embedding = registry.get_sample_value(
            "mmsearch_indexer_rerank_vectors_total", {"source": "embedding"}
        )
        by_reranker = registry.get_sample_value(
            "mmsearch_indexer_rerank_vectors_total", {"source": "reranker"}
        )
        assert by_embedding is not None and by_embedding >= len(texts)  # a 200-word text: 1+ passages
        assert not by_reranker  # the network ran once per passage, not twice
        encodes = registry.get_sample_value(
            "grpc_server_started_total",
            {"grpc_type": "unary", "grpc_service": "mmsearch.v1.Reranker", "grpc_method": "EncodeDocuments"},
        )
        assert not encodes
    finally:
        await indexing.service.running.stop()
