"""Shared fixtures: real tritonserver and Tansu broker on free loopback ports,
started once per session (or per test where a test kills them) and always
stopped by pid."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from mmsearch.dev.harness import (
    ALL_MODELS,
    MODEL_REPOSITORY,
    BrokerServer,
    TritonServer,
    start_broker_server,
    start_triton_server,
)
from mmsearch.dev.postgres import PostgresServer, start_postgres
from mmsearch.kit.config import Settings, Target, load_settings
from mmsearch.kit.server import RunningServer
from mmsearch.modules import start_target
from mmsearch.stores.provider import StoreProvider

ROOT = Path(__file__).resolve().parent.parent
# Under CI a landing must not depend on the draw: property tests take inputs derived
# from their names there; locally (and in `make fuzz`) every run explores new ones.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI", "").lower() in ("true", "1"):
    settings.load_profile("ci")
TRITON_VENV = Path(os.environ.get("MMSEARCH_STACK_TRITON_VENV", ROOT / ".venv-triton"))
DEV_TOKEN = "mmsearch-dev-token"
TENANT_B_TOKEN = "mmsearch-dev-token-tenant-b"
READONLY_TOKEN = "mmsearch-dev-token-readonly"
SAMPLES = ROOT / ".cache" / "samples"


def sample(path: str) -> bytes:
    """A bundled sample file (images/..., audio/...), fetched by `make samples`."""
    file = SAMPLES / path
    if not file.exists():
        pytest.fail(f"{file} is missing: run `make samples` (make test does)")
    return file.read_bytes()


# Models the shared Triton loads: everything the embedder's default spaces use.
EMBEDDER_MODELS = ALL_MODELS

# The harness's handles: ports, process, log, grpc_url / bootstrap, stop(); Triton's
# also kill() (SIGKILL to its process group) and restart() (same ports and models).
TritonHandle = TritonServer
BrokerHandle = BrokerServer


def start_test_triton(
    log_dir: Path, models: tuple[str, ...], repository: Path = MODEL_REPOSITORY
) -> TritonHandle:
    if not (MODEL_REPOSITORY / ".built").exists():
        pytest.fail("model_repository is not built: run `make models` (make test does)")
    return start_triton_server(log_dir, models, repository=repository, venv=TRITON_VENV)


@pytest.fixture(scope="session")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonHandle]:
    handle = start_test_triton(tmp_path_factory.mktemp("triton"), EMBEDDER_MODELS)
    yield handle
    handle.stop()


@pytest.fixture
def private_triton(tmp_path: Path) -> Iterator[TritonHandle]:
    """A Triton of the test's own, for tests that kill and restart it."""
    handle = start_test_triton(tmp_path, EMBEDDER_MODELS)
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerHandle]:
    handle = start_broker_server(tmp_path_factory.mktemp("broker"))
    yield handle
    handle.stop()


# PYTEST_MMSEARCH_STORE=pgvector runs the in-process service tests on PostgreSQL + pgvector
# instead of the embedded store: one server for the session, a fresh database per settings.
TEST_STORE = os.environ.get("PYTEST_MMSEARCH_STORE", "qdrant")  # not MMSEARCH_*: services refuse unknown ones
_test_postgres: list[PostgresServer] = []


def _fresh_postgres_database() -> str:
    import uuid

    import psycopg

    if not _test_postgres:
        _test_postgres.append(start_postgres())
    dsn = _test_postgres[0].dsn
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return dsn.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="session", autouse=True)
def _stop_test_postgres() -> Iterator[None]:
    yield
    while _test_postgres:
        _test_postgres.pop().stop()


def make_settings(**overrides: object) -> Settings:
    base: dict[str, object] = {
        "grpc_port": 0,
        # Never the working tree's .run/store: each settings object gets its own.
        "store_dir": Path(tempfile.mkdtemp(prefix="mmsearch-store-")),
        "metrics_port": 0,
        "gateway_port": 0,
        "readiness_interval_s": 0.5,
        "log_format": "console",
    }
    if TEST_STORE == "pgvector":
        base["postgres_dsn"] = _fresh_postgres_database()
    base.update(overrides)
    return load_settings({}, **base)


@dataclass
class ServiceHandle:
    running: RunningServer
    registry: CollectorRegistry
    # The target's store module (None for targets without one).
    stores: StoreProvider | None
    # The HTTP gateway's bound port (targets all and gateway).
    gateway_port: int | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.running.port}"


async def start_service(
    settings: Settings, target: Target = "all", tracer_provider: TracerProvider | None = None
) -> ServiceHandle:
    """The target as `mmsearch serve` wires it (mmsearch/modules.py), in this process."""
    registry = CollectorRegistry()
    running, assembly = await start_target(
        settings, target, registry=registry, tracer_provider=tracer_provider, serve_metrics=False
    )
    gateway_port = assembly.gateway.port if assembly.gateway is not None else None
    return ServiceHandle(running, registry, assembly.stores, gateway_port)


@pytest.fixture
async def service(triton: TritonHandle) -> AsyncIterator[ServiceHandle]:
    """All four services in this process, against the session's Triton."""
    handle = await start_service(make_settings(triton_url=triton.grpc_url))
    yield handle
    await handle.running.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """PostgreSQL + pgvector on a free loopback port in a temporary directory (removed after)."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()
