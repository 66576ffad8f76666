"""Async Triton client for the encoders: chunking to max_batch_size,
deadlines, fail-fast on a down server, and reconnection without restart."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import tritonclient.grpc.aio as triton_aio
from opentelemetry import propagate, trace
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from services.kit.errors import DeadlineExceeded, ServiceError, Unavailable

# Reconnect quickly after Triton restarts (gRPC's default backoff grows to 120 s),
# and notice a dead connection within seconds.
CHANNEL_ARGS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


@dataclass(frozen=True)
class TextEncoding:
    model_version: str
    vectors: npt.NDArray[np.float32]
    tokens: npt.NDArray[np.int32]
    truncated: npt.NDArray[np.bool_]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    max_batch_size: int
    ready: bool


def map_triton_error(exc: InferenceServerException, model: str) -> ServiceError:
    status = str(exc.status() or "")
    message = str(exc.message() or exc)
    if "DEADLINE_EXCEEDED" in status or "Deadline Exceeded" in message:
        return DeadlineExceeded(f"model server {model}: deadline exceeded")
    if "UNAVAILABLE" in status or "NOT_FOUND" in status or "unavailable" in message.lower():
        return Unavailable(f"model server unavailable for {model}: {message}")
    return ServiceError(f"model server error for {model}: {message}")


class TritonEncoders:
    def __init__(
        self, url: str, timeout_s: float, tracer_provider: trace.TracerProvider | None = None
    ) -> None:
        self._tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)
        self._url = url
        self._timeout_s = timeout_s
        self._client = triton_aio.InferenceServerClient(url, channel_args=CHANNEL_ARGS)
        self._batch_sizes: dict[str, int] = {}

    async def close(self) -> None:
        await self._client.close()

    def _timeout(self, remaining_s: float | None) -> float:
        if remaining_s is None:
            return self._timeout_s
        if remaining_s <= 0:
            raise DeadlineExceeded("deadline passed before the model call")
        return min(self._timeout_s, remaining_s)

    async def model_ready(self, model: str) -> str | None:
        """Readiness check: None when the model is loaded and ready."""
        try:
            ready = await self._client.is_model_ready(model, client_timeout=2.0)
        except InferenceServerException as exc:
            return f"model server at {self._url} unreachable: {exc.message()}"
        return None if ready else f"model {model} not ready on {self._url}"

    async def model_info(self, model: str) -> ModelInfo:
        try:
            ready = bool(await self._client.is_model_ready(model, client_timeout=2.0))
            if not ready:
                return ModelInfo(model, "", self._batch_sizes.get(model, 0), ready=False)
            meta = await self._client.get_model_metadata(model, as_json=True, client_timeout=2.0)
            config = await self._client.get_model_config(model, as_json=True, client_timeout=2.0)
        except InferenceServerException as exc:
            raise map_triton_error(exc, model) from exc
        versions = meta.get("versions") or [""]
        max_batch = int(config["config"].get("max_batch_size", 0))
        self._batch_sizes[model] = max_batch
        return ModelInfo(model, str(versions[-1]), max_batch, ready)

    async def _max_batch_size(self, model: str) -> int:
        if model not in self._batch_sizes:
            await self.model_info(model)
        return max(1, self._batch_sizes[model])

    async def encode_text(self, model: str, texts: list[str], remaining_s: float | None) -> TextEncoding:
        """Encode texts, split into chunks of the model's max_batch_size sent concurrently."""
        timeout = self._timeout(remaining_s)
        try:
            batch = await asyncio.wait_for(self._max_batch_size(model), timeout)
        except TimeoutError as exc:
            raise DeadlineExceeded(f"model server {model}: deadline exceeded") from exc
        chunks = [texts[i : i + batch] for i in range(0, len(texts), batch)]
        parts = await asyncio.gather(*(self._encode_chunk(model, chunk, timeout) for chunk in chunks))
        return TextEncoding(
            model_version=parts[0].model_version,
            vectors=np.concatenate([p.vectors for p in parts]),
            tokens=np.concatenate([p.tokens for p in parts]),
            truncated=np.concatenate([p.truncated for p in parts]),
        )

    async def _encode_chunk(self, model: str, texts: list[str], timeout_s: float) -> TextEncoding:
        data = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
        text_input = InferInput("TEXT", list(data.shape), "BYTES")
        text_input.set_data_from_numpy(data)
        outputs = [InferRequestedOutput(name) for name in ("EMBEDDING", "TOKENS", "TRUNCATED")]
        with self._tracer.start_as_current_span(
            "triton.infer",
            kind=trace.SpanKind.CLIENT,
            attributes={"triton.model": model, "triton.batch_size": len(texts), "server.address": self._url},
        ):
            # W3C trace context for Triton's own tracing (--trace-config mode=opentelemetry).
            headers: dict[str, str] = {}
            propagate.inject(headers)
            try:
                result = await self._client.infer(
                    model, [text_input], outputs=outputs, client_timeout=timeout_s, headers=headers
                )
            except InferenceServerException as exc:
                raise map_triton_error(exc, model) from exc
        return TextEncoding(
            model_version=str(result.get_response().model_version),
            vectors=np.asarray(result.as_numpy("EMBEDDING"), dtype=np.float32),
            tokens=np.asarray(result.as_numpy("TOKENS"), dtype=np.int32).reshape(-1),
            truncated=np.asarray(result.as_numpy("TRUNCATED"), dtype=np.bool_).reshape(-1),
        )
