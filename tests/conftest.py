"""Shared fixtures: real tritonserver and Tansu broker on free loopback ports,
started once per session (or per test where a test kills them) and always
stopped by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from mmsearch.dev.broker import start_broker
from mmsearch.dev.processes import free_port, stop_pid
from mmsearch.dev.triton import TritonPorts, start_triton
from mmsearch.kit.component import Deps
from mmsearch.kit.config import Settings, Target, load_settings
from mmsearch.kit.server import RunningServer, start_server
from mmsearch.modules import components_for
from mmsearch.stores.provider import StoreProvider

ROOT = Path(__file__).resolve().parent.parent
TRITON_VENV = Path(os.environ.get("MMSEARCH_STACK_TRITON_VENV", ROOT / ".venv-triton"))
MODEL_REPOSITORY = ROOT / "model_repository"
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
EMBEDDER_MODELS = (
    "minilm_l6_text",
    "efficientnet_lite0_conse",
    "aisfx_audio",
    "ppocr_text",
    "minilm_maxsim_rerank",
)


@dataclass
class TritonHandle:
    ports: TritonPorts
    process: subprocess.Popen[bytes]
    log: Path
    repository: Path
    models: tuple[str, ...]

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    def kill(self) -> None:
        """SIGKILL to the whole process group (spawn starts a session): the Python
        backend stubs die with the server instead of being orphaned."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def restart(self) -> None:
        self.process = start_triton(TRITON_VENV, self.repository, self.ports, self.log, models=self.models)

    def stop(self) -> None:
        if self.process.poll() is None:
            stop_pid(self.process.pid, timeout_s=20)
            self.process.wait(timeout=5)


def start_test_triton(
    log_dir: Path, models: tuple[str, ...], repository: Path = MODEL_REPOSITORY
) -> TritonHandle:
    if not (MODEL_REPOSITORY / ".built").exists():
        pytest.fail("model_repository is not built: run `make models` (make test does)")
    ports = TritonPorts(http=free_port(), grpc=free_port(), metrics=free_port())
    log = log_dir / "triton.log"
    process = start_triton(TRITON_VENV, repository, ports, log, models=models)
    return TritonHandle(ports, process, log, repository, models)


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


@dataclass
class BrokerHandle:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerHandle]:
    port = free_port()
    process = start_broker(port, tmp_path_factory.mktemp("broker") / "broker.log")
    yield BrokerHandle(port, process)
    stop_pid(process.pid, timeout_s=10)
    process.wait(timeout=5)


def make_settings(**overrides: object) -> Settings:
    base: dict[str, object] = {
        "grpc_port": 0,
        # Never the working tree's .run/store: each settings object gets its own.
        "store_dir": Path(tempfile.mkdtemp(prefix="mmsearch-store-")),
        "metrics_port": 0,
        "readiness_interval_s": 0.5,
        "log_format": "console",
    }
    base.update(overrides)
    return load_settings({}, **base)


@dataclass
class ServiceHandle:
    running: RunningServer
    registry: CollectorRegistry
    stores: StoreProvider

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.running.port}"


async def start_service(
    settings: Settings, target: Target = "all", tracer_provider: TracerProvider | None = None
) -> ServiceHandle:
    registry = CollectorRegistry()
    stores = StoreProvider(settings)
    running = await start_server(
        settings,
        components_for(target, Deps(settings, registry, tracer_provider, stores)),
        registry=registry,
        tracer_provider=tracer_provider,
        serve_metrics=False,
    )
    return ServiceHandle(running, registry, stores)


@pytest.fixture
async def service(triton: TritonHandle) -> AsyncIterator[ServiceHandle]:
    """All four services in this process, against the session's Triton."""
    handle = await start_service(make_settings(triton_url=triton.grpc_url))
    yield handle
    await handle.running.stop()
