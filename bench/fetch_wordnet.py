#!/usr/bin/env python3
"""Fetch WordNet 3.0 (Princeton, WordNet 3.0 license) for bench/reranker_eval.py.

Downloads the Debian package `wordnet-base` at a pinned version with
`apt-get download` (no root, nothing installed), checks its sha256, and unpacks
it with `dpkg-deb -x` into .cache/datasets/wordnet-base/. Idempotent. Prints the
folder holding data.noun / data.verb / data.adj / data.adv.

Needs the Debian package lists (`apt-get update`, as root, once per machine) the
first time; afterwards it works from .cache/ alone.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "datasets" / "wordnet-base"
PACKAGE = "wordnet-base"
VERSION = "1:3.0-37"
DEB_NAME = "wordnet-base_1%3a3.0-37_all.deb"
SHA256 = "61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch() -> Path:
    data_dir = CACHE / "unpacked" / "usr" / "share" / "wordnet"
    done = CACHE / ".done"
    if done.exists() and (data_dir / "data.noun").exists():
        return data_dir
    CACHE.mkdir(parents=True, exist_ok=True)
    deb = CACHE / DEB_NAME
    if not (deb.exists() and sha256_of(deb) == SHA256):
        subprocess.run(["apt-get", "download", f"{PACKAGE}={VERSION}"], cwd=CACHE, check=True)
    actual = sha256_of(deb)
    if actual != SHA256:
        deb.unlink()
        raise SystemExit(f"{deb.name}: sha256 {actual} != pinned {SHA256}")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(CACHE / "unpacked")], check=True)
    if not (data_dir / "data.noun").exists():
        raise SystemExit(f"{deb.name} did not contain {data_dir}/data.noun")
    done.write_text(f"{PACKAGE}={VERSION} sha256={SHA256}\n")
    return data_dir


if __name__ == "__main__":
    print(fetch())
    sys.exit(0)
