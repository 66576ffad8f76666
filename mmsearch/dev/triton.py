"""tritonserver from the nvidia-pytriton wheel, run on CPU on loopback.

See docs/architecture.md ("Triton on CPU"): the wheel's server needs the Python
backend stub for this interpreter (copied by scripts/prepare_triton_venv.py),
the Triton venv's bin first on PATH (the stub finds its Python there), and the
interpreter's shared-library directory on LD_LIBRARY_PATH.
"""

from __future__ import annotations

import os
import subprocess
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mmsearch.dev.processes import StartupError, kill_group, spawn, wait_until


@dataclass(frozen=True)
class TritonPorts:
    http: int
    grpc: int
    metrics: int


def triton_home(venv: Path) -> Path:
    candidates = sorted(venv.glob("lib/python3*/site-packages/pytriton/tritonserver"))
    if not candidates:
        raise StartupError(f"no tritonserver in {venv}: run `make install`")
    return candidates[-1]


def _python_libdir(venv: Path) -> str:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def triton_command(
    venv: Path, model_repository: Path, ports: TritonPorts, models: Sequence[str] = ("*",)
) -> tuple[list[str], dict[str, str]]:
    home = triton_home(venv)
    argv = [
        str(home / "bin" / "tritonserver"),
        f"--model-repository={model_repository}",
        f"--backend-directory={home / 'backends'}",
        "--allow-gpu-metrics=false",
        "--pinned-memory-pool-byte-size=0",
        "--cuda-memory-pool-byte-size=0:0",
        "--http-address=127.0.0.1",
        f"--http-port={ports.http}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={ports.grpc}",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={ports.metrics}",
        # Explicit control: models can be (re)loaded one by one without a restart.
        "--model-control-mode=explicit",
        *(f"--load-model={model}" for model in models),
        "--exit-timeout-secs=10",
        "--log-verbose=0",
    ]
    env = dict(os.environ)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (_python_libdir(venv), env.get("LD_LIBRARY_PATH")) if p
    )
    # The model stubs inherit it: freed input buffers (a 4096 x 4096 OCR page) go back to
    # the OS instead of staying in glibc's heap (as mmsearch/kit/memory.py does for the
    # services). Production Triton images need the same variable.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(1024 * 1024))
    return argv, env


def triton_ready(ports: TritonPorts) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ports.http}/v2/health/ready", timeout=0.5) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


def start_triton(
    venv: Path,
    model_repository: Path,
    ports: TritonPorts,
    log_path: Path,
    *,
    timeout_s: float = 120.0,
    models: Sequence[str] = ("*",),
) -> subprocess.Popen[bytes]:
    argv, env = triton_command(venv, model_repository, ports, models)
    process = spawn(argv, env, log_path)
    try:
        wait_until(
            lambda: triton_ready(ports),
            timeout_s=timeout_s,
            what="tritonserver",
            process=process,
            log_path=log_path,
        )
    except StartupError:
        kill_group(process)
        raise
    return process
