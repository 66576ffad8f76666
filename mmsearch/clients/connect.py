"""Connecting to a running mmsearch as a user does: the address, token and
broker the CLI, the demo, the local stack and tests default to, and health."""

from __future__ import annotations

import os
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Documented in README.md; accepted only while the server uses the bundled
# development token file (local mode).
DEV_TOKEN = "mmsearch-dev-token"
DEFAULT_ADDR = "127.0.0.1:50051"
# "" is the overall status; then every mmsearch gRPC service.
HEALTH_SERVICES = (
    "",
    "mmsearch.v1.Embedder",
    "mmsearch.v1.IndexerAdmin",
    "mmsearch.v1.Searcher",
    "mmsearch.v1.Reranker",
    # The HTTP gateway's entry (SERVING while the Searcher it fronts is).
    "mmsearch.v1.Gateway",
)


def default_addr() -> str:
    """MMSEARCH_CLIENT_ADDR, else the local stack's port (MMSEARCH_STACK_GRPC_PORT), else 50051."""
    if "MMSEARCH_CLIENT_ADDR" in os.environ:
        return os.environ["MMSEARCH_CLIENT_ADDR"]
    if "MMSEARCH_STACK_GRPC_PORT" in os.environ:
        return f"127.0.0.1:{os.environ['MMSEARCH_STACK_GRPC_PORT']}"
    return DEFAULT_ADDR


def default_bootstrap() -> str:
    """MMSEARCH_CLIENT_BOOTSTRAP, else the local stack's broker (MMSEARCH_STACK_BROKER_PORT), else 9092."""
    if "MMSEARCH_CLIENT_BOOTSTRAP" in os.environ:
        return os.environ["MMSEARCH_CLIENT_BOOTSTRAP"]
    return f"127.0.0.1:{os.environ.get('MMSEARCH_STACK_BROKER_PORT', '9092')}"


def default_token() -> str:
    return os.environ.get("MMSEARCH_CLIENT_TOKEN", DEV_TOKEN)


def auth_metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def health_status(addr: str, service: str = "", timeout_s: float = 1.0) -> str:
    """The health status name of `service` at `addr`, or an error string."""
    with grpc.insecure_channel(addr) as channel:
        # The typeshed stub declares no methods on HealthStub.
        stub: Any = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            return f"ERROR({exc.code().name})"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
