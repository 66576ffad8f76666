"""What a service contributes to a server process.

`mmsearch serve --target all` puts the four components in one grpc.aio
server; a single target serves one. Each component names its gRPC services,
the role each RPC requires, its readiness checks, and its start/stop hooks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from services.kit.config import Settings
from services.kit.errors import Unimplemented
from services.kit.health import Check
from services.stores.provider import StoreProvider


@dataclass(frozen=True)
class Deps:
    """What every component builder is given (nothing is reached through globals)."""

    settings: Settings
    metrics: CollectorRegistry
    tracer_provider: TracerProvider | None = None
    # The process's one vector store (indexer and searcher share it).
    stores: StoreProvider | None = None

    def store_provider(self) -> StoreProvider:
        if self.stores is None:
            raise RuntimeError("this component needs Deps.stores")
        return self.stores


@dataclass
class Component:
    name: str
    # Fully qualified gRPC service name, e.g. "mmsearch.v1.Embedder".
    service_name: str
    register: Callable[[grpc.aio.Server], None]
    method_roles: dict[str, str]
    checks: list[Check] = field(default_factory=list)
    # False while the service's RPCs answer UNIMPLEMENTED: health says NOT_SERVING.
    implemented: bool = True
    # Called once the server is serving, with its bound gRPC port.
    start: Callable[[int], Awaitable[None]] | None = None
    stop: Callable[[], Awaitable[None]] | None = None


def pending_component(
    name: str,
    *,
    service: ServiceDescriptor,
    servicer_base: type,
    add_to_server: Callable[[Any, grpc.aio.Server], None],
    role: str,
    planned_in: str,
) -> Component:
    """A service whose API is defined but not built yet: every RPC answers
    UNIMPLEMENTED (after authentication) and health reports NOT_SERVING."""

    def pending(method: str) -> Callable[..., Awaitable[Any]]:
        async def handler(self: Any, request: Any, context: Any) -> Any:
            raise Unimplemented(f"{service.full_name}/{method} is not built yet ({planned_in})")

        return handler

    servicer_cls = type(
        f"Pending{servicer_base.__name__}",
        (servicer_base,),
        {m.name: pending(m.name) for m in service.methods},
    )
    servicer = servicer_cls()
    return Component(
        name=name,
        service_name=service.full_name,
        register=lambda server: add_to_server(servicer, server),
        method_roles={f"/{service.full_name}/{m.name}": role for m in service.methods},
        implemented=False,
    )
