"""The typed client of the Reranker service (used by the searcher)."""

from __future__ import annotations

from typing import cast

import grpc
from opentelemetry.trace import TracerProvider

from mmsearch.clients.channel import service_channel
from mmsearch.clients.embedder import MAX_MESSAGE_BYTES, dependency_error
from mmsearch.clients.errors import DependencyError
from mmsearch.v1 import reranker_pb2, reranker_pb2_grpc

DEPENDENCY = "reranker"


class NoDocumentVectors(DependencyError):
    """The reranker model scores pairs only (e.g. a cross-encoder): nothing to store."""


class RerankerClient:
    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self._channel = channel
        self._owns_channel = False
        self._stub = cast("reranker_pb2_grpc.RerankerAsyncStub", reranker_pb2_grpc.RerankerStub(channel))
        self._metadata = (("authorization", f"Bearer {token}"),)

    @classmethod
    def connect(cls, addr: str, token: str, tracer_provider: TracerProvider | None = None) -> RerankerClient:
        """A client on its own channel (EncodeDocuments answers are megabytes: raised limits)."""
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]
        client = cls(service_channel(addr, options, tracer_provider), token)
        client._owns_channel = True
        return client

    async def close(self) -> None:
        if self._owns_channel:
            await self._channel.close()

    async def rerank(
        self, request: reranker_pb2.RerankRequest, timeout_s: float
    ) -> reranker_pb2.RerankResponse:
        """Raises a DependencyError (mmsearch/clients/errors.py) on any failure."""
        try:
            return await self._stub.Rerank(request, metadata=self._metadata, timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            raise dependency_error(err, DEPENDENCY) from err

    async def encode_documents(
        self, texts: list[str], timeout_s: float, model: str = ""
    ) -> reranker_pb2.EncodeDocumentsResponse:
        """Stored token vectors of `texts` (opaque blobs, one per text). Raises NoDocumentVectors
        when the model has none to store, else a DependencyError on any failure."""
        request = reranker_pb2.EncodeDocumentsRequest(texts=texts, model=model)
        try:
            return await self._stub.EncodeDocuments(request, metadata=self._metadata, timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise NoDocumentVectors(DEPENDENCY, err.details() or "no document vectors") from err
            raise dependency_error(err, DEPENDENCY) from err
