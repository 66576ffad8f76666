"""Files from a Debian package, without installing it (benchmark data, tools: kcat): `apt-get
download` at a pinned version (no root), sha256 check, `dpkg-deb -x` into a
cache folder. Needs the Debian package lists (`apt-get update`, as root, once per
machine) the first time; afterwards it works from the cache alone."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_deb(
    cache: Path, package: str, version: str, *, deb_name: str, sha256: str, complete: Callable[[Path], bool]
) -> Path:
    """Unpack the package under cache/unpacked (once) and return that root;
    `complete(root)` says whether the files a caller needs are there."""
    root = cache / "unpacked"
    done = cache / ".done"
    if done.exists() and complete(root):
        return root
    cache.mkdir(parents=True, exist_ok=True)
    deb = cache / deb_name
    if not (deb.exists() and sha256_of(deb) == sha256):
        download = ["apt-get", "download", f"{package}={version}"]
        if subprocess.run(download, cwd=cache, check=False).returncode != 0:
            # A fresh machine may have no package lists yet: fetch them once, then retry.
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(download, cwd=cache, check=True)
    actual = sha256_of(deb)
    if actual != sha256:
        deb.unlink()
        raise SystemExit(f"{deb.name}: sha256 {actual} != pinned {sha256}")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    if not complete(root):
        raise SystemExit(f"{deb.name} did not contain the expected files under {root}")
    done.write_text(f"{package}={version} sha256={sha256}\n")
    return root
