"""The typed client of the Embedder service, used by the indexer and the
searcher alike (the embedder may be this same process under --target all, or
another Deployment).

Every call takes the caller's time budget; failures come back as the
dependency errors of mmsearch/clients/errors.py: an error naming one input
(`items[3].image: ...`) rejects that input only; anything else means the
embedder is down, too slow, or broken.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.trace import TracerProvider

from mmsearch.clients.channel import service_channel
from mmsearch.clients.errors import (
    DependencyDeadline,
    DependencyDown,
    DependencyError,
    InputRejected,
    RejectionKind,
    RequestTooLarge,
)
from mmsearch.clients.priority import PRIORITY_HEADER, Priority
from mmsearch.clients.spaces import (
    MODALITY_NAMES,
    SpaceInfo,
    chunking_from_message,
    quantization_from_message,
)
from mmsearch.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc

DEPENDENCY = "embedder"
SERVICE_NAME = embedder_pb2.DESCRIPTOR.services_by_name["Embedder"].full_name
HEALTH_TIMEOUT_S = 1.0
ITEM_FIELD = re.compile(r"^(?:items|images)\[(\d+)\]")
SPACES_TTL_S = 30.0
# Codes that mean "try again later" rather than "this request is wrong".
TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.UNKNOWN,
    }
)
MAX_MESSAGE_BYTES = 256 << 20


def dependency_error(err: grpc.aio.AioRpcError, dependency: str = DEPENDENCY) -> DependencyError:
    """A failed call to another mmsearch service, as a dependency error. An error
    that names one input (`items[3].text: ...`) is that input's rejection."""
    code, detail = err.code(), err.details() or ""
    match = ITEM_FIELD.match(detail)
    if match is not None and code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            kind: RejectionKind = "over_limit"
        elif ".image" in detail or ".audio" in detail:
            kind = "corrupt_media"
        else:
            kind = "invalid"
        return InputRejected(dependency, detail, index=int(match.group(1)), kind=kind)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DependencyDeadline(dependency, f"{code.name}: {detail}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return RequestTooLarge(dependency, f"{code.name}: {detail}")
    if code in TRANSIENT:
        return DependencyDown(dependency, f"{code.name}: {detail}")
    return DependencyError(dependency, f"{code.name}: {detail}")


class EmbedderClient:
    def __init__(
        self, channel: grpc.aio.Channel, token: str, timeout_s: float, *, owns_channel: bool
    ) -> None:
        self._channel = channel
        self._owns_channel = owns_channel
        # The generated class serves both channel kinds; the async stub type describes this one.
        self._stub = cast("embedder_pb2_grpc.EmbedderAsyncStub", embedder_pb2_grpc.EmbedderStub(channel))
        # The typeshed stub declares no methods on HealthStub.
        self._health: Any = health_pb2_grpc.HealthStub(channel)
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),)
        # Bulk callers (indexer, re-embed) say so; the embedder queues them behind callers who wait.
        self._bulk_metadata = (*self._metadata, (PRIORITY_HEADER, "bulk"))
        self._timeout_s = timeout_s
        self._spaces: dict[str, SpaceInfo] = {}
        self._spaces_at = 0.0

    @classmethod
    def connect(
        cls, addr: str, token: str, timeout_s: float, tracer_provider: TracerProvider | None = None
    ) -> EmbedderClient:
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]
        channel = service_channel(addr, options, tracer_provider)
        return cls(channel, token, timeout_s, owns_channel=True)

    async def close(self) -> None:
        if self._owns_channel:
            await self._channel.close()

    async def not_ready(self) -> str | None:
        """Readiness check for callers: None while the embedder reports SERVING."""
        request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
        try:
            response = await self._health.Check(request, timeout=HEALTH_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            return f"embedder unreachable: {err.code().name}"
        if response.status != health_pb2.HealthCheckResponse.SERVING:
            return "embedder not serving"
        return None

    def _timeout(self, timeout_s: float | None) -> float:
        return self._timeout_s if timeout_s is None else min(self._timeout_s, timeout_s)

    async def resolve_space(self, name: str, timeout_s: float | None = None) -> SpaceInfo | None:
        if time.monotonic() - self._spaces_at > SPACES_TTL_S:
            try:
                listed = await self._stub.ListSpaces(
                    embedder_pb2.ListSpacesRequest(),
                    metadata=self._metadata,
                    timeout=self._timeout(timeout_s),
                )
            except grpc.aio.AioRpcError as err:
                error = dependency_error(err)
                # ListSpaces takes no input: a rejection here is the embedder's fault.
                raise (
                    DependencyError(DEPENDENCY, error.detail) if isinstance(error, InputRejected) else error
                ) from err
            spaces: dict[str, SpaceInfo] = {}
            for space in listed.spaces:
                try:
                    quantization = quantization_from_message(space)
                except ValueError as exc:  # a newer embedder's mode: creating the collection would be wrong
                    raise DependencyError(DEPENDENCY, str(exc)) from exc
                info = SpaceInfo(
                    space.id,
                    space.dimension,
                    frozenset(
                        MODALITY_NAMES[e.modality] for e in space.encoders if e.modality in MODALITY_NAMES
                    ),
                    chunking_from_message(space),
                    quantization,
                )
                spaces[space.id] = info
                for alias in space.aliases:
                    spaces[alias] = info
            self._spaces, self._spaces_at = spaces, time.monotonic()
        return self._spaces.get(name)

    async def aliases(self) -> set[str]:
        """The aliases the embedder's registry declares."""
        await self.resolve_space("default")  # refreshes the cache when stale
        return {name for name, space in self._spaces.items() if name != space.id}

    async def all_spaces(self) -> list[SpaceInfo]:
        await self.resolve_space("default")  # refreshes the cache when stale
        return list({space.id: space for space in self._spaces.values()}.values())

    def _call_metadata(self, priority: Priority) -> tuple[tuple[str, str], ...]:
        return self._bulk_metadata if priority == "bulk" else self._metadata

    async def embed(
        self,
        space: str,
        items: Sequence[common_pb2.Content],
        timeout_s: float | None = None,
        *,
        priority: Priority = "interactive",
        token_vectors: bool = False,
    ) -> embedder_pb2.EmbedResponse:
        """Raises InputRejected naming the refused item, DependencyDown /
        DependencyDeadline when the embedder cannot answer in time. `bulk` work
        (nobody waits for it interactively) is served after interactive work.
        `token_vectors`: texts also get their stored-rerank blob where the model makes one."""
        request = embedder_pb2.EmbedRequest(
            space=common_pb2.SpaceRef(name=space), items=list(items), include_token_vectors=token_vectors
        )
        try:
            return await self._stub.Embed(
                request, metadata=self._call_metadata(priority), timeout=self._timeout(timeout_s)
            )
        except grpc.aio.AioRpcError as err:
            raise dependency_error(err) from err

    async def extract_text(
        self,
        images: Sequence[common_pb2.Media],
        timeout_s: float | None = None,
        *,
        priority: Priority = "interactive",
    ) -> list[embedder_pb2.ExtractedText]:
        request = embedder_pb2.ExtractTextRequest(images=list(images))
        try:
            response = await self._stub.ExtractText(
                request, metadata=self._call_metadata(priority), timeout=self._timeout(timeout_s)
            )
        except grpc.aio.AioRpcError as err:
            raise dependency_error(err) from err
        return list(response.results)
