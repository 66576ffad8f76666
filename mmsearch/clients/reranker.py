"""The typed client of the Reranker service (used by the searcher)."""

from __future__ import annotations

from typing import cast

import grpc

from mmsearch.clients.embedder import dependency_error
from mmsearch.v1 import reranker_pb2, reranker_pb2_grpc

DEPENDENCY = "reranker"


class RerankerClient:
    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self._stub = cast("reranker_pb2_grpc.RerankerAsyncStub", reranker_pb2_grpc.RerankerStub(channel))
        self._metadata = (("authorization", f"Bearer {token}"),)

    async def rerank(
        self, request: reranker_pb2.RerankRequest, timeout_s: float
    ) -> reranker_pb2.RerankResponse:
        """Raises a DependencyError (mmsearch/clients/errors.py) on any failure."""
        try:
            return await self._stub.Rerank(request, metadata=self._metadata, timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            raise dependency_error(err, DEPENDENCY) from err
