"""What a service contributes to a server process.

`mmsearch serve --target all` puts the four components in one grpc.aio
server; a single target serves one. Each component names its gRPC services,
the role each RPC requires, its readiness checks, and its start/stop hooks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from mmsearch.kit.config import Settings
from mmsearch.kit.health import Check
from mmsearch.stores.provider import StoreProvider


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
