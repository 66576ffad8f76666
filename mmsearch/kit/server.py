"""gRPC server bootstrap shared by every target.

Builds one grpc.aio server with the OpenTelemetry and policy interceptors, the
standard health service (driven by real readiness), server reflection and
message size limits; serves until SIGTERM/SIGINT, then drains: health turns
NOT_SERVING, new RPCs are refused, in-flight RPCs get the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from mmsearch.kit.audit import AuditSpec, AuditTrail, build_audit_trail
from mmsearch.kit.auth import TokenAuthenticator
from mmsearch.kit.component import Component, Module
from mmsearch.kit.config import Settings
from mmsearch.kit.health import LIVENESS_SERVICE, SERVING, Readiness
from mmsearch.kit.interceptor import RpcPolicyInterceptor, Translate
from mmsearch.kit.logging import get_logger
from mmsearch.kit.memory import fix_mmap_threshold
from mmsearch.kit.metrics import DependencyMetrics, MetricsServer, RpcMetrics, start_metrics_server

log = get_logger(__name__)


@dataclass
class RunningServer:
    """A started server; `port` is the bound gRPC port (useful with port 0)."""

    server: grpc.aio.Server
    port: int
    readiness: Readiness
    components: Sequence[Component]
    metrics_server: MetricsServer | None
    grace_s: float
    shutdown_delay_s: float
    # Closed after every component stopped, last opened first.
    modules: Sequence[Module] = ()
    audit: AuditTrail | None = None

    async def stop(self) -> None:
        await self.readiness.shutdown()
        if self.shutdown_delay_s:
            # Let load balancers see NOT_SERVING before the port stops accepting.
            await asyncio.sleep(self.shutdown_delay_s)
        for component in reversed(self.components):
            if component.drain is not None:
                await self._bounded(component, component.drain, "component_drain_failed")
        await self.server.stop(self.grace_s)
        for component in reversed(self.components):
            if component.stop is not None:
                await self._bounded(component, component.stop, "component_stop_failed")
        for module in reversed(self.modules):
            try:
                await module.close()
            except Exception:
                log.exception("module_close_failed", module=type(module).__name__)
        if self.audit is not None:
            await asyncio.to_thread(self.audit.close)  # flushes the Kafka sink
        if self.metrics_server is not None:
            self.metrics_server.stop()

    async def _bounded(self, component: Component, hook: Callable[[], Awaitable[None]], event: str) -> None:
        try:
            await asyncio.wait_for(hook(), self.grace_s)
        except Exception:
            log.exception(event, component=component.name)


async def start_server(
    settings: Settings,
    components: Sequence[Component],
    *,
    registry: CollectorRegistry,
    tracer_provider: TracerProvider | None = None,
    serve_metrics: bool = True,
    modules: Sequence[Module] = (),
    translate: Translate | None = None,
) -> RunningServer:
    fix_mmap_threshold(settings.malloc_mmap_threshold_bytes)
    authenticator = TokenAuthenticator.from_file(settings.auth_tokens_file)
    if settings.uses_dev_tokens:
        log.warning("dev_tokens_in_use", file=str(settings.auth_tokens_file))
    method_roles: dict[str, str] = {}
    audit_specs: dict[str, AuditSpec] = {}
    for component in components:
        method_roles.update(component.method_roles)
        audit_specs.update(component.audit)
    audit = build_audit_trail(
        registry,
        log_enabled=settings.audit_log,
        bootstrap=settings.kafka_bootstrap,
        topic=settings.audit_topic,
    )

    health = HealthServicer()
    readiness = Readiness(health, DependencyMetrics(registry), settings.readiness_interval_s)
    interceptors: list[grpc.aio.ServerInterceptor] = [
        aio_server_interceptor(  # type: ignore[no-untyped-call]
            tracer_provider=tracer_provider, filter_=filters.negate(filters.health_check())
        ),
        RpcPolicyInterceptor(
            authenticator,
            method_roles,
            RpcMetrics(registry),
            on_unavailable=readiness.report_unavailable,
            translate=translate,
            audit=audit,
            audit_specs=audit_specs,
        ),
    ]
    options: list[tuple[str, int]] = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    if settings.grpc_max_connection_age_s:
        age_ms = int(settings.grpc_max_connection_age_s * 1000)
        # In-flight RPCs on an aged connection get the shutdown grace to finish.
        grace_ms = int(settings.shutdown_grace_s * 1000)
        options += [("grpc.max_connection_age_ms", age_ms), ("grpc.max_connection_age_grace_ms", grace_ms)]
    server = grpc.aio.server(interceptors=interceptors, options=options)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for component in components:
        component.register(server)
        readiness.register(component.service_name, component.checks, implemented=component.implemented)
    reflection.enable_server_reflection(
        [
            *(c.service_name for c in components if c.grpc_service),
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    port = server.add_insecure_port(f"{settings.grpc_host}:{settings.grpc_port}")
    if port == 0:
        raise RuntimeError(f"cannot bind gRPC port {settings.grpc_host}:{settings.grpc_port}")

    await readiness.refresh()
    await health.set(LIVENESS_SERVICE, SERVING)
    metrics_server = (
        start_metrics_server(registry, settings.metrics_host, settings.metrics_port)
        if serve_metrics
        else None
    )
    await server.start()
    # After the server is up: a component may call services in this same process.
    for component in components:
        if component.start is not None:
            await component.start(port)
    readiness.start()
    log.info(
        "server_started",
        grpc_address=f"{settings.grpc_host}:{port}",
        metrics_port=metrics_server.port if metrics_server else None,
        components=[c.name for c in components],
    )
    return RunningServer(
        server=server,
        port=port,
        readiness=readiness,
        components=components,
        metrics_server=metrics_server,
        grace_s=settings.shutdown_grace_s,
        shutdown_delay_s=settings.shutdown_delay_s,
        modules=modules,
        audit=audit,
    )


async def serve_until_signalled(running: RunningServer) -> None:
    """Serve until SIGTERM or SIGINT, then drain and stop."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        log.info("shutdown_started", grace_s=running.grace_s)
        await running.stop()
        log.info("shutdown_complete")
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
