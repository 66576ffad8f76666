"""Starting, waiting for and stopping background processes by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class StartupError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def spawn(argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a process in its own session (so signals to us do not reach it), logging to a file."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    process: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise StartupError(f"{what} exited with code {process.returncode}{_log_tail(log_path)}")
        if ready():
            return
        time.sleep(0.1)
    raise StartupError(f"{what} not ready after {timeout_s:.0f}s{_log_tail(log_path)}")


def _log_tail(log_path: Path | None, lines: int = 15) -> str:
    if log_path is None or not log_path.exists():
        return ""
    tail = log_path.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last lines of {log_path} ---\n" + "\n".join(tail)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it has exited for our purposes.
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return True


def stop_pid(pid: int, *, timeout_s: float = 15.0, sig: int = signal.SIGTERM) -> bool:
    """Send `sig`, wait up to timeout_s, then SIGKILL. True if it stopped within the timeout."""
    if not pid_alive(pid):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(pid)
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        # A process we spawned leads its own session: kill the group, so that its
        # children (Triton's Python-backend stubs) are not left orphaned.
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    _reap(pid)
    return False


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            state, _ppid, pgrp = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
            if int(pgrp) == pgid and state != "Z":
                members.append(int(entry.name))
    return members


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process `spawn` started and everything in its process group; reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def stop_group(pid: int, *, timeout_s: float = 15.0) -> bool:
    """Stop a process that leads its own process group (`spawn` starts it so) and
    everything left in that group: SIGTERM to the leader, SIGKILL after timeout_s,
    then SIGKILL to members that outlived it (Triton's Python-backend stubs when
    tritonserver had to be killed). True if the leader stopped within the timeout."""
    clean = stop_pid(pid, timeout_s=timeout_s)
    # While any member lives the kernel does not reuse `pid` as a group id, so this
    # only reaches processes of the group we started.
    deadline = time.monotonic() + 5.0
    while group_members(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return clean


def _reap(pid: int) -> None:
    # Only our own children can be reaped; others are reaped by their parent or init.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
