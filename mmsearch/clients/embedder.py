"""The indexer's view of the embedder, over gRPC (the embedder may be this
same process under --target all, or another Deployment)."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import cast

import grpc

from mmsearch.indexer.pipeline import DependencyDown, ItemRejected, SpaceInfo
from mmsearch.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc, events_pb2

REASON = events_pb2.DeadLetter
ITEM_FIELD = re.compile(r"^(?:items|images)\[(\d+)\]")
MODALITY_NAMES = {
    common_pb2.MODALITY_TEXT: "text",
    common_pb2.MODALITY_IMAGE: "image",
    common_pb2.MODALITY_AUDIO: "audio",
}
SPACES_TTL_S = 30.0


# OCR lines kept for BM25: confident, and more than a stray character or two (on
# photos the detector reads texture as "A", "1", "T", which would match every query's "a").
OCR_MIN_CONFIDENCE = 0.8
OCR_MIN_ALNUM = 3


def searchable_text(result: embedder_pb2.ExtractedText) -> str:
    lines = [
        block.text
        for block in result.blocks
        if block.confidence >= OCR_MIN_CONFIDENCE and sum(c.isalnum() for c in block.text) >= OCR_MIN_ALNUM
    ]
    return "\n".join(lines)


class GrpcEmbedder:
    def __init__(
        self, channel: grpc.aio.Channel, token: str, timeout_s: float, *, owns_channel: bool
    ) -> None:
        self._channel = channel
        self._owns_channel = owns_channel
        # The generated class serves both channel kinds; the async stub type describes this one.
        self._stub = cast("embedder_pb2_grpc.EmbedderAsyncStub", embedder_pb2_grpc.EmbedderStub(channel))
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._timeout_s = timeout_s
        self._spaces: dict[str, SpaceInfo] = {}
        self._spaces_at = 0.0

    @classmethod
    def connect(cls, addr: str, token: str, timeout_s: float) -> GrpcEmbedder:
        options = [
            ("grpc.max_send_message_length", 256 << 20),
            ("grpc.max_receive_message_length", 256 << 20),
        ]
        return cls(grpc.aio.insecure_channel(addr, options=options), token, timeout_s, owns_channel=True)

    @classmethod
    def over(cls, channel: grpc.aio.Channel, token: str, timeout_s: float) -> GrpcEmbedder:
        return cls(channel, token, timeout_s, owns_channel=False)

    async def close(self) -> None:
        if self._owns_channel:
            await self._channel.close()

    def _down(self, err: grpc.aio.AioRpcError) -> DependencyDown:
        return DependencyDown(f"embedder {err.code().name}: {err.details()}")

    async def resolve_space(self, name: str) -> SpaceInfo | None:
        if time.monotonic() - self._spaces_at > SPACES_TTL_S:
            try:
                listed = await self._stub.ListSpaces(
                    embedder_pb2.ListSpacesRequest(), metadata=self._metadata, timeout=self._timeout_s
                )
            except grpc.aio.AioRpcError as err:
                raise self._down(err) from err
            spaces: dict[str, SpaceInfo] = {}
            for space in listed.spaces:
                info = SpaceInfo(
                    space.id,
                    space.dimension,
                    frozenset(
                        MODALITY_NAMES[e.modality] for e in space.encoders if e.modality in MODALITY_NAMES
                    ),
                )
                spaces[space.id] = info
                for alias in space.aliases:
                    spaces[alias] = info
            self._spaces, self._spaces_at = spaces, time.monotonic()
        return self._spaces.get(name)

    async def all_spaces(self) -> list[SpaceInfo]:
        await self.resolve_space("default")  # refreshes the cache when stale
        return list({space.id: space for space in self._spaces.values()}.values())

    def _rejected(self, err: grpc.aio.AioRpcError) -> ItemRejected | None:
        """An error naming one item (items[3].image: ...) rejects that item only."""
        detail = err.details() or ""
        match = ITEM_FIELD.match(detail)
        if match is None:
            return None
        if err.code() == grpc.StatusCode.INVALID_ARGUMENT:
            reason = (
                REASON.REASON_CORRUPT_MEDIA
                if (".image" in detail or ".audio" in detail)
                else REASON.REASON_INVALID_EVENT
            )
            return ItemRejected(int(match.group(1)), reason, detail)
        if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return ItemRejected(int(match.group(1)), REASON.REASON_OVER_LIMIT, detail)
        return None

    async def embed(self, space: str, items: Sequence[common_pb2.Content]) -> list[embedder_pb2.Embedding]:
        request = embedder_pb2.EmbedRequest(space=common_pb2.SpaceRef(name=space), items=list(items))
        try:
            response = await self._stub.Embed(request, metadata=self._metadata, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as err:
            raise (self._rejected(err) or self._down(err)) from err
        return list(response.embeddings)

    async def extract_text(self, images: Sequence[common_pb2.Media]) -> list[str]:
        request = embedder_pb2.ExtractTextRequest(images=list(images))
        try:
            response = await self._stub.ExtractText(request, metadata=self._metadata, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as err:
            if self._rejected(err) is not None:
                return [""] * len(images)  # the image itself was embedded; OCR is best-effort text
            raise self._down(err) from err
        return [searchable_text(r) for r in response.results]
