"""`mmsearch stack up|down|status`: the whole local stack on loopback ports,
tracked by pid in .run/stack.json so `down` stops exactly what `up` started.

`stack up --distributed` runs the services as separate processes instead of one `--target all`:
PostgreSQL + pgvector as the shared store and one process per replica of
mmsearch/dev/distributed.py's LAYOUT (searcher-1 on the stack's gRPC port, the others on the
following ports; metrics likewise)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from mmsearch.clients.connect import HEALTH_SERVICES, health_status
from mmsearch.dev.broker import start_broker
from mmsearch.dev.distributed import LAYOUT, Ports, replica_settings
from mmsearch.dev.mmsearch import start_mmsearch
from mmsearch.dev.postgres import PostgresServer, start_postgres
from mmsearch.dev.processes import pid_alive, port_open, stop_group
from mmsearch.dev.triton import TritonPorts, start_triton

ROOT = Path(__file__).resolve().parents[2]


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError as exc:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from exc


@dataclass(frozen=True)
class StackConfig:
    run_dir: Path
    triton_venv: Path
    model_repository: Path
    triton: TritonPorts
    broker_port: int
    grpc_port: int
    metrics_port: int
    gateway_port: int
    postgres_port: int = 55432
    distributed: bool = False

    @classmethod
    def from_env(cls, distributed: bool = False) -> StackConfig:
        return cls(
            run_dir=Path(os.environ.get("MMSEARCH_STACK_RUN_DIR", ROOT / ".run")),
            triton_venv=Path(os.environ.get("MMSEARCH_STACK_TRITON_VENV", ROOT / ".venv-triton")),
            model_repository=Path(
                os.environ.get("MMSEARCH_STACK_MODEL_REPOSITORY", ROOT / "model_repository")
            ),
            triton=TritonPorts(
                http=_env_int("MMSEARCH_STACK_TRITON_HTTP_PORT", 8000),
                grpc=_env_int("MMSEARCH_STACK_TRITON_GRPC_PORT", 8001),
                metrics=_env_int("MMSEARCH_STACK_TRITON_METRICS_PORT", 8002),
            ),
            broker_port=_env_int("MMSEARCH_STACK_BROKER_PORT", 9092),
            grpc_port=_env_int("MMSEARCH_STACK_GRPC_PORT", 50051),
            metrics_port=_env_int("MMSEARCH_STACK_METRICS_PORT", 9464),
            gateway_port=_env_int("MMSEARCH_STACK_GATEWAY_PORT", 8080),
            postgres_port=_env_int("MMSEARCH_STACK_POSTGRES_PORT", 55432),
            distributed=distributed,
        )

    @property
    def state_file(self) -> Path:
        return self.run_dir / "stack.json"

    @property
    def grpc_addr(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def _service_env(config: StackConfig) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_STACK_")}
    env.update(
        MMSEARCH_GRPC_HOST="127.0.0.1",
        MMSEARCH_GRPC_PORT=str(config.grpc_port),
        MMSEARCH_METRICS_PORT=str(config.metrics_port),
        MMSEARCH_GATEWAY_PORT=str(config.gateway_port),
        MMSEARCH_TRITON_URL=f"127.0.0.1:{config.triton.grpc}",
        MMSEARCH_KAFKA_BOOTSTRAP=f"127.0.0.1:{config.broker_port}",
        MMSEARCH_STORE_DIR=str(config.run_dir / "store"),
    )
    return env


def _read_state(config: StackConfig) -> dict[str, dict[str, object]]:
    if not config.state_file.exists():
        return {}
    state: dict[str, dict[str, object]] = json.loads(config.state_file.read_text())
    return state


def _write_state(config: StackConfig, state: dict[str, dict[str, object]]) -> None:
    config.run_dir.mkdir(parents=True, exist_ok=True)
    config.state_file.write_text(json.dumps(state, indent=2) + "\n")


PARTS = ("triton", "broker", "mmsearch")
DISTRIBUTED_PARTS = ("triton", "broker", "postgres", *(name for name, _ in LAYOUT))
# searcher-1 answers on the stack's own port (what the CLI and demo call); the rest follow.
_REPLICA_OFFSET = {
    name: i for i, name in enumerate(["searcher-1", *(n for n, _ in LAYOUT if n != "searcher-1")])
}


def parts(config: StackConfig) -> tuple[str, ...]:
    return DISTRIBUTED_PARTS if config.distributed else PARTS


def _replica_ports(config: StackConfig) -> dict[str, Ports]:
    return {
        name: Ports(config.grpc_port + offset, config.metrics_port + offset)
        for name, offset in _REPLICA_OFFSET.items()
    }


def _postgres(config: StackConfig) -> PostgresServer:
    return PostgresServer(config.postgres_port, config.run_dir / "postgres", owns_root=False)


def _part_ports(config: StackConfig, name: str) -> list[int]:
    t = config.triton
    if name in _REPLICA_OFFSET:
        ports = _replica_ports(config)[name]
        return [ports.grpc, ports.metrics]
    return {
        "triton": [t.http, t.grpc, t.metrics],
        "broker": [config.broker_port],
        "postgres": [config.postgres_port],
        "mmsearch": [config.grpc_port, config.metrics_port, config.gateway_port],
    }[name]


def _start_part(config: StackConfig, name: str) -> dict[str, object]:
    logs = config.run_dir / "logs"
    if name == "triton":
        print(f"starting tritonserver (gRPC 127.0.0.1:{config.triton.grpc}) ...", flush=True)
        triton = start_triton(config.triton_venv, config.model_repository, config.triton, logs / "triton.log")
        return {"pid": triton.pid, "ports": asdict(config.triton), "log": str(logs / "triton.log")}
    if name == "broker":
        print(f"starting Kafka-protocol broker (127.0.0.1:{config.broker_port}) ...", flush=True)
        broker = start_broker(config.broker_port, logs / "broker.log")
        return {"pid": broker.pid, "port": config.broker_port, "log": str(logs / "broker.log")}
    if name == "postgres":
        print(f"starting PostgreSQL + pgvector (127.0.0.1:{config.postgres_port}) ...", flush=True)
        server = start_postgres(config.run_dir / "postgres", config.postgres_port)
        return {"pid": server.postmaster_pid(), "port": config.postgres_port, "log": str(server.log_path)}
    if name in _REPLICA_OFFSET:
        return _start_replica(config, name)
    print(f"starting mmsearch --target all (gRPC {config.grpc_addr}) ...", flush=True)
    service = start_mmsearch("all", _service_env(config), logs / "mmsearch.log", config.grpc_addr)
    return {
        "pid": service.pid,
        "grpc_port": config.grpc_port,
        "metrics_port": config.metrics_port,
        "gateway_port": config.gateway_port,
        "log": str(logs / "mmsearch.log"),
    }


def _start_replica(config: StackConfig, name: str) -> dict[str, object]:
    target = dict(LAYOUT)[name]
    ports = _replica_ports(config)
    env = _service_env(config)
    env.update(
        replica_settings(
            name,
            ports,
            work_dir=config.run_dir,
            triton_url=f"127.0.0.1:{config.triton.grpc}",
            bootstrap=f"127.0.0.1:{config.broker_port}",
            postgres_dsn=_postgres(config).dsn,
            # Every searcher replica must sign page tokens with the same key; a stable one for the
            # local stack (loopback only, like the development tokens).
            page_token_key="mmsearch-local-stack-page-token-key",
        )
    )
    log = config.run_dir / "logs" / f"{name}.log"
    addr = f"127.0.0.1:{ports[name].grpc}"
    print(f"starting mmsearch --target {target} as {name} (gRPC {addr}) ...", flush=True)
    process = start_mmsearch(target, env, log, addr, timeout_s=180)
    return {
        "pid": process.pid,
        "target": target,
        "grpc_port": ports[name].grpc,
        "metrics_port": ports[name].metrics,
        "log": str(log),
    }


def _stop_part(config: StackConfig, name: str, entry: dict[str, object]) -> bool:
    if name == "postgres":
        server = PostgresServer(int(str(entry["port"])), config.run_dir / "postgres", owns_root=False)
        server.stop()
        return not pid_alive(int(str(entry["pid"])))
    return stop_group(int(str(entry["pid"])), timeout_s=20)


def up(config: StackConfig) -> int:
    """Start what is not running. A part that died is restarted alone (its leftover
    process group, e.g. a killed Triton's backend stubs, stopped first): restarting
    the others would, among other things, empty the in-memory broker."""
    state = _read_state(config)
    wanted = parts(config)
    if state and set(state) - set(wanted):
        mode = "distributed" if "postgres" in state else "single-process"
        print(f"the stack is running in {mode} mode: `mmsearch stack down` first", file=sys.stderr)
        return 1
    running = {n: e for n, e in state.items() if n in wanted and pid_alive(int(str(e["pid"])))}
    if len(running) == len(wanted):
        print(f"stack already running (state in {config.state_file}); `mmsearch stack down` stops it")
        return 0
    for name, entry in state.items():
        if name not in running:
            _stop_part(config, name, entry)  # leftovers of a dead part
            print(f"{name} (pid {entry['pid']}) was not running: restarting it")
    missing = [n for n in wanted if n not in running]
    busy = [port for n in missing for port in _part_ports(config, n) if port_open("127.0.0.1", port)]
    if busy:
        print(
            f"cannot start the stack: port(s) {busy} already in use (see MMSEARCH_STACK_* in README)",
            file=sys.stderr,
        )
        return 1
    state = dict(running)
    try:
        for name in missing:
            state[name] = _start_part(config, name)
            _write_state(config, state)
    except Exception as exc:  # anything: stop what was started, leave nothing behind
        print(f"stack failed to start: {exc}", file=sys.stderr)
        down(config)
        return 1
    print(
        f"stack is up: gRPC {config.grpc_addr}, console http://127.0.0.1:{config.gateway_port}/, "
        f"metrics http://127.0.0.1:{config.metrics_port}/metrics"
    )
    return 0


def down(config: StackConfig) -> int:
    state = _read_state(config)
    if not state:
        print("stack is not running")
        return 0
    clean = True
    order = DISTRIBUTED_PARTS if "postgres" in state else PARTS
    for name in reversed(order):
        entry = state.get(name)
        if entry is None:
            continue
        stopped = _stop_part(config, name, entry)
        clean &= stopped
        print(f"stopped {name} (pid {entry['pid']}){'' if stopped else ' with SIGKILL'}")
    config.state_file.unlink(missing_ok=True)
    return 0 if clean else 1


def status(config: StackConfig) -> int:
    state = _read_state(config)
    if not state:
        print("stack is not running")
        return 1
    ok = True
    for name, entry in state.items():
        alive = pid_alive(int(str(entry["pid"])))
        ok &= alive
        print(f"{name:9s} pid {entry['pid']:>7}  {'running' if alive else 'DEAD'}  log {entry.get('log')}")
    if "mmsearch" in state:
        for service in HEALTH_SERVICES:
            print(f"  health {service or '(overall)':26s} {health_status(config.grpc_addr, service)}")
    for name, entry in state.items():
        if "target" in entry:
            addr = f"127.0.0.1:{entry['grpc_port']}"
            print(f"  health {name:12s} {entry['target']:9s} {addr:16s} {health_status(addr, '')}")
    return 0 if ok else 1
