"""`mmsearch serve` as a background process, ready when its overall health is SERVING."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from mmsearch.clients.connect import health_status
from mmsearch.dev.processes import kill_group, spawn, wait_until


def start_mmsearch(
    target: str,
    env: Mapping[str, str],
    log_path: Path,
    addr: str,
    timeout_s: float = 60.0,
    *,
    health_service: str = "",
) -> subprocess.Popen[bytes]:
    """Start `mmsearch serve --target TARGET` and wait until `health_service` (default:
    the overall health) is SERVING; kill it if it never is."""
    process = spawn([sys.executable, "-m", "mmsearch.cli", "serve", "--target", target], env, log_path)
    try:
        wait_until(
            lambda: health_status(addr, health_service, 0.5) == "SERVING",
            timeout_s=timeout_s,
            what=f"mmsearch --target {target}" + (f" ({health_service})" if health_service else ""),
            process=process,
            log_path=log_path,
        )
    except BaseException:
        kill_group(process)
        raise
    return process
