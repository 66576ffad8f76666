"""`mmsearch embed TEXT...`: embed texts through Embedder.Embed and print the vectors."""

from __future__ import annotations

import json
from collections.abc import Sequence

import grpc
import numpy as np

from mmsearch.clients.connect import auth_metadata
from mmsearch.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc


def embed_texts(
    addr: str, token: str, texts: Sequence[str], space: str, timeout_s: float
) -> embedder_pb2.EmbedResponse:
    with grpc.insecure_channel(addr) as channel:
        stub = embedder_pb2_grpc.EmbedderStub(channel)
        request = embedder_pb2.EmbedRequest(
            space=common_pb2.SpaceRef(name=space), items=[common_pb2.Content(text=t) for t in texts]
        )
        response: embedder_pb2.EmbedResponse = stub.Embed(
            request, metadata=auth_metadata(token), timeout=timeout_s
        )
        return response


def print_embeddings(response: embedder_pb2.EmbedResponse, texts: Sequence[str], as_json: bool) -> None:
    if as_json:
        out = [
            {
                "text": text,
                "space": response.space,
                "model": e.model,
                "model_version": e.model_version,
                "tokens": e.input_tokens,
                "truncated": e.truncated,
                "vector": list(e.vector.values),
            }
            for text, e in zip(texts, response.embeddings, strict=True)
        ]
        print(json.dumps(out))
        return
    print(f"space {response.space}")
    for text, e in zip(texts, response.embeddings, strict=True):
        vector = np.asarray(e.vector.values)
        head = " ".join(f"{v:+.3f}" for v in vector[:4])
        truncated = " TRUNCATED" if e.truncated else ""
        print(
            f"  {len(vector)}-d |v|={np.linalg.norm(vector):.3f} [{head} ...] "
            f"{e.model}/{e.model_version} tokens={e.input_tokens}{truncated}  {text!r}"
        )
