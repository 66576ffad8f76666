"""The gRPC services behind the gateway: one channel, typed stubs, and one call
helper that forwards the caller's bearer token (the services authenticate it
again and take the tenant from it) and turns a gRPC error into a Problem."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.trace import TracerProvider

from mmsearch.gateway.problems import Problem
from mmsearch.v1 import embedder_pb2_grpc, indexer_pb2_grpc, searcher_pb2_grpc

R = TypeVar("R", bound=Message)


class Upstream:
    def __init__(
        self, addr: str, *, timeout_s: float, max_message_bytes: int, tracer_provider: TracerProvider | None
    ) -> None:
        self.addr = addr
        self.timeout_s = timeout_s
        # The client interceptor makes a span per call and sends `traceparent`, so one
        # trace runs from the HTTP request through the services.
        interceptors = aio_client_interceptors(tracer_provider=tracer_provider)  # type: ignore[no-untyped-call]
        self.channel = grpc.aio.insecure_channel(
            addr,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
            interceptors=interceptors,
        )
        self.embedder = cast(
            "embedder_pb2_grpc.EmbedderAsyncStub", embedder_pb2_grpc.EmbedderStub(self.channel)
        )
        self.searcher = cast(
            "searcher_pb2_grpc.SearcherAsyncStub", searcher_pb2_grpc.SearcherStub(self.channel)
        )
        self.indexer = cast(
            "indexer_pb2_grpc.IndexerAdminAsyncStub", indexer_pb2_grpc.IndexerAdminStub(self.channel)
        )
        self._health: Any = health_pb2_grpc.HealthStub(self.channel)

    async def call(self, method: Callable[..., Awaitable[R]], request: Message, token: str) -> R:
        try:
            return await method(
                request, metadata=(("authorization", f"Bearer {token}"),), timeout=self.timeout_s
            )
        except grpc.aio.AioRpcError as error:
            raise Problem.from_rpc(error) from error

    async def serving(self, service: str) -> str | None:
        """None when `service` answers SERVING upstream, else why not (a readiness check)."""
        try:
            response = await self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        except grpc.aio.AioRpcError as error:
            return f"{service} at {self.addr}: {error.code().name}"
        if response.status != health_pb2.HealthCheckResponse.SERVING:
            return f"{service} at {self.addr} is not serving"
        return None

    async def close(self) -> None:
        await self.channel.close()
