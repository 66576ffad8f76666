"""The local stack on free loopback ports for tests and benchmarks, as one
context manager: `running_stack(work_dir, ...)` starts the Tansu broker (topics
pre-created), tritonserver over the model repository (only the requested
models) and `mmsearch serve` configured by environment, yields a `Stack`
(addresses, metrics URLs, pids, logs, the service's environment) and stops
everything by process group on the way out, error or not.

The pieces are usable alone: `start_broker_server`, `start_triton_server`,
`start_service_process` return handles with `stop()`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from mmsearch.dev.broker import CONTENT_TOPIC, create_topics, start_broker
from mmsearch.dev.mmsearch import start_mmsearch
from mmsearch.dev.processes import free_port, stop_group
from mmsearch.dev.s3 import BUCKET, s3_env, start_s3
from mmsearch.dev.triton import TritonPorts, start_triton

ROOT = Path(__file__).resolve().parents[2]
MODEL_REPOSITORY = ROOT / "model_repository"
TRITON_VENV = Path(os.environ.get("MMSEARCH_STACK_TRITON_VENV", ROOT / ".venv-triton"))

# Every model `mmsearch serve --target all` needs to report SERVING (the
# embedder's default spaces, OCR, the reranker).
ALL_MODELS = (
    "minilm_l6_text",
    "efficientnet_lite0_conse",
    "aisfx_audio",
    "ppocr_text",
    "minilm_maxsim_rerank",
)


@dataclass
class BrokerServer:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout_s: float = 10.0) -> bool:
        return _stop(self.process, timeout_s)


def start_broker_server(
    log_dir: Path, *, topics: Sequence[str] = (), timeout_s: float = 30.0
) -> BrokerServer:
    """Tansu on a free port with content.v1 and its DLQ (and `topics`) created."""
    port = free_port()
    log = log_dir / "broker.log"
    process = start_broker(port, log, timeout_s=timeout_s)
    server = BrokerServer(port, process, log)
    if topics:
        try:
            create_topics(server.bootstrap, list(topics))
        except BaseException:
            server.stop()
            raise
    return server


@dataclass
class S3Server:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout_s: float = 10.0) -> bool:
        return _stop(self.process, timeout_s)


@dataclass
class DurableBroker(BrokerServer):
    """Tansu storing in a local S3 (moto_server): a SIGKILLed broker restarts with
    every acknowledged record and committed offset. `port` is what clients are told
    (a proxy's port when one stands in front), `listen_port` where Tansu listens."""

    s3: S3Server
    listen_port: int

    def kill(self) -> None:
        """SIGKILL (a crash); the S3 endpoint, its disk, stays up."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def restart(self, timeout_s: float = 30.0) -> None:
        self.process = start_broker(
            self.listen_port,
            self.log,
            timeout_s,
            storage=f"s3://{BUCKET}/",
            env=s3_env(self.s3.endpoint),
            advertised_port=self.port,
        )

    def stop(self, timeout_s: float = 10.0) -> bool:
        clean = _stop(self.process, timeout_s)
        return self.s3.stop() and clean


def start_durable_broker_server(
    log_dir: Path,
    *,
    topics: Sequence[str] = (),
    advertised_port: int | None = None,
    listen_port: int | None = None,
    timeout_s: float = 30.0,
) -> DurableBroker:
    """moto_server and Tansu over `s3://` on free ports (or `listen_port`), telling
    clients `advertised_port` (default: where it listens), content topics created."""
    s3_port = free_port()
    s3 = S3Server(s3_port, start_s3(s3_port, log_dir / "s3.log", timeout_s=timeout_s), log_dir / "s3.log")
    listen = listen_port or free_port()
    port = advertised_port or listen
    try:
        process = start_broker(
            listen,
            log_dir / "broker.log",
            timeout_s,
            storage=f"s3://{BUCKET}/",
            env=s3_env(s3.endpoint),
            advertised_port=port,
        )
    except BaseException:
        s3.stop()
        raise
    broker = DurableBroker(port, process, log_dir / "broker.log", s3, listen)
    if topics:
        try:
            create_topics(broker.bootstrap, list(topics))
        except BaseException:
            broker.stop()
            raise
    return broker


@dataclass
class TritonServer:
    ports: TritonPorts
    process: subprocess.Popen[bytes]
    log: Path
    repository: Path
    models: tuple[str, ...]
    venv: Path = TRITON_VENV

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.metrics}/metrics"

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL to the whole process group (an outage): the Python-backend
        stubs die with the server instead of being orphaned."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def restart(self, timeout_s: float = 120.0) -> None:
        """Start it again on the same ports, repository and models."""
        self.process = start_triton(
            self.venv, self.repository, self.ports, self.log, models=self.models, timeout_s=timeout_s
        )

    def stop(self, timeout_s: float = 20.0) -> bool:
        return _stop(self.process, timeout_s)


def start_triton_server(
    log_dir: Path,
    models: Sequence[str] = ALL_MODELS,
    *,
    repository: Path = MODEL_REPOSITORY,
    venv: Path = TRITON_VENV,
    timeout_s: float = 120.0,
) -> TritonServer:
    """tritonserver on free ports, loading only `models` from `repository`; ready when it returns."""
    ports = TritonPorts(http=free_port(), grpc=free_port(), metrics=free_port())
    log = log_dir / "triton.log"
    process = start_triton(venv, repository, ports, log, models=tuple(models), timeout_s=timeout_s)
    return TritonServer(ports, process, log, repository, tuple(models), venv)


@dataclass
class ServiceProcess:
    target: str
    grpc_port: int
    metrics_port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout_s: float = 20.0) -> bool:
        return _stop(self.process, timeout_s)


def service_settings(
    work_dir: Path,
    *,
    grpc_port: int,
    metrics_port: int,
    triton_url: str,
    bootstrap: str,
    topic: str = CONTENT_TOPIC,
    gateway_port: int = 0,
) -> dict[str, str]:
    """The MMSEARCH_* settings that point a service at this stack (the HTTP gateway
    of `all` on `gateway_port`, by default any free port)."""
    settings = {
        "MMSEARCH_GRPC_HOST": "127.0.0.1",
        "MMSEARCH_GRPC_PORT": str(grpc_port),
        "MMSEARCH_GATEWAY_PORT": str(gateway_port),
        "MMSEARCH_METRICS_PORT": str(metrics_port),
        "MMSEARCH_TRITON_URL": triton_url,
        "MMSEARCH_KAFKA_BOOTSTRAP": bootstrap,
        "MMSEARCH_STORE_DIR": str(work_dir / "store"),
    }
    if topic != CONTENT_TOPIC:
        settings.update(
            MMSEARCH_CONTENT_TOPIC=topic,
            MMSEARCH_DLQ_TOPIC=f"{topic}.dlq",
            MMSEARCH_INDEXER_GROUP=f"indexer-{topic}",
        )
    return settings


def start_service_process(
    log_dir: Path,
    settings: Mapping[str, str],
    *,
    target: str = "all",
    health_service: str = "",
    timeout_s: float = 120.0,
) -> tuple[ServiceProcess, dict[str, str]]:
    """`mmsearch serve --target TARGET` with the environment minus any MMSEARCH_* of the
    caller's, plus `settings` (which must hold the gRPC and metrics ports); ready when
    `health_service` (default the overall health) is SERVING. Returns it and its env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")}
    env.update(settings)
    grpc_port, metrics_port = int(env["MMSEARCH_GRPC_PORT"]), int(env["MMSEARCH_METRICS_PORT"])
    log = log_dir / "serve.log"
    addr = f"127.0.0.1:{grpc_port}"
    process = start_mmsearch(target, env, log, addr, timeout_s=timeout_s, health_service=health_service)
    return ServiceProcess(target, grpc_port, metrics_port, process, log), env


@dataclass(frozen=True)
class Stack:
    """What `running_stack` started. Absent parts are None; the properties of an
    absent part raise."""

    work_dir: Path
    topic: str
    broker: BrokerServer | None
    triton: TritonServer | None
    service: ServiceProcess | None
    # The MMSEARCH_* settings given to the service (including env_overrides)
    # and its whole environment; empty without a service.
    settings: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def addr(self) -> str:
        return _need(self.service, "service").addr

    @property
    def metrics_url(self) -> str:
        return _need(self.service, "service").metrics_url

    @property
    def bootstrap(self) -> str:
        return _need(self.broker, "broker").bootstrap

    @property
    def triton_url(self) -> str:
        return _need(self.triton, "triton").grpc_url

    @property
    def triton_metrics_url(self) -> str:
        return _need(self.triton, "triton").metrics_url

    @property
    def pids(self) -> dict[str, int]:
        """Root pid of each started process: "broker", "triton", "serve"."""
        return {name: part.pid for name, part in self._parts() if part is not None}

    @property
    def logs(self) -> dict[str, Path]:
        return {name: part.log for name, part in self._parts() if part is not None}

    def _parts(self) -> list[tuple[str, BrokerServer | TritonServer | ServiceProcess | None]]:
        return [("broker", self.broker), ("triton", self.triton), ("serve", self.service)]


@contextlib.contextmanager
def running_stack(
    work_dir: Path,
    *,
    models: Sequence[str] = ALL_MODELS,
    env_overrides: Mapping[str, str] | None = None,
    with_broker: bool = True,
    with_service: bool = True,
    target: str = "all",
    health_service: str = "",
    topic: str = CONTENT_TOPIC,
    model_repository: Path = MODEL_REPOSITORY,
    triton_venv: Path = TRITON_VENV,
    startup_timeout_s: float = 300.0,
) -> Iterator[Stack]:
    """Start the broker (if `with_broker`; content.v1 and its DLQ, plus `topic` and
    `topic`.dlq, created), tritonserver (if `models` is not empty; only those
    models) and `mmsearch serve --target TARGET` (if `with_service`; ready when
    `health_service`, default the overall health, is SERVING) with its store in
    work_dir/store, logs in work_dir. Service settings: those `service_settings`
    gives, then `env_overrides`. Without Triton the service is pointed at a free
    port (nothing listens there); without a broker its Kafka bootstrap is empty.
    Stops everything (service, Triton, broker; each with its process group) on exit."""
    work_dir.mkdir(parents=True, exist_ok=True)
    broker: BrokerServer | None = None
    triton: TritonServer | None = None
    service: ServiceProcess | None = None
    try:
        if with_broker:
            extra = [topic, f"{topic}.dlq", f"{topic}.enrich"] if topic != CONTENT_TOPIC else []
            broker = start_broker_server(work_dir, topics=extra, timeout_s=min(startup_timeout_s, 60.0))
        if models:
            triton = start_triton_server(
                work_dir, models, repository=model_repository, venv=triton_venv, timeout_s=startup_timeout_s
            )
        settings: dict[str, str] = {}
        env: dict[str, str] = {}
        if with_service:
            settings = service_settings(
                work_dir,
                grpc_port=free_port(),
                metrics_port=free_port(),
                triton_url=triton.grpc_url if triton else f"127.0.0.1:{free_port()}",
                bootstrap=broker.bootstrap if broker else "",
                topic=topic,
            )
            settings.update(env_overrides or {})
            service, env = start_service_process(
                work_dir, settings, target=target, health_service=health_service, timeout_s=startup_timeout_s
            )
        yield Stack(work_dir, topic, broker, triton, service, settings, env)
    finally:
        for part in (service, triton, broker):
            if part is not None:
                part.stop()


def _stop(process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    if process.poll() is not None and Path(f"/proc/{process.pid}").exists():
        # Exited and reaped, and its pid is in use again: then nothing is left in its
        # group (a pid is not reused while it names a live process group).
        return True
    clean = stop_group(process.pid, timeout_s=timeout_s)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    return clean


T = TypeVar("T")


def _need(part: T | None, what: str) -> T:
    if part is None:
        raise RuntimeError(f"this stack was started without a {what}")
    return part
