#!/usr/bin/env python3
"""Make the nvidia-pytriton wheel's tritonserver able to run Python-backend models.

Run with the Triton venv's interpreter. The wheel ships the Python backend
without its stub; the stub built for this interpreter's version is copied in
(otherwise Triton fails with "triton_python_backend_stub is not found").
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytriton


def main() -> None:
    server = Path(pytriton.__file__).parent / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise SystemExit(f"no python backend stub for Python {version} in {stub.parent.parent}")
    target = server / "backends" / "python" / "triton_python_backend_stub"
    shutil.copy2(stub, target)
    target.chmod(0o755)
    print(f"tritonserver: {server / 'bin' / 'tritonserver'}")
    print(f"python backend stub for {version}: {target}")


if __name__ == "__main__":
    main()
