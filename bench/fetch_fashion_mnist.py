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
import sys
from pathlib import Path

import numpy as np

from mmsearch.dev.debian import fetch_deb

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


def _complete(folder: Path) -> bool:
    return all((folder / f"{split}-images-idx3-ubyte.gz").exists() for split in ("train", "t10k"))


def fetch() -> Path:
    if _complete(SYSTEM):
        return SYSTEM
    data = Path("usr") / "share" / "datasets" / "fashion-mnist"
    root = fetch_deb(
        CACHE, PACKAGE, VERSION, deb_name=DEB_NAME, sha256=SHA256, complete=lambda r: _complete(r / data)
    )
    return root / data


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
