"""What a service contributes to a server process.

`mmsearch serve --target all` puts the four components in one grpc.aio
server; a single target serves one. Each component names its gRPC services,
the role each RPC requires, its readiness checks, and its start/stop hooks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import grpc
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from mmsearch.kit.audit import AuditSpec
from mmsearch.kit.config import Settings
from mmsearch.kit.health import Check


@dataclass(frozen=True)
class Deps:
    """What every component builder is given (nothing is reached through globals).
    Modules a component needs beyond these (the store) are passed to its builder
    by the module table, mmsearch/modules.py."""

    settings: Settings
    metrics: CollectorRegistry
    tracer_provider: TracerProvider | None = None


@dataclass
class Component:
    name: str
    # Fully qualified gRPC service name, e.g. "mmsearch.v1.Embedder".
    service_name: str
    register: Callable[[grpc.aio.Server], None]
    method_roles: dict[str, str]
    # The RPCs written to the audit trail (admin and data access), and how (mmsearch/kit/audit.py).
    audit: dict[str, AuditSpec] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    # False while the service's RPCs answer UNIMPLEMENTED: health says NOT_SERVING.
    implemented: bool = True
    # False for a component that serves no gRPC service of its own (the HTTP gateway):
    # it still has a health entry under `service_name`, but is not listed by reflection.
    grpc_service: bool = True
    # Called once the server is serving, with its bound gRPC port.
    start: Callable[[int], Awaitable[None]] | None = None
    # Called at shutdown while the server still serves (so work in flight can still
    # call services in this process): stop taking background work, finish what is in
    # flight. Bounded by the grace period; cut short, the work is replayed later.
    drain: Callable[[], Awaitable[None]] | None = None
    # Called after the server stopped: release channels and clients.
    stop: Callable[[], Awaitable[None]] | None = None


class Module(Protocol):
    """Something components share and that outlives them (the store): opened
    before the first component that needs it, closed after the last one stopped."""

    async def close(self) -> None: ...
