"""The services as separate processes, the deployment the design card describes, on loopback:
Triton, the Kafka-protocol broker, PostgreSQL + pgvector (the shared store), and one
`mmsearch serve --target T` process per replica: one embedder, one reranker, two searchers and
two indexers in one consumer group, each on its own gRPC and metrics port. The services find
each other through their ordinary client settings (MMSEARCH_*_EMBEDDER_ADDR / _RERANKER_ADDR),
the searchers share a page-token key (a page from one is valid at the other).

`running_distributed_stack(work_dir)` starts it and always stops it; Triton, the broker and
PostgreSQL can be given (a test session's) or are started here. `DistributedStack.kill`
(SIGKILL to a replica's process group) and `.restart` (same ports and settings) are for fault
tests. `mmsearch stack up --distributed` starts the same layout for a person
(mmsearch/dev/stack.py)."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mmsearch.dev.harness import (
    ALL_MODELS,
    MODEL_REPOSITORY,
    TRITON_VENV,
    BrokerServer,
    ServiceProcess,
    TritonServer,
    start_broker_server,
    start_service_process,
    start_triton_server,
)
from mmsearch.dev.postgres import start_postgres
from mmsearch.dev.processes import StartupError, free_port

# (replica name, target), in start order: what others call first, the indexers last.
LAYOUT: tuple[tuple[str, str], ...] = (
    ("embedder", "embedder"),
    ("reranker", "reranker"),
    ("searcher-1", "searcher"),
    ("searcher-2", "searcher"),
    ("indexer-1", "indexer"),
    ("indexer-2", "indexer"),
)


@dataclass(frozen=True)
class Ports:
    grpc: int
    metrics: int


def replica_settings(
    name: str,
    ports: Mapping[str, Ports],
    *,
    work_dir: Path,
    triton_url: str,
    bootstrap: str,
    postgres_dsn: str,
    page_token_key: str,
) -> dict[str, str]:
    """The MMSEARCH_* settings of one replica: its own ports, the shared store and broker, and
    the addresses of the embedder and reranker processes."""
    embedder = f"127.0.0.1:{ports['embedder'].grpc}"
    reranker = f"127.0.0.1:{ports['reranker'].grpc}"
    return {
        "MMSEARCH_GRPC_HOST": "127.0.0.1",
        "MMSEARCH_GRPC_PORT": str(ports[name].grpc),
        "MMSEARCH_METRICS_PORT": str(ports[name].metrics),
        "MMSEARCH_SERVICE_NAME": f"mmsearch-{name}",
        "MMSEARCH_TRITON_URL": triton_url,
        "MMSEARCH_KAFKA_BOOTSTRAP": bootstrap,
        "MMSEARCH_POSTGRES_DSN": postgres_dsn,
        # Unused with PostgreSQL; a directory of its own so no two processes ever share one.
        "MMSEARCH_STORE_DIR": str(work_dir / name / "store"),
        "MMSEARCH_INDEXER_EMBEDDER_ADDR": embedder,
        "MMSEARCH_INDEXER_RERANKER_ADDR": reranker,
        "MMSEARCH_SEARCHER_EMBEDDER_ADDR": embedder,
        "MMSEARCH_SEARCHER_RERANKER_ADDR": reranker,
        "MMSEARCH_SEARCH_PAGE_TOKEN_KEY": page_token_key,
    }


class _Stoppable(Protocol):
    def stop(self) -> object: ...


@dataclass
class DistributedStack:
    work_dir: Path
    triton_url: str
    bootstrap: str
    postgres_dsn: str
    replicas: dict[str, ServiceProcess] = field(default_factory=dict)
    settings: dict[str, dict[str, str]] = field(default_factory=dict)
    targets: dict[str, str] = field(default_factory=dict)
    startup_timeout_s: float = 180.0
    # What this stack started besides the replicas (stopped last, in reverse order).
    owned: list[_Stoppable] = field(default_factory=list)

    def addr(self, name: str) -> str:
        return self.replicas[name].addr

    def names(self, target: str) -> list[str]:
        return [name for name, t in self.targets.items() if t == target]

    def start(self, *names: str) -> None:
        """Start replicas (concurrently); ready when each reports SERVING."""

        def one(name: str) -> ServiceProcess:
            process, _ = start_service_process(
                self.work_dir / name,
                self.settings[name],
                target=self.targets[name],
                timeout_s=self.startup_timeout_s,
            )
            return process

        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            futures = {name: pool.submit(one, name) for name in names}
            errors = []
            for name, future in futures.items():
                try:
                    self.replicas[name] = future.result()
                except Exception as exc:  # the others still get recorded, so stop() stops them
                    errors.append(f"{name}: {exc}")
        if errors:
            raise StartupError("; ".join(errors))

    def kill(self, name: str) -> None:
        """kill -9 of a replica and its process group (a crash, no shutdown)."""
        process = self.replicas[name].process
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def restart(self, name: str) -> None:
        """Start a replica again on its ports with its settings; ready when it returns."""
        self.start(name)

    def stop(self) -> None:
        """Every replica at once (each drains on SIGTERM), then what the stack started."""
        replicas = list(self.replicas.values())
        if replicas:
            with ThreadPoolExecutor(max_workers=len(replicas)) as pool:
                list(pool.map(lambda replica: replica.stop(), replicas))
        for part in reversed(self.owned):
            part.stop()


@contextlib.contextmanager
def running_distributed_stack(
    work_dir: Path,
    *,
    triton: TritonServer | None = None,
    broker: BrokerServer | None = None,
    postgres_dsn: str = "",
    models: Sequence[str] = ALL_MODELS,
    env_overrides: Mapping[str, str] | None = None,
    layout: Sequence[tuple[str, str]] = LAYOUT,
    model_repository: Path = MODEL_REPOSITORY,
    triton_venv: Path = TRITON_VENV,
    startup_timeout_s: float = 180.0,
) -> Iterator[DistributedStack]:
    """The layout's replicas on free loopback ports, against the given Triton, broker and
    PostgreSQL, or ones started here (and stopped on the way out) when not given.
    `env_overrides` are added to every replica's settings. Replicas start in two waves (the
    embedder and reranker, then the rest). Stops every process it started, error or not."""
    work_dir.mkdir(parents=True, exist_ok=True)
    stack = DistributedStack(work_dir, "", "", postgres_dsn, startup_timeout_s=startup_timeout_s)
    try:
        if broker is None:
            broker = start_broker_server(work_dir)
            stack.owned.append(broker)
        if not postgres_dsn:
            server = start_postgres()
            stack.owned.append(server)
            stack.postgres_dsn = server.dsn
        if triton is None:
            triton = start_triton_server(
                work_dir, models, repository=model_repository, venv=triton_venv, timeout_s=startup_timeout_s
            )
            stack.owned.append(triton)
        stack.triton_url, stack.bootstrap = triton.grpc_url, broker.bootstrap
        ports = {name: Ports(free_port(), free_port()) for name, _ in layout}
        key = secrets.token_hex(16)
        for name, target in layout:
            settings = replica_settings(
                name,
                ports,
                work_dir=work_dir,
                triton_url=stack.triton_url,
                bootstrap=stack.bootstrap,
                postgres_dsn=stack.postgres_dsn,
                page_token_key=key,
            )
            settings.update(env_overrides or {})
            stack.settings[name] = settings
            stack.targets[name] = target
        first = [name for name, target in layout if target in ("embedder", "reranker")]
        stack.start(*first)
        stack.start(*(name for name, _ in layout if name not in first))
        yield stack
    finally:
        stack.stop()
