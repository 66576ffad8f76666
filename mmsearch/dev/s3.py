"""A local S3 endpoint (moto_server, from its own venv under .cache/moto: `make moto`)
for the Tansu broker's `s3://` storage engine, so a broker killed with SIGKILL comes
back with every acknowledged record (the fault suite, tests/faults). Loopback only;
the credentials are moto's dummies."""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from mmsearch.dev.processes import StartupError, kill_group, spawn, wait_until

ROOT = Path(__file__).resolve().parents[2]
MOTO_VENV = ROOT / ".cache" / "moto" / "venv"
BUCKET = "tansu"


def moto_server_binary(venv: Path = MOTO_VENV) -> Path:
    path = venv / "bin" / "moto_server"
    if not os.access(path, os.X_OK):
        raise StartupError(f"no moto_server in {venv}: run `make moto`")
    return path


def s3_env(endpoint: str) -> dict[str, str]:
    """What Tansu's object-store client reads to reach `endpoint` over plain HTTP."""
    return {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT": endpoint,
        "AWS_ALLOW_HTTP": "true",
    }


def _bucket_created(endpoint: str, bucket: str) -> bool:
    request = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")
    try:
        with urllib.request.urlopen(request, timeout=1.0) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def start_s3(port: int, log_path: Path, *, timeout_s: float = 30.0) -> subprocess.Popen[bytes]:
    """moto_server on 127.0.0.1:port with the broker's bucket created."""
    argv = [str(moto_server_binary()), "-H", "127.0.0.1", "-p", str(port)]
    process = spawn(argv, dict(os.environ), log_path)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: _bucket_created(endpoint, BUCKET),
            timeout_s=timeout_s,
            what="moto_server",
            process=process,
            log_path=log_path,
        )
    except StartupError:
        kill_group(process)
        raise
    return process
