#!/usr/bin/env python3
"""Fetch Fashion-MNIST (Zalando Research, MIT/Expat license) for bench/retrieval_eval.py.

Uses /usr/share/datasets/fashion-mnist when the Debian package `dataset-fashion-mnist`
is installed. Otherwise downloads that package at a pinned version with
`apt-get download` (no root, nothing installed), checks its sha256, and unpacks it
with `dpkg-deb -x` into .cache/datasets/fashion-mnist/. Idempotent. Prints the folder
holding {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz.

Needs the Debian package lists (`apt-get update`, as root, once per machine) the
first time; afterwards it works from .cache/ alone.
"""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "datasets" / "fashion-mnist"
SYSTEM = Path("/usr/share/datasets/fashion-mnist")
PACKAGE = "dataset-fashion-mnist"
VERSION = "0.0~git20200523.55506a9-1"
DEB_NAME = "dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb"
SHA256 = "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0"
# The dataset's own label names (index = label), from its README.
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _complete(folder: Path) -> bool:
    return all((folder / f"{split}-images-idx3-ubyte.gz").exists() for split in ("train", "t10k"))


def fetch() -> Path:
    if _complete(SYSTEM):
        return SYSTEM
    data_dir = CACHE / "unpacked" / "usr" / "share" / "datasets" / "fashion-mnist"
    done = CACHE / ".done"
    if done.exists() and _complete(data_dir):
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
    if not _complete(data_dir):
        raise SystemExit(f"{deb.name} did not contain the idx files under {data_dir}")
    done.write_text(f"{PACKAGE}={VERSION} sha256={SHA256}\n")
    return data_dir


def load(split: str = "t10k") -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [n, 28, 28], labels uint8 [n]) of the `train` or `t10k` split."""
    folder = fetch()
    with gzip.open(folder / f"{split}-labels-idx1-ubyte.gz", "rb") as handle:
        labels = np.frombuffer(handle.read(), dtype=np.uint8, offset=8)
    with gzip.open(folder / f"{split}-images-idx3-ubyte.gz", "rb") as handle:
        images = np.frombuffer(handle.read(), dtype=np.uint8, offset=16).reshape(len(labels), 28, 28)
    return images, labels


if __name__ == "__main__":
    print(fetch())
    sys.exit(0)
