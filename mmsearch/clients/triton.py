"""Async Triton client pool: chunking to max_batch_size, deadlines, bounded
retries on an unavailable server, and reconnection without restart.

Every request carries its priority (interactive before bulk) and its remaining
time as Triton's queue timeout, so a request whose caller gave up is rejected
by Triton's queue instead of executed; requests in flight are bounded per model
and priority, so a bulk caller cannot queue unbounded work."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import tritonclient.grpc.aio as triton_aio
from opentelemetry import propagate, trace
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from mmsearch.clients.errors import DependencyDeadline, DependencyDown, DependencyError
from mmsearch.clients.priority import PRIORITIES, TRITON_LEVEL, Priority
from mmsearch.kit.component import Deps
from mmsearch.kit.metrics import LATENCY_BUCKETS

# Reconnect quickly after Triton restarts (gRPC's default backoff grows to 120 s),
# and notice a dead connection within seconds.
CHANNEL_ARGS = [
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # Separate TCP connections per pool member (gRPC would otherwise share one).
    ("grpc.use_local_subchannel_pool", 1),
]
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
RETRY_BACKOFF_S = 0.05
DEADLINE_RESERVE_S = 0.05
# Messages Triton uses for a model instance or version that is gone or
# restarting (stub crash, unload during a version swap): retryable.
TRANSIENT_MARKERS = ("stub process", "not healthy", "is not ready", "unknown model", "unavailable")
# Triton's answer to a request whose queue timeout passed before it ran: the
# caller's time is up, so this is a deadline, not an outage to retry.
EXPIRED_MARKER = "timeout expired"

Arrays = dict[str, npt.NDArray[np.generic]]


class TritonMetrics:
    """What the pool records, under the owning service's prefix (`mmsearch_embedder_...`,
    `mmsearch_reranker_...`), so both can share one registry under `--target all`."""

    def __init__(self, registry: CollectorRegistry, service: str) -> None:
        prefix = f"mmsearch_{service}"
        self.batch_items = Histogram(
            f"{prefix}_batch_items",
            "Items (rows) per request sent to the model server.",
            ("modality",),
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.triton_seconds = Histogram(
            f"{prefix}_triton_seconds",
            "Round trip of one inference request to the model server (queue + compute + network).",
            ("model", "outcome"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.triton_retries = Counter(
            f"{prefix}_triton_retries_total",
            "Inference requests retried after the model server was unavailable.",
            ("model",),
            registry=registry,
        )
        self.triton_in_flight = Gauge(
            f"{prefix}_triton_in_flight",
            "Inference requests sent to the model server and not answered yet.",
            ("model", "priority"),
            registry=registry,
        )
        self.triton_slot_wait_seconds = Histogram(
            f"{prefix}_triton_slot_wait_seconds",
            "Time a request waited for an in-flight slot (MMSEARCH_TRITON_MAX_IN_FLIGHT) before being sent.",
            ("model", "priority"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )


@dataclass(frozen=True)
class InferResult:
    model_version: str
    outputs: Arrays


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    max_batch_size: int
    ready: bool
    parameters: Mapping[str, str] = field(default_factory=dict)


DEPENDENCY = "model server"


def map_triton_error(exc: InferenceServerException, model: str) -> DependencyError:
    status = str(exc.status() or "")
    message = str(exc.message() or exc)
    if "DEADLINE_EXCEEDED" in status or "Deadline Exceeded" in message:
        return DependencyDeadline(DEPENDENCY, f"{model}: deadline exceeded")
    if EXPIRED_MARKER in message.lower():
        return DependencyDeadline(DEPENDENCY, f"{model}: expired in the model server's queue")
    if (
        "UNAVAILABLE" in status
        or "NOT_FOUND" in status
        or any(marker in message.lower() for marker in TRANSIENT_MARKERS)
    ):
        return DependencyDown(DEPENDENCY, f"unavailable for {model}: {message}")
    return DependencyError(DEPENDENCY, f"error for {model}: {message}")


class TritonPool:
    def __init__(
        self,
        url: str,
        timeout_s: float,
        *,
        pool_size: int,
        retries: int,
        metrics: TritonMetrics,
        max_in_flight: int = 16,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self._tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)
        self._url = url
        self._timeout_s = timeout_s
        self._retries = retries
        self._metrics = metrics
        self._clients = [
            triton_aio.InferenceServerClient(url, channel_args=CHANNEL_ARGS) for _ in range(pool_size)
        ]
        self._next = itertools.cycle(range(pool_size))
        # Per (model, priority): bulk work waits here, in this process, once it has
        # max_in_flight requests at Triton; interactive work has slots of its own.
        self._max_in_flight = max_in_flight
        self._slots: dict[tuple[str, Priority], asyncio.Semaphore] = {}
        self._info: dict[str, ModelInfo] = {}
        # Last version each model answered with (changes on hot reload).
        self.versions: dict[str, str] = {}

    @classmethod
    def for_service(cls, deps: Deps, service: str, timeout_s: float) -> TritonPool:
        """The pool a service (embedder, reranker) opens from its settings, with its
        metrics under the service's prefix in the process's registry."""
        settings = deps.settings
        return cls(
            settings.triton_url,
            timeout_s,
            pool_size=settings.triton_pool_size,
            retries=settings.triton_retries,
            max_in_flight=settings.triton_max_in_flight,
            metrics=TritonMetrics(deps.metrics, service),
            tracer_provider=deps.tracer_provider,
        )

    def _client(self) -> triton_aio.InferenceServerClient:
        return self._clients[next(self._next)]

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._clients))

    def deadline(self, remaining_s: float | None) -> float:
        """Monotonic deadline: the caller's, less a reserve to answer with our own
        status (UNAVAILABLE beats the caller's bare DEADLINE_EXCEEDED), capped by
        the configured model timeout."""
        if remaining_s is not None:
            remaining_s -= max(DEADLINE_RESERVE_S, 0.02 * remaining_s)
        budget = self._timeout_s if remaining_s is None else min(self._timeout_s, remaining_s)
        if budget <= 0:
            raise DependencyDeadline(DEPENDENCY, "deadline passed before the model call")
        return time.monotonic() + budget

    async def model_ready(self, model: str) -> str | None:
        """Readiness check: None when the model is loaded and ready."""
        try:
            ready = await self._client().is_model_ready(model, client_timeout=2.0)
        except InferenceServerException as exc:
            return f"model server at {self._url} unreachable: {exc.message()}"
        return None if ready else f"model {model} not ready on {self._url}"

    async def model_info(self, model: str, timeout_s: float = 2.0) -> ModelInfo:
        client = self._client()
        try:
            ready = bool(await client.is_model_ready(model, client_timeout=timeout_s))
            if not ready:
                known = self._info.get(model)
                return ModelInfo(model, "", known.max_batch_size if known else 0, False)
            meta = await client.get_model_metadata(model, as_json=True, client_timeout=timeout_s)
            config = (await client.get_model_config(model, as_json=True, client_timeout=timeout_s))["config"]
        except InferenceServerException as exc:
            raise map_triton_error(exc, model) from exc
        versions = meta.get("versions") or [""]
        parameters = {k: str(v.get("string_value", "")) for k, v in config.get("parameters", {}).items()}
        info = ModelInfo(model, str(versions[-1]), int(config.get("max_batch_size", 0)), True, parameters)
        self._info[model] = info
        return info

    async def cached_info(self, model: str, deadline: float) -> ModelInfo:
        info = self._info.get(model)
        if info is None:
            info = await self.model_info(model, timeout_s=max(0.05, deadline - time.monotonic()))
            if not info.ready:
                raise DependencyDown(DEPENDENCY, f"model {model} is not ready")
        return info

    def _slot(self, model: str, priority: Priority) -> asyncio.Semaphore:
        slot = self._slots.get((model, priority))
        if slot is None:
            slot = self._slots[(model, priority)] = asyncio.Semaphore(self._max_in_flight)
        return slot

    async def infer_batch(
        self,
        model: str,
        inputs: Arrays,
        outputs: Sequence[str],
        deadline: float,
        modality: str,
        *,
        priority: Priority = "interactive",
    ) -> InferResult:
        """Infer over the first axis of `inputs`, split into chunks of the model's
        max_batch_size sent concurrently; outputs are concatenated in order."""
        info = await self.cached_info(model, deadline)
        total = len(next(iter(inputs.values())))
        step = max(1, info.max_batch_size) if info.max_batch_size > 0 else total
        chunks = [{k: v[i : i + step] for k, v in inputs.items()} for i in range(0, total, step)]
        parts = await asyncio.gather(
            *(
                self.infer_one(model, chunk, outputs, deadline, modality, priority=priority)
                for chunk in chunks
            )
        )
        return InferResult(
            model_version=parts[-1].model_version,
            outputs={name: np.concatenate([p.outputs[name] for p in parts]) for name in outputs},
        )

    async def infer_one(
        self,
        model: str,
        inputs: Arrays,
        outputs: Sequence[str],
        deadline: float,
        modality: str,
        *,
        priority: Priority = "interactive",
    ) -> InferResult:
        """One inference request, retried (bounded, within the deadline) while
        the model server is unavailable: inference is idempotent."""
        self._metrics.batch_items.labels(modality).observe(len(next(iter(inputs.values()))))
        attempt = 0
        unavailable: DependencyDown | None = None
        while True:
            try:
                return await self._call(model, inputs, outputs, deadline, priority)
            except DependencyDeadline:
                # Out of time while retrying an unavailable server: report the cause.
                if unavailable is not None:
                    raise unavailable from None
                raise
            except DependencyDown as exc:
                unavailable = exc
                attempt += 1
                pause = RETRY_BACKOFF_S * 2 ** (attempt - 1)
                if attempt > self._retries or time.monotonic() + pause >= deadline:
                    raise
                self._metrics.triton_retries.labels(model).inc()
                await asyncio.sleep(pause)

    async def _call(
        self, model: str, inputs: Arrays, outputs: Sequence[str], deadline: float, priority: Priority
    ) -> InferResult:
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {PRIORITIES}, not {priority!r}")
        slot = self._slot(model, priority)
        waited = time.perf_counter()
        try:
            await asyncio.wait_for(slot.acquire(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise DependencyDeadline(DEPENDENCY, f"{model}: no in-flight slot before the deadline") from None
        self._metrics.triton_slot_wait_seconds.labels(model, priority).observe(time.perf_counter() - waited)
        in_flight = self._metrics.triton_in_flight.labels(model, priority)
        in_flight.inc()
        try:
            return await self._send(model, inputs, outputs, deadline, priority)
        finally:
            in_flight.dec()
            slot.release()

    async def _send(
        self, model: str, inputs: Arrays, outputs: Sequence[str], deadline: float, priority: Priority
    ) -> InferResult:
        timeout_s = deadline - time.monotonic()
        if timeout_s <= 0:
            raise DependencyDeadline(DEPENDENCY, f"{model}: deadline exceeded")
        infer_inputs = []
        for name, array in inputs.items():
            tensor = InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            infer_inputs.append(tensor)
        requested = [InferRequestedOutput(name) for name in outputs]
        started = time.perf_counter()
        outcome = "error"
        with self._tracer.start_as_current_span(
            "triton.infer",
            kind=trace.SpanKind.CLIENT,
            attributes={
                "triton.model": model,
                "triton.batch_size": len(next(iter(inputs.values()))),
                "triton.priority": priority,
                "server.address": self._url,
            },
        ):
            # W3C trace context for Triton's own tracing (--trace-config mode=opentelemetry).
            headers: dict[str, str] = {}
            propagate.inject(headers)
            try:
                # The remaining time doubles as Triton's queue timeout (microseconds):
                # once it passes nobody waits for the answer, and Triton rejects the
                # request instead of running it (queue policy in every config.pbtxt).
                result = await self._client().infer(
                    model,
                    infer_inputs,
                    outputs=requested,
                    client_timeout=timeout_s,
                    headers=headers,
                    priority=TRITON_LEVEL[priority],
                    timeout=max(1, int(timeout_s * 1_000_000)),
                )
                outcome = "ok"
            except InferenceServerException as exc:
                raise map_triton_error(exc, model) from exc
            finally:
                self._metrics.triton_seconds.labels(model, outcome).observe(time.perf_counter() - started)
        version = str(result.get_response().model_version)
        if self.versions.get(model, version) != version:
            self._info.pop(model, None)  # a new version may have a new config
        self.versions[model] = version
        return InferResult(version, {name: result.as_numpy(name) for name in outputs})
